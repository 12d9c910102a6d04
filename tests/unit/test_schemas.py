"""Every schema is itself valid, and each rejects what it should."""

import json

import pytest
from jsonschema import Draft202012Validator, ValidationError

from cdrflow.events import Event, EventType
from tests.schemas import SCHEMA_OF_TYPE, SCHEMAS, validate_event


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
