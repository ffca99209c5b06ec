"""Tasks: Prefect events for the closed loop, and the notifications that go with them."""

from __future__ import annotations

from typing import Any

from prefect import task

from sluicegate.config import NotificationsConfig
from sluicegate.notify import send_webhook
from tasks._common import resolve_secret

EVENT_PREFIX = "sluicegate"
# event name -> the notifications.events key that selects it
NOTIFY_KEYS = {
    "drift.detected": "drift", "model.rejected": "rejected", "deploy.failed": "deploy_failed",
    "model.rolled_back": "rolled_back", "model.promoted": "promoted",
}


def resource_id(project: str) -> str:
    return f"{EVENT_PREFIX}.project.{project}"


@task(name="emit-event")
def emit(project: str, name: str, payload: dict[str, Any], notifications: NotificationsConfig | None = None) -> str | None:
    """Emit `sluicegate.<name>` for the project's resource and notify when configured."""
    from prefect.events import emit_event

    event = emit_event(
        f"{EVENT_PREFIX}.{name}",
        resource={"prefect.resource.id": resource_id(project), "prefect.resource.name": project},
        payload=payload,
    )
    if notifications is not None and NOTIFY_KEYS.get(name) in notifications.events:
        notify(project, f"{EVENT_PREFIX}.{name}", payload, notifications)
    return str(event.id) if event else None


def notify(project: str, event: str, payload: dict[str, Any], spec: NotificationsConfig) -> None:
    if spec.webhook_url is not None:
        url = resolve_secret(spec.webhook_url, "notifications.webhook_url")
        result = send_webhook(url, event, project, payload, spec.timeout_s)
        print(f"notification {event} -> webhook: {'sent' if result.sent else 'FAILED ' + str(result.error)}")
    if spec.prefect_block:
        from prefect.blocks.core import Block

        try:
            Block.load(spec.prefect_block).notify(body=payload.get("text") or f"{project}: {event}", subject=event)
        except Exception as exc:  # a notification never fails the run
            print(f"notification {event} -> block {spec.prefect_block}: FAILED {exc}")
