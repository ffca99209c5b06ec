"""The local Prefect server lives between commands: started once, reused, stopped on request."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from sluicegate.deploy import free_port
from sluicegate.localserver import ensure_server, server_status, stop_server

ROOT = Path(__file__).resolve().parents[2]
SLUICE = str(Path(sys.executable).parent / "sluice")


def _wait_for_scheduled_runs(api: str, deployment: str, timeout: float) -> list[dict]:
    """The SCHEDULED runs the server's scheduler made for a deployment (waits for the first pass)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        deps = [d for d in httpx.post(f"{api}/deployments/filter", json={}, timeout=10).json() if d["name"] == deployment]
        if deps:
            runs = httpx.post(f"{api}/flow_runs/filter", timeout=10, json={
                "flow_runs": {"deployment_id": {"any_": [deps[0]["id"]]}, "state": {"type": {"any_": ["SCHEDULED"]}}}}).json()
            if runs:
                return runs
        time.sleep(3)
    return []


def test_a_taken_port_falls_back_to_the_temporary_api_with_one_line(tmp_path):
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        env = {"SLUICE_PREFECT_PORT": str(port), "PREFECT_HOME": str(tmp_path / "prefect")}
        said: list[str] = []
        choice = ensure_server(env, tmp_path, announce=said.append)
    assert "temporary" in choice
    assert "PREFECT_API_URL" not in env
    assert any(f"port {port}" in line and "in use" in line for line in said), said
    assert not server_status(tmp_path).running


def test_a_set_prefect_api_url_wins(tmp_path):
    env = {"PREFECT_API_URL": "http://127.0.0.1:9/api"}
    assert "PREFECT_API_URL" in ensure_server(env, tmp_path)
    assert not (tmp_path / "prefect-server").exists()


@pytest.mark.slow
def test_commands_share_one_server_that_records_their_runs(tmp_path):
    port = free_port()
    env = {**os.environ, "SLUICE_HOME": str(tmp_path / "home"), "PREFECT_HOME": str(tmp_path / "home" / "prefect"),
           "SLUICE_PREFECT_SERVER": "auto", "SLUICE_PREFECT_PORT": str(port)}
    env.pop("PREFECT_API_URL", None)
    args = [SLUICE, "run", "configs/diabetes.yaml", "--set", "deploy.enabled=false", "--reason", "server test"]
    try:
        first = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
        assert first.returncode == 0, first.stderr[-2000:]
        assert "starting the local Prefect server" in first.stderr
        info = json.loads((tmp_path / "home" / "prefect-server" / "server.json").read_text())
        assert info["port"] == port

        second = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
        assert second.returncode == 0, second.stderr[-2000:]
        assert "starting the local Prefect server" not in second.stderr
        assert "unchanged" in second.stdout
        assert json.loads((tmp_path / "home" / "prefect-server" / "server.json").read_text())["pid"] == info["pid"]

        runs = httpx.post(f"http://127.0.0.1:{port}/api/flow_runs/filter", json={}, timeout=10).json()
        assert sum(r["state_type"] == "COMPLETED" for r in runs) >= 2

        status = subprocess.run([SLUICE, "server", "status"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
        assert status.returncode == 0 and str(info["pid"]) in status.stdout

        # the server's scheduler turns the drift check's cron into runs (it did not with SQLAlchemy 2.1:
        # every scheduler pass failed in the server log, so no scheduled check ever ran)
        applied = subprocess.run([SLUICE, "deployments", "apply", "configs/diabetes.yaml", "--pool", "sched-test"],
                                 cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert applied.returncode == 0, applied.stderr[-2000:]
        scheduled = _wait_for_scheduled_runs(f"http://127.0.0.1:{port}/api", "diabetes-drift-check", timeout=180)
        log = (tmp_path / "home" / "prefect-server" / "server.log").read_text(errors="replace")
        assert scheduled, f"no scheduled run of diabetes-drift-check; server log tail: {log[-3000:]}"
        failed_passes = [line for line in log.splitlines() if "ERROR" in line and "schedule" in line]
        assert not failed_passes, failed_passes[:3]
    finally:
        stopped = subprocess.run([SLUICE, "server", "stop"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert "stopped" in stopped.stdout
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2)
    after = subprocess.run([SLUICE, "server", "status"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert after.returncode == 10 and "local Prefect server" in after.stderr
    assert stop_server(tmp_path / "home") is None
