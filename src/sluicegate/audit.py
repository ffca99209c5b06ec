"""The audit trail: who promoted, rejected, approved, deployed or rolled back which version, when, why, from which run.

Records are stored with MLflow (one run per record in the experiment `<project>.audit`, the
record in its tags and as `audit_record.json`), so they outlive Prefect's database, the deploy
state and anything else under SLUICE_HOME that is not the registry. Records are only ever
added, never changed; `read_history` lists them newest first.
"""

from __future__ import annotations

import getpass
import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

from sluicegate import events

PROMOTE = "promote"                # the gates (and an approval, when one was asked) moved `champion`
REJECT = "reject"                  # the gates, a person, or the approval timeout turned the candidate down
APPROVE = "approve"                # a person approved a passing candidate
APPROVAL_REQUESTED = "approval_requested"
MANUAL_PROMOTE = "manual_promote"  # `sluice promote`
DEPLOY = "deploy"
DEPLOY_FAILED = "deploy_failed"
ROLLBACK = "rollback"
ROLLOUT_START = "rollout_start"    # a candidate began serving beside the champion (shadow or canary)
CANARY_BREACH = "canary_breached"  # a canary breached its limits and was rolled back to share 0
ROLLOUT_ABORT = "rollout_abort"    # `sluice rollout abort`
ACTIONS = (PROMOTE, REJECT, APPROVE, APPROVAL_REQUESTED, MANUAL_PROMOTE, DEPLOY, DEPLOY_FAILED, ROLLBACK,
           ROLLOUT_START, CANARY_BREACH, ROLLOUT_ABORT)
# events the emitter's audit hook records (the rest are recorded where they are decided, or are not audit matters)
AUDITED_EVENTS = frozenset({events.MODEL_DEPLOYED, events.DEPLOY_FAILED, events.MODEL_ROLLED_BACK,
                            events.APPROVAL_PENDING, events.ROLLOUT_STARTED, events.CANARY_BREACHED,
                            events.ROLLOUT_ABORTED})


@dataclass(frozen=True)
class AuditRecord:
    """One thing that happened to a project's models.

    Attributes:
        project: the project (registered model).
        action: one of `ACTIONS`.
        version: the registry version acted on (None when there was none).
        who: the person (`--by`, the approval form's approver) or the OS user of the process.
        when: ISO 8601, UTC.
        why: the reason given, the gate summary, or the error.
        flow_run_id: the Prefect flow run it happened in, if any.
        mlflow_run_id: the MLflow run of the version, if known.
        details: anything else worth keeping (the champion before, a comment, the target).
    """

    project: str
    action: str
    version: str | None
    who: str
    when: str
    why: str
    flow_run_id: str | None = None
    mlflow_run_id: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AuditRecord:
        known = {k: data.get(k) for k in cls.__dataclass_fields__}
        known["details"] = known.get("details") or {}
        known["why"] = known.get("why") or ""
        return cls(**known)

    def line(self) -> str:
        """One line for `sluice history`: when, action, version, who, why, runs."""
        version = f"v{self.version}" if self.version else "-"
        runs = ", ".join(x for x in (f"flow run {self.flow_run_id}" if self.flow_run_id else "",
                                     f"mlflow run {self.mlflow_run_id}" if self.mlflow_run_id else "") if x)
        return f"{self.when}  {self.action:<18} {version:<6} by {self.who}: {self.why}" + (f"  ({runs})" if runs else "")


def current_user() -> str:
    """The OS user running this process (who is recorded when no name is given)."""
    try:
        return getpass.getuser()
    except Exception:  # no login name (some containers): still record something true
        return "unknown"


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def new_record(project: str, action: str, version: str | None, why: str, who: str | None = None,
               flow_run_id: str | None = None, mlflow_run_id: str | None = None,
               details: dict[str, Any] | None = None, when: str | None = None) -> AuditRecord:
    """A record stamped now, by `who` (default: the OS user).

    Raises:
        ValueError: `action` is not one of `ACTIONS`.
    """
    if action not in ACTIONS:
        raise ValueError(f"audit action must be one of {', '.join(ACTIONS)} (got {action!r})")
    return AuditRecord(project, action, None if version is None else str(version), (who or "").strip() or current_user(),
                       when or utc_now(), why or "", flow_run_id, mlflow_run_id, dict(details or {}))


def record_from_event(project: str, name: str, payload: dict[str, Any], who: str | None,
                      flow_run_id: str | None) -> AuditRecord | None:
    """The audit record of an emitted release event, or None for events that are recorded elsewhere.

    Deploys, failed deploys and rollbacks are emitted by the one release procedure (flow and CLI
    alike), so recording them from the emitter records every one of them, whichever path ran it.
    """
    if name == events.MODEL_DEPLOYED:
        return new_record(project, DEPLOY, payload.get("version"), payload.get("text") or "deployed", who, flow_run_id,
                          details={k: payload.get(k) for k in ("target", "url", "was")})
    if name == events.DEPLOY_FAILED:
        return new_record(project, DEPLOY_FAILED, payload.get("version"), payload.get("error") or "deploy failed", who,
                          flow_run_id, details={"serving": payload.get("champion")})
    if name == events.MODEL_ROLLED_BACK:
        return new_record(project, ROLLBACK, payload.get("champion"), payload.get("reason") or "rollback", who,
                          flow_run_id, details={"from": payload.get("from")})
    if name == events.ROLLOUT_STARTED:
        return new_record(project, ROLLOUT_START, payload.get("version"), payload.get("text") or "", who, flow_run_id,
                          details={k: payload.get(k) for k in ("strategy", "share", "champion")})
    if name == events.CANARY_BREACHED:
        return new_record(project, CANARY_BREACH, payload.get("version"), payload.get("reason") or "", who,
                          flow_run_id, details={"champion": payload.get("champion"), "stats": payload.get("stats")})
    if name == events.ROLLOUT_ABORTED:
        return new_record(project, ROLLOUT_ABORT, payload.get("version"), payload.get("reason") or "", who,
                          flow_run_id, details={"champion": payload.get("champion")})
    if name == events.APPROVAL_PENDING:
        return new_record(project, APPROVAL_REQUESTED, payload.get("version"), payload.get("summary") or "", who,
                          flow_run_id, details={"timeout_minutes": payload.get("timeout_minutes"),
                                                "champion": payload.get("champion")})
    return None


def append_record(tracker: Any, record: AuditRecord) -> str:
    """Store a record with MLflow; returns the id of the MLflow run that holds it."""
    return tracker.append_audit(record.project, record.to_dict())


def audit_recorder(tracker: Any, who: str | None = None, flow_run_id: str | None = None) -> events.Record:
    """The `record` hook of an `events.Emitter`: release events become audit records."""

    def record(project: str, name: str, payload: dict[str, Any]) -> None:
        found = record_from_event(project, name, payload, who, flow_run_id)
        if found is not None:
            if found.mlflow_run_id is None and found.version:
                found = _with_run(tracker, found)
            append_record(tracker, found)

    return record


def _with_run(tracker: Any, record: AuditRecord) -> AuditRecord:
    try:
        run_id = tracker.version(record.project, record.version).run_id
    except Exception:  # the record matters more than the link to its run
        return record
    return AuditRecord(**{**record.to_dict(), "mlflow_run_id": run_id})


def read_history(tracker: Any, project: str, limit: int | None = None) -> list[AuditRecord]:
    """A project's audit records, newest first (at most `limit`)."""
    return [AuditRecord.from_dict(d) for d in tracker.audit_records(project, limit)]


def history_json(records: list[AuditRecord]) -> str:
    return json.dumps([r.to_dict() for r in records], indent=2, default=str)
