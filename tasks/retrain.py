"""Tasks: the retrain permit (monitoring.retrain and the cooldown), kept in a small state file under SLUICE_HOME."""

from __future__ import annotations

from prefect import task

from sluicegate import monitoring
from sluicegate.monitoring import RetrainPermit
from tasks._common import settings


@task(name="start-retrain")
def start_retrain(project: str, cooldown_minutes: float, reason: str, enabled: bool = True,
                  force: bool = False) -> RetrainPermit:
    """Allow a retrain unless `monitoring.retrain` is false or (unless forced) one started within the cooldown;
    record the start."""
    permit = monitoring.start_retrain(monitoring.retrain_state_path(settings().home, project), cooldown_minutes, reason,
                                      enabled=enabled, force=force)
    if not permit.allowed:
        print(permit.reason)
    return permit


@task(name="finish-retrain")
def finish_retrain(project: str, outcome: str) -> None:
    """Record how the retrain ended."""
    monitoring.finish_retrain(monitoring.retrain_state_path(settings().home, project), outcome)
