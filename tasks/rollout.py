"""Tasks: advance an open shadow or canary rollout from the scheduled check, and show its state in the Prefect UI."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_markdown_artifact

from sluicegate.config import NotificationsConfig, PackagingConfig
from sluicegate.deploy.processes import read_state
from sluicegate.deploy.traffic import (
    RolloutCheck,
    active_rollout,
    check_rollout,
    rollout_approval_needed,
    rollout_report,
)
from sluicegate.errors import DeployError
from tasks._common import artifact_key, settings, tracker
from tasks.events import prefect_emitter


def publish_rollout(project: str) -> str | None:
    """Write the next version of the `<project>-rollout` artifact: who serves what share since when,
    requests, errors and p95 per side, agreement, the live metric, the last decision.

    Called after every check, promotion, abort or breach (the CLI calls it too). Outside a run,
    with no Prefect API configured, nothing is published: a temporary API would start only to
    be thrown away.

    Returns:
        The artifact's id, or None when nothing was published (no API, or never a rollout).
    """
    from prefect.context import FlowRunContext, TaskRunContext
    from prefect.settings import PREFECT_API_URL

    if not (FlowRunContext.get() or TaskRunContext.get() or PREFECT_API_URL.value()):
        return None
    report = rollout_report(settings(), project)
    if report is None:
        return None
    import warnings

    with warnings.catch_warnings():
        # From the CLI there is no run: Prefect 3.8 still stores the artifact, with a FutureWarning that
        # it will stop (it would then fail here, and the CLI says "rollout artifact not updated")
        warnings.filterwarnings("ignore", "Artifact creation outside of a flow or task run", FutureWarning)
        artifact = create_markdown_artifact(report.markdown, key=artifact_key(project, "rollout"),
                                            description=f"{project}: {report.status} rollout")
    return str(artifact)


@task(name="advance-rollout", retries=0)  # a promotion is a compare-and-set verdict: never retried blindly
def advance_rollout(project: str, packaging: PackagingConfig, task_type: str, approval: str,
                    notifications: NotificationsConfig | None = None) -> RolloutCheck | None:
    """What `sluice rollout check` does, on schedule: finish a breach, promote a canary that held for its
    window (unless `gates.approval` asks a person), else record the hold; then refresh the artifact.

    Returns None when no rollout is open (or another checker just ended it)."""
    from prefect.runtime import flow_run

    s, tr = settings(), tracker()
    if active_rollout(read_state(s, project)) is None:
        return None
    try:
        out = check_rollout(tr, s, project, packaging, task_type, events=prefect_emitter(notifications),
                            approval_needed=rollout_approval_needed(tr, s, project, approval),
                            checked_by=f"{flow_run.flow_name} flow run {flow_run.name}")
    except DeployError:
        publish_rollout(project)  # the state after a failed promotion: the canary keeps its share
        if active_rollout(read_state(s, project)) is None:  # the front's own check ended it meanwhile
            return None
        raise
    publish_rollout(project)
    print(out.message)
    return out
