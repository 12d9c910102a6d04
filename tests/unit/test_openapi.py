"""GET /openapi.json: an OpenAPI 3.1 document of every route of the JSON API (none missing, none
stale), valid against the OpenAPI 3.1 meta-schema, each schema valid JSON Schema 2020-12, errors
{"error": string}, and bearerAuth the security scheme; the console's pages are not in it."""

import jsonschema
import pytest
from schemathesis.specs.openapi.definitions import OPENAPI_31
from starlette.routing import Route
from starlette.testclient import TestClient

from services.admin.app import create_app
from services.admin.openapi import OPERATIONS, api_operations, openapi_document, stale, undocumented
from tests.unit.test_handlers import runtime  # noqa: F401  (fixture)


@pytest.fixture
def app(runtime):
    return create_app(runtime)


@pytest.fixture
def document(app):
    with TestClient(app) as client:
        reply = client.get("/openapi.json")  # public: no token
    assert reply.status_code == 200, reply.text
    return reply.json()


def test_every_route_of_the_json_api_has_its_entry_and_no_entry_is_stale(app):
    assert undocumented(app) == [], "add these to OPERATIONS in services/admin/openapi.py"
    assert stale(app) == [], "these entries of OPERATIONS name no route"


def test_a_new_route_without_an_entry_is_named_as_undocumented(app):
    async def endpoint(_):  # pragma: no cover: never called
        return None

    app.router.routes.append(Route("/brand-new", endpoint, methods=["GET"]))
    assert undocumented(app) == ["GET /brand-new"]
    assert openapi_document(app)["paths"]["/brand-new"]["get"]["summary"].startswith("undocumented")


def test_the_document_is_valid_openapi_3_1_and_its_schemas_valid_json_schema(document):
    assert document["openapi"].startswith("3.1")
    jsonschema.Draft202012Validator(OPENAPI_31).validate(document)
    for name, schema in document["components"]["schemas"].items():
        jsonschema.Draft202012Validator.check_schema(schema)
    ids = [op["operationId"] for ops in document["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids)) == len(OPERATIONS)


def test_each_operation_has_a_summary_its_path_parameters_and_the_error_schema(document, app):
    for method, path, route in api_operations(app):
        op = document["paths"][path][method.lower()]
        assert op["summary"] and len(op["summary"]) <= 100, (method, path)
        in_path = {p["name"] for p in op["parameters"] if p["in"] == "path"}
        assert in_path == set(route.param_convertors), (method, path)
        assert op["responses"]["4XX"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/Error"}
    assert document["components"]["schemas"]["Error"]["properties"]["error"] == {
        "type": "string", "description": "what went wrong and what to do"}


def test_summaries_come_from_the_endpoint_docstrings(document):
    assert document["paths"]["/carriers/{code}"]["get"]["summary"].startswith("One carrier")
    assert document["paths"]["/deliveries"]["get"]["summary"] == \
        "The newest deliveries of every document, newest first"


def test_query_parameters_and_request_bodies_are_described(document):
    files = document["paths"]["/files"]
    assert {p["name"] for p in files["get"]["parameters"]} >= {"carrier", "kind", "status", "month"}
    assert set(files["post"]["requestBody"]["content"]) == {"multipart/form-data", "application/octet-stream"}
    charge = document["paths"]["/customers/{code}/charges"]["post"]["requestBody"]["content"]["application/json"]
    assert charge["schema"] == {"$ref": "#/components/schemas/ChargeRequest"}
    assert document["components"]["schemas"]["Charge"]["properties"]["amount"] == {
        "$ref": "#/components/schemas/Money"}


def test_bearer_auth_is_required_except_for_health_and_the_document(document):
    assert document["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http", "scheme": "bearer", "description": document["components"]["securitySchemes"]
        ["bearerAuth"]["description"]}
    assert document["security"] == [{"bearerAuth": []}]
    assert document["paths"]["/health"]["get"]["security"] == []
    assert "security" not in document["paths"]["/customers"]["get"]
    assert "401" in document["paths"]["/customers"]["get"]["responses"]


def test_the_console_pages_login_and_logout_are_not_in_it(document):
    assert not [p for p in document["paths"] if p.startswith(("/console", "/login", "/logout")) or p == "/"]
