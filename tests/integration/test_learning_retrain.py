"""Retraining that learns: labelled production rows reach training, and the gates decide on today's rows.

A champion is trained; predictions are logged with the real prediction log writer and labelled
with the feedback core (no server needed); retraining with `data.production.enabled` then either
promotes a model that learned the shift, or, when the new rows carry no new signal, keeps the
champion and says why. Every verdict names the holdout it was decided on.
"""

from __future__ import annotations

import time

import pytest

from sluicegate.settings import load_settings
from sluicegate.tracking import Tracker
from tests.helpers import churn_config, churn_frame, env_var, flow_run_artifact, log_labelled_predictions, write_project

pytestmark = pytest.mark.slow
DAY = 86400.0


@pytest.fixture(scope="module")
def project(tmp_path_factory, prefect_harness):
    """A churn project with production rows enabled (none labelled yet) and its own SLUICE_HOME."""
    root = tmp_path_factory.mktemp("learn")
    home = root / ".sluice"
    with env_var("SLUICE_HOME", str(home)):
        cfg = churn_config(root)
        cfg["project"] = "learn"
        cfg["data"]["production"] = {"enabled": True, "window_days": 30, "max_share": 0.5}
        cfg["gates"]["min_improvement"] = 0.02  # a retrain must be clearly better to replace the champion
        path = write_project(root, churn_frame(1200), cfg)
        yield path, home


def _train(path, reason: str):
    from flows.training import training_pipeline

    state = training_pipeline(str(path), None, reason, return_state=True)
    return state.result(), state.state_details.flow_run_id


def _tracker() -> Tracker:
    return Tracker(load_settings())


def test_first_champion_trains_on_the_source_only(project):
    path, _ = project
    result, _ = _train(path, "setup")
    assert result.outcome == "promoted" and result.champion == 1
    assert result.summary.endswith("Holdout: 240 source rows.")
    assert "sluice.production_rows" not in _tracker().champion("learn").tags


def test_retrain_learns_the_shift_from_labelled_production_rows(project):
    path, home = project
    # a new region appears and its customers leave, whatever their tenure or bill: the champion,
    # which never saw the region, scores them like everyone else and is wrong about most
    shifted = churn_frame(400, seed=21).assign(region="central", churned=1,
                                               customer_id=lambda f: f.customer_id + 100_000)
    now = time.time()
    log_labelled_predictions(home, "learn", shifted, "churned", start=now - 3 * DAY, step_s=300, labelled_at=now,
                             version="1", prefix="shift-")
    result, run_id = _train(path, "retrain: drift detected")
    assert result.outcome == "promoted" and result.champion == 2, result.summary
    champion = _tracker().champion("learn")
    assert champion.tags["sluice.production_rows"] == "400"
    # the verdict says the decision was made on today's rows too: 30% of the 400 new production rows
    assert "holdout: 360 rows (240 source + 120 production predicted " in result.summary.lower()
    assert "the newest 30% of 400 production rows the champion never trained on" in result.summary
    assert champion.tags["sluice.verdict"] == "promoted"
    assert "240 source + 120 production" in champion.tags["sluice.verdict_summary"]
    gate = flow_run_artifact("learn-gate-decision", run_id).data
    assert "Gate decision: PROMOTED" in gate and "240 source + 120 production" in gate


def test_production_rows_without_new_signal_do_not_replace_the_champion(project):
    path, home = project
    champion_until = _tracker().champion("learn").tags["sluice.labelled_until"]
    same = churn_frame(400, seed=31).assign(customer_id=lambda f: f.customer_id + 200_000,
                                            monthly_charges=lambda f: f.monthly_charges.clip(lower=0))
    now = time.time()
    log_labelled_predictions(home, "learn", same, "churned", start=now - DAY, step_s=60, labelled_at=now,
                             version="2", prefix="same-")
    result, run_id = _train(path, "retrain: drift detected")
    assert result.outcome == "rejected" and result.champion == 2 and result.version == 3, result.summary
    assert "does not beat champion v2 by the margin 0.02" in result.summary
    # only rows labelled after v2's data are held out: the shifted rows v2 trained on are not
    assert "240 source + 120 production predicted " in result.summary
    assert "the newest 30% of 400 production rows labelled after" in result.summary
    assert "the champion's newest training label" in result.summary
    tr = _tracker()
    assert tr.champion("learn").version == "2"
    rejected = tr.version("learn", "3")
    assert rejected.tags["sluice.verdict"] == "rejected" and rejected.tags["sluice.production_rows"] == "800"
    assert rejected.tags["sluice.labelled_until"] > champion_until
    gate = flow_run_artifact("learn-gate-decision", run_id).data
    assert "Gate decision: REJECTED" in gate and "240 source + 120 production" in gate
