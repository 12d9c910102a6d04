"""The admin API fuzzed against its own OpenAPI document (schemathesis): for any input the
document allows (positive) and many it doesn't (negative), no reply is a 5xx. The real app
(create_app, its lifespan and outbox relay run by schemathesis's ASGI transport) on the real
PostgreSQL and Kafka of the integration fixtures, with the sample reference data, called as
local-admin with a real API token.

Bounded: ``MAX_EXAMPLES`` inputs per operation and mode keep the run within about three minutes
on this machine. Each operation is fuzzed in turn and every server error is collected, so one
run names them all (with the curl command that reproduces each)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings as hypothesis_settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from starlette.applications import Starlette

from cdrflow.runtime import Runtime
from cdrflow.settings import Settings
from services.admin.app import create_app
from tests.authhelp import admin_token, bearer

MAX_EXAMPLES = 50


@pytest.fixture
def fuzzed(settings: Settings) -> Iterator[tuple[Starlette, dict[str, str]]]:
    runtime = Runtime(settings, "admin")
    yield create_app(runtime), bearer(admin_token(runtime))
    runtime.database.dispose()


def test_no_input_gets_a_server_error(fuzzed) -> None:  # type: ignore[no-untyped-def]
    app, token = fuzzed
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) > 50, "the document lists every operation of the API"
    failures: dict[str, str] = {}

    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            @given(case=operation.as_strategy(generation_mode=mode))
            @hypothesis_settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, derandomize=True,
                                 suppress_health_check=list(HealthCheck))
            def fuzz(case) -> None:  # type: ignore[no-untyped-def]
                try:  # the ASGI transport raises what the app raised: that is a 500 too
                    case.validate_response(case.call(headers=token), checks=[not_a_server_error])
                except Exception as exc:  # a server error: kept, and this operation's fuzzing goes on
                    failures.setdefault(operation.label, f"{type(exc).__name__}: {str(exc)[:600]}")

            try:
                fuzz()
            except Unsatisfiable:  # negative: nothing to get wrong (no parameters, no body)
                assert mode is GenerationMode.NEGATIVE, operation.label
    assert not failures, "\n\n".join(f"{label}: {why}" for label, why in failures.items())
