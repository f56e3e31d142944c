"""The canary's admin API from the outside: ``openclaw canary`` and the pipeline's canary step.

A thin client over HTTP (httpx): every refusal of the service (4xx/5xx with the JSON reason
every endpoint gives) and every transport failure becomes a :class:`CanaryError` saying what
happened, never a traceback. The token travels in the ``Authorization`` header only; it is
never part of a message.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

import httpx

from openclaw.errors import CanaryError

if TYPE_CHECKING:
    from rich.console import Console

CANARY_PATH = "/api/v1/admin/canary"


class CanaryClient:
    """Start, read and abort the model canary of the service at ``base_url``."""

    def __init__(self, base_url: str, token: str, *, timeout_s: float = 10.0) -> None:
        if not token:
            raise CanaryError("an admin token is needed (--token or OPENCLAW_ADMIN_TOKEN)")
        self.base_url = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"}
        self._timeout_s = timeout_s

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        url = f"{self.base_url}{path}"
        try:
            answer = httpx.request(
                method, url, json=body, headers=self._headers, timeout=self._timeout_s
            )
        except httpx.HTTPError as exc:
            raise CanaryError(f"{method} {url}: {exc.__class__.__name__}: {exc}") from exc
        try:
            parsed: object = answer.json()
        except ValueError:
            parsed = None
        if answer.status_code >= 400:
            reason = parsed.get("reason") if isinstance(parsed, dict) else None
            raise CanaryError(
                f"{method} {url}: HTTP {answer.status_code}: {reason or answer.text[:200]}"
            )
        if not isinstance(parsed, dict):
            raise CanaryError(f"{method} {url}: the answer is not a JSON object")
        return parsed

    def start(self, *, version: str | None = None, reason: str = "") -> dict[str, Any]:
        """Start a canary of ``version`` (None: the registry's challenger); its status."""
        body: dict[str, Any] = {"reason": reason}
        if version is not None:
            body["version"] = version
        return self._call("POST", CANARY_PATH, body)

    def status(self) -> dict[str, Any]:
        return self._call("GET", CANARY_PATH)

    def abort(self, *, reason: str = "") -> dict[str, Any]:
        return self._call("POST", f"{CANARY_PATH}/abort", {"reason": reason})


def render_status(console: Console, body: dict[str, Any]) -> None:
    """What ``openclaw canary`` prints: the champion, the canary and its history."""
    from rich.table import Table

    canary = body.get("canary")
    console.print(f"champion: {body.get('champion') or 'none'}")
    if not isinstance(canary, dict):
        console.print("no canary has run")
        return
    console.print(
        f"canary {canary['version']}: [bold]{canary['phase']}[/bold], weight "
        f"{canary['weight']:g}%, failed analyses {canary['failed_checks']}"
    )
    checks = canary.get("checks") or []
    if checks:
        table = Table("check", "value", "limit", "passed", title="last analysis")
        for c in checks:
            value = "no data" if c["value"] is None else f"{c['value']:.4g}"
            table.add_row(c["name"], value, f"{c['limit']:g}", "yes" if c["passed"] else "NO")
        console.print(table)
    history = Table("at", "phase", "weight", "failed", "note", title="history")
    for event in canary.get("history") or []:
        at = dt.datetime.fromtimestamp(event["at"], dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
        history.add_row(
            at, event["phase"], f"{event['weight']:g}", str(event["failed_checks"]), event["note"]
        )
    console.print(history)
