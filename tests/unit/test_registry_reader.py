"""The light registry reader of `sluice status` agrees with `Tracker.status` on the same MLflow database.

The reader runs SQL on MLflow's own tables: when MLflow changes its schema, this test fails
instead of `sluice status` printing something wrong.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from sluicegate.registry_reader import SqliteRegistryReader, reader_for
from sluicegate.settings import load_settings
from sluicegate.tracking import Tracker
from tests.helpers import tiny_regressor

ROOT = Path(__file__).resolve().parents[2]


def _same(tracker: Tracker, project: str) -> None:
    full = tracker.status(project)
    light = reader_for(tracker.settings).status(project)
    assert light["tracking_uri"] == full["tracking_uri"].split("?")[0]
    assert {k: v for k, v in light.items() if k != "tracking_uri"} == {k: v for k, v in full.items() if k != "tracking_uri"}
    assert reader_for(tracker.settings).projects() == tracker.projects()


def test_reader_matches_tracker_status(tmp_path, monkeypatch):
    monkeypatch.setenv("SLUICE_HOME", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    settings = load_settings()
    assert isinstance(reader_for(settings), SqliteRegistryReader)
    assert reader_for(settings).projects() == []  # no database yet: nothing registered, nothing created
    assert not (tmp_path / "mlflow.db").exists()
    tr = Tracker(settings)
    _same(tr, "p")
    model, X = tiny_regressor()
    v1 = tr.register_candidate("p", model, X.head(2), {"alpha": 1}, {"test_r2": 0.9, "valid_r2": 0.8},
                               {"sluice.data_fingerprint": "abc", "sluice.config_hash": "h1"})
    _same(tr, "p")  # a version, no champion, no verdict
    tr.record_decision(v1, {"promote": True, "summary": "all gates passed", "checks": [{"name": "r2", "passed": True}]})
    tr.promote("p", v1.version, expected_champion=None)
    v2 = tr.register_candidate("p", model, X.head(2), {}, {"test_r2": 0.5}, {"sluice.data_fingerprint": "def"})
    tr.record_decision(v2, {"promote": False, "summary": "r2 below 0.8", "checks": [{"name": "r2", "passed": False}]})
    tr.register_candidate("q", model, X.head(2), {}, {"test_r2": 0.7}, {})
    _same(tr, "p")
    _same(tr, "q")
    status = reader_for(settings).status("p")
    assert status["champion"] == 1 and status["versions"] == 2 and status["last_verdict"]["verdict"] == "rejected"
    assert status["last_verdict"]["checks"] == [{"name": "r2", "passed": False}]


def test_reader_reads_the_audit_trail_as_the_tracker_does(tmp_path, monkeypatch):
    from sluicegate.audit import new_record

    monkeypatch.setenv("SLUICE_HOME", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    settings = load_settings()
    tr, light = Tracker(settings), reader_for(settings)
    assert light.audit_records("p") == []
    for i, why in enumerate(["first deploy", "gate passed", "x" * 9000]):  # the last is cut at MLflow's tag limit
        tr.append_audit("p", new_record("p", "deploy", str(i + 1), why, who="alice").to_dict())
    tr.append_audit("q", new_record("q", "promote", "1", "other project", who="bob").to_dict())
    assert light.audit_records("p") == tr.audit_records("p") and len(light.audit_records("p")) == 3
    assert light.audit_records("p", 2) == tr.audit_records("p", 2)
    assert light.audit_records("p")[0]["why"] == "x" * 9000
    assert [r["project"] for r in light.audit_records("q")] == ["q"]


def test_other_stores_use_the_full_tracker(tmp_path):
    env = {"SLUICE_HOME": str(tmp_path)}
    assert reader_for(load_settings({**env, "MLFLOW_TRACKING_URI": "postgresql://u:p@127.0.0.1/db"})) is None
    assert reader_for(load_settings({**env, "MLFLOW_TRACKING_URI": "http://127.0.0.1:5000",
                                     "MLFLOW_REGISTRY_URI": "sqlite:////tmp/x.db"})) is None
    assert reader_for(load_settings({**env, "MLFLOW_TRACKING_URI": "http://127.0.0.1:5000"})) is not None


def test_status_imports_no_mlflow_pandas_or_prefect(tmp_path):
    code = ("import sys; from sluicegate.cli import main; rc = main(['status', 'nothing-here']); "
            "print(rc, sorted(m for m in ('mlflow', 'pandas', 'prefect', 'bentoml', 'torch', 'sklearn') if m in sys.modules))")
    env = {**os.environ, "SLUICE_HOME": str(tmp_path), "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    env.pop("MLFLOW_TRACKING_URI", None)
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    rc, loaded = done.stdout.strip().splitlines()[-1].split(" ", 1)
    assert rc == "2" and json.loads(loaded.replace("'", '"')) == [], done.stdout + done.stderr
