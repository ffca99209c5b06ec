"""Tasks: Prefect events for the closed loop, and the notifications that go with them (see `sluicegate.events`)."""

from __future__ import annotations

from typing import Any

from prefect import task

from sluicegate.config import NotificationsConfig
from sluicegate.events import Emitter
from tasks._common import load_prefect_secret


def send_event(name: str, resource: dict[str, str], payload: dict[str, Any]) -> Any:
    """Prefect's `emit_event`, in the shape `sluicegate.events.Emitter` calls."""
    from prefect.events import emit_event

    return emit_event(name, resource=resource, payload=payload)


def notify_block(block: str, subject: str, body: str) -> None:
    """Send through a Prefect notification block (Slack, e-mail, ...) by name."""
    from prefect.blocks.core import Block

    Block.load(block).notify(body=body, subject=subject)


def prefect_emitter(notifications: NotificationsConfig | None = None) -> Emitter:
    """The one emitter flows and tasks use: a Prefect event, then the configured notifications."""
    return Emitter(send_event, notifications, notify_block, load_prefect_secret)


@task(name="emit-event")
def emit(project: str, name: str, payload: dict[str, Any], notifications: NotificationsConfig | None = None) -> str | None:
    """Emit `name` (a `sluicegate.events` constant) for the project's resource and notify when configured."""
    return prefect_emitter(notifications).emit(project, name, payload)


def command_emitter(notifications: NotificationsConfig | None = None) -> Emitter:
    """The emitter for a CLI command (deploy, rollback): events reach Prefect only when an API is
    configured (a temporary one would start just to be thrown away), and are flushed before the
    short-lived command exits; notifications go out either way."""

    def send(name: str, resource: dict[str, str], payload: dict[str, Any]) -> Any:
        from prefect.settings import PREFECT_API_URL

        if not PREFECT_API_URL.value():
            return None
        from prefect.events.worker import EventsWorker

        event = send_event(name, resource, payload)
        EventsWorker.drain_all()
        return event

    return Emitter(send, notifications, notify_block, load_prefect_secret)
