"""Sluicegate's events in one place: names, resource ids, payloads, and the emitter that also notifies.

The library never imports Prefect: an `Emitter` is given a `send` callable (in the flows,
`tasks.events` passes Prefect's `emit_event`; the CLI passes it when a Prefect API is
configured) and, for Prefect notification blocks, a `notify_block` callable. Webhooks are
sent from here, so every path that emits an event notifies the same way.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from sluicegate.config import NotificationsConfig

log = logging.getLogger(__name__)

EVENT_PREFIX = "sluicegate"

DRIFT_CHECKED = f"{EVENT_PREFIX}.drift.checked"
DRIFT_DETECTED = f"{EVENT_PREFIX}.drift.detected"
PERFORMANCE_DEGRADED = f"{EVENT_PREFIX}.performance.degraded"
# what starts the retraining deployment (for the project in the event's resource)
RETRAIN_TRIGGERS = (DRIFT_DETECTED, PERFORMANCE_DEGRADED)
MODEL_PROMOTED = f"{EVENT_PREFIX}.model.promoted"
MODEL_REJECTED = f"{EVENT_PREFIX}.model.rejected"
MODEL_DEPLOYED = f"{EVENT_PREFIX}.model.deployed"
MODEL_ROLLED_BACK = f"{EVENT_PREFIX}.model.rolled_back"
DEPLOY_FAILED = f"{EVENT_PREFIX}.deploy.failed"
APPROVAL_PENDING = f"{EVENT_PREFIX}.approval.pending"
CANARY_BREACHED = f"{EVENT_PREFIX}.canary.breached"  # a canary rolled back to share 0 (sluicegate.deploy.traffic)
ROLLOUT_STARTED = f"{EVENT_PREFIX}.rollout.started"  # a candidate runs beside the champion (shadow or canary)
ROLLOUT_ABORTED = f"{EVENT_PREFIX}.rollout.aborted"  # `sluice rollout abort`: the candidate was stopped

# event name -> the `notifications.events` key that selects it (events without a key never notify)
NOTIFY_KEYS: dict[str, str] = {
    DRIFT_DETECTED: "drift", PERFORMANCE_DEGRADED: "drift", MODEL_REJECTED: "rejected", DEPLOY_FAILED: "deploy_failed",
    MODEL_ROLLED_BACK: "rolled_back", MODEL_PROMOTED: "promoted", APPROVAL_PENDING: "approval_pending",
    CANARY_BREACHED: "canary_breached",
}

# what an Emitter is given: send(event name, resource, payload) -> an event id or None
Send = Callable[[str, dict[str, str], dict[str, Any]], Any]
# notify_block(block name, subject, body)
NotifyBlock = Callable[[str, str, str], None]
# record(project, event name, payload): the audit trail's hook (see `sluicegate.audit.audit_recorder`)
Record = Callable[[str, str, dict[str, Any]], None]


def resource_id(project: str) -> str:
    """`sluicegate.project.<name>`: what Prefect triggers match on (`sluicegate.project.*`)."""
    return f"{EVENT_PREFIX}.project.{project}"


def resource(project: str) -> dict[str, str]:
    return {"prefect.resource.id": resource_id(project), "prefect.resource.name": project}


# ---------------------------------------------------------------- payloads
def gate_payload(project: str, outcome: str, version: str, champion: Any, reason: str | None, summary: str,
                 metrics: dict[str, float]) -> dict[str, Any]:
    """`model.promoted` / `model.rejected`: the gates' verdict on a candidate."""
    return {"version": version, "champion": champion, "reason": reason or "manual",
            "text": f"{project} v{version} {outcome}: {summary}", "metrics": metrics}


def deployed_payload(project: str, version: str, target: str, url: str | None, was: str | None,
                     message: str) -> dict[str, Any]:
    """`model.deployed`: a version now serves (local) or was packaged for its target."""
    return {"version": version, "target": target, "url": url, "was": was, "text": message}


def deploy_failed_payload(project: str, version: str, serving: str | None, error: str) -> dict[str, Any]:
    """`deploy.failed`: nothing moved; `serving` (if any) keeps serving."""
    keeps = f"v{serving} keeps serving" if serving else "nothing was serving"
    return {"version": version, "champion": serving, "error": error[:500],
            "text": f"{project}: deploy of v{version} failed, {keeps}: {error[:300]}"}


def rolled_back_payload(project: str, champion: str, left: str | None, reason: str) -> dict[str, Any]:
    """`model.rolled_back`: `champion` is the champion again, `left` is the version it replaced."""
    return {"champion": champion, "from": left, "reason": reason,
            "text": f"{project}: champion back to v{champion} (from v{left}): {reason}"}


def approval_pending_payload(project: str, version: str, champion: str | None, flow_run_id: str | None,
                             timeout_minutes: float, summary: str, url: str | None = None) -> dict[str, Any]:
    """`approval.pending`: a passing candidate waits for a person (Prefect UI form or the CLI)."""
    approve, reject = f"sluice approve {project} --comment \"...\"", f"sluice reject {project} --comment \"...\""
    where = f" or in the Prefect UI: {url}" if url else " or in the Prefect UI (flow run paused)"
    return {"version": version, "champion": champion, "flow_run_id": flow_run_id, "timeout_minutes": timeout_minutes,
            "approve": approve, "reject": reject, "url": url, "summary": summary,
            "text": f"{project} v{version} passed the gates and waits for approval ({summary}). "
                    f"Approve with `{approve}`, reject with `{reject}`{where}; "
                    f"rejected automatically after {timeout_minutes:g} minutes."}


def drift_payload(project: str, payload: dict[str, Any], reason: str | None = None, signal: str = "") -> dict[str, Any]:
    """`drift.checked` (no `reason`) / `drift.detected`: the drift check's numbers and, on an alert, why."""
    if reason is None:
        return dict(payload)
    text = f"{project}: drift detected ({reason})" + (f"; {signal}" if signal else "")
    return {**payload, "reason": f"drift: {reason}", "text": text}


def performance_payload(project: str, payload: dict[str, Any], reason: str, signal: str = "") -> dict[str, Any]:
    """`performance.degraded`: the live metric, its rules and, as `reason`, why (the retraining flow's parameter)."""
    text = f"{project}: performance degraded ({reason})" + (f"; {signal}" if signal else "")
    return {**payload, "reason": f"performance: {reason}", "text": text}


# ---------------------------------------------------------------- emitter
@dataclass(frozen=True)
class Emitter:
    """Emit an event (through `send`) and notify when the project's notifications select it.

    Neither sending nor notifying ever raises into the caller: an event about a release must
    not turn a finished release into a failure.
    """

    send: Send | None = None
    notifications: NotificationsConfig | None = None
    notify_block: NotifyBlock | None = None
    secrets: Callable[[str], str] | None = None  # loads a `prefect_secret` reference (tasks layer)
    record: Record | None = None  # appends release events (deployed, deploy.failed, rolled back) to the audit trail

    def emit(self, project: str, name: str, payload: dict[str, Any]) -> str | None:
        """Send `name` for the project's resource, then notify; returns the event id when one was sent."""
        event_id = None
        if self.send is not None:
            try:
                event = self.send(name, resource(project), payload)
                event_id = str(getattr(event, "id", event)) if event is not None else None
            except Exception as exc:
                log.warning("event %s for %s not sent: %s", name, project, exc)
        if self.record is not None:
            try:
                self.record(project, name, payload)
            except Exception as exc:
                log.warning("audit record of %s for %s FAILED: %s: %s", name, project, type(exc).__name__, exc)
        if self.notifications is not None and NOTIFY_KEYS.get(name) in self.notifications.events:
            self.notify(project, name, payload)
        return event_id

    def notify(self, project: str, name: str, payload: dict[str, Any]) -> None:
        from sluicegate.data import resolve_secret
        from sluicegate.notify import send_webhook
        from sluicegate.settings import redact

        spec = self.notifications
        assert spec is not None
        if spec.webhook_url is not None:
            try:
                url = resolve_secret(spec.webhook_url, "notifications.webhook_url", self.secrets)
            except Exception as exc:
                log.warning("notification %s for %s -> webhook: FAILED (%s)", name, project, exc)
            else:
                result = send_webhook(url, name, project, payload, spec.timeout_s)
                if result.sent:
                    log.info("notification %s for %s -> webhook: sent", name, project)
                else:
                    log.warning("notification %s for %s -> webhook %s: FAILED (%s)", name, project, redact(url),
                                result.error if result.status is None else f"HTTP {result.status}: {result.error}")
        if spec.prefect_block:
            if self.notify_block is None:
                log.warning("notification %s for %s -> Prefect block %r: FAILED (no Prefect here to send it)",
                            name, project, spec.prefect_block)
                return
            try:
                self.notify_block(spec.prefect_block, name, payload.get("text") or f"{project}: {name}")
                log.info("notification %s for %s -> Prefect block %r: sent", name, project, spec.prefect_block)
            except Exception as exc:
                log.warning("notification %s for %s -> Prefect block %r: FAILED (%s: %s)", name, project,
                            spec.prefect_block, type(exc).__name__, str(exc)[:300])


NO_EVENTS = Emitter()
