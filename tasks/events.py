"""Tasks: Prefect events for the closed loop, and the notifications that go with them (see `sluicegate.events`)."""

from __future__ import annotations

from typing import Any

from prefect import task

from sluicegate.audit import AUDITED_EVENTS, audit_recorder
from sluicegate.config import NotificationsConfig
from sluicegate.errors import SluiceError
from sluicegate.events import Emitter, Record
from tasks._common import load_prefect_secret, tracker


def send_event(name: str, resource: dict[str, str], payload: dict[str, Any]) -> Any:
    """Prefect's `emit_event`, in the shape `sluicegate.events.Emitter` calls."""
    from prefect.events import emit_event

    return emit_event(name, resource=resource, payload=payload)


def notification_block_slug(name: str) -> str:
    """`type-slug/name` of the notification block `name` refers to.

    `Block.load` needs the block type's slug (`slack-webhook/ops`); a bare name (`ops`, what
    `notifications.prefect_block` usually holds) is looked up among the server's notification
    blocks (those with the `notify` capability).

    Raises:
        SluiceError: no notification block has that name, or several of different types do.
    """
    from prefect.client.orchestration import get_client

    if "/" in name:
        return name
    with get_client(sync_client=True) as client:
        found = client.request("POST", "/block_documents/filter", json={
            "block_documents": {"name": {"any_": [name]}, "is_anonymous": {"eq_": False}},
            "block_schemas": {"block_capabilities": {"all_": ["notify"]}}, "include_secrets": False}).json()
    slugs = sorted({f"{doc['block_type']['slug']}/{doc['name']}" for doc in found if doc.get("block_type")})
    if not slugs:
        raise SluiceError(f"notifications.prefect_block: no Prefect notification block is named {name!r} on this "
                          f"server (create one under Blocks in the UI, or give `type-slug/name`)")
    if len(slugs) > 1:
        raise SluiceError(f"notifications.prefect_block: {len(slugs)} notification blocks are named {name!r} "
                          f"({', '.join(slugs)}); give one as `type-slug/name`")
    return slugs[0]


def notify_block(block: str, subject: str, body: str) -> None:
    """Send through a Prefect notification block (Slack, e-mail, a webhook...) by name or `type-slug/name`."""
    import prefect.blocks.notifications  # noqa: F401  registers the notification block types Block.load resolves
    from prefect.blocks.core import Block

    Block.load(notification_block_slug(block)).notify(body=body, subject=subject)


def flow_run_id() -> str | None:
    """The current Prefect flow run's id, or None outside a flow run."""
    from prefect.runtime import flow_run

    run_id = flow_run.get_id()
    return str(run_id) if run_id else None


def _audit(who: str | None) -> Record:
    """The audit hook: release events become audit records with the tracker of this process."""

    def record(project: str, name: str, payload: dict[str, Any]) -> None:
        if name in AUDITED_EVENTS:  # a drift check's events never open the registry
            audit_recorder(tracker(), who, flow_run_id())(project, name, payload)

    return record


def prefect_emitter(notifications: NotificationsConfig | None = None) -> Emitter:
    """The one emitter flows and tasks use: a Prefect event, the audit trail, then the configured notifications."""
    return Emitter(send_event, notifications, notify_block, load_prefect_secret, _audit(None))


@task(name="emit-event")
def emit(project: str, name: str, payload: dict[str, Any], notifications: NotificationsConfig | None = None) -> str | None:
    """Emit `name` (a `sluicegate.events` constant) for the project's resource and notify when configured."""
    return prefect_emitter(notifications).emit(project, name, payload)


def command_emitter(notifications: NotificationsConfig | None = None, who: str | None = None) -> Emitter:
    """The emitter for a CLI command (deploy, rollback, promote): events reach Prefect only when an API
    is configured (a temporary one would start just to be thrown away), and are flushed before the
    short-lived command exits; webhooks go out either way; release events are audited as done by `who`."""

    def send(name: str, resource: dict[str, str], payload: dict[str, Any]) -> Any:
        from prefect.settings import PREFECT_API_URL

        if not PREFECT_API_URL.value():
            return None
        from prefect.events.worker import EventsWorker

        event = send_event(name, resource, payload)
        EventsWorker.drain_all()
        return event

    def notify(block: str, subject: str, body: str) -> None:
        from prefect.settings import PREFECT_API_URL

        if not PREFECT_API_URL.value():  # a temporary API would start empty, after seconds, just to fail
            raise SluiceError("no Prefect API is configured, and notification blocks live on one (set PREFECT_API_URL)")
        notify_block(block, subject, body)

    return Emitter(send, notifications, notify, load_prefect_secret, _audit(who))
