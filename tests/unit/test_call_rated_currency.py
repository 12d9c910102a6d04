"""A call-rated batch says the currency of its calls' charges: the customer's (``customers.currency``),
null for a call no customer claims, on first rating and on re-rating alike; the invoicer refuses a
batch whose currency is not its customer's, as the message's fault, naming the file and batch."""

import pytest
from sqlalchemy import func, select

from cdrflow.db.models import Call, Customer
from cdrflow.errors import BadEventError, InfrastructureError
from cdrflow.events import Event
from services.dedupe.service import Dedupe
from services.invoicer.service import Invoicer
from services.parser.service import Parser
from services.rater.reference import add_cli
from services.rater.service import Rater
from services.scheduler.customers import set_billing_terms
from tests.schemas import validate_event
from tests.unit.test_handlers import arrive, handle, runtime  # noqa: F401  (the fixture: sample reference data)

UNMATCHED_CLI = "441999000000"  # the gamma sample's one call from a CLI no customer has


def bill_in(runtime, customer: str, code: str) -> None:  # noqa: F811
    with runtime.database.transaction() as session:
        set_billing_terms(session, session.get(Customer, customer), currency_code=code)


def rated_batches(runtime, rater: Rater, name="gamma-cdr-20261001.csv", carrier="gamma") -> list[Event]:  # noqa: F811
    """The file's call-rated batches (not its summary), each checked against its schema by ``handle``."""
    [accepted] = handle(runtime, Dedupe(runtime).on_file_arrived, arrive(runtime, name, carrier))
    rated = [out for parsed in handle(runtime, Parser(runtime).on_file_accepted, accepted)
             for out in handle(runtime, rater.on_record_parsed, parsed)]
    return [event for event in rated if event.data["part"] != "summary"]


def customer_currencies(batches: list[Event]) -> set[tuple]:
    return {pair for batch in batches
            for pair in zip(batch.data["calls"]["customer"], batch.data["calls"]["currency"], strict=True)}


def test_a_eur_customers_calls_say_eur_a_gbp_customers_gbp_and_an_unmatched_call_none(runtime):  # noqa: F811
    rater = Rater(runtime)
    bill_in(runtime, "ACME", "EUR")  # ACME (+441632960001/2) bills in EUR; BRISDENT keeps the default, GBP
    batches = rated_batches(runtime, rater)
    assert customer_currencies(batches) == {("ACME", "EUR"), ("BRISDENT", "GBP"), (None, None)}
    for batch in batches:  # the invoicer agrees with every one: all stored
        handle(runtime, Invoicer(runtime).on_call_rated, batch)
    with runtime.database.transaction() as session:
        assert session.scalar(select(func.count()).select_from(Call)) == 7  # 8 rows, 1 rejected


def test_the_rater_follows_a_customers_new_currency_and_re_rated_calls_carry_it(runtime):  # noqa: F811
    rater = Rater(runtime)
    for batch in rated_batches(runtime, rater):
        handle(runtime, Invoicer(runtime).on_call_rated, batch)
    # The unmatched call's CLI is given to BRISDENT, now billed in EUR: re-rated, it says EUR.
    bill_in(runtime, "BRISDENT", "EUR")
    with runtime.database.transaction() as session:
        add_cli(session, "BRISDENT", f"+{UNMATCHED_CLI}")
    with runtime.database.transaction() as session:
        version, plan = rater.plans.current(session)
        [rerate] = [out.event for out in rater.rerate(session, plan, version)]
    assert (rerate.data["part"], rerate.data["calls"]["customer"], rerate.data["calls"]["currency"]) == (
        "rerate", ["BRISDENT"], ["EUR"])
    handle(runtime, Invoicer(runtime).on_call_rated, rerate)
    with runtime.database.transaction() as session:
        assert session.scalar(select(Call.customer).where(Call.cli == UNMATCHED_CLI)) == "BRISDENT"


def tampered(batch: Event, **columns) -> Event:
    """``batch`` with some of its calls' columns replaced (as a faulty or stale rater would send it)."""
    return Event(type=batch.type, source=batch.source, subject=batch.subject, id=batch.id,
                 data=batch.data | {"calls": batch.data["calls"] | columns})


def test_the_invoicer_refuses_a_batch_whose_currency_is_not_its_customers(runtime):  # noqa: F811
    [batch, *_] = rated_batches(runtime, Rater(runtime))  # the file's first 3 calls: ACME's, in GBP
    calls = batch.data["calls"]
    assert set(calls["customer"]) == {"ACME"} and set(calls["currency"]) == {"GBP"}
    wrong = tampered(batch, currency=["EUR"] * len(calls["currency"]))
    validate_event(wrong.to_dict())  # well formed: only the database can tell it is wrong
    file_id = batch.data["file_id"]
    with pytest.raises(BadEventError) as refused, runtime.database.transaction() as session:
        list(Invoicer(runtime).on_call_rated(wrong, session))
    assert not isinstance(refused.value, InfrastructureError)  # the message's fault: dead-lettered, not retried
    assert str(refused.value).startswith(
        f"call-rated batch 0 (batch) of file {file_id}: customer ACME's calls say EUR, but ACME is billed in GBP. ")
    assert f"'cdrflow files retry {file_id}'" in str(refused.value)
    with runtime.database.transaction() as session:
        assert session.scalar(select(func.count()).select_from(Call)) == 0  # nothing of the batch stored


def test_the_invoicer_refuses_a_currency_on_a_call_no_customer_claims(runtime):  # noqa: F811
    batches = rated_batches(runtime, Rater(runtime))
    [batch] = [b for b in batches if None in b.data["calls"]["customer"]]
    wrong = tampered(batch, currency=[cur or "GBP" for cur in batch.data["calls"]["currency"]])
    with pytest.raises(BadEventError, match=rf"of file {batch.data['file_id']}: a call matched to no customer "
                                            r"says GBP\."), runtime.database.transaction() as session:
        list(Invoicer(runtime).on_call_rated(wrong, session))
