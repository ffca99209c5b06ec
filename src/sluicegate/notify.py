"""Webhook notifications: one JSON POST per event, bounded in time, never raising into the pipeline."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class NotificationResult:
    sent: bool
    status: int | None
    error: str | None = None


def send_webhook(url: str, event: str, project: str, payload: dict[str, Any], timeout_s: float = 5.0) -> NotificationResult:
    """POST `{"event", "project", "text", "payload"}` to `url`.

    A notification must never fail the run it reports on: errors come back in the result, and
    the caller logs them (one line per failed notification).
    """
    import httpx

    body = {"event": event, "project": project, "text": payload.get("text") or f"{project}: {event}", "payload": payload}
    try:
        response = httpx.post(url, json=body, timeout=timeout_s)
        ok = 200 <= response.status_code < 300
        return NotificationResult(ok, response.status_code, None if ok else response.text[:200])
    except httpx.HTTPError as exc:
        return NotificationResult(False, None, f"{type(exc).__name__}: {exc}")
