"""Tasks: the retrain cooldown, kept in a small state file under SLUICE_HOME."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from prefect import task

from tasks._common import settings


@dataclass(frozen=True)
class RetrainPermit:
    allowed: bool
    reason: str


def _path(project: str):
    return settings().home / "monitoring" / project / "retrain_state.json"


@task(name="start-retrain")
def start_retrain(project: str, cooldown_minutes: float, reason: str) -> RetrainPermit:
    """Allow a retrain unless one started within the cooldown; record the start."""
    path = _path(project)
    state = json.loads(path.read_text()) if path.exists() else {}
    now = time.time()
    last = state.get("started_at")
    if last is not None and now - last < cooldown_minutes * 60:
        msg = f"skipped: last retrain started {now - last:.0f}s ago (cooldown {cooldown_minutes} min)"
        print(msg)
        return RetrainPermit(False, msg)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**state, "started_at": now, "reason": reason}))
    return RetrainPermit(True, "allowed")


@task(name="finish-retrain")
def finish_retrain(project: str, outcome: str) -> None:
    path = _path(project)
    state = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps({**state, "finished_at": time.time(), "outcome": outcome}))
