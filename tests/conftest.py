"""Shared test setup: every store in a temporary folder, one Prefect harness per session."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_TMP = Path(tempfile.mkdtemp(prefix="sluice-tests-"))
# Set before Prefect, MLflow or BentoML are imported anywhere in the session.
os.environ.update({
    "SLUICE_HOME": str(_TMP / "home"),
    "PREFECT_HOME": str(_TMP / "prefect"),
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
    "PREFECT_LOGGING_LEVEL": "WARNING",
    "GX_ANALYTICS_ENABLED": "false",
    "BENTOML_DO_NOT_TRACK": "true",
    "BENTOML_HOME": str(_TMP / "bentoml"),
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    # commands in tests use the session's harness; tests/integration/test_local_server.py opts back in
    "SLUICE_PREFECT_SERVER": "off",
})
os.environ.pop("MLFLOW_TRACKING_URI", None)
os.environ.pop("PREFECT_API_URL", None)
(_TMP / "prefect").mkdir(parents=True, exist_ok=True)
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # `flows` and `tasks` import from the checkout, as Prefect's loader does


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def prefect_harness():
    """One temporary Prefect API for the whole session (starting one costs ~15 s)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture()
def sluice_home(tmp_path, monkeypatch) -> Path:
    """A fresh SLUICE_HOME (MLflow DB, snapshots, runs) for one test."""
    home = tmp_path / "home"
    monkeypatch.setenv("SLUICE_HOME", str(home))
    return home


@pytest.fixture()
def tracker(tmp_path, monkeypatch):
    """A Tracker (MLflow on SQLite) on a fresh SLUICE_HOME, tmp_path itself."""
    from sluicegate.settings import load_settings
    from sluicegate.tracking import Tracker

    monkeypatch.setenv("SLUICE_HOME", str(tmp_path))
    return Tracker(load_settings())
