"""The canary verdict (pure): hold, breach on errors / latency / metric, promote after the window, too little traffic."""

from __future__ import annotations

import pandas as pd
import pytest

from sluicegate.config import DeployConfig
from sluicegate.rollout import (
    BREACH,
    HOLD,
    PROMOTE,
    CanaryLimits,
    LiveMetric,
    SideStats,
    compare_shadow,
    decide_canary,
    percentile,
)

LIMITS = CanaryLimits(window_requests=100, min_requests=20, max_error_rate_increase=0.02, max_p95_ratio=2.0,
                      max_metric_drop=0.05, min_labels=30)
CHAMP = SideStats(requests=900, errors=9, p50_ms=3.0, p95_ms=6.0)


def _checks(decision):
    return {c.name: c.passed for c in decision.checks}


def test_holds_inside_the_window():
    d = decide_canary(CHAMP, SideStats(50, 1, 3.1, 6.5), LIMITS, elapsed_minutes=1)
    assert d.verdict == HOLD and "window not full" in d.reason
    assert _checks(d) == {"errors": True, "latency": True, "metric": None, "window": False}


def test_breach_on_errors():
    d = decide_canary(CHAMP, SideStats(40, 4, 3.0, 6.0), LIMITS, elapsed_minutes=1)
    assert d.verdict == BREACH and _checks(d)["errors"] is False
    assert d.reason.startswith("errors: candidate error rate 10.0% (4/40)")


def test_breach_on_latency():
    d = decide_canary(CHAMP, SideStats(40, 0, 9.0, 12.5), LIMITS, elapsed_minutes=1)
    assert d.verdict == BREACH and _checks(d) == {"errors": True, "latency": False, "metric": None}
    assert "allowed 12.0 ms (2x)" in d.reason


def test_breach_on_the_live_metric_once_enough_labels():
    worse = LiveMetric("accuracy", champion=0.90, candidate=0.80, champion_n=40, candidate_n=30)
    d = decide_canary(CHAMP, SideStats(40, 0, 3.0, 6.0), LIMITS, elapsed_minutes=1, metric=worse)
    assert d.verdict == BREACH and _checks(d)["metric"] is False
    few = LiveMetric("accuracy", 0.90, 0.50, champion_n=40, candidate_n=29)
    assert decide_canary(CHAMP, SideStats(40, 0, 3.0, 6.0), LIMITS, elapsed_minutes=1, metric=few).verdict == HOLD
    mae = LiveMetric("mae", champion=1.0, candidate=1.04, champion_n=40, candidate_n=40, higher_is_better=False)
    assert decide_canary(CHAMP, SideStats(40, 0, 3.0, 6.0), LIMITS, elapsed_minutes=1, metric=mae).verdict == HOLD


def test_promotes_after_the_window():
    d = decide_canary(CHAMP, SideStats(100, 1, 3.0, 7.0), LIMITS, elapsed_minutes=1,
                      metric=LiveMetric("accuracy", 0.9, 0.88, 40, 40))
    assert d.verdict == PROMOTE and all(c.passed for c in d.checks)
    timed = CanaryLimits(window_requests=None, window_minutes=10, min_requests=20)
    assert decide_canary(CHAMP, SideStats(30, 0, 3, 6), timed, elapsed_minutes=9.9).verdict == HOLD
    assert decide_canary(CHAMP, SideStats(30, 0, 3, 6), timed, elapsed_minutes=10).verdict == PROMOTE


def test_not_enough_traffic_is_never_a_verdict():
    few = SideStats(5, 5, 500.0, 900.0)  # every request failed, but 5 < min_requests
    d = decide_canary(CHAMP, few, LIMITS, elapsed_minutes=60)
    assert d.verdict == HOLD and _checks(d)["errors"] is None and _checks(d)["latency"] is None
    timed = CanaryLimits(window_requests=None, window_minutes=1, min_requests=20)
    d = decide_canary(CHAMP, SideStats(3, 0, 3, 6), timed, elapsed_minutes=5)
    assert d.verdict == HOLD and d.reason.startswith("not enough traffic")


def test_limits_from_config_and_strategy_needs_a_fronted_target():
    spec = DeployConfig(strategy="canary", canary={"share": 0.2, "window_requests": 50})
    assert CanaryLimits.from_dict(spec.canary.model_dump()).window_requests == 50
    assert DeployConfig(strategy="shadow", target="docker").target == "container"  # the old name of the target
    with pytest.raises(ValueError, match="strategy: shadow needs target: local or container"):
        DeployConfig(strategy="shadow", target="kubernetes")
    with pytest.raises(ValueError, match="window_requests, window_minutes or both"):
        DeployConfig(canary={"window_requests": None})


def test_compare_shadow_pairs_by_prediction_id():
    log = pd.DataFrame({"prediction_id": ["a", "b", "c", "a", "b", "c", "d"],
                        "endpoint": ["predict"] * 7, "model_version": ["1", "1", "1", "2", "2", "2", "1"],
                        "traffic": ["live"] * 3 + ["shadow"] * 3 + ["live"], "prediction": [1, 0, 1, 1, 1, 1, 0]})
    labelled = log.assign(churned=[1, 1, 1, 1, 1, 1, 0])
    out = compare_shadow(log, labelled, "1", "2", "churned", "classification",
                         {"champion": {"requests": 4, "p50_ms": 2.0, "p95_ms": 4.0}, "candidate": {"requests": 3}})
    assert out.pairs == 3 and out.agreement == pytest.approx(2 / 3)
    assert (out.metric.champion, out.metric.champion_n) == (pytest.approx(3 / 4), 4)
    assert (out.metric.candidate, out.metric.candidate_n) == (1.0, 3)
    assert "Agreement on 3 paired predictions" in out.markdown("churn")
    assert percentile([1, 2, 3, 4], 50) == 2.5 and percentile([], 95) is None


# ---------------------------------------------------------------- the rollout's state in words (status, Prefect UI)
def _serving(status="active", **rollout):
    base = {"strategy": "canary", "status": status, "share": 0.2, "since": "2026-11-30T10:00:00+00:00",
            "champion_version": "1", "candidate_version": "2",
            "stats": {"champion": {"requests": 80, "errors": 1, "p95_ms": 6.0},
                      "candidate": {"requests": 20, "errors": 0, "p95_ms": 7.5}}}
    return {"version": "1", "url": "http://127.0.0.1:3600", "since": "2026-11-30T09:00:00+00:00",
            "rollout": {**base, **rollout}}


def _check(verdict, action, metric=None):
    d = decide_canary(CHAMP, SideStats(50, 1, 3.1, 6.5), LIMITS, elapsed_minutes=1, metric=metric)
    return {"at": "2026-11-30T10:05:00+00:00", "by": "drift-check flow run calm-fox", "verdict": verdict,
            "reason": d.reason, "action": action, "message": f"canary v2 holds: {d.reason}",
            "checks": [{"name": c.name, "passed": c.passed, "detail": c.detail} for c in d.checks],
            "metric": None if metric is None else metric.__dict__}


def test_status_lines_say_who_serves_what_share_and_the_last_check():
    from sluicegate.rollout import rollout_lines

    metric = LiveMetric("accuracy", 0.9, 0.88, 40, 35)
    lines = rollout_lines(_serving(last_check=_check(HOLD, "none", metric)))
    assert lines[0] == ("serving v1 at http://127.0.0.1:3600; canary since 2026-11-30T10:00:00+00:00: "
                        "v2 answers 20%, v1 80%")
    assert lines[1] == "  champion: 80 requests, 1 errors (1.2%), p95 6.0 ms"
    assert lines[2] == "  candidate: 20 requests, 0 errors (0.0%), p95 7.5 ms"
    assert lines[3].startswith("  last check 2026-11-30T10:05:00+00:00 by drift-check flow run calm-fox: hold, "
                               "action none: window not full")
    assert lines[4] == "  live accuracy: champion 0.9 (n=40), candidate 0.88 (n=35)"
    shadow = rollout_lines(_serving(strategy="shadow", share=1.0, breach=None))
    assert shadow[0].endswith("v1 answers 100%, mirrored to v2 (100% copied)") and len(shadow) == 3
    ended = rollout_lines(_serving("breached", ended="2026-11-30T10:06:00+00:00", reason="errors: 10%"))
    assert ended == ["serving v1 at http://127.0.0.1:3600 since 2026-11-30T09:00:00+00:00",
                     "last rollout: canary of v2 breached at 2026-11-30T10:06:00+00:00: errors: 10%"]
    assert rollout_lines(None) == []


def test_rollout_markdown_has_shares_sides_metric_agreement_and_the_decision():
    from sluicegate.rollout import ShadowComparison, rollout_markdown

    md = rollout_markdown("churn", _serving(last_check=_check(HOLD, "none")))
    assert md.startswith("# churn: canary of v2 beside v1: ACTIVE\n")
    assert "**Now:** v2 answers 20%, v1 80% since 2026-11-30T10:00:00+00:00" in md
    assert "| requests | 80 | 20 |" in md and "| errors | 1 (1.2%) | 0 (0.0%) |" in md
    assert "| p95 latency | 6.0 ms | 7.5 ms |" in md and "| live metric | no labels yet | no labels yet |" in md
    assert "by drift-check flow run calm-fox: **hold**, action **none**" in md
    assert "| window | not yet | window 50/100 requests |" in md  # one row per rule of the verdict
    cmp = ShadowComparison("1", "2", 40, 0.975, LiveMetric("accuracy", 0.9, 0.8, 40, 40), {}, {})
    shadow = rollout_markdown("churn", _serving(strategy="shadow", share=1.0), cmp)
    assert "**Agreement:** 97.5% on 40 paired predictions" in shadow
    assert "| live accuracy | 0.9 (n=40) | 0.8 (n=40) |" in shadow and "Not checked yet" in shadow
    ended = rollout_markdown("churn", _serving("promoted", share=1.0, ended="T1", reason="held for the window",
                                               last_check=_check(PROMOTE, "promoted")))
    assert ended.startswith("# churn: canary of v2 beside v1: PROMOTED")
    assert "Ended **promoted** at T1: held for the window" in ended and "action **promoted**" in ended


def _open_canary(home, candidate_requests: int, window_requests: int = 100):
    """A canary's files as the release and the front leave them (no process runs: nothing is promoted here)."""
    import json
    import time

    from sluicegate.deploy.processes import ROUTING_FILE, STATS_FILE, ServingState, state_dir, write_state
    from sluicegate.settings import load_settings

    settings = load_settings({"SLUICE_HOME": str(home)})
    folder = state_dir(settings, "churn")
    folder.mkdir(parents=True)
    started = time.time() - 60
    rollout = {"strategy": "canary", "status": "active", "share": 0.2, "since": "2026-11-30T10:00:00+00:00",
               "started_at": started, "champion_version": "1", "candidate_version": "2", "candidate_pid": 0,
               "candidate_port": 3602}
    write_state(settings, ServingState("churn", "1", "churn:1", "127.0.0.1", 3600, 0, 0, 3601,
                                       "2026-11-30T09:00:00+00:00", rollout=rollout))
    limits = {"window_requests": window_requests, "min_requests": 5}
    (folder / ROUTING_FILE).write_text(json.dumps({"mode": "canary", "share": 0.2, "started_at": started,
                                                    "limits": limits}))
    (folder / STATS_FILE).write_text(json.dumps({
        "share": 0.2, "champion": {"requests": 4 * candidate_requests, "errors": 0, "p95_ms": 5.0},
        "candidate": {"requests": candidate_requests, "errors": 0, "p95_ms": 6.0}}))
    return settings


def test_a_check_keeps_its_verdict_and_action_in_the_rollout_state(tmp_path):
    from sluicegate.config import PackagingConfig
    from sluicegate.deploy.traffic import check_rollout, rollout_report, rollout_status
    from sluicegate.rollout import rollout_lines

    settings = _open_canary(tmp_path / "home", candidate_requests=20)
    out = check_rollout(None, settings, "churn", PackagingConfig(), "classification", checked_by="drift-check run x")
    assert (out.action, out.decision.verdict) == ("none", HOLD)
    serving = rollout_status(settings, "churn")
    check = serving["rollout"]["last_check"]
    assert (check["by"], check["verdict"], check["action"]) == ("drift-check run x", HOLD, "none")
    assert [c["name"] for c in check["checks"]] == ["errors", "latency", "metric", "window"]
    assert serving["rollout"]["status"] == "active" and serving["rollout"]["stats"]["candidate"]["requests"] == 20
    assert any(line.startswith("  last check ") and "by drift-check run x: hold" in line
               for line in rollout_lines(serving))
    report = rollout_report(settings, "churn")
    assert report.status == "active" and report.comparison is not None  # no prediction log yet: no labels
    assert "**hold**" in report.markdown and "| requests | 80 | 20 |" in report.markdown


def test_a_canary_that_held_waits_for_a_person_when_approval_is_asked(tmp_path):
    from sluicegate.config import PackagingConfig
    from sluicegate.deploy.processes import read_state
    from sluicegate.deploy.traffic import check_rollout

    settings = _open_canary(tmp_path / "home", candidate_requests=120)
    out = check_rollout(None, settings, "churn", PackagingConfig(), "classification", approval_needed=True)
    assert (out.action, out.decision.verdict) == ("waiting", PROMOTE) and "sluice rollout promote churn" in out.message
    state = read_state(settings, "churn")
    assert state.version == "1" and state.rollout["status"] == "active"  # nothing moved
    assert state.rollout["last_check"]["action"] == "waiting"
    assert state.rollout["last_check"]["by"] == "sluice rollout check"
