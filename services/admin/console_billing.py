"""The console's pages for reference data, reconciliation and billing: carriers, customers,
tariffs, rate sheets, peak schedules, fixed-fee sheets, reconciliation, billing runs, invoices.

Pages read through the same query functions as the JSON API and the CLI (``services.rater.recon``,
``services.invoicer.unbilled``, ``invoices_api.invoice_view``, ...). Every form that changes
state goes through the function the API route calls, so the same rules apply and the same event
or change-log entry follows:

=================================  ==============================================================
Console form                       Same path as
=================================  ==============================================================
Assign (reconciliation), Add CLI   ``POST /customers/{code}/clis``: ``add_cli_with_warnings``
Save rules (carrier)               ``PUT /carriers/{code}/rules``
Upload (rate / fee sheet)          ``POST /rate-sheets``, ``POST /fee-sheets``
Upload (peak schedule)             ``cdrflow schedules add``: ``save_schedule``
Close run                          ``POST /billing-runs``: ``billing_api.close_billing_run``
Resend                             ``POST /invoices/{n}/send``: ``delivery_api.resend_document``
Credit                             ``POST /invoices/{n}/credit``: ``invoices_api.credit_command``
=================================  ==============================================================

Each POST checks, in this order, the CSRF token and the role (``console.checked_form``), then
does the command and writes its audit row (the action and target the API's route writes) in the
same database transaction, then redirects
(303) with what happened as a flash message. A reference change is logged (``record_change``),
which is how the rater knows to re-rate the calls and fees waiting in reconciliation.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from cdrflow.bus import Topic
from cdrflow.db.models import (
    Carrier,
    Customer,
    Invoice,
    RateSheetVersion,
    Tariff,
)
from cdrflow.errors import InputError
from cdrflow.log import get_logger
from cdrflow.runtime import Runtime
from services.admin import auth
from services.admin.billing_api import close_billing_run
from services.admin.console import back, checked_form, flash, render
from services.admin.console_views import (
    CALLS_PER_PAGE,
    carrier_page,
    carrier_rows,
    customer_page,
    customer_rows,
    deck_rows,
    fee_sheet_rows,
    invoice_page,
    invoice_row,
    rate_sheet_rows,
    recon_page,
    report_lines,
    run_rows,
    schedule_rows,
    tariff_rows,
)
from services.admin.delivery_api import resend_document
from services.admin.fees_api import MAX_FEE_SHEET_BYTES
from services.admin.files_api import Publish
from services.admin.invoices_api import credit_command
from services.admin.reference_api import MAX_SHEET_BYTES
from services.dedupe.rules import set_hold_same_name
from services.invoicer.credit import CreditRefusedError
from services.invoicer.unbilled import BadDateError, DayRange, parse_day_range
from services.rater.clis import KINDS as CLI_KINDS
from services.rater.feesheet import FeeSheetError, read_fee_sheet
from services.rater.fees import fee_row_view, load_fee_sheet, set_sdr_for_billing
from services.rater.ratesheet import RateSheetError, read_rate_sheet
from services.rater.reference import DIRECTIONS, add_cli_with_warnings, load_rate_sheet, save_schedule
from services.rater.schedule import ScheduleError

log = get_logger(__name__)

MAX_SCHEDULE_BYTES = 100_000
"""A peak schedule is a handful of rules; anything bigger is not one."""


# --- forms ------------------------------------------------------------------------------------------


async def upload_form(request: Request, limit: int) -> tuple[dict[str, str], bytes, str, auth.User]:
    """A multipart upload form (one file part named ``file``) after its CSRF token and the user's
    role are checked: its text fields, the file's bytes and name."""
    async with request.form(max_files=1, max_fields=20) as form:
        auth.verify_csrf(request, form.get("csrf_token") if isinstance(form.get("csrf_token"), str) else None)
        user = auth.require_role(request, "operator", "load reference data")
        fields = {k: v.strip() for k, v in form.items() if isinstance(v, str)}
        part = form.get("file")
        if not isinstance(part, UploadFile) or not part.filename:
            raise InputError("choose the file to upload")
        if part.size is not None and part.size > limit:
            raise InputError(f"{part.filename} is {part.size} bytes: over the limit of {limit}")
        content = await part.read(limit + 1)
        if len(content) > limit:
            raise InputError(f"{part.filename} is over the limit of {limit} bytes")
        return fields, content, part.filename, user


def _offset(text: str | None) -> int:
    return int(text) if text and text.isdigit() else 0


def console_billing_routes(runtime: Runtime, publish: Publish) -> list[BaseRoute]:
    database, settings = runtime.database, runtime.settings
    zone = settings.zone

    def not_found(request: Request, title: str, message: str) -> Response:
        return render(request, "error.html", status_code=404, title=title, message=message)

    # --- carriers -----------------------------------------------------------------------------

    def carriers(request: Request) -> Response:
        with database.transaction() as session:
            return render(request, "billing/carriers.html", nav="carriers", carriers=carrier_rows(session))

    def carrier(request: Request) -> Response:
        code = request.path_params["code"]
        with database.transaction() as session:
            row = session.get(Carrier, code)
            if row is None:
                return not_found(request, "No such carrier", f"no carrier {code!r}: see the list of carriers")
            return render(request, "billing/carrier.html", nav="carriers",
                          **carrier_page(session, row, settings.mail_domain))

    async def carrier_rules(request: Request) -> Response:
        code = request.path_params["code"]
        form, user = await checked_form(request)
        hold, sdr = form.get("hold_same_name") == "on", form.get("sdr", "billing")
        if sdr not in ("billing", "information"):
            flash(request, f"SDR files are for billing or for information, not {sdr!r}", "error")
            return back(f"/console/carriers/{code}")

        def save() -> str:
            with database.transaction() as session:
                set_hold_same_name(session, code, hold)
                set_sdr_for_billing(session, code, sdr == "billing")
                auth.audit(session, user, "carrier.rules", code, detail={"hold_same_name": hold, "sdr": sdr})
            return (f"Carrier {code}: {'hold' if hold else 'do not hold'} files that reuse a file name; "
                    f"SDR files are for {sdr}")

        try:
            flash(request, await run_in_threadpool(save))
        except InputError as exc:
            flash(request, f"Rules not saved: {exc}", "error")
        return back(f"/console/carriers/{code}")

    # --- customers ----------------------------------------------------------------------------

    def customers(request: Request) -> Response:
        with database.transaction() as session:
            return render(request, "billing/customers.html", nav="customers", customers=customer_rows(session, zone))

    def customer(request: Request) -> Response:
        code, q = request.path_params["code"], request.query_params
        shown = {"from": q.get("from", "").strip(), "to": q.get("to", "").strip(),
                 "unbilled": q.get("unbilled") == "on"}
        error = None
        try:
            days = parse_day_range(shown["from"], shown["to"])
        except BadDateError as exc:
            days, error = DayRange(), str(exc)
        with database.transaction() as session:
            if session.get(Customer, code) is None:
                return not_found(request, "No such customer", f"no customer {code!r}: see the list of customers")
            view = customer_page(session, code, zone, days, shown["unbilled"], _offset(q.get("offset")))
            return render(request, "billing/customer.html", nav="customers", query=shown, error=error,
                          per_page=CALLS_PER_PAGE, cli_kinds=CLI_KINDS, status_code=422 if error else 200, **view)

    async def add_customer_cli(request: Request) -> Response:
        code = request.path_params["code"]
        form, user = await checked_form(request)
        flash(request, *await run_in_threadpool(assign_cli, user, code, form.get("cli", ""),
                                                form.get("kind") or None, form.get("carrier") or None))
        return back(f"/console/customers/{code}")

    def assign_cli(user: auth.User, code: str, cli: str, kind: str | None = None,
                   carrier: str | None = None) -> tuple[str, str]:
        """Add ``cli`` to customer ``code`` as ``POST /customers/{code}/clis`` does; the change log
        entry it writes makes the rater re-rate the calls waiting for it. Returns the flash."""
        if not cli.strip():
            return "Give the CLI to add: +44…, a prefix +44…*, a range FROM-TO, or an account/trunk code", "error"
        try:
            with database.transaction() as session:
                added = add_cli_with_warnings(session, code, cli, kind=kind, carrier=carrier)
                row = added.row
                auth.audit(session, user, "cli.add", f"{code} {row.value}",
                           detail={"kind": row.kind, "carrier": row.carrier})
        except InputError as exc:
            return f"CLI {cli} not added: {exc}", "error"
        warnings = "".join(f" Note: {w}" for w in added.warnings)
        log.info("console_cli_added", customer=code, cli=row.value, kind=row.kind, operator=user.name)
        return (f"CLI {row.value} ({row.kind}) is now customer {code}'s: its calls waiting in reconciliation "
                f"are re-rated by the rater.{warnings}"), "info"

    # --- tariffs, rate sheets, peak schedules, fee sheets -----------------------------------------------

    def tariffs(request: Request) -> Response:
        with database.transaction() as session:
            return render(request, "billing/tariffs.html", nav="tariffs", tariffs=tariff_rows(session))

    def tariff(request: Request) -> Response:
        code = request.path_params["code"]
        with database.transaction() as session:
            row = session.get(Tariff, code)
            if row is None:
                return not_found(request, "No such tariff", f"no tariff {code!r}: see the list of tariffs")
            on_it = list(session.execute(select(Customer.code, Customer.name).where(Customer.tariff == code)
                                         .order_by(Customer.code)).all())
            return render(request, "billing/tariff.html", nav="tariffs", tariff=row, customers=on_it,
                          rate_sheets=rate_sheet_rows(session, "retail", code),
                          fee_sheets=fee_sheet_rows(session, code),
                          directions=DIRECTIONS)

    def sheet_page(request: Request, *, status_code: int = 200, report: dict[str, Any] | None = None,
                   form: dict[str, str] | None = None) -> Response:
        with database.transaction() as session:
            return render(request, "billing/rate_sheets.html", nav="tariffs", status_code=status_code,
                          sheets=rate_sheet_rows(session), report=report, form=form or {}, directions=DIRECTIONS,
                          tariffs=list(session.scalars(select(Tariff.code).order_by(Tariff.code))),
                          carriers=list(session.scalars(select(Carrier.code).order_by(Carrier.code))))

    def rate_sheets(request: Request) -> Response:
        return sheet_page(request)

    async def upload_rate_sheet(request: Request) -> Response:
        try:
            form, content, name, user = await upload_form(request, MAX_SHEET_BYTES)
        except InputError as exc:
            return sheet_page(request, status_code=422, report={"name": "", "problems": [("", str(exc))]})
        kind, owner = form.get("kind", ""), form.get("owner", "")
        direction, carrier_code = form.get("direction", "outbound"), form.get("carrier", "")

        def load() -> tuple[int, str]:
            with database.transaction() as session:
                v = load_rate_sheet(session, runtime.store, content, source_name=name, kind=kind, owner=owner,
                                    direction=direction, carrier=carrier_code)
                session.flush()
                auth.audit(session, user, "rate-sheet.load", f"{v.kind} {v.owner} v{v.version}",
                           detail={"direction": v.direction, "carrier": v.carrier, "rows": v.rows, "name": name})
                return v.id, f"Rate sheet {name} loaded as version {v.version} of {kind} {owner} {direction}" \
                             f"{' for carrier ' + carrier_code if carrier_code else ''}: {v.rows} rates"

        if not owner:
            return sheet_page(request, status_code=422, form=form, report={
                "name": name, "problems": [("", "say whose sheet it is: the tariff (retail) or carrier (wholesale)")]})
        try:
            sheet_id, done = await run_in_threadpool(load)
        except RateSheetError as exc:
            return sheet_page(request, status_code=422, form=form,
                              report={"name": name, "problems": report_lines(exc.problems)})
        except InputError as exc:
            return sheet_page(request, status_code=422, form=form,
                              report={"name": name, "problems": [("", str(exc))]})
        flash(request, done)
        return back(f"/console/rate-sheets/{sheet_id}")

    def rate_sheet(request: Request) -> Response:
        sheet_id = request.path_params["sheet_id"]
        with database.transaction() as session:
            v = session.get(RateSheetVersion, sheet_id)
            if v is None:
                return not_found(request, "No such rate sheet", f"no rate sheet version {sheet_id}")
            versions = rate_sheet_rows(session, v.kind, v.owner)
            versions = [r for r in versions
                        if (r["version"].direction, r["version"].carrier) == (v.direction, v.carrier)]
            deck = read_rate_sheet(runtime.store.read_bytes(v.fingerprint), v.source_name).deck
            return render(request, "billing/rate_sheet.html", nav="tariffs", sheet=v, versions=versions,
                          rows=deck_rows(deck), total_rows=deck.height)

    def schedule_page(request: Request, *, status_code: int = 200, report: dict[str, Any] | None = None,
                      form: dict[str, str] | None = None) -> Response:
        with database.transaction() as session:
            return render(request, "billing/schedules.html", nav="tariffs", status_code=status_code,
                          schedules=schedule_rows(session), report=report, form=form or {})

    def schedules(request: Request) -> Response:
        return schedule_page(request)

    async def upload_schedule(request: Request) -> Response:
        try:
            form, content, name, user = await upload_form(request, MAX_SCHEDULE_BYTES)
            schedule_name = form.get("name", "")
            if not schedule_name:
                raise InputError("give the schedule a name (tariffs refer to it by name)")
            text = content.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            return schedule_page(request, status_code=422, report={"name": "", "problems": [
                ("", f"a schedule is UTF-8 CSV text ({exc})")]})
        except InputError as exc:
            return schedule_page(request, status_code=422, report={"name": "", "problems": [("", str(exc))]})
        weekend, region = form.get("holidays_as_weekend") == "on", form.get("region") or "GB-ENG"

        def save() -> None:
            with database.transaction() as session:
                save_schedule(session, schedule_name, text, holidays_as_weekend=weekend, holiday_region=region)
                auth.audit(session, user, "schedule.load", schedule_name, detail={"name": name})

        try:
            await run_in_threadpool(save)
        except ScheduleError as exc:
            return schedule_page(request, status_code=422, form=form,
                                 report={"name": name, "problems": report_lines(exc.problems)})
        except InputError as exc:
            return schedule_page(request, status_code=422, form=form,
                                 report={"name": name, "problems": [("", str(exc))]})
        flash(request, f"Peak schedule {schedule_name} loaded from {name}")
        return back("/console/schedules")

    def fee_page(request: Request, *, status_code: int = 200, report: dict[str, Any] | None = None,
                 form: dict[str, str] | None = None) -> Response:
        with database.transaction() as session:
            return render(request, "billing/fee_sheets.html", nav="tariffs", status_code=status_code,
                          sheets=fee_sheet_rows(session), report=report, form=form or {},
                          tariffs=list(session.scalars(select(Tariff.code).order_by(Tariff.code))))

    def fee_sheets(request: Request) -> Response:
        return fee_page(request)

    async def upload_fee_sheet(request: Request) -> Response:
        try:
            form, content, name, user = await upload_form(request, MAX_FEE_SHEET_BYTES)
        except InputError as exc:
            return fee_page(request, status_code=422, report={"name": "", "problems": [("", str(exc))]})
        tariff_code = form.get("tariff", "")

        def load() -> str:
            with database.transaction() as session:
                if session.get(Tariff, tariff_code) is None:
                    raise InputError(f"no tariff {tariff_code!r}: add it first with 'cdrflow tariffs add'")
                v = load_fee_sheet(session, runtime.store, tariff_code, content, source_name=name)
                auth.audit(session, user, "fee-sheet.load", f"{tariff_code} v{v.version}",
                           detail={"rows": v.rows, "name": name})
                return f"Fee sheet {name} loaded as version {v.version} for tariff {tariff_code}: {v.rows} rows"

        try:
            done = await run_in_threadpool(load)
        except FeeSheetError as exc:
            return fee_page(request, status_code=422, form=form,
                            report={"name": name, "problems": report_lines(exc.problems)})
        except InputError as exc:
            return fee_page(request, status_code=422, form=form, report={"name": name, "problems": [("", str(exc))]})
        flash(request, done)
        return back(f"/console/fee-sheets/{tariff_code}")

    def fee_sheet(request: Request) -> Response:
        tariff_code, number = request.path_params["tariff"], request.query_params.get("version", "").strip()
        with database.transaction() as session:
            rows = fee_sheet_rows(session, tariff_code)
            chosen = [r["version"] for r in rows if not number or str(r["version"].version) == number]
            if not chosen:
                return not_found(request, "No such fee sheet", f"tariff {tariff_code!r} has no fee sheet"
                                 + (f" version {number}" if number else ""))
            v = chosen[0]
            sheet = read_fee_sheet(runtime.store.read_bytes(v.fingerprint), v.name)
            return render(request, "billing/fee_sheet.html", nav="tariffs", sheet=v, versions=rows,
                          rows=[fee_row_view(r) for r in sheet.rows])

    # --- reconciliation ---------------------------------------------------------------------------

    def recon(request: Request) -> Response:
        with database.transaction() as session:
            return render(request, "billing/recon.html", nav="recon", **recon_page(session))

    async def recon_assign(request: Request) -> Response:
        form, user = await checked_form(request)
        code = form.get("customer", "")
        if not code:
            flash(request, f"Choose the customer to assign CLI {form.get('cli', '')} to", "error")
        else:
            flash(request, *await run_in_threadpool(assign_cli, user, code, form.get("cli", "")))
        return back("/console/recon")

    # --- billing runs and invoices ----------------------------------------------------------------

    def billing(request: Request) -> Response:
        shown = request.query_params.get("customer", "").strip()
        with database.transaction() as session:
            return render(request, "billing/billing.html", nav="billing", runs=run_rows(session, shown or None),
                          customer=shown, customers=list(session.execute(
                              select(Customer.code, Customer.name, Customer.billing_schedule).order_by(Customer.code))))

    async def close(request: Request) -> Response:
        form, user = await checked_form(request)
        code, label, reason = form.get("customer", ""), form.get("period", "").strip(), form.get("reason", "").strip()
        force = form.get("force") == "on"
        if not code:
            flash(request, "Choose the customer whose billing run to close", "error")
            return back("/console/billing")

        def run() -> str:
            with database.transaction() as session:
                closed = close_billing_run(session, runtime, customer=code, period=label or None,
                                           operator=user.name, reason=reason or None, force=force)
                if closed.exists:
                    made = f"invoice {closed.invoice_number}" if closed.invoice_number else "no invoice yet"
                    return (f"{code} {closed.period.label} was closed already by {closed.closed_by} ({made}): "
                            "nothing new made")
                auth.audit(session, user, "billing-run.close", f"{code} {closed.period.label}", reason or None,
                           detail={"run_id": closed.run_id, "force": force})
            log.info("console_run_closed", customer=code, period=closed.period.label, operator=user.name)
            return f"Billing run closed: {code} {closed.period.label}; the invoicer issues its invoice"

        try:
            flash(request, await run_in_threadpool(run))
        except InputError as exc:
            flash(request, f"Billing run not closed: {exc}", "error")
        return back("/console/billing")

    def invoices(request: Request) -> Response:
        q = {k: request.query_params.get(k, "").strip() for k in ("customer", "status")}
        stmt = select(Invoice).where(Invoice.number.is_not(None)).order_by(Invoice.id.desc())
        if q["customer"]:
            stmt = stmt.where(Invoice.customer == q["customer"])
        if q["status"]:
            stmt = stmt.where(Invoice.status == q["status"])
        with database.transaction() as session:
            return render(request, "billing/invoices.html", nav="invoices", query=q,
                          invoices=[invoice_row(i) for i in session.scalars(stmt)],
                          customers=list(session.scalars(select(Customer.code).order_by(Customer.code))))

    def invoice(request: Request) -> Response:
        number = request.path_params["number"]
        with database.transaction() as session:
            row = session.scalar(select(Invoice).where(Invoice.number == number))
            if row is None:
                return not_found(request, "No such invoice", f"no invoice {number!r}: see the list of invoices")
            return render(request, "billing/invoice.html", nav="invoices", **invoice_page(session, row))

    async def resend(request: Request) -> Response:
        number = request.path_params["number"]
        form, user = await checked_form(request)

        def send() -> str:
            with database.transaction() as session:
                d = resend_document(session, number, form.get("to", ""), user.name, settings.mail_from)
                auth.audit(session, user, "invoice.send", number, detail={"to": d.to_address})
                return f"Invoice {number} queued to be sent again to {d.to_address} (Message-ID {d.message_id})"

        try:
            flash(request, await run_in_threadpool(send))
        except (InputError, HTTPException) as exc:
            flash(request, f"Not sent: {exc.detail if isinstance(exc, HTTPException) else exc}", "error")
        return back(f"/console/invoices/{number}")

    async def credit(request: Request) -> Response:
        number = request.path_params["number"]
        form, user = await checked_form(request)
        reason = form.get("reason", "").strip()
        if not reason:
            flash(request, f"Crediting invoice {number} needs a reason: it is recorded with who and when", "error")
            return back(f"/console/invoices/{number}")

        def request_credit() -> str:
            with database.transaction() as session:
                event = credit_command(session, number, operator=user.name, reason=reason, source=runtime.source)
                auth.audit(session, user, "invoice.credit", number, reason, detail={"command_id": event.id})
            announced = publish(Topic.ADMIN_COMMANDS, number, event)
            queued = "" if announced else " (the broker is not reachable: it goes out when the broker is back)"
            return f"Credit requested: the invoicer issues a credit note for invoice {number}{queued}"

        try:
            flash(request, await run_in_threadpool(request_credit))
        except CreditRefusedError as exc:
            flash(request, f"Credit refused: {exc}", "error")
        return back(f"/console/invoices/{number}")

    pages = [
        ("/console/carriers", carriers, "GET"),
        ("/console/carriers/{code}", carrier, "GET"),
        ("/console/carriers/{code}/rules", carrier_rules, "POST"),
        ("/console/customers", customers, "GET"),
        ("/console/customers/{code}", customer, "GET"),
        ("/console/customers/{code}/clis", add_customer_cli, "POST"),
        ("/console/tariffs", tariffs, "GET"),
        ("/console/tariffs/{code}", tariff, "GET"),
        ("/console/rate-sheets", rate_sheets, "GET"),
        ("/console/rate-sheets", upload_rate_sheet, "POST"),
        ("/console/rate-sheets/{sheet_id:int}", rate_sheet, "GET"),
        ("/console/schedules", schedules, "GET"),
        ("/console/schedules", upload_schedule, "POST"),
        ("/console/fee-sheets", fee_sheets, "GET"),
        ("/console/fee-sheets", upload_fee_sheet, "POST"),
        ("/console/fee-sheets/{tariff}", fee_sheet, "GET"),
        ("/console/recon", recon, "GET"),
        ("/console/recon/assign", recon_assign, "POST"),
        ("/console/billing", billing, "GET"),
        ("/console/billing/close", close, "POST"),
        ("/console/invoices", invoices, "GET"),
        ("/console/invoices/{number}", invoice, "GET"),
        ("/console/invoices/{number}/send", resend, "POST"),
        ("/console/invoices/{number}/credit", credit, "POST"),
    ]
    return [Route(path, endpoint, methods=[method], include_in_schema=False) for path, endpoint, method in pages]
