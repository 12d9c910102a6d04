"""The CLI's client of the admin API: every operator command goes through the same HTTP API as the console.

It sends ``Authorization: Bearer <API token>``: the token in ``CDRFLOW_API_TOKEN`` if set, else the
one the admin service wrote to ``<data_dir>/admin.token`` for the built-in ``local-admin`` (read
at each request, so a client made before the service started, or across its restart, still works)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx

from cdrflow.errors import BadFileError, CdrflowError, InfrastructureError
from cdrflow.settings import Settings

TOKEN_ENV = "CDRFLOW_API_TOKEN"
"""Read here, not in Settings, because it is the client's credential, not the pipeline's setting."""
ADMIN_TOKEN_FILE = "admin.token"


class AdminApiError(CdrflowError):
    """The admin API refused a request; the message is the API's own explanation."""


class AdminClient:
    def __init__(self, base_url: str, timeout: float = 60, *, token: str | None = None,
                 token_file: Path | None = None) -> None:
        self.base_url = base_url
        self._token = token
        self._token_file = token_file
        self._http = httpx.Client(base_url=base_url, timeout=timeout)

    @classmethod
    def for_settings(cls, settings: Settings, timeout: float = 60) -> AdminClient:
        """The client of the configured admin API, with the token of this machine (see the module docstring)."""
        return cls(settings.admin_url, timeout, token=os.environ.get(TOKEN_ENV) or None,
                   token_file=settings.data_dir / ADMIN_TOKEN_FILE)

    def _authorization(self) -> dict[str, str]:
        token = self._token
        if not token and self._token_file is not None:
            try:
                token = self._token_file.read_text().strip()
            except OSError:
                token = None
        return {"authorization": f"Bearer {token}"} if token else {}

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._response(method, path, **kwargs)
        return response.json() if response.headers.get("content-type", "").startswith("application/json") else response.text

    def _response(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """The API's answer; InfrastructureError if it can't be reached, AdminApiError for an error reply."""
        kwargs["headers"] = self._authorization() | (kwargs.get("headers") or {})
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise InfrastructureError(
                f"admin API at {self.base_url} is not reachable ({exc}): is 'cdrflow up' running?") from exc
        if response.status_code >= 400:
            try:
                message = response.json().get("error", response.text)
            except ValueError:
                message = response.text
            if response.status_code == 401:
                message += (f"; set {TOKEN_ENV} to an API token ('cdrflow tokens add'), or run where the admin "
                            f"service wrote {self._token_file or ADMIN_TOKEN_FILE}")
            raise AdminApiError(f"{message} (HTTP {response.status_code})")
        return response

    def health(self) -> bool:
        try:
            return self._http.get("/health", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    def upload(self, path: Path, *, carrier: str, kind: str, period: str, direction: str) -> dict[str, Any]:
        """``POST /files`` as a multipart form, the way the console's browser sends it. httpx
        streams the file part from disk in 64 KiB chunks, so the file is never read whole into memory."""
        try:
            fh = path.open("rb")
        except OSError as exc:
            raise BadFileError(f"can't read the file: {exc.strerror}", file=str(path)) from exc
        with fh:
            fields = {"carrier": carrier, "kind": kind, "period": period, "direction": direction, "name": path.name}
            return self._call("POST", "/files", data=fields,
                              files={"file": (path.name, fh, "application/octet-stream")})

    def files(self, status: str | None = None, **filters: str | None) -> list[dict[str, Any]]:
        """Files, filtered by any of status, carrier, kind, period, direction, channel, month (YYYY-MM)."""
        params = {k: v for k, v in ({"status": status} | filters).items() if v}
        return self._call("GET", "/files", params=params or None)

    def file(self, file_id: str) -> dict[str, Any]:
        return self._call("GET", f"/files/{file_id}")

    def file_command(self, file_id: str, command: str, reason: str | None = None,
                     operator: str | None = None) -> dict[str, Any]:
        """release or discard a held file, saying why; refused (AdminApiError) unless it is held."""
        headers = {"x-operator": operator} if operator else None
        return self._call("POST", f"/files/{file_id}/{command}", json={"reason": reason or ""}, headers=headers)

    def close_run(self, customer: str, period: str | None = None, *, force: bool = False, reason: str | None = None,
                  operator: str | None = None) -> dict[str, Any]:
        """Close a billing run (``period`` None: the latest ended one); ``already`` in the reply
        says it was closed before, with the invoice it made (``invoice_number``), if any."""
        headers = {"x-operator": operator} if operator else None
        return self._call("POST", "/billing-runs", headers=headers,
                          json={"customer": customer, "period": period, "force": force, "reason": reason})

    def customers(self) -> list[dict[str, Any]]:
        return self._call("GET", "/customers")

    def charges(self, customer: str | None = None) -> list[dict[str, Any]]:
        """Charges defined in cdrflow, of one customer or of all."""
        return self._call("GET", f"/customers/{customer}/charges" if customer else "/charges")

    def add_charge(self, customer: str, charge: dict[str, Any], operator: str | None = None) -> dict[str, Any]:
        headers = {"x-operator": operator} if operator else None
        return self._call("POST", f"/customers/{customer}/charges", json=charge, headers=headers)

    def end_charge(self, charge_id: int | str, on: str, reason: str, operator: str | None = None) -> dict[str, Any]:
        headers = {"x-operator": operator} if operator else None
        return self._call("POST", f"/charges/{charge_id}/end", json={"on": on, "reason": reason}, headers=headers)

    def invoices(self, customer: str | None = None) -> list[dict[str, Any]]:
        return self._call("GET", "/invoices", params={"customer": customer} if customer else None)

    def invoice_calls(self, number: str) -> str:
        return self._call("GET", f"/invoices/{number}/calls.csv")

    def recon(self) -> list[dict[str, Any]]:
        """Calls in reconciliation (no customer or no rate), grouped."""
        return self._call("GET", "/recon")

    def dead_letters(self, service: str | None = None) -> list[dict[str, Any]]:
        """Dead letters (messages a service could not process), oldest first, without their payloads."""
        return self._call("GET", "/dead-letters", params={"service": service} if service else None)

    def dead_letter(self, letter_id: int | str) -> dict[str, Any]:
        """One dead letter with its original payload (``payload_encoding``: utf-8 or base64)."""
        return self._call("GET", f"/dead-letters/{letter_id}")

    def replay_dead_letter(self, letter_id: int | str, reason: str | None = None,
                           operator: str | None = None) -> dict[str, Any]:
        """Send a dead letter's original message to its original topic again; refused
        (AdminApiError, HTTP 409) if it was replayed before: a replay goes through once."""
        headers = {"x-operator": operator} if operator else None
        return self._call("POST", f"/dead-letters/{letter_id}/replay", json={"reason": reason or ""},
                          headers=headers)

    # --- what the console shows, listed and shown (services/admin/reference_views_api.py, sources_api.py)

    def listing(self, what: str, **filters: str | None) -> list[dict[str, Any]]:
        """``GET /<what>`` (carriers, customers, tariffs, rate-sheets, schedules, clis, sources,
        charges, invoices), filtered by any query parameters given."""
        params = {k: v for k, v in filters.items() if v}
        return self._call("GET", f"/{what}", params=params or None)

    def shown(self, what: str, key: str | int, **params: str | None) -> dict[str, Any]:
        """``GET /<what>/<key>``: one object; AdminApiError (HTTP 404) names the command that lists them."""
        from urllib.parse import quote

        given = {k: v for k, v in params.items() if v}
        return self._call("GET", f"/{what}/{quote(str(key), safe='')}", params=given or None)
