"""Fixed fees over HTTP: fee sheets per tariff (load, list, show) and the carrier rules that say
whether a carrier's SDR files are billed. The same library calls as ``cdrflow fees`` and
``cdrflow carriers rules``; each change lands in the reference change log, so the rater matches
and prices again the fees waiting in reconciliation. A sheet with problems is refused whole
with every problem and its line (HTTP 422); the tariff's newest sheet stays in use."""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from cdrflow.errors import InputError
from cdrflow.runtime import Runtime
from services.admin.auth import audit_request
from services.dedupe.rules import set_hold_same_name
from services.rater.feesheet import FeeSheetError, read_fee_sheet
from services.rater.fees import fee_row_view, fee_sheet_versions, fee_sheet_view, load_fee_sheet, set_sdr_for_billing

MAX_FEE_SHEET_BYTES = 20_000_000
"""A fee sheet is validated whole in memory; a tariff's fixed fees are hundreds of rows, not millions."""
SDR_RULES = {"billing": True, "information": False}


def fee_routes(runtime: Runtime) -> list[Route]:
    database = runtime.database

    async def post_fee_sheet(request: Request) -> Response:
        """``POST /fee-sheets?tariff=T&name=N``; body: the CSV. 201 with the new version."""
        q = request.query_params
        if not q.get("tariff"):
            raise InputError("missing query parameter: tariff")
        content = await request.body()
        if len(content) > MAX_FEE_SHEET_BYTES:
            raise InputError(f"fee sheet of {len(content)} bytes is over the limit of {MAX_FEE_SHEET_BYTES}")

        def load() -> dict[str, Any]:
            with database.transaction() as session:
                view = fee_sheet_view(load_fee_sheet(session, runtime.store, q["tariff"], content,
                                                   source_name=q.get("name", "fees.csv")))
                audit_request(session, request, "fee-sheet.load", f"{q['tariff']} v{view.get('version')}", None,
                              {"name": q.get("name", "fees.csv")})
                return view

        try:
            return JSONResponse(await run_in_threadpool(load), status_code=201)
        except FeeSheetError as exc:
            return JSONResponse({"error": str(exc), "problems": exc.problems}, status_code=422)

    def list_fee_sheets(request: Request) -> Response:
        """``GET /fee-sheets[?tariff=T]``: every version, oldest first, ``active`` on the newest."""
        with database.transaction() as session:
            views = [fee_sheet_view(v) for v in fee_sheet_versions(session, request.query_params.get("tariff"))]
        newest = {v["tariff"]: v["version"] for v in views}
        return JSONResponse([v | {"active": newest[v["tariff"]] == v["version"]} for v in views])

    def show_fee_sheet(request: Request) -> Response:
        """``GET /fee-sheets/{tariff}[?version=N]``: the sheet row by row (default: the newest)."""
        tariff, number = request.path_params["tariff"], request.query_params.get("version")
        with database.transaction() as session:
            versions = [v for v in fee_sheet_versions(session, tariff) if number is None or str(v.version) == number]
            if not versions:
                return JSONResponse({"error": f"tariff {tariff!r} has no fee sheet"
                                              + (f" version {number}" if number else "")}, status_code=404)
            view = fee_sheet_view(versions[-1])
        sheet = read_fee_sheet(runtime.store.read_bytes(view["fingerprint"]), view["name"])
        return JSONResponse(view | {"sheet_rows": [fee_row_view(r) for r in sheet.rows]})

    async def put_carrier_rules(request: Request) -> Response:
        """``PUT /carriers/{code}/rules``: ``{"sdr": "billing"|"information", "hold_same_name": bool}``,
        either or both."""
        code = request.path_params["code"]
        try:
            body = await request.json()
        except ValueError as exc:
            raise InputError(f"the request body is not JSON: {exc}") from exc
        if not isinstance(body, dict) or not ({"sdr", "hold_same_name"} & set(body)):
            raise InputError('give "sdr" ("billing" or "information") and/or "hold_same_name" (true or false)')
        if "sdr" in body and (not isinstance(body["sdr"], str) or body["sdr"] not in SDR_RULES):
            raise InputError(f"sdr {body['sdr']!r} is not billing or information")
        if "hold_same_name" in body and not isinstance(body["hold_same_name"], bool):
            raise InputError(f"hold_same_name {body['hold_same_name']!r} is not true or false")

        def save() -> dict[str, Any]:
            with database.transaction() as session:
                if "hold_same_name" in body:
                    carrier = set_hold_same_name(session, code, body["hold_same_name"])
                if "sdr" in body:
                    carrier = set_sdr_for_billing(session, code, SDR_RULES[body["sdr"]])
                audit_request(session, request, "carrier.rules", code, None, dict(body))
                return {"carrier": code, "hold_same_name": carrier.hold_same_name,
                        "sdr": "billing" if carrier.sdr_for_billing else "information"}

        return JSONResponse(await run_in_threadpool(save))

    return [
        Route("/fee-sheets", post_fee_sheet, methods=["POST"]),
        Route("/fee-sheets", list_fee_sheets, methods=["GET"]),
        Route("/fee-sheets/{tariff}", show_fee_sheet, methods=["GET"]),
        Route("/carriers/{code}/rules", put_carrier_rules, methods=["PUT"]),
    ]
