"""Every schema is itself valid, and each rejects what it should."""

import json

import polars as pl
import pytest
from jsonschema import Draft202012Validator, ValidationError
from jsonschema.exceptions import best_match

from cdrflow.batches import to_columns
from cdrflow.callrecords import CALL_SCHEMA, RECORD_SCHEMA
from cdrflow.events import Event, EventType
from tests.schemas import SCHEMA_OF_TYPE, SCHEMAS, validate_event, validator


@pytest.mark.parametrize("path", sorted(SCHEMAS.glob("*.schema.json")), ids=lambda p: p.name)
def test_schema_is_valid_json_schema(path):
    Draft202012Validator.check_schema(json.loads(path.read_text()))


def test_every_event_type_has_a_schema_file():
    for name in SCHEMA_OF_TYPE.values():
        assert (SCHEMAS / f"{name}.schema.json").exists()
    types = {v for k, v in vars(EventType).items() if k.isupper()}
    assert types == set(SCHEMA_OF_TYPE)


def run_closed(**data):
    base = {"run_id": "6f1c1a52-9a53-4d55-9d7f-2c0f6f0f5a11", "customer": "ACME", "period": "2026-10",
            "period_start": "2026-10-01", "period_end": "2026-11-01", "trigger": "manual"}
    return Event(type=EventType.RUN_CLOSED, source="cdrflow/admin", subject="ACME/2026-10", data=base | data).to_dict()


def test_a_valid_event_passes():
    validate_event(run_closed())


def test_a_float_amount_is_refused_by_the_invoice_schema():
    doc = Event(type=EventType.INVOICE_ISSUED, source="cdrflow/invoicer", subject="INV-000001", data={
        "invoice_number": "INV-000001", "run_id": "6f1c1a52-9a53-4d55-9d7f-2c0f6f0f5a11", "customer": "A",
        "period": "2026-10", "period_start": "2026-10-01", "period_end": "2026-11-01",
        "currency": "GBP", "issued_at": "2026-11-01T00:00:00+00:00", "issued_on": "2026-11-01",
        "due_on": "2026-12-01", "net": "0.30", "tax": "0.06", "total": 0.36,
        "lines": [{"description": "Call Charges", "quantity": 1, "amount": "0.30", "tax_code": "standard",
                   "kind": "calls"}], "calls_csv": "0" * 64,
    }).to_dict()
    with pytest.raises(ValidationError, match="0.36 is not of type 'string'"):
        validate_event(doc)


def test_unknown_data_fields_are_refused():
    with pytest.raises(ValidationError, match="Additional properties"):
        validate_event(run_closed(surprise=1))


def batch_columns(name: str) -> tuple[set[str], dict]:
    """The columns a schema's batch part requires, and their properties."""
    part = json.loads((SCHEMAS / f"{name}.schema.json").read_text())["allOf"][1]["properties"]["data"]["oneOf"][0]
    columns = part["properties"]["calls" if name == "call-rated" else "records"]
    return set(columns["required"]), columns["properties"]


@pytest.mark.parametrize(("name", "schema"), [("record-parsed", RECORD_SCHEMA), ("call-rated", CALL_SCHEMA)])
def test_a_batch_schema_requires_exactly_the_columns_the_code_sends(name, schema):
    on_the_bus = set(to_columns(pl.DataFrame(schema=schema)))  # times as start_us, money as *_micros
    required, properties = batch_columns(name)
    assert required == set(properties) == on_the_bus


def test_call_rated_says_the_currency_of_its_charges_and_record_parsed_the_carriers_cost():
    _, calls = batch_columns("call-rated")
    assert "currency" in calls and "ISO 4217" in calls["currency"]["description"]
    assert "in the call's 'currency'" in calls["charge_micros"]["items"]["description"]
    _, records = batch_columns("record-parsed")
    assert "carrier's billing currency" in records["cost_micros"]["items"]["description"]
    assert "currency" not in records  # cdrflow keeps no carrier currency yet


def call_rated(**columns):
    calls = {name: [None] for name in batch_columns("call-rated")[0]} | {
        "row": [2], "cli": ["441632960001"], "dialled": ["441174960123"], "start_us": [1_790_000_000_000_000],
        "duration": [60], "answered": [True], "direction": ["outbound"], "customer": ["ACME"], "charge_micros": [1000],
        "currency": ["EUR"], "status": ["rated"]} | columns
    return Event(type=EventType.CALL_RATED, source="cdrflow/rater", subject="f", data={
        "part": "batch", "file_id": "6f1c1a52-9a53-4d55-9d7f-2c0f6f0f5a11", "carrier": "gamma",
        "direction": "outbound", "batch": 0, "count": 1, "calls": calls}).to_dict()


def refusal(doc: dict) -> str:
    """Why the schema refuses ``doc``: the most specific error (inside the oneOf of parts)."""
    return best_match(validator("call-rated").iter_errors(doc)).message


def test_a_call_rated_batch_names_its_currency_by_iso_4217_code():
    validate_event(call_rated())
    validate_event(call_rated(customer=[None], currency=[None], charge_micros=[None], status=["unmatched"]))
    assert refusal(call_rated(currency=["eur"])) == "'eur' does not match '^[A-Z]{3}$'"
    doc = call_rated()
    del doc["data"]["calls"]["currency"]
    assert refusal(doc) == "'currency' is a required property"
