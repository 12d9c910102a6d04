"""A customers file of tens of thousands of CLIs loads in one go: checked whole in memory
against the stored CLIs (read once) and its own earlier lines, refused whole with every problem
and its line, stored in bulk, and logged as one change (the rater reloads its plan once)."""

import os
import uuid
from datetime import date

import polars as pl
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from click.testing import CliRunner
from sqlalchemy import create_engine, event, func, select, text
from sqlalchemy.engine import make_url
from starlette.testclient import TestClient

from cdrflow_app.cli import main
from cdrflow.db import Database, migrate
from cdrflow.db.models import Customer, CustomerCli
from cdrflow.errors import InputError
from cdrflow.reference import ReferenceDataError, reference_version
from cdrflow.runtime import Runtime
from cdrflow.settings import Settings
from services.admin.app import create_app
from services.rater.clis import ENTRY_SCHEMA, Claim, CliClaims, CliEntry, check_claims, parse_cli, read_clis
from services.rater.plan import Tariff
from services.rater.reference import add_cli, load_customers_csv, load_plan, save_customer, save_tariff
from tests.authhelp import authed

HEADER = "customer,name,tariff,cli\n"


SERVER = os.environ.get("CDRFLOW_TEST_DATABASE_URL")


@pytest.fixture(params=["sqlite", "postgresql"] if SERVER else ["sqlite"])
def database(request, tmp_path):
    """SQLite; and PostgreSQL (its bulk insert differs) when CDRFLOW_TEST_DATABASE_URL names a
    server, on a database of the test's own, dropped afterwards."""
    server = SERVER or ""
    url, name = Settings(data_dir=tmp_path).effective_database_url, None
    if request.param == "postgresql":
        name = "test_reference_bulk_" + uuid.uuid4().hex[:8]
        _on_server(server, f'CREATE DATABASE "{name}"')
        url = make_url(server).set(database=name).render_as_string(hide_password=False)
    migrate(url)
    db = Database(url)
    with db.transaction() as session:
        save_tariff(session, Tariff("business"))
    yield db
    db.dispose()
    if name:
        _on_server(server, f'DROP DATABASE "{name}" WITH (FORCE)')


def _on_server(url: str, statement: str) -> None:
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text(statement))
    engine.dispose()


def load(db: Database, text: str, source: str = "customers.csv"):
    with db.transaction() as session:
        return load_customers_csv(session, text.encode(), source=source)


def refused(db: Database, text: str) -> list[str]:
    with pytest.raises(ReferenceDataError) as caught:
        load(db, text)
    return caught.value.problems


def stored_clis(db: Database) -> list[tuple[str, str, str]]:
    with db.transaction() as session:
        return session.execute(select(CustomerCli.customer_code, CustomerCli.kind, CustomerCli.value)
                               .order_by(CustomerCli.id)).all()


def counts(db: Database) -> tuple[int, int, int]:
    """(customers, CLIs, reference version)."""
    with db.transaction() as session:
        return (session.scalar(select(func.count()).select_from(Customer)),
                session.scalar(select(func.count()).select_from(CustomerCli)), reference_version(session))


def test_a_5000_cli_file_reads_the_stored_clis_once_and_inserts_them_in_one_statement(database):
    text = HEADER + "".join(f"C{i // 25:04d},Customer {i // 25},business,+44117960{i:04d}\n" for i in range(5000))
    statements: list[str] = []
    listener = lambda _c, _cur, statement, *_: statements.append(statement)  # noqa: E731
    event.listen(database.engine, "before_cursor_execute", listener)
    try:
        loaded = load(database, text)
    finally:
        event.remove(database.engine, "before_cursor_execute", listener)
    assert (loaded.customers_added, loaded.clis_added, loaded.clis_held) == (200, 5000, 0)
    assert counts(database)[:2] == (200, 5000)
    on_clis = [s for s in statements if "customer_clis" in s]
    assert len([s for s in on_clis if s.lstrip().upper().startswith("SELECT")]) == 1
    assert len([s for s in on_clis if s.lstrip().upper().startswith("INSERT")]) == 1
    assert stored_clis(database)[0] == ("C0000", "ddi", "441179600000")


def test_a_cli_on_two_lines_for_two_customers_is_refused_with_both_line_numbers(database):
    problems = refused(database, HEADER + "ACME,Acme,business,+441632960001\n"
                                          "ACME,Acme,business,+441632960002\n"
                                          "BETA,Beta,business,01632 960001\n")
    assert problems == ["line 4: CLI 01632 960001 overlaps ddi 441632960001 of customer ACME on line 2"]


def test_overlapping_ranges_in_one_file_are_refused_with_both_line_numbers(database):
    problems = refused(database, HEADER + "ACME,Acme,business,441632960000-441632960099\n"
                                          "BETA,Beta,business,441632960050-441632960149\n")
    assert problems == ["line 3: CLI 441632960050-441632960149 overlaps range 441632960000-441632960099 "
                        "of customer ACME on line 2"]


def test_a_cli_another_customer_holds_already_is_refused_and_names_that_customer(database):
    load(database, HEADER + "ACME,Acme,business,+441632960001\nACME,Acme,business,ACC-7\n")
    problems = refused(database, HEADER + "BETA,Beta,business,+441632960009\n"
                                          "BETA,Beta,business,+441632960001\n"
                                          "BETA,Beta,business,ACC-7\n")
    assert problems == ["line 3: CLI +441632960001 overlaps ddi 441632960001 of customer ACME",
                        "line 4: CLI ACC-7 overlaps account ACC-7 of customer ACME"]


def test_a_range_overlapping_a_stored_range_is_refused(database):
    with database.transaction() as session:
        save_customer(session, "ACME", "Acme", "business")
        session.flush()
        add_cli(session, "ACME", "441632960000-441632960099")
    problems = refused(database, HEADER + "BETA,Beta,business,+441632960099-+441632960199\n")
    assert problems == ["line 2: CLI +441632960099-+441632960199 overlaps range 441632960000-441632960099 "
                        "of customer ACME"]


def test_nothing_is_stored_when_any_line_is_bad_and_every_problem_is_listed(database):
    before = counts(database)
    problems = refused(database, HEADER + "ACME,Acme,business,+441632960001\n"
                                          "BETA,Beta,gold,+441632960002\n"
                                          ",Nobody,business,+441632960003\n"
                                          "ACME,Acme,business,441632960099-441632960000\n"
                                          "ACME,Acme,business,+441632960004\n")
    assert problems == ["line 3: customer BETA: no tariff 'gold'",
                        "line 4: customer is empty",
                        "line 5: customer ACME: range '441632960099-441632960000' must run from a lower to a "
                        "higher number of the same length"]
    assert counts(database) == before


def test_one_load_moves_the_reference_version_once_and_loading_it_again_not_at_all(database):
    text = HEADER + "".join(f"C{i % 7},Customer {i % 7},business,+44117960{i:04d}\n" for i in range(300))
    _, _, version = counts(database)
    first = load(database, text)
    assert counts(database) == (7, 300, version + 1)
    again = load(database, text)
    assert (again.customers_added, again.customers_changed, again.clis_added, again.clis_held) == (0, 0, 0, 300)
    assert counts(database) == (7, 300, version + 1)
    assert (first.customers_added, first.clis_added) == (7, 300)


def test_a_cli_its_customer_holds_already_is_no_clash_and_not_stored_twice(database):
    loaded = load(database, HEADER + "ACME,Acme,business,+441632960001\nACME,Acme,business,01632960001\n")
    assert (loaded.clis_added, loaded.clis_held) == (1, 1)
    assert stored_clis(database) == [("ACME", "ddi", "441632960001")]


def test_the_same_number_for_another_carrier_or_at_other_dates_is_no_clash(database):
    load(database, "customer,name,tariff,cli,carrier,effective_from,effective_to\n"
                   "ACME,Acme,business,+441632960001,,,2026-07-01\n"
                   "BETA,Beta,business,+441632960001,,2026-07-01,\n"
                   "GAMMA,Gamma,business,+441632960001,gamma,,\n")
    assert [c for c, _, _ in stored_clis(database)] == ["ACME", "BETA", "GAMMA"]
    problems = refused(database, "customer,name,tariff,cli,effective_from\n"
                                 "DELTA,Delta,business,+441632960001,2026-06-30\n")
    assert problems == ["line 2: CLI +441632960001 overlaps ddi 441632960001 of customer ACME"]


def test_a_bad_date_or_kind_is_reported_with_its_line(database):
    problems = refused(database, "customer,name,tariff,cli,kind,effective_from\n"
                                 "ACME,Acme,business,+441632960001,,2026-13-01\n"
                                 "ACME,Acme,business,SIP-1,pipe,\n")
    assert problems == ["line 2: effective_from '2026-13-01' is not a date YYYY-MM-DD",
                        "line 3: customer ACME: CLI kind 'pipe' is not one of ddi, prefix, range, account, trunk"]


def test_reloading_changes_a_customers_name_and_tariff_but_keeps_its_email_unless_the_file_has_it(database):
    with database.transaction() as session:
        save_tariff(session, Tariff("residential"))
        save_customer(session, "ACME", "Acme", "business", billing_email="bills@acme.example",
                      billing_schedule="quarterly")
    loaded = load(database, HEADER + "ACME,Acme Widgets,residential,+441632960001\n")
    assert (loaded.customers_added, loaded.customers_changed) == (0, 1)
    with database.transaction() as session:
        acme = session.get(Customer, "ACME")
        assert (acme.name, acme.tariff, acme.billing_email, acme.billing_schedule) == \
            ("Acme Widgets", "residential", "bills@acme.example", "quarterly")
    load(database, "customer,name,tariff,cli,billing_email\nACME,Acme Widgets,residential,+441632960001,\n")
    with database.transaction() as session:
        assert session.get(Customer, "ACME").billing_email is None


def test_a_customer_the_session_holds_reads_what_the_file_loaded(database):
    with database.transaction() as session:
        acme = save_customer(session, "ACME", "Acme", "business")
        load_customers_csv(session, (HEADER + "ACME,Acme Widgets,business,+441632960001\n").encode(), source="c.csv")
        assert acme.name == "Acme Widgets"
        assert [c.value for c in acme.clis] == ["441632960001"]


def test_read_clis_reads_each_row_as_parse_cli_does():
    texts = ["+441632960001", "01632 960001", "0044 1632 960001", "441632960001", "+44 1632 96*", "01632*",
             "441632960000-441632960099", "ACC-7", "12345", "+", "*", "00", "0"]
    kinds = [""] * len(texts)
    texts.append("12345")
    kinds.append("account")
    n = len(texts)
    rows = {"line": list(range(2, n + 2)), "customer": ["ACME"] * n, "cli": texts, "kind": kinds,
            "carrier": [""] * n, "effective_from": [""] * n, "effective_to": [""] * n}
    entries, problems = read_clis(pl.DataFrame(rows).with_columns(pl.col("line").cast(pl.UInt32)))
    expected, expected_problems = [], []
    for line, text, kind in zip(rows["line"], texts, kinds, strict=True):
        try:
            e = parse_cli("ACME", text, kind or None)
        except InputError as exc:
            expected_problems.append((line, str(exc)))
            continue
        expected.append((line, text, e.customer, e.kind, e.value, None, None, None))
    assert entries.rows() == expected
    assert problems == expected_problems
    assert entries.columns == ["line", "cli", *ENTRY_SCHEMA]


_ENTRIES = st.builds(
    CliEntry, customer=st.sampled_from(["ACME", "BETA"]),
    kind=st.sampled_from(["ddi", "account", "range"]), value=st.sampled_from(["100", "101", "102"]),
    carrier=st.sampled_from([None, "gamma"]), effective_from=st.sampled_from([None, date(2026, 1, 1)]),
    effective_to=st.sampled_from([None, date(2026, 6, 1)]),
).map(lambda e: e if e.kind != "range" else CliEntry(e.customer, "range", {"100": "100-101", "101": "101-102",
                                                                            "102": "103-109"}[e.value],
                                                       e.carrier, e.effective_from, e.effective_to))


def _table(entries: list[CliEntry]) -> pl.DataFrame:
    return pl.DataFrame([tuple(getattr(e, n) for n in ENTRY_SCHEMA) for e in entries], schema=ENTRY_SCHEMA,
                        orient="row")


@settings(max_examples=1000, deadline=None)
@given(stored=st.lists(_ENTRIES, max_size=4), file=st.lists(_ENTRIES, max_size=8))
@example(stored=[CliEntry("ACME", "ddi", "100", "gamma")], file=[CliEntry("ACME", "ddi", "100")])  # new: no clash
@example(stored=[CliEntry("ACME", "ddi", "100")], file=[CliEntry("ACME", "ddi", "100")])  # held
@example(stored=[CliEntry("ACME", "ddi", "100")], file=[CliEntry("BETA", "ddi", "100")])  # refused
def test_the_bulk_check_decides_as_adding_each_line_in_turn_would(stored, file):
    """The bulk check looks only at the lines that could clash; it must decide every line as
    checking them all one by one, in line order, against everything before them does."""
    claims, expected_new, expected_held, expected_problems = CliClaims(Claim(e) for e in stored), [], 0, []
    for line, e in enumerate(file, start=2):
        try:
            repeated = claims.check(e, f"text{line}")
        except InputError as exc:
            expected_problems.append((line, str(exc)))
            expected_new.append(False)
            continue
        if repeated is None:
            claims.add(Claim(e, line))
        expected_held += repeated is not None
        expected_new.append(repeated is None)
    entries = _table(file).with_columns(line=pl.int_range(2, len(file) + 2, dtype=pl.UInt32),
                                        cli=pl.format("text{}", pl.int_range(2, len(file) + 2)))
    new, held, problems = check_claims(entries.select("line", "cli", *ENTRY_SCHEMA), _table(stored))
    assert (new.to_list(), held, problems) == (expected_new, expected_held, expected_problems)


def test_add_cli_keeps_its_rules_one_cli_at_a_time(database):
    with database.transaction() as session:
        for code in ("ACME", "BETA"):
            save_customer(session, code, code.title(), "business")
        session.flush()
        add_cli(session, "ACME", "+441632960001")
        add_cli(session, "ACME", "441632960100-441632960199")
        add_cli(session, "BETA", "+441632960001", carrier="gamma")
        add_cli(session, "BETA", "+441632960002", effective_from=date(2026, 1, 1))
        again = add_cli(session, "ACME", "01632 960001")
        assert (again.customer_code, again.value) == ("ACME", "441632960001")
        with pytest.raises(InputError, match="CLI 01632960001 overlaps ddi 441632960001 of customer ACME"):
            add_cli(session, "BETA", "01632960001")
        with pytest.raises(InputError, match="overlaps range 441632960100-441632960199 of customer ACME"):
            add_cli(session, "BETA", "441632960150-441632960250")
        with pytest.raises(InputError, match="overlaps range 441632960100-441632960199 of customer ACME"):
            add_cli(session, "ACME", "441632960199-441632960299")
    assert len(stored_clis(database)) == 4


def test_the_plan_is_built_from_the_loaded_clis(database, tmp_path):
    load(database, HEADER + "ACME,Acme,business,+441632960001\nACME,Acme,business,+44163296*\n"
                            "BETA,Beta,business,441179460000-441179460099\n")
    runtime = Runtime(Settings(data_dir=tmp_path), "test")
    with database.transaction() as session:
        plan = load_plan(session, runtime.store, runtime.settings.zone)
    runtime.database.dispose()
    assert plan.directory.size == 3
    assert plan.customers == {"ACME": "business", "BETA": "business"}


def test_the_customers_file_loads_over_the_api_all_or_nothing(tmp_path):
    settings = Settings(data_dir=tmp_path)
    migrate(settings.effective_database_url)
    runtime = Runtime(settings, "admin")
    with authed(TestClient(create_app(runtime)), runtime) as client:
        client.put("/tariffs/business", json={}).raise_for_status()
        bad = client.post("/customers/load?name=resellers.csv",
                          content=(HEADER + "ACME,Acme,business,+441632960001\nBETA,Beta,business,+441632960001\n"))
        assert bad.status_code == 422
        assert bad.json()["problems"] == ["line 3: CLI +441632960001 overlaps ddi 441632960001 of customer ACME "
                                          "on line 2"]
        assert client.get("/customers").json() == []
        good = client.post("/customers/load?name=resellers.csv", content=HEADER + "ACME,Acme,business,+441632960001\n")
        assert good.status_code == 200
        assert good.json() == {"customers": 1, "customers_added": 1, "customers_changed": 0, "clis_added": 1,
                               "clis_held": 0, "warnings": []}
        [acme] = client.get("/customers").json()
        assert acme["clis"][0]["value"] == "441632960001"
    runtime.database.dispose()


def test_cdrflow_customers_load_prints_what_it_changed_and_refuses_a_bad_file(tmp_path):
    env = {"CDRFLOW_DATA_DIR": str(tmp_path / "data")}
    runner = CliRunner()
    assert runner.invoke(main, ["migrate"], env=env).exit_code == 0
    assert runner.invoke(main, ["tariffs", "add", "business"], env=env).exit_code == 0
    (tmp_path / "good.csv").write_text(HEADER + "ACME,Acme,business,+441632960001\nACME,Acme,business,ACC-7\n")
    (tmp_path / "bad.csv").write_text(HEADER + "BETA,Beta,business,ACC-7\n")
    good = runner.invoke(main, ["customers", "load", str(tmp_path / "good.csv")], env=env)
    assert good.exit_code == 0, good.output
    assert "1 customer(s): 1 new, 0 changed; 2 CLI(s) added, 0 already held" in good.output
    bad = runner.invoke(main, ["customers", "load", str(tmp_path / "bad.csv")], env=env)
    assert bad.exit_code != 0
    assert "1 problem(s), nothing loaded" in bad.output and "line 2: CLI ACC-7 overlaps account ACC-7" in bad.output
