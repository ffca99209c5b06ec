"""Half-finished work: a training process SIGKILLed right after "Created version N", then the same run again.

The killed run and the re-run are real `sluice run` processes on a temporary Prefect API; the fault
is injected in the killed process only (its driver wraps `mlflow.register_model` to wait after the
version exists), so the product code runs unchanged. The same two runs check the file modes of the
state they created.
"""

from __future__ import annotations

import os
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sluicegate.cli import main
from sluicegate.errors import PromotionConflictError
from sluicegate.settings import load_settings
from sluicegate.tracking import Tracker
from tests.helpers import churn_config, churn_frame, write_project

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
RUN_LIMIT_S = 420  # one `sluice run` of a 1,200-row project, temporary Prefect API included, on a busy 2-core box

# Runs `sluice run CONFIG` with one fault: after MLflow registers the version, the process stops
# making progress (as if the machine froze), so the test can SIGKILL it at exactly that point.
KILLED_DRIVER = """
import os, sys, time
import mlflow

_register = mlflow.register_model

def register_then_freeze(*args, **kwargs):
    mv = _register(*args, **kwargs)
    # straight to the file descriptor: inside a flow, Prefect turns print() into log records
    os.write(1, f"FAULT: created version {mv.version}, waiting for SIGKILL\\n".encode())
    time.sleep(3600)
    return mv

mlflow.register_model = register_then_freeze
from sluicegate.cli import main
sys.exit(main(["run", sys.argv[1], "--reason", "fault-injection"]))
"""
PLAIN_DRIVER = "import sys\nfrom sluicegate.cli import main\nsys.exit(main(sys.argv[1:]))\n"


def _env(home: Path) -> dict[str, str]:
    env = {**os.environ, "SLUICE_HOME": str(home), "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    env.pop("PREFECT_HOME", None)  # the CLI then keeps Prefect's database under SLUICE_HOME, as for a user
    env.pop("PREFECT_API_URL", None)
    env["SLUICE_PREFECT_SERVER"] = "off"  # a temporary API per command, no server left behind
    return env


def _tracker(home: Path, monkeypatch) -> Tracker:
    monkeypatch.setenv("SLUICE_HOME", str(home))
    return Tracker(load_settings())


@pytest.fixture(scope="module")
def killed_then_rerun(tmp_path_factory):
    """Run 1 is SIGKILLed right after registering v1; run 2 is the identical command."""
    root = tmp_path_factory.mktemp("interrupted")
    config = write_project(root, churn_frame(1200), churn_config(root))
    home = root / "home"
    env = _env(home)
    log1 = root / "killed.log"
    with open(log1, "w") as out:
        proc = subprocess.Popen([sys.executable, "-c", KILLED_DRIVER, str(config)], cwd=ROOT, env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + RUN_LIMIT_S
        while not re.search(r"^FAULT: created version \d+", log1.read_text(), re.MULTILINE):
            assert proc.poll() is None, f"the run ended before registering:\n{log1.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"no version registered in time:\n{log1.read_text()[-3000:]}"
            time.sleep(0.5)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the run and the temporary Prefect API it started
        except ProcessLookupError:
            pass
        proc.wait(timeout=30)
    killed = {"pid": proc.pid, "log": log1.read_text()}
    # the state right after the kill, read before anything repairs it
    with_env = dict(os.environ)
    os.environ["SLUICE_HOME"] = str(home)
    try:
        tr = Tracker(load_settings())
        v1 = tr.version("churn", "1")
        killed["tags"] = dict(v1.tags)
        killed["run_status"] = tr.client.get_run(v1.run_id).info.status
        killed["status"] = tr.status("churn")
    finally:
        os.environ.clear()
        os.environ.update(with_env)
    rerun = subprocess.run([sys.executable, "-c", PLAIN_DRIVER, "run", str(config), "--reason", "rerun"], cwd=ROOT,
                           env=env, capture_output=True, text=True, timeout=RUN_LIMIT_S)
    yield {"home": home, "config": config, "killed": killed, "rerun": rerun}


def test_the_fault_left_half_finished_work(killed_then_rerun):
    killed = killed_then_rerun["killed"]
    assert "sluice.verdict" not in killed["tags"], killed["tags"]
    assert killed["run_status"] == "RUNNING"
    # before any repair, status already says what happened instead of "None: None"
    lv = killed["status"]["last_verdict"]
    assert lv["verdict"] == "none" and lv["summary"].startswith("no verdict (interrupted run)"), lv


def test_identical_rerun_adopts_the_unfinished_version(killed_then_rerun, monkeypatch, capsys):
    rerun = killed_then_rerun["rerun"]
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert "churn: v1 had no verdict (interrupted run): adopted" in rerun.stderr, rerun.stderr[-3000:]
    tr = _tracker(killed_then_rerun["home"], monkeypatch)
    versions = tr.versions("churn")
    assert [v.version for v in versions] == ["1"], "the re-run registered a second copy"
    v1 = versions[0]
    assert v1.tags["sluice.verdict"] == "promoted" and tr.champion("churn").version == "1"
    run = tr.client.get_run(v1.run_id)
    assert run.info.status == "KILLED" and "marked KILLED" in run.data.tags["sluice.interrupted"]
    assert "adopted" in run.data.tags["sluice.adopted"]
    exp = tr.client.get_experiment_by_name("churn")
    assert not tr.client.search_runs([exp.experiment_id], "attributes.status = 'RUNNING'")
    monkeypatch.chdir(killed_then_rerun["config"].parent.parent)
    assert main(["status", "churn"]) == 0
    out = capsys.readouterr().out
    assert "last verdict: v1 promoted" in out and "None" not in out, out


def test_state_files_are_private_to_the_user(killed_then_rerun):
    home = killed_then_rerun["home"]
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    expected = [home / "mlflow.db", home / "prefect" / "prefect.db", *sorted((home / "data").rglob("*.parquet"))]
    assert len(expected) > 2, sorted(p.name for p in home.rglob("*"))
    for path in expected:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, (path, oct(path.stat().st_mode))
    for folder in [p for p in home.rglob("*") if p.is_dir()]:
        assert not stat.S_IMODE(folder.stat().st_mode) & 0o077, (folder, oct(folder.stat().st_mode))


def test_a_different_candidate_marks_the_orphan_abandoned(tmp_path, monkeypatch):
    """A version whose registering process died and that no re-run adopts gets a verdict, never None."""
    import numpy as np
    import pandas as pd
    from sklearn.linear_model import LinearRegression

    tr = _tracker(tmp_path / "home", monkeypatch)
    X = pd.DataFrame({"a": np.arange(20.0)})
    model = LinearRegression().fit(X, 2 * X.a)
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # a pid that is certainly gone
    orphan = tr.register_candidate("p", model, X.head(2), {}, {"test_r2": 1.0}, {"sluice.candidate_key": "old"})
    tr.client.set_tag(orphan.run_id, "sluice.pid", str(child.pid))
    tr.client.set_terminated(orphan.run_id, "RUNNING")
    assert tr.status("p")["last_verdict"]["summary"].startswith("no verdict (interrupted run)")
    repaired = tr.recover_interrupted("p", candidate_key="new")
    assert len(repaired) == 2, repaired
    v1 = tr.version("p", "1")
    assert v1.tags["sluice.verdict"] == "abandoned" and "stopped before the gates decided" in v1.tags[
        "sluice.verdict_summary"]
    assert tr.client.get_run(orphan.run_id).info.status == "KILLED"
    assert tr.recover_interrupted("p", candidate_key="new") == []  # nothing left to repair


def test_the_version_that_lost_a_promotion_race_is_tagged_conflict(tmp_path, monkeypatch):
    import numpy as np
    import pandas as pd
    from sklearn.linear_model import LinearRegression

    tr = _tracker(tmp_path / "home", monkeypatch)
    X = pd.DataFrame({"a": np.arange(20.0)})
    model = LinearRegression().fit(X, 2 * X.a)
    one = tr.register_candidate("p", model, X.head(2), {}, {"test_r2": 1.0}, {})
    two = tr.register_candidate("p", model, X.head(2), {}, {"test_r2": 1.0}, {})
    decision = {"promote": True, "summary": "passes every gate (no champion yet)", "checks": []}
    tr.record_decision(one, decision)
    tr.record_decision(two, decision)  # both runs saw no champion and passed
    tr.promote("p", one.version, expected_champion=None)
    with pytest.raises(PromotionConflictError, match="champion moved"):
        tr.promote("p", two.version, expected_champion=None)
    lost = tr.version("p", two.version)
    assert lost.tags["sluice.verdict"] == "conflict", lost.tags
    assert "champion moved from vNone to v1" in lost.tags["sluice.verdict_summary"]
    assert tr.client.get_run(two.run_id).data.tags["sluice.verdict"] == "conflict"
    assert tr.version("p", one.version).tags["sluice.verdict"] == "promoted"
    status = tr.status("p")["last_verdict"]
    assert status["verdict"] == "conflict" and status["summary"].startswith("conflict: ")


def test_no_flow_run_is_left_running(killed_then_rerun):
    """The killed process's flow run is marked Crashed by the re-run (read from Prefect's own database)."""
    import sqlite3

    db = killed_then_rerun["home"] / "prefect" / "prefect.db"
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        runs = conn.execute("SELECT name, state_type, state_name FROM flow_run").fetchall()
    assert len(runs) == 2, runs
    assert sorted(r[1] for r in runs) == ["COMPLETED", "CRASHED"], runs
