"""The admin API's OpenAPI 3.1 document, served at ``GET /openapi.json`` (public, like /health).

The document is built from the running app's own routes, so it can't list a route that does not
exist; what the routes can't say about themselves (query parameters, request bodies, response
shapes) is in ``OPERATIONS``, keyed by method and path. A route of the JSON API missing from
that table is still listed, marked undocumented, and ``undocumented(app)`` names it for the test
that fails on it. Routes with ``include_in_schema=False`` (the console's HTML pages, /login,
/logout) and mounts (static files) are not the JSON API and are left out.

Summaries come from the endpoint's docstring (its first sentence) where it has one, else from
the table. Every error reply is ``{"error": "..."}`` (schema ``Error``) with a 4xx status;
a 5xx is a bug, and tests/integration/test_api_fuzz.py fuzzes the API against this document to
find them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

JSON = "application/json"
PUBLIC = frozenset({("GET", "/health"), ("GET", "/openapi.json")})
"""Operations that need no token (the auth middleware's public paths of the JSON API)."""


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _array(name: str) -> dict[str, Any]:
    return {"type": "array", "items": _ref(name)}


def _obj(required: tuple[str, ...] = (), **properties: Any) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = list(required)
    return schema


S = {"type": "string"}
S_NULL = {"type": ["string", "null"]}
B = {"type": "boolean"}
I = {"type": "integer"}
I_NULL = {"type": ["integer", "null"]}
DAY = {"type": "string", "format": "date"}
DAY_NULL = {"type": ["string", "null"], "format": "date"}
TIME = {"type": "string", "format": "date-time"}
TIME_NULL = {"type": ["string", "null"], "format": "date-time"}
MONEY = _ref("Money")
MONEY_NULL = {"anyOf": [_ref("Money"), {"type": "null"}]}

SCHEMAS: dict[str, dict[str, Any]] = {
    "Error": _obj(("error",), error={"type": "string", "description": "what went wrong and what to do"}),
    "Problems": _obj(("error", "problems"), error=S, problems={"type": "array", "items": S}),
    "Money": {"type": "string", "pattern": r"^-?\d+(\.\d+)?$",
              "description": "an amount as decimal text (never a float), e.g. \"12.50\""},
    "Health": _obj(("status",), status=S),
    "File": _obj(("file_id", "carrier", "kind", "period", "status"),
                 file_id=S, fingerprint=S, carrier=S, kind={"enum": ["cdr", "sdr"]},
                 period={"enum": ["daily", "monthly"]}, direction={"enum": ["outbound", "inbound"]},
                 channel=S, original_name=S, size=I, received_at=TIME, status=S, status_reason=S_NULL,
                 rows=I_NULL, rejected=I_NULL, calls=I_NULL),
    "FileReceived": _obj(("file_id", "fingerprint", "size", "announced"), file_id=S, fingerprint=S, size=I,
                         announced=B, message=S),
    "Command": _obj((), command_id=S, command=S, announced=B, already=B),
    "Reason": _obj((), reason={"type": "string", "description": "why (recorded with who and when)"}),
    "DeadLetter": _obj(("id", "service"), id=I, service=S, topic=S, partition=I, offset=I, error_type=S,
                       error=S, failed_at=TIME, replayed_at=TIME_NULL, replayed_by=S_NULL),
    "BillingRunRequest": _obj(("customer",), customer=S, period=S_NULL, force=B, reason=S_NULL),
    "BillingRun": _obj(("customer", "period"), customer=S, period=S, run_id=S, closed_by=S, already=B,
                       invoice_number=S_NULL, announced=B, message=S),
    "Charge": _obj(("id", "customer", "amount"), id=I, customer=S, description=S, amount=MONEY, quantity=I,
                   frequency={"enum": ["monthly", "quarterly", "yearly", "once"]}, start=DAY, end=DAY_NULL,
                   billed_until=DAY_NULL, tax_code=S_NULL, created_at=TIME, created_by=S),
    "ChargeRequest": _obj(("description", "amount", "frequency", "start"), description=S, amount=MONEY,
                          quantity=I, frequency={"enum": ["monthly", "quarterly", "yearly", "once"]}, start=DAY,
                          end=DAY, tax_code={"enum": ["standard", "zero", "exempt"]}),
    "ChargeEnd": _obj(("on",), on=DAY, reason=S),
    "InvoiceLine": _obj((), description=S, quantity=I, amount=MONEY, tax_code=S_NULL, kind=S,
                        covered_from=DAY_NULL, covered_to=DAY_NULL),
    "Invoice": _obj(("invoice_number", "customer", "total"), invoice_number=S, customer=S, currency=S,
                    period_start=DAY, period_end={**DAY, "description": "exclusive"}, issued_at=TIME,
                    issued_on=DAY_NULL, due_on=DAY_NULL, status={"enum": ["issued", "credited"]}, net=MONEY_NULL,
                    tax=MONEY_NULL, total=MONEY, lines=_array("InvoiceLine"), charges=_array("InvoiceLine"),
                    calls_csv=S_NULL, document=S_NULL, credit_note={"type": ["object", "null"]}),
    "Delivery": _obj((), id=I, status=S, to=S, attempts=I, last_error=S_NULL),
    "SendRequest": _obj((), to={"type": "string", "format": "email"}),
    "CustomerCalls": _obj(("customer", "calls"), customer=S, currency=S, unbilled={"type": "object"},
                          calls={"type": "array", "items": {"type": "object"}}, limit=I, offset=I),
    "Customer": _obj(("customer", "name"), customer=S, name=S, tariff=S_NULL, billing_schedule=S,
                     billing_email=S_NULL, tax_code=S, currency=S, address=S_NULL, payment_terms_days=I,
                     clis=_array("CustomerCli")),
    "CustomerCli": _obj(("kind", "value"), kind={"enum": ["ddi", "prefix", "range", "account", "trunk"]},
                        value=S, carrier=S_NULL, effective_from=DAY_NULL, effective_to=DAY_NULL),
    "CustomerRequest": _obj(("name",), name=S, tariff=S, billing_schedule=S, billing_email=S,
                            tax_code={"enum": ["standard", "zero", "exempt"]}, currency=S, address=S,
                            payment_terms_days=I),
    "CliRequest": _obj(("cli",), cli=S, kind={"enum": ["ddi", "prefix", "range", "account", "trunk"]},
                       carrier=S, effective_from=DAY, effective_to=DAY),
    "CliAdded": _obj(("customer", "kind", "value"), customer=S, kind=S, value=S, carrier=S_NULL,
                     warnings={"type": "array", "items": S}),
    "Cli": _obj(("customer", "kind", "value"), customer=S, kind=S, value=S, carrier=S_NULL,
                effective_from=DAY_NULL, effective_to=DAY_NULL),
    "CliShown": _obj(("value", "entries"), value=S, entries=_array("Cli")),
    "CustomersLoaded": {"type": "object"},
    "TariffRequest": _obj((), name=S, schedule=S, split_bands=B, places={"type": "integer", "minimum": 0,
                                                                          "maximum": 6},
                          rounding={"enum": ["half-up", "half-even", "half-down", "up", "down"]},
                          charge_unanswered=B),
    "Tariff": _obj(("tariff",), tariff=S, name=S, schedule=S, split_bands=B, places=I, rounding=S,
                   charge_unanswered=B),
    "TariffShown": {"allOf": [_ref("Tariff"), _obj((), rate_sheets=_array("RateSheet"),
                                                   customers={"type": "array", "items": S})]},
    "RateSheet": _obj(("id", "kind", "owner", "version"), id=I, kind={"enum": ["retail", "wholesale"]}, owner=S,
                      direction={"enum": ["outbound", "inbound"]}, carrier=S_NULL, version=I, active=B, name=S,
                      rows=I, fingerprint=S, loaded_at=TIME),
    "RateSheetLoaded": _obj((), kind=S, owner=S, direction=S, carrier=S, version=I, rows=I),
    "Rate": _obj(("line", "code"), line=I, code=S, destination=S_NULL, is_prefix=B,
                 peak=MONEY_NULL, offpeak=MONEY_NULL, weekend=MONEY_NULL, peak_setup=MONEY_NULL,
                 offpeak_setup=MONEY_NULL, weekend_setup=MONEY_NULL, minimum=MONEY_NULL, initial=I_NULL,
                 subsequent=I_NULL, effective_from=DAY_NULL),
    "RateSheetShown": {"allOf": [_ref("RateSheet"), _obj(("rates",), rates=_array("Rate"))]},
    "Schedule": _obj(("schedule", "rules"), schedule=S, built_in=B, holidays_as_weekend=B, holiday_region=S,
                     rules={"type": "array", "items": _obj((), band=S, days=S, start=S, end=S)}),
    "Carrier": _obj(("carrier", "name"), carrier=S, name=S, cdr_format=S, sdr_format=S_NULL, hold_same_name=B,
                    sdr={"enum": ["billing", "information"]}, file_name_pattern=S_NULL, mail_senders=S_NULL),
    "CarrierShown": {"allOf": [_ref("Carrier"), _obj((), mail_addresses={"type": "array", "items": S},
                                                     sources={"type": "array", "items": {"type": "object"}})]},
    "CarrierRules": _obj((), sdr={"enum": ["billing", "information"]}, hold_same_name=B),
    "CarrierFormat": _obj(("format",), format=S, zone=S, max_reject_share={"type": "number", "minimum": 0,
                                                                          "maximum": 1}),
    "Source": _obj(("source", "carrier", "protocol"), source=S, carrier=S, protocol={"enum": ["ftp", "ftps", "sftp"]},
                   host=S, port=I, username=S, remote_dir=S, rules={"type": "array", "items": {"type": "object"}},
                   poll_interval=I, delete_after_collect=B, verify_tls=B, tls_ca=B, host_key_pinned=B, enabled=B,
                   state=S, failures=I, collected=I, last_error=S_NULL, last_poll_at=TIME_NULL,
                   last_success_at=TIME_NULL, next_poll_at=TIME_NULL),
    "FeeSheet": _obj(("tariff", "version"), tariff=S, version=I, name=S, rows=I, fingerprint=S, loaded_at=TIME,
                     active=B),
    "Format": _obj(("name", "kind"), name=S, kind={"enum": ["cdr", "sdr"]}, origin=S, description=S),
    "AuditEntry": {"type": "object"},
    "Object": {"type": "object"},
}


@dataclass(frozen=True)
class Operation:
    """What a route can't say about itself: its summary (when its endpoint has no docstring),
    query parameters (name: description), request body and success reply."""

    summary: str
    ok: tuple[int, str, dict[str, Any] | None] = (200, "OK", None)  # status, description, schema (None: no body)
    query: dict[str, str] = field(default_factory=dict)
    body: dict[str, Any] | None = None  # a requestBody object
    ok_media: str = JSON
    errors: tuple[int, ...] = ()  # the 4xx statuses worth naming (every operation may answer 4XX)


def _json_body(schema: str, required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {JSON: {"schema": _ref(schema)}}}


def _text_body(media: str, what: str) -> dict[str, Any]:
    return {"required": True, "description": what, "content": {media: {"schema": {"type": "string"}}}}


UPLOAD_FORM = {
    "required": True,
    "content": {
        "multipart/form-data": {"schema": _obj(("carrier", "kind", "period", "direction", "file"),
                                               carrier=S, kind={"enum": ["cdr", "sdr"]},
                                               period={"enum": ["daily", "monthly"]},
                                               direction={"enum": ["outbound", "inbound"]}, name=S,
                                               file={"type": "string", "contentMediaType": "application/octet-stream"}),
                                "encoding": {"file": {"contentType": "application/octet-stream"}}},
        "application/octet-stream": {"schema": {"type": "string", "contentMediaType": "application/octet-stream"}},
    },
    "description": "a multipart form as a browser sends it, or the raw bytes with carrier, kind, period, direction "
                   "and name as query parameters",
}

FILE_FILTERS = {"carrier": "only this carrier's files", "kind": "cdr or sdr", "status": "a file status (or the "
                "operator's words: potential-duplicate)", "period": "daily or monthly",
                "direction": "outbound or inbound", "channel": "upload, collector or mailgate",
                "month": "billing period YYYY-MM"}

OPERATIONS: dict[tuple[str, str], Operation] = {
    ("GET", "/health"): Operation("Whether the admin API is up", (200, "up", _ref("Health"))),
    ("GET", "/openapi.json"): Operation("This document", (200, "the OpenAPI 3.1 document", _ref("Object"))),
    # files
    ("POST", "/files"): Operation("Upload a carrier file", (202, "received and announced", _ref("FileReceived")),
                                  query={"carrier": "raw body: the carrier", "kind": "raw body: cdr or sdr",
                                         "period": "raw body: daily or monthly",
                                         "direction": "raw body: outbound or inbound",
                                         "name": "raw body: the file's name"},
                                  body=UPLOAD_FORM, errors=(400, 422)),
    ("GET", "/files"): Operation("Files received or held", (200, "the files", _array("File")), query=FILE_FILTERS,
                                 errors=(400, 422)),
    ("GET", "/files/{file_id}"): Operation("A file with its rejections, fees and potential duplicates",
                                           (200, "the file", _ref("File")), errors=(404,)),
    ("POST", "/files/{file_id}/{command}"): Operation(
        "A command for a file: release, discard, retry, reverse, bill-overlaps or skip-overlaps",
        (202, "requested", _ref("Command")), body=_json_body("Reason", required=False), errors=(404, 409, 422)),
    # dead letters
    ("GET", "/dead-letters"): Operation("Dead letters, oldest first", (200, "the dead letters", _array("DeadLetter")),
                                        query={"service": "only this service's"}),
    ("GET", "/dead-letters/{letter_id}"): Operation("A dead letter with its original payload",
                                                    (200, "the dead letter", _ref("DeadLetter")), errors=(404,)),
    ("POST", "/dead-letters/{letter_id}/replay"): Operation(
        "Send a dead letter's message to its topic again", (202, "replayed", _ref("Object")),
        body=_json_body("Reason", required=False), errors=(404, 409)),
    # billing
    ("POST", "/billing-runs"): Operation("Close a billing run by hand", (202, "closed", _ref("BillingRun")),
                                         body=_json_body("BillingRunRequest"), errors=(404, 422)),
    ("GET", "/charges"): Operation("Charges defined in cdrflow", (200, "the charges", _array("Charge")),
                                   query={"customer": "only this customer's"}, errors=(404,)),
    ("GET", "/charges/{charge_id}"): Operation("A charge", (200, "the charge", _ref("Charge")), errors=(404,)),
    ("GET", "/customers/{code}/charges"): Operation("A customer's charges", (200, "the charges", _array("Charge")),
                                                    errors=(404,)),
    ("POST", "/customers/{code}/charges"): Operation("Add a charge to a customer", (201, "added", _ref("Charge")),
                                                     body=_json_body("ChargeRequest"), errors=(404, 422)),
    ("POST", "/charges/{charge_id}/end"): Operation("End a recurring charge", (200, "ended", _ref("Charge")),
                                                    body=_json_body("ChargeEnd"), errors=(404, 422)),
    # invoices
    ("GET", "/invoices"): Operation("Issued invoices, oldest first", (200, "the invoices", _array("Invoice")),
                                    query={"customer": "only this customer's", "status": "issued or credited"}),
    ("GET", "/invoices/{number}"): Operation("An invoice: lines, net, VAT, total, status, credit note",
                                             (200, "the invoice", _ref("Invoice")), errors=(404,)),
    ("GET", "/invoices/{number}/pdf"): Operation("The invoice's PDF", (200, "the PDF", {"type": "string"}),
                                                 ok_media="application/pdf", errors=(404,)),
    ("GET", "/invoices/{number}/calls.csv"): Operation("The CSV of the invoice's calls",
                                                       (200, "the CSV", {"type": "string"}),
                                                       ok_media="text/csv", errors=(404, 409)),
    ("POST", "/invoices/{number}/credit"): Operation("Void an invoice with a credit note",
                                                     (202, "requested", _ref("Command")),
                                                     body=_json_body("Reason"), errors=(404, 409, 422)),
    ("GET", "/invoices/{number}/deliveries"): Operation("Where the invoice was mailed",
                                                        (200, "the deliveries", _array("Delivery")), errors=(404,)),
    ("POST", "/invoices/{number}/send"): Operation("Mail the invoice again", (202, "queued", _ref("Delivery")),
                                                   body=_json_body("SendRequest", required=False),
                                                   errors=(404, 422)),
    ("GET", "/deliveries"): Operation("Deliveries of every document", (200, "the deliveries", _array("Delivery")),
                                      query={"status": "queued, sending, sent or failed"}),
    # calls
    ("GET", "/customers/{code}/calls"): Operation(
        "A customer's calls, the unbilled total first", (200, "the calls", _ref("CustomerCalls")),
        query={"from": "first day YYYY-MM-DD", "to": "last day YYYY-MM-DD (inclusive)",
               "unbilled": "true: only calls not billed yet", "limit": "at most this many (1 to 10000)",
               "offset": "skip this many"}, errors=(400, 404)),
    ("GET", "/customers/{code}/unbilled"): Operation("What a customer's next invoice holds so far",
                                                     (200, "the unbilled calls and charges", _ref("Object")),
                                                     errors=(404,)),
    # reference data
    ("GET", "/customers"): Operation("Customers with their CLIs", (200, "the customers", _array("Customer"))),
    ("GET", "/customers/{code}"): Operation("A customer", (200, "the customer", _ref("Customer")), errors=(404,)),
    ("POST", "/customers/load"): Operation(
        "Load a customers CSV (all or nothing)", (200, "loaded", _ref("CustomersLoaded")),
        query={"name": "the file's name (for the change log)"},
        body=_text_body("text/csv", "customer,name,tariff,cli[,kind,carrier,effective_from,effective_to,"
                                    "billing_email]"), errors=(422,)),
    ("PUT", "/customers/{code}"): Operation("Add or change a customer", (200, "saved", _ref("Customer")),
                                            body=_json_body("CustomerRequest"), errors=(422,)),
    ("POST", "/customers/{code}/clis"): Operation("Add a CLI to a customer", (201, "added", _ref("CliAdded")),
                                                  body=_json_body("CliRequest"), errors=(404, 422)),
    ("GET", "/clis"): Operation("CLIs of customers", (200, "the CLIs", _array("Cli")),
                                query={"customer": "only this customer's"}, errors=(404,)),
    ("GET", "/clis/{value}"): Operation("A CLI and whose it is", (200, "the CLI", _ref("CliShown")), errors=(404,)),
    ("GET", "/tariffs"): Operation("Tariffs", (200, "the tariffs", _array("Tariff"))),
    ("GET", "/tariffs/{code}"): Operation("A tariff", (200, "the tariff", _ref("TariffShown")), errors=(404,)),
    ("PUT", "/tariffs/{code}"): Operation("Add or change a tariff", (200, "saved", _ref("Tariff")),
                                          body=_json_body("TariffRequest"), errors=(422,)),
    ("GET", "/schedules"): Operation("Peak schedules", (200, "the schedules", _array("Schedule"))),
    ("GET", "/schedules/{name}"): Operation("A peak schedule", (200, "the schedule", _ref("Schedule")),
                                            errors=(404,)),
    ("GET", "/rate-sheets"): Operation("Rate sheet versions", (200, "the versions", _array("RateSheet")),
                                       query={"kind": "retail or wholesale", "owner": "tariff or carrier",
                                              "direction": "outbound or inbound"}),
    ("GET", "/rate-sheets/{sheet_id}"): Operation("A rate sheet version with its rates",
                                                  (200, "the sheet", _ref("RateSheetShown")),
                                                  query={"limit": "at most this many rates (default 1000)"},
                                                  errors=(404, 422)),
    ("POST", "/rate-sheets"): Operation(
        "Load a rate sheet (all or nothing)", (201, "the new active version", _ref("RateSheetLoaded")),
        query={"kind": "retail or wholesale (required)", "owner": "the tariff or carrier (required)",
               "direction": "outbound or inbound", "carrier": "retail: for this carrier's calls only",
               "name": "the file's name"},
        body=_text_body("text/csv", "the rate sheet CSV"), errors=(422,)),
    ("GET", "/recon"): Operation("Calls and fixed fees in reconciliation, grouped",
                                 (200, "the groups", _ref("Object"))),
    ("GET", "/carriers"): Operation("Carriers", (200, "the carriers", _array("Carrier"))),
    ("GET", "/carriers/{code}"): Operation("A carrier", (200, "the carrier", _ref("CarrierShown")), errors=(404,)),
    ("PUT", "/carriers/{code}/rules"): Operation("Set a carrier's processing rules",
                                                 (200, "the rules", _ref("Object")),
                                                 body=_json_body("CarrierRules"), errors=(422,)),
    ("PUT", "/carriers/{carrier}/formats/{kind}"): Operation(
        "Which format reads a carrier's CDR or SDR files", (200, "the setting", _ref("Object")),
        body=_json_body("CarrierFormat"), errors=(422,)),
    ("GET", "/sources"): Operation("Collection sources", (200, "the sources", _array("Source")),
                                   query={"carrier": "only this carrier's"}),
    ("GET", "/sources/{name}"): Operation("A collection source", (200, "the source", _ref("Source")), errors=(404,)),
    # fixed fees and formats
    ("POST", "/fee-sheets"): Operation("Load a fee sheet", (201, "the new version", _ref("FeeSheet")),
                                       query={"tariff": "the tariff (required)", "name": "the file's name"},
                                       body=_text_body("text/csv", "the fee sheet CSV"), errors=(422,)),
    ("GET", "/fee-sheets"): Operation("Fee sheet versions", (200, "the versions", _array("FeeSheet")),
                                      query={"tariff": "only this tariff's"}),
    ("GET", "/fee-sheets/{tariff}"): Operation("A fee sheet row by row", (200, "the sheet", _ref("FeeSheet")),
                                               query={"version": "this version (default: the newest)"},
                                               errors=(404,)),
    ("GET", "/formats"): Operation("Built-in and custom file formats", (200, "the formats", _array("Format"))),
    ("POST", "/formats"): Operation("Save a custom format", (201, "saved", _ref("Object")),
                                    body=_text_body("text/plain", "the TOML definition (text/plain or application/toml)"), errors=(422,)),
    ("GET", "/formats/{name}"): Operation("A format with its definition", (200, "the format", _ref("Object")),
                                          errors=(404,)),
    ("DELETE", "/formats/{name}"): Operation("Remove a custom format no carrier uses", (204, "removed", None),
                                             errors=(404, 422)),
    # audit
    ("GET", "/audit"): Operation("The audit trail: who did what, when and why",
                                 (200, "the entries", _array("AuditEntry")),
                                 query={"since": "a day YYYY-MM-DD or an ISO time", "limit": "at most this many"},
                                 errors=(400,)),
}


def api_operations(app: Starlette) -> list[tuple[str, str, Route]]:
    """Every (method, path, route) of the JSON API, in the app's order (HEAD, Starlette's
    companion of GET, is left out)."""
    found = []
    for route in app.routes:
        if isinstance(route, Route) and route.include_in_schema:
            for method in sorted(route.methods or {"GET"}):
                if method != "HEAD":
                    found.append((method, route.path, route))
    return found


def undocumented(app: Starlette) -> list[str]:
    """Routes of the JSON API with no entry in ``OPERATIONS``."""
    return [f"{m} {p}" for m, p, _ in api_operations(app) if (m, p) not in OPERATIONS]


def stale(app: Starlette) -> list[str]:
    """Entries of ``OPERATIONS`` for routes that don't exist (renamed or removed)."""
    live = {(m, p) for m, p, _ in api_operations(app)}
    return [f"{m} {p}" for m, p in OPERATIONS if (m, p) not in live]


SUMMARY_MAX = 100
_LEADING_ROUTE = re.compile(r"^``[A-Z]+ [^`]+``(?::\s*)?")


def _summary(route: Route, fallback: str) -> tuple[str, str | None]:
    """The endpoint docstring's first sentence (its own ``METHOD /path``: prefix dropped) and the
    whole docstring as the description; the table's summary when there is no docstring."""
    doc = " ".join((route.endpoint.__doc__ or "").split())
    text = _LEADING_ROUTE.sub("", doc).strip()
    if not text or text.startswith(("Query:", "Body:", "``")):
        return fallback, doc or None
    first = re.split(r"(?<=\.)\s", text, maxsplit=1)[0].rstrip(".")
    if len(first) > SUMMARY_MAX:  # a docstring that opens with the details: the table says it shorter
        return fallback, doc
    return first[:1].upper() + first[1:], doc


def _operation_id(method: str, path: str) -> str:
    words = re.sub(r"[{}]", "", path).replace(".", "-").strip("/").replace("/", "-") or "root"
    return f"{method.lower()}-{words}"


def _operation(method: str, path: str, route: Route) -> dict[str, Any]:
    spec = OPERATIONS.get((method, path)) or Operation("undocumented: add it to OPERATIONS in services/admin/openapi.py")
    summary, description = _summary(route, spec.summary)
    parameters: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
        for name in route.param_convertors
    ]
    parameters += [{"name": name, "in": "query", "required": False, "description": what, "schema": S}
                   for name, what in spec.query.items()]
    if method in ("POST", "PUT") and (method, path) not in PUBLIC:
        parameters.append({"name": "x-operator", "in": "header", "required": False, "schema": S,
                           "description": "who acts, recorded with the change (default: the token's user)"})
    status, what, schema = spec.ok
    ok: dict[str, Any] = {"description": what}
    if schema is not None:
        ok["content"] = {spec.ok_media: {"schema": schema}}
    error = {"content": {JSON: {"schema": _ref("Error")}}}
    responses: dict[str, Any] = {str(status): ok}
    for code in sorted({*spec.errors, *(() if (method, path) in PUBLIC else (401, 403))}):
        responses[str(code)] = {"description": _ERRORS.get(code, "refused"), **error}
    responses["4XX"] = {"description": "refused: the reply says why", **error}
    op: dict[str, Any] = {"operationId": _operation_id(method, path), "summary": summary,
                          "tags": [path.strip("/").split("/")[0]], "parameters": parameters, "responses": responses}
    if description:
        op["description"] = description
    if spec.body is not None:
        op["requestBody"] = spec.body
    if (method, path) in PUBLIC:
        op["security"] = []
    return op


_ERRORS = {400: "a query parameter is wrong", 401: "no user: give a bearer token", 403: "not allowed for this user",
           404: "no such object", 409: "refused in the object's present state", 422: "the input is wrong"}


def openapi_document(app: Starlette, version: str = "0") -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``app``'s JSON API."""
    paths: dict[str, dict[str, Any]] = {}
    for method, path, route in api_operations(app):
        paths.setdefault(path, {})[method.lower()] = _operation(method, path, route)
    return {
        "openapi": "3.1.0",
        "info": {"title": "cdrflow admin API", "version": version,
                 "description": "The operator API of cdrflow, the telecom billing pipeline. Every request but "
                                "/health and /openapi.json needs a user: an API token as 'Authorization: Bearer "
                                "<token>' (see docs/api.md). Errors are {\"error\": \"...\"} with a 4xx status; "
                                "money is decimal text, never a float."},
        "security": [{"bearerAuth": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer",
                                               "description": "an API token (<data_dir>/admin.token for the "
                                                              "built-in local-admin, or one made for a user)"}},
            "schemas": SCHEMAS,
        },
    }


def openapi_route() -> Route:
    async def openapi(request: Request) -> Response:
        """The OpenAPI 3.1 document of this API."""
        from importlib.metadata import PackageNotFoundError, version

        try:
            release = version("cdrflow")
        except PackageNotFoundError:
            release = "0"
        return JSONResponse(openapi_document(request.app, release))

    return Route("/openapi.json", openapi, methods=["GET"])
