"""`sluice doctor`: settings resolved from the environment, each probe against real loopback sockets."""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from sluicegate.cli import main
from sluicegate.doctor import FAIL, OK, redact, run_checks


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def health_server():
    """A real HTTP server on loopback answering /api/health and /health with 200."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            code = 200 if self.path in ("/api/health", "/health") else 404
            self.send_response(code)
            self.end_headers()
            self.wfile.write(b"true")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _by_name(report) -> dict:
    return {c.name: c for c in report.checks}


def test_local_defaults_pass_and_name_every_setting(tmp_path):
    report = run_checks({"SLUICE_HOME": str(tmp_path / "home")})
    checks = _by_name(report)
    assert report.ok
    assert set(checks) == {"prefect-api", "mlflow-tracking", "mlflow-registry", "artifact-root", "optuna-storage",
                           "task-runner", "bentoml-home", "prediction-log"}
    assert checks["prefect-api"].target == "ephemeral"
    assert checks["mlflow-tracking"].target == str(tmp_path / "home" / "mlflow.db")
    assert checks["task-runner"].target == "threads"
    assert not (tmp_path / "home").exists()  # probing creates nothing


def test_servers_that_answer_pass(health_server, tmp_path):
    env = {"SLUICE_HOME": str(tmp_path), "PREFECT_API_URL": f"{health_server}/api",
           "MLFLOW_TRACKING_URI": health_server}
    checks = _by_name(run_checks(env))
    assert checks["prefect-api"].status == OK and "answered 200" in checks["prefect-api"].detail
    assert checks["mlflow-tracking"].status == OK


def test_configured_services_that_do_not_answer_fail_with_passwords_masked(tmp_path):
    port = _closed_port()
    env = {"SLUICE_HOME": str(tmp_path), "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
           "SLUICE_OPTUNA_STORAGE": f"postgresql://u:hunter2@127.0.0.1:{port}/optuna",
           "SLUICE_TASK_RUNNER": "dask", "SLUICE_DASK_ADDRESS": f"tcp://127.0.0.1:{port}",
           "SLUICE_PREDICTION_LOG_URL": f"postgresql://u:hunter2@127.0.0.1:{port}/predlog"}
    report = run_checks(env)
    checks = _by_name(report)
    assert not report.ok
    assert {c.name for c in report.failed} == {"prefect-api", "optuna-storage", "task-runner", "prediction-log"}
    assert checks["prediction-log"].target == f"postgresql://u:***@127.0.0.1:{port}/predlog"
    assert checks["optuna-storage"].target == f"postgresql://u:***@127.0.0.1:{port}/optuna"
    assert "hunter2" not in json.dumps(report.to_dict())
    assert "cannot connect" in checks["optuna-storage"].detail


def test_relative_sqlite_and_unknown_runner_are_refused(tmp_path):
    checks = _by_name(run_checks({"SLUICE_HOME": str(tmp_path), "MLFLOW_TRACKING_URI": "sqlite:///mlflow.db",
                                  "SLUICE_TASK_RUNNER": "ray"}))
    assert checks["mlflow-tracking"].status == FAIL and "absolute" in checks["mlflow-tracking"].detail
    assert checks["task-runner"].status == FAIL and "threads or dask" in checks["task-runner"].detail


def test_redact_masks_only_the_password():
    assert redact("postgresql+asyncpg://me:s3cr3t@db:5432/x") == "postgresql+asyncpg://me:***@db:5432/x"
    assert redact("http://127.0.0.1:5000") == "http://127.0.0.1:5000"


def test_cli_prints_json_and_exits_10_when_something_is_down(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SLUICE_HOME", str(tmp_path))
    monkeypatch.setenv("PREFECT_API_URL", f"http://127.0.0.1:{_closed_port()}/api")
    code = main(["doctor", "--json"])
    out = capsys.readouterr()
    assert code == 10
    assert json.loads(out.out)["ok"] is False
    assert "not answering: prefect-api" in out.err


def test_cli_exits_0_on_local_defaults(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SLUICE_HOME", str(tmp_path))
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "SLUICE_OPTUNA_STORAGE", "SLUICE_TASK_RUNNER",
                "SLUICE_ARTIFACT_ROOT", "BENTOML_HOME"):
        monkeypatch.delenv(var, raising=False)
    assert main(["doctor"]) == 0
    assert "all configured services answer" in capsys.readouterr().out
