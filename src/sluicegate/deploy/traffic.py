"""Shadow and canary rollouts of the local target: start one beside the champion, check it, promote or end it.

Who does what:

- `begin_rollout` (called by the release instead of switching traffic) leaves the candidate
  running on its own port and writes `routing.json` for the front: mode, share, ports, the
  canary's limits. The champion alias does not move.
- The front (`sluicegate.deploy.proxy`) splits or mirrors live scoring requests, counts each
  side's requests, errors and latency in `traffic-stats.json`, and rolls a breaching canary
  back to share 0 by itself within `check_interval_s`; then it starts `sluice rollout check`.
- `check_rollout` (`sluice rollout check`, also started by the front on a breach) finishes a
  breach (stops the candidate, emits `canary.breached`, recorded in the audit trail), or judges
  the canary with `sluicegate.rollout.decide_canary` on the front's counters plus the live
  metric from the labelled prediction log, and promotes it when it held for its window (unless
  `gates.approval` asks a person: then `sluice rollout promote`).
- A shadow rollout is never promoted automatically: `sluice rollout promote`, `sluice promote
  PROJECT VERSION`, or `sluice rollout abort`.

Every step holds the project's deploy lock; the rollout's state is in state.json (`rollout`).
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from sluicegate.deploy.processes import (
    ROUTING_FILE,
    STATS_FILE,
    ServingState,
    candidate_alive,
    project_lock,
    read_state,
    record_candidate,
    renice_candidate,
    state_dir,
    stop_backend,
    stop_candidate,
    write_state,
)
from sluicegate.deploy.proxy import write_backend
from sluicegate.deploy.staged import DeployResult
from sluicegate.errors import DeployError
from sluicegate.events import (
    CANARY_BREACHED,
    MODEL_DEPLOYED,
    NO_EVENTS,
    ROLLOUT_ABORTED,
    ROLLOUT_STARTED,
    Emitter,
    deployed_payload,
)
from sluicegate.files import write_json_atomic
from sluicegate.rollout import BREACH, PROMOTE, CanaryDecision, CanaryLimits, LiveMetric, SideStats, decide_canary
from sluicegate.settings import Settings

if TYPE_CHECKING:  # `sluice status` reads the rollout without loading the config schema
    from sluicegate.config import DeployConfig, PackagingConfig

log = logging.getLogger(__name__)

ACTIVE = "active"


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat()


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def read_routing(settings: Settings, project: str) -> dict[str, Any] | None:
    return read_json(state_dir(settings, project) / ROUTING_FILE)


def read_stats(settings: Settings, project: str) -> dict[str, Any]:
    """The front's counters of the current rollout (empty when it wrote none yet)."""
    return read_json(state_dir(settings, project) / STATS_FILE) or {}


def active_rollout(state: ServingState | None) -> dict[str, Any] | None:
    return state.rollout if state is not None and state.rollout and state.rollout.get("status") == ACTIVE else None


def _rollout_under_way(settings: Settings, project: str) -> tuple[ServingState, dict[str, Any]]:
    """The serving state and its active rollout (call under the project lock).

    Raises:
        DeployError: no shadow or canary rollout is under way.
    """
    state = read_state(settings, project)
    rollout = active_rollout(state)
    if state is None or rollout is None:
        raise DeployError(f"{project}: no shadow or canary rollout is under way")
    return state, rollout


def begin_rollout(cand: Any, spec: DeployConfig, settings: Settings, expected_champion: str | None,
                  events: Emitter = NO_EVENTS) -> DeployResult:
    """Run a candidate that passed its offline canary beside the serving champion (shadow or canary).

    Args:
        cand: the `LocalCandidate` from `stage_local`; `cand.previous` is what serves.
        expected_champion: the champion alias the promotion will compare-and-set against.

    Raises:
        DeployError: nothing serves (a rollout needs a champion to compare with).
    """
    state = cand.previous
    if state is None or not cand.front_ok:
        raise DeployError(f"{cand.bento.project}: deploy.strategy {spec.strategy} needs a serving champion")
    folder = state_dir(settings, state.project)
    share = spec.shadow.share if spec.strategy == "shadow" else spec.canary.share
    started = time.time()
    # the candidate: a `bentoml serve` process (local target), or a container (container target)
    who = {"candidate_pid": cand.proc.pid if cand.proc is not None else 0, "candidate_container": cand.container,
           "candidate_engine": cand.engine, "candidate_image": cand.image}
    routing = {"mode": spec.strategy, "project": state.project, "share": share, "started_at": started,
               "champion_version": state.version, "champion_port": state.backend_port,
               "candidate_version": cand.bento.version, "candidate_port": cand.port, **who,
               "limits": spec.canary.model_dump(), "check_interval_s": spec.canary.check_interval_s,
               "cwd": os.getcwd()}
    (folder / STATS_FILE).unlink(missing_ok=True)
    if spec.strategy == "shadow" and spec.shadow.nice and not renice_candidate(who, spec.shadow.nice):
        log.warning("%s: the shadow candidate's CPU niceness could not be set", state.project)  # it still mirrors
    write_json_atomic(folder / ROUTING_FILE, routing, indent=2)
    rollout = {"strategy": spec.strategy, "status": ACTIVE, "share": share, "since": _now_iso(), "started_at": started,
               "champion_version": state.version, "candidate_version": cand.bento.version,
               "candidate_bento": cand.bento.bento_tag, **who, "candidate_port": cand.port,
               "expected_champion": expected_champion}
    write_state(settings, replace(state, rollout=rollout))
    record_candidate(settings, state.project, None)  # the state names it now: no orphan to reap
    what = "mirrors" if spec.strategy == "shadow" else "answers"
    text = (f"{state.project} v{cand.bento.version} in {spec.strategy} beside v{state.version}: it {what} "
            f"{share:.0%} of live scoring requests; canary {cand.report.rows} rows matched")
    events.emit(state.project, ROLLOUT_STARTED, {"version": cand.bento.version, "champion": state.version,
                                                 "strategy": spec.strategy, "share": share, "text": text})
    log.info(text)
    url = f"http://{state.host}:{state.port}"
    return DeployResult(cand.target, state.project, cand.bento.version, cand.bento.bento_tag, url, (), text,
                        state.version)


def _end(settings: Settings, state: ServingState, status: str, reason: str, extra: dict[str, Any] | None = None) -> dict:
    """Send nothing more to the candidate, stop it, record how the rollout ended."""
    folder = state_dir(settings, state.project)
    rollout = dict(state.rollout or {})
    (folder / ROUTING_FILE).unlink(missing_ok=True)  # new connections are piped to the champion again
    time.sleep(0.3)  # requests already sent to the candidate finish
    stop_candidate(state)
    rollout.update({"status": status, "share": 0.0, "ended": _now_iso(), "reason": reason,
                    "stats": read_stats(settings, state.project), **(extra or {})})
    write_state(settings, replace(state, rollout=rollout))
    return rollout


@dataclass(frozen=True)
class RolloutCheck:
    """What `check_rollout` saw and did: the verdict and the action taken (none, breached, promoted, waiting)."""

    project: str
    strategy: str
    decision: CanaryDecision | None
    action: str
    message: str


def canary_metric(settings: Settings, project: str, rollout: dict[str, Any], task: str) -> LiveMetric | None:
    """Both sides' live metric on the labelled predictions made since the rollout began."""
    from sluicegate.rollout import live_metric
    from sluicegate.serving.feedback import read_labelled_predictions

    labelled = read_labelled_predictions(project, settings.home, since=float(rollout["started_at"]), traffic=("live",))
    if not len(labelled):
        return None
    target = list(labelled.columns)[list(labelled.columns).index("label_ts") - 1]
    versions = labelled["model_version"].astype(str)
    name, champ, champ_n = live_metric(labelled[versions == str(rollout["champion_version"])], target, task)
    _, cand, cand_n = live_metric(labelled[versions == str(rollout["candidate_version"])], target, task)
    return LiveMetric(name, champ, cand, champ_n, cand_n, higher_is_better=name != "mae")


def _last_check(by: str, decision: CanaryDecision | None, action: str, message: str,
                metric: LiveMetric | None = None) -> dict[str, Any]:
    """What a check saw and did, kept in the rollout's state for `sluice status` and the Prefect artifact."""
    return {"at": _now_iso(), "by": by, "verdict": decision.verdict if decision else None,
            "reason": decision.reason if decision else None, "action": action, "message": message,
            "checks": [asdict(c) for c in decision.checks] if decision else [],
            "metric": asdict(metric) if metric is not None else None}


def check_rollout(tracker: Any, settings: Settings, project: str, packaging: PackagingConfig, task: str, *,
                  approval_needed: bool = False, events: Emitter = NO_EVENTS,
                  checked_by: str = "sluice rollout check") -> RolloutCheck:
    """Judge the project's rollout now and act on the verdict (see the module docstring).

    Whatever the verdict, what the check saw and did is kept in the rollout's state as
    `last_check` (when, by whom, verdict, action, the rules, the live metric).

    Args:
        checked_by: who checks (the CLI, the front, a drift-check flow run), as it will be shown.

    Raises:
        DeployError: no rollout is under way, or the promotion failed (the canary keeps its share).
    """
    with project_lock(settings, project):
        state, rollout = _rollout_under_way(settings, project)
        routing = read_routing(settings, project) or {}
        stats = read_stats(settings, project)
        if rollout["strategy"] == "shadow":
            c, s = SideStats.from_dict(stats.get("champion")), SideStats.from_dict(stats.get("candidate"))
            text = (f"{project}: v{rollout['candidate_version']} shadows v{rollout['champion_version']} "
                    f"({s.requests} copies, {s.errors} errors; champion {c.requests} requests); "
                    f"see `sluice compare {project}`, then `sluice rollout promote|abort {project}`")
            write_state(settings, replace(state, rollout={**rollout, "last_check": _last_check(
                checked_by, None, "none", "a shadow is promoted or aborted by a person")}))
            return RolloutCheck(project, "shadow", None, "none", text)
        breach, metric = routing.get("breach"), None
        if breach:  # the front already rolled it back: finish the bookkeeping
            decision = CanaryDecision(BREACH, breach.get("reason", "breach"))
        else:
            limits = CanaryLimits.from_dict(routing.get("limits") or {})
            metric = canary_metric(settings, project, rollout, task)
            decision = decide_canary(SideStats.from_dict(stats.get("champion")),
                                     SideStats.from_dict(stats.get("candidate")), limits,
                                     elapsed_minutes=(time.time() - float(rollout["started_at"])) / 60, metric=metric)
        if decision.verdict == BREACH:
            text = (f"{project}: canary v{rollout['candidate_version']} breached and was rolled back to share 0; "
                    f"v{rollout['champion_version']} serves everything: {decision.reason}")
            ended = _end(settings, state, "breached", decision.reason,
                         {"decision": decision.to_dict(),
                          "last_check": _last_check(checked_by, decision, "breached", text, metric)})
            events.emit(project, CANARY_BREACHED, {"version": rollout["candidate_version"],
                                                   "champion": rollout["champion_version"], "reason": decision.reason,
                                                   "stats": ended.get("stats"), "text": text})
            return RolloutCheck(project, "canary", decision, "breached", text)
        if decision.verdict == PROMOTE and not approval_needed:
            checked = _last_check(checked_by, decision, "promoted", decision.reason, metric)
            result = _promote_locked(tracker, settings, project, packaging, None, events, decision.reason, checked)
            return RolloutCheck(project, "canary", decision, "promoted", result.message)
        if decision.verdict == PROMOTE:
            action, text = "waiting", (f"{project}: canary v{rollout['candidate_version']} {decision.reason}; "
                                       f"gates.approval asks a person: `sluice rollout promote {project}`")
        else:
            action, text = "none", f"{project}: canary v{rollout['candidate_version']} holds: {decision.reason}"
        write_state(settings, replace(state, rollout={**rollout, "last_check": _last_check(
            checked_by, decision, action, text, metric)}))
        return RolloutCheck(project, "canary", decision, action, text)


def rollout_approval_needed(tracker: Any, settings: Settings, project: str, policy: str) -> bool:
    """Whether promoting the open rollout's candidate waits for a person under `gates.approval` (`policy`).

    `on_retrain` asks for one when the candidate came from a retrain (its `sluice.reason` tag);
    a candidate the registry no longer knows is judged as a manual run.
    """
    from sluicegate.errors import SluiceError
    from sluicegate.gates import approval_required

    state = read_state(settings, project)
    reason = None
    if state is not None and state.rollout:
        try:
            reason = tracker.version(project, str(state.rollout["candidate_version"])).tags.get("sluice.reason")
        except SluiceError:
            pass
    return approval_required(policy, reason).required


def promote_rollout(tracker: Any, settings: Settings, project: str, packaging: PackagingConfig,
                    bless: Callable[[], Callable[[], None]] | None = None, events: Emitter = NO_EVENTS,
                    reason: str = "promoted by hand") -> DeployResult:
    """Make the rollout's candidate the champion (compare-and-set) and send it all traffic."""
    with project_lock(settings, project):
        return _promote_locked(tracker, settings, project, packaging, bless, events, reason)


def _promote_locked(tracker: Any, settings: Settings, project: str, packaging: PackagingConfig,
                    bless: Callable[[], Callable[[], None]] | None, events: Emitter, reason: str,
                    last_check: dict[str, Any] | None = None) -> DeployResult:
    from sluicegate.deploy.local import wait_serving_version

    state, rollout = _rollout_under_way(settings, project)
    version, folder = str(rollout["candidate_version"]), state_dir(settings, project)
    if not candidate_alive(rollout):
        where = f"container {rollout['candidate_container']}" if rollout.get("candidate_container") \
            else f"pid {rollout['candidate_pid']}"
        raise DeployError(f"{project}: the candidate v{version} ({where}) no longer runs; "
                          f"`sluice rollout abort {project}` and deploy again")
    if bless is None:
        def bless() -> Callable[[], None]:
            expected = rollout.get("expected_champion")
            tracker.promote(project, version, expected)  # compare-and-set
            return lambda: tracker.promote(project, str(expected), version) if expected else None
    undo = bless()
    if rollout["strategy"] == "shadow" and not renice_candidate(rollout, 0):
        log.warning("%s: v%s keeps the shadow's CPU niceness (raising it back needs privileges)", project, version)
    url = f"http://{state.host}:{state.port}"
    write_backend(folder, int(rollout["candidate_port"]))
    (folder / ROUTING_FILE).unlink(missing_ok=True)
    try:
        wait_serving_version(url, version, packaging, deadline_s=30)
    except BaseException:
        write_backend(folder, state.backend_port)
        try:
            undo()
        except Exception as exc:
            log.error("%s: moving champion back after a failed switch FAILED: %s", project, exc)
        raise
    stats = read_stats(settings, project)
    ended = {**rollout, "status": "promoted", "share": 1.0, "ended": _now_iso(), "reason": reason, "stats": stats,
             **({"last_check": last_check} if last_check else {})}
    write_state(settings, replace(state, version=version, bento_tag=str(rollout["candidate_bento"]),
                                  backend_pid=int(rollout.get("candidate_pid") or 0),
                                  backend_port=int(rollout["candidate_port"]),
                                  backend_container=rollout.get("candidate_container") or "",
                                  engine=rollout.get("candidate_engine") or "", image=rollout.get("candidate_image") or "",
                                  started_at=_now_iso(), rollout=ended))
    time.sleep(0.5)  # requests already forwarded to the old backend finish
    stop_backend(state)  # a process, or the container the champion ran in
    target = "container" if rollout.get("candidate_container") else "local"
    text = f"{project} v{version} serving at {url} (was v{state.version}); {rollout['strategy']}: {reason}"
    events.emit(project, MODEL_DEPLOYED, deployed_payload(project, version, target, url, state.version, text))
    return DeployResult(target, project, version, str(rollout["candidate_bento"]), url, (), text, state.version)


def abort_rollout(settings: Settings, project: str, reason: str, events: Emitter = NO_EVENTS) -> dict[str, Any]:
    """Stop the rollout: the candidate gets nothing more and is stopped; the champion serves everything."""
    with project_lock(settings, project):
        state, rollout = _rollout_under_way(settings, project)
        ended = _end(settings, state, "aborted", reason)
        events.emit(project, ROLLOUT_ABORTED, {"version": rollout["candidate_version"],
                                               "champion": rollout["champion_version"], "reason": reason,
                                               "text": f"{project}: {rollout['strategy']} of v{rollout['candidate_version']}"
                                                       f" aborted: {reason}"})
        return ended


def rollout_status(settings: Settings, project: str) -> dict[str, Any] | None:
    """Who serves what share since when (for `sluice status`), with the front's counters."""
    state = read_state(settings, project)
    if state is None:
        return None
    out: dict[str, Any] = {"version": state.version, "url": f"http://{state.host}:{state.port}",
                           "since": state.started_at, "rollout": state.rollout,
                           "container": state.backend_container or None, "image": state.image or None}
    if active_rollout(state):
        stats = read_stats(settings, project)
        routing = read_routing(settings, project) or {}
        out["rollout"] = {**state.rollout, "share": stats.get("share", routing.get("share", state.rollout.get("share"))),  # type: ignore[union-attr]
                          "breach": routing.get("breach"),
                          "stats": {k: stats.get(k) for k in ("champion", "candidate") if k in stats}}
    return out


def _log_task(settings: Settings, project: str) -> str:
    """classification or regression, from the label schemas the served versions recorded in the log."""
    from sluicegate.serving.predlog import label_schemas, log_store

    conn = log_store(project, settings.home, settings.prediction_log_url or "").reader()
    if conn is None:
        return "classification"
    try:
        schemas = label_schemas(conn)
    finally:
        conn.close()
    return next((s.task for s in reversed(list(schemas.values()))), "classification")


def compare_rollout(settings: Settings, project: str, rollout: dict[str, Any]) -> Any:
    """Champion vs candidate since the rollout began (`sluice compare`): a `ShadowComparison`.

    For a shadow rollout the pairs are the champion's live rows and the candidate's shadow rows
    under the same prediction id; a canary answers different requests on each side, so only
    latency, requests and the live metric compare (no pairs).
    """
    from sluicegate.rollout import compare_shadow
    from sluicegate.serving.feedback import read_labelled_predictions
    from sluicegate.serving.predlog import read_prediction_log

    since, traffic = float(rollout["started_at"]), ("live", "shadow")
    stats = read_stats(settings, project) if rollout.get("status") == ACTIVE else (rollout.get("stats") or {})
    log = read_prediction_log(project, settings.home, since=since, traffic=traffic)
    labelled = read_labelled_predictions(project, settings.home, since=since, traffic=traffic)
    target = list(labelled.columns)[list(labelled.columns).index("label_ts") - 1] if "label_ts" in labelled else "label"
    if rollout["strategy"] == "canary":  # both sides are live traffic: the candidate's rows count as its side
        relabel = (labelled["model_version"].astype(str) == str(rollout["candidate_version"])) if len(labelled) else None
        if relabel is not None:
            labelled = labelled.assign(traffic=labelled["traffic"].where(~relabel, "shadow"))
        log = log.iloc[0:0]
    return compare_shadow(log, labelled, str(rollout["champion_version"]), str(rollout["candidate_version"]), target,
                          _log_task(settings, project), stats)


@dataclass(frozen=True)
class RolloutReport:
    """The project's rollout (open, or the last one) as `rollout_status` and the comparison read for it."""

    project: str
    status: str  # active, promoted, breached, aborted
    serving: dict[str, Any]
    comparison: Any  # a `sluicegate.rollout.ShadowComparison`, None when the prediction log could not be read
    markdown: str


def rollout_report(settings: Settings, project: str) -> RolloutReport | None:
    """The rollout's state with agreement and the live metric from the prediction log, as markdown for the
    Prefect UI (`sluicegate.rollout.rollout_markdown`); None when the project never had a rollout."""
    from sluicegate.rollout import rollout_markdown

    serving = rollout_status(settings, project)
    if serving is None or not serving.get("rollout"):
        return None
    rollout, note = serving["rollout"], ""
    try:
        comparison = compare_rollout(settings, project, rollout)
    except Exception as exc:  # the state still shows: the log's error goes into the report, not a failed check
        log.warning("%s: comparing the rollout's sides on the prediction log failed: %s: %s", project,
                    type(exc).__name__, exc)
        comparison, note = None, f"\n_Agreement and live metric not read from the prediction log: {type(exc).__name__}: {exc}_\n"
    return RolloutReport(project, str(rollout.get("status")), serving, comparison,
                         rollout_markdown(project, serving, comparison) + note)
