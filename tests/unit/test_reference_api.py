"""Operators load reference data over the API as well as the CLI: the same rules, the same
change log, and a bad rate sheet refused with its line numbers."""

import pytest
from starlette.testclient import TestClient

from cdrflow.db import migrate
from cdrflow.reference import reference_version
from cdrflow.runtime import Runtime
from cdrflow.settings import Settings
from services.admin.app import create_app
from services.rater.reference import load_plan
from tests.authhelp import authed


@pytest.fixture
def api(tmp_path):
    settings = Settings(data_dir=tmp_path)
    migrate(settings.effective_database_url)
    runtime = Runtime(settings, "admin")
    with authed(TestClient(create_app(runtime)), runtime) as client:
        yield client, runtime
    runtime.database.dispose()


def test_tariff_customer_cli_and_sheet_loaded_over_the_api_make_a_rating_plan(api):
    client, runtime = api
    assert client.put("/tariffs/business", json={"name": "Business", "places": 2}).status_code == 200
    assert client.put("/customers/ACME", json={"name": "Acme Widgets Ltd", "tariff": "business"}).status_code == 200
    assert client.post("/customers/ACME/clis", json={"cli": "+44 1632 960001"}).status_code == 201
    loaded = client.post("/rate-sheets?kind=retail&owner=business&name=deck.csv",
                         content=b"code,destination,peak\n44,UK,0.0100\n")
    assert loaded.status_code == 201 and loaded.json()["version"] == 1 and loaded.json()["rows"] == 1

    [acme] = client.get("/customers").json()
    assert acme["tariff"] == "business"
    assert acme["clis"] == [{"kind": "ddi", "value": "441632960001", "carrier": None,
                             "effective_from": None, "effective_to": None}]
    with runtime.database.transaction() as session:
        assert reference_version(session) >= 4  # each change is logged: the rater reloads on it
        the_plan = load_plan(session, runtime.store, runtime.settings.zone)
    assert the_plan.tariffs["business"].places == 2
    assert the_plan.customers == {"ACME": "business"}


def test_a_bad_sheet_is_refused_with_every_problem_and_its_line(api):
    client, _ = api
    client.put("/tariffs/business", json={})
    refused = client.post("/rate-sheets?kind=retail&owner=business", content=b"code,peak\n44,-1\n44,0.01\n")
    assert refused.status_code == 422
    assert refused.json()["problems"] == ["line 2: peak -1 is negative", "line 3: duplicate code 44 (first on line 2)"]


def test_a_cli_for_an_unknown_customer_or_an_unknown_tariff_is_refused_clearly(api):
    client, _ = api
    missing = client.post("/customers/NOPE/clis", json={"cli": "+441632960001"})
    assert missing.status_code == 422 and "no customer 'NOPE'" in missing.json()["error"]
    no_tariff = client.put("/customers/ACME", json={"name": "Acme", "tariff": "gold"})
    assert no_tariff.status_code == 422 and "no tariff 'gold'" in no_tariff.json()["error"]
    bad_rounding = client.put("/tariffs/x", json={"rounding": "sideways"})
    assert bad_rounding.status_code == 422 and "rounding 'sideways'" in bad_rounding.json()["error"]


def test_reconciliation_over_the_api_starts_empty(api):
    client, _ = api
    assert client.get("/recon").json() == []
