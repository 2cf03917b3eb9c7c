"""``/exports`` on the worker's web server.

* ``POST /exports`` ``{"source", "kind": "table"|"stream", "range": {"from_day", "to_day"}}`` →
  ``202 {"id", …status}``; ``409`` when an export of the same dataset runs; ``400`` for a body
  that is not JSON, ``422`` for one that does not validate (pydantic's messages), ``404`` for an
  unknown source, ``413`` above 16 KiB;
* ``GET /exports/{id}`` → the status: state, phase, rows, bytes, elapsed, errors, result;
* ``DELETE /exports/{id}`` → ``202`` and the status; the export stops unless it is already
  making its result visible.

Every call needs ``Authorization: Bearer <web.api_token>`` (``401`` otherwise). With no token
configured the endpoint is **off**: every call answers ``404``, as if it did not exist.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable
from typing import Any

import faust
from faust.web import View
from pydantic import ValidationError

from app.core.errors import ConfigurationError
from app.core.settings import Settings
from app.exports.jobs import ExportJobs
from app.exports.lock import DatasetBusy
from app.exports.request import ExportRequest
from app.exports.run import resolve_feed
from app.exports.status import ExportStatus

__all__ = ["MAX_BODY_BYTES", "mount_exports"]

MAX_BODY_BYTES = 16 * 1024


def _refusal(settings: Settings, header: str | None) -> tuple[int, str] | None:
    token = settings.web.api_token.get_secret_value() if settings.web.api_token else ""
    if not token:
        return 404, "not found"
    if header is None or not hmac.compare_digest(header.encode(), f"Bearer {token}".encode()):
        return 401, "missing or wrong bearer token"
    return None


def mount_exports(app: faust.App, settings: Settings, jobs: ExportJobs) -> None:
    """Add ``/exports`` and ``/exports/{export_id}`` to the worker's web server."""

    def refused(view: View, request: Any) -> Any:
        refusal = _refusal(settings, request.headers.get("Authorization"))
        if refusal is None:
            return None
        headers = {"WWW-Authenticate": "Bearer"} if refusal[0] == 401 else {}
        return view.json({"error": refusal[1]}, status=refusal[0], headers=headers)

    class Exports(View):
        async def post(self, request: Any) -> Any:
            denied = refused(self, request)
            if denied is not None:
                return denied
            if (request.content_length or 0) > MAX_BODY_BYTES:
                return self.json({"error": f"body larger than {MAX_BODY_BYTES} bytes"}, status=413)
            raw = b""
            while len(raw) <= MAX_BODY_BYTES and (piece := await request.content.read(MAX_BODY_BYTES + 1 - len(raw))):
                raw += piece  # a chunked body has no Content-Length: stop reading past the limit
            if len(raw) > MAX_BODY_BYTES:
                return self.json({"error": f"body larger than {MAX_BODY_BYTES} bytes"}, status=413)
            try:
                body = json.loads(raw)
            except ValueError:
                return self.json({"error": "body is not JSON"}, status=400)
            try:
                export = ExportRequest.model_validate(body)
            except ValidationError as exc:
                details = [{"field": ".".join(map(str, e["loc"])), "error": e["msg"]} for e in exc.errors()]
                return self.json({"error": "invalid export request", "details": details}, status=422)
            try:
                resolve_feed(settings, export)
            except ConfigurationError as exc:
                return self.json({"error": str(exc)}, status=404)
            try:
                status = await jobs.start(export)
            except DatasetBusy as exc:
                return self.json({"error": str(exc)}, status=409)
            return self.json({**status.to_json(), "href": f"/exports/{status.id}"}, status=202)

    class ExportItem(View):
        async def get(self, request: Any, export_id: str) -> Any:
            return self._answer(request, export_id, jobs.get, 200)

        async def delete(self, request: Any, export_id: str) -> Any:
            return self._answer(request, export_id, jobs.cancel, 202)

        def _answer(self, request: Any, export_id: str, action: Callable[[str], ExportStatus | None],
                    success: int) -> Any:
            denied = refused(self, request)
            if denied is not None:
                return denied
            status = action(export_id)
            if status is None:
                return self.json({"error": f"no export {export_id}"}, status=404)
            return self.json(status.to_json(), status=success)

    app.page("/exports")(Exports)
    app.page("/exports/{export_id}")(ExportItem)
