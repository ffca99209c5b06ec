"""Human approval on Prefect: the training flow pauses for a typed form; the CLI answers it as the UI form does."""

from __future__ import annotations

import contextvars
import hashlib
import threading
from typing import Any

from prefect import task
from prefect.input import RunInput
from pydantic import Field

from sluicegate import audit, events
from sluicegate.config import GatesConfig, NotificationsConfig
from sluicegate.errors import ApprovalError
from sluicegate.gates import ApprovalAnswer, ApprovalDecision, ApprovalRequirement, decide_approval
from sluicegate.tracking import ModelRecord
from tasks._common import artifact_key, tracker
from tasks.events import flow_run_id, prefect_emitter

PAUSE_KEY_PREFIX = "sluice-approval"


class ApprovalInput(RunInput):
    """The approval form (Prefect UI) and what `sluice approve` / `sluice reject` send."""

    approve: bool = Field(default=False, description="Release this version? (left unchecked: rejected)")
    comment: str = Field(default="", description="Why; stored with the version and in the audit trail")
    approver: str | None = Field(default=None, description="Your name (recorded as who approved)")


def _pause_prefix(project: str) -> str:
    # Prefect keys allow lowercase letters, digits and dashes only, and project names also have underscores
    return f"{PAUSE_KEY_PREFIX}-{hashlib.sha256(project.encode()).hexdigest()[:12]}-v"


def pause_key(project: str, version: str) -> str:
    """The pause key names the project (a digest) and the version, so the CLI finds the run to answer."""
    return f"{_pause_prefix(project)}{version}"


def require_persistent_api(project: str, requirement: ApprovalRequirement) -> None:
    """Refuse, before any work, a run that would wait for approval on a temporary Prefect API.

    Raises:
        ApprovalError: approval is required and no Prefect API is configured: the temporary API
            Prefect would start lives and dies with this process, so nobody could answer.
    """
    from prefect.settings import PREFECT_API_URL

    if requirement.required and not PREFECT_API_URL.value():
        raise ApprovalError(
            f"{project}: this run needs a human approval ({requirement.reason}), but there is no persistent "
            f"Prefect API: a paused run on the temporary API dies with this process and nobody could approve it. "
            f"Start one (`sluice server start`, or `prefect server start` and set PREFECT_API_URL), "
            f"or set gates.approval: never")


def _ui_url(run_id: str | None) -> str | None:
    from prefect.settings import PREFECT_UI_URL

    ui = PREFECT_UI_URL.value()
    return f"{ui.rstrip('/')}/runs/flow-run/{run_id}" if ui and run_id else None


def _tag_run(run_id: str, project: str) -> None:
    """Tags the paused run for the UI's filters (`sluice-approval`, `project:<name>`); best effort."""
    from prefect.client.orchestration import get_client

    try:
        with get_client(sync_client=True) as client:
            run = client.read_flow_run(run_id)
            client.update_flow_run(run_id, tags=sorted({*run.tags, PAUSE_KEY_PREFIX, f"project:{project}"}))
    except Exception as exc:  # the tags help people find the run; the pause key is what the CLI uses
        print(f"could not tag flow run {run_id}: {exc}")


def wait_for_approval(project: str, version: str, champion: str | None, summary: str, gates: GatesConfig,
                      notifications: NotificationsConfig | None = None) -> ApprovalDecision:
    """Pause this flow run until a person answers the approval form, or the timeout rejects.

    Called in the flow's body (a pause belongs to the flow run, not to a task). Emits
    `sluicegate.approval.pending` first (event, audit record, notifications). At the timeout a
    watchdog answers the form itself with a refusal, so the run resumes and records it; had it
    expired instead, the run could only fail and nothing could be recorded.

    Raises:
        ApprovalError: the pause could not be resumed at all (the server refused both answers).
    """
    from prefect.exceptions import FlowPauseTimeout
    from prefect.flow_runs import pause_flow_run, resume_flow_run

    run_id = flow_run_id()
    timeout_s = gates.approval_timeout_minutes * 60
    url = _ui_url(run_id)
    payload = events.approval_pending_payload(project, version, champion, run_id, gates.approval_timeout_minutes,
                                              summary, url)
    if run_id:
        _tag_run(run_id, project)
    prefect_emitter(notifications).emit(project, events.APPROVAL_PENDING, payload)
    print(payload["text"])
    form = ApprovalInput.with_initial_data(
        description=(f"## Approve {project} v{version}?\n\n{summary}\n\nThe gate verdicts are in the artifact "
                     f"`{artifact_key(project, 'gate-decision')}` of this run. Check **approve** to release it; "
                     f"leave it unchecked to reject. No answer within {gates.approval_timeout_minutes:g} minutes "
                     f"rejects it."),
        approve=False, comment="")

    expired = threading.Event()

    def expire() -> None:
        try:
            resume_flow_run(run_id, run_input={"approve": False, "comment": "", "approver": None})
            expired.set()
        except Exception:  # a person answered first (not paused any more): their answer stands
            pass

    # the watchdog thread sees this run's Prefect settings (a test harness keeps them in a context variable)
    watchdog = threading.Timer(timeout_s, contextvars.copy_context().run, args=(expire,))
    watchdog.daemon = True
    watchdog.start()
    try:
        # the server's own deadline is later than the watchdog's, so the refusal can still be given
        answer = pause_flow_run(wait_for_input=form, timeout=int(timeout_s + max(60, timeout_s * 0.1)),
                                poll_interval=min(10, max(1, timeout_s / 60)), key=pause_key(project, version))
    except FlowPauseTimeout:
        raise ApprovalError(f"{project} v{version}: no approval and the pause could not be ended; "
                            f"v{version} was not promoted") from None
    finally:
        watchdog.cancel()
    given = ApprovalAnswer(bool(answer.approve), answer.comment or "", answer.approver, timed_out=expired.is_set())
    return decide_approval(given, project, version, gates.approval_timeout_minutes)


@task(name="record-approval", retries=2, retry_delay_seconds=[2, 10])
def record_approval(record: ModelRecord, decision: ApprovalDecision, reason: str | None = None) -> ApprovalDecision:
    """Store the answer with the version (tags, `approval.json`) and in the audit trail."""
    tr = tracker()
    tr.record_approval(record, decision.to_dict())
    action = audit.APPROVE if decision.approved else audit.REJECT
    source = "approval timeout" if decision.verdict == "timed_out" else "approval"
    audit.append_record(tr, audit.new_record(
        record.project, action, record.version, decision.comment or decision.summary, decision.approver, flow_run_id(),
        record.run_id, {"source": source, "verdict": decision.verdict, "run_reason": reason or "manual"}))
    print(decision.summary)
    return decision


# ---------------------------------------------------------------- the CLI's side: answer a paused run
def _paused_runs(project: str) -> list[tuple[str, str, Any]]:
    """(flow run id, version, flow run) of every run of `project` paused for approval, newest first."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import FlowRunSort

    prefix = _pause_prefix(project)
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED]))),
            sort=FlowRunSort.START_TIME_DESC, limit=200)
    found = []
    for run in runs:
        key = (run.state.state_details.pause_key or "") if run.state else ""
        if key.startswith(prefix):
            found.append((str(run.id), key[len(prefix):], run))
    return found


def answer_approval(project: str, approve: bool, comment: str, approver: str,
                    version: str | None = None) -> tuple[str, str]:
    """Resume the project's run paused for approval with the same input the UI form sends.

    Args:
        project: the project.
        approve: True approves, False rejects.
        comment: why (stored with the version and in the audit trail).
        approver: who answers.
        version: which candidate, when several runs of the project wait.

    Returns:
        (flow run id, version) of the run that was answered.

    Raises:
        ApprovalError: no Prefect API, no run waiting (or none for `version`), several waiting
            and no `version`, or the run could not be resumed (answered meanwhile, timed out).
    """
    from prefect.exceptions import FlowPauseTimeout
    from prefect.flow_runs import NotPausedError, resume_flow_run
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        raise ApprovalError(f"{project}: no Prefect API to find the paused run on; set PREFECT_API_URL to the server "
                            f"the training run uses (or start the local one: `sluice server start`)")
    waiting = _paused_runs(project)
    if version is not None:
        waiting = [w for w in waiting if w[1] == str(version)]
    if not waiting:
        which = f"v{version} of {project}" if version else project
        raise ApprovalError(f"no run of {which} is waiting for approval on {PREFECT_API_URL.value()} "
                            f"(see `sluice history {project}` for what was decided)")
    if len(waiting) > 1:
        listed = ", ".join(f"v{v} (flow run {rid})" for rid, v, _ in waiting)
        raise ApprovalError(f"{project}: {len(waiting)} runs wait for approval ({listed}); choose one with --version")
    run_id, found_version, _ = waiting[0]
    try:
        resume_flow_run(run_id, run_input=ApprovalInput(approve=approve, comment=comment, approver=approver)
                        .model_dump(include={"approve", "comment", "approver"}))
    except NotPausedError:
        raise ApprovalError(f"{project} v{found_version}: flow run {run_id} is no longer paused "
                            f"(answered meanwhile, or it timed out)") from None
    except FlowPauseTimeout:
        raise ApprovalError(f"{project} v{found_version}: flow run {run_id} can no longer be resumed "
                            f"(its pause expired)") from None
    except RuntimeError as exc:
        raise ApprovalError(f"{project} v{found_version}: flow run {run_id} refused the answer: {exc}") from None
    return run_id, found_version
