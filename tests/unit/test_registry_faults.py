"""A registry that is down, broken or corrupt is an error within seconds, never "nothing there"."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from sluicegate.errors import RegistryError
from sluicegate.settings import load_settings, redact
from sluicegate.tracking import Tracker

ROOT = Path(__file__).resolve().parents[2]
SLUICE = str(Path(sys.executable).parent / "sluice")


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Broken(BaseHTTPRequestHandler):
    """An MLflow server that accepts connections and then fails every request."""

    def _fail(self):
        body = b'{"error_code": "INTERNAL_ERROR", "message": "database is locked"}'
        self.send_response(500)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _fail

    def log_message(self, *args):
        pass


def test_a_dead_registry_port_fails_fast_naming_the_uri(tmp_path):
    uri = f"http://127.0.0.1:{_dead_port()}"
    with pytest.raises(RegistryError) as err:
        Tracker(load_settings({"SLUICE_HOME": str(tmp_path), "MLFLOW_TRACKING_URI": uri}))
    assert uri in str(err.value) and "does not answer" in str(err.value)
    assert err.value.exit_code == 8


def test_a_failing_registry_is_an_error_not_no_champion(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Broken)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        tr = Tracker(load_settings({"SLUICE_HOME": str(tmp_path),
                                    "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{server.server_port}"}))
        with pytest.raises(RegistryError, match="could not read alias 'champion'"):
            tr.champion("churn")
        with pytest.raises(RegistryError, match="could not list versions"):
            tr.versions("churn")
    finally:
        server.shutdown()


def test_a_missing_model_or_alias_is_absence(tmp_path):
    tr = Tracker(load_settings({"SLUICE_HOME": str(tmp_path)}))
    assert tr.champion("nothing-here") is None
    assert tr.versions("nothing-here") == []
    tr.client.create_registered_model("empty")
    assert tr.champion("empty") is None


def test_an_empty_or_corrupt_mlflow_db_is_named_not_reinitialised(tmp_path):
    db = tmp_path / "mlflow.db"
    db.write_bytes(b"")
    with pytest.raises(RegistryError, match="empty file"):
        Tracker(load_settings({"SLUICE_HOME": str(tmp_path)}))
    assert db.stat().st_size == 0  # left for the user to restore, not silently rebuilt
    db.write_bytes(b"SQLite format 3\x00" + os.urandom(8192))
    with pytest.raises(RegistryError, match="corrupt|cannot be opened"):
        Tracker(load_settings({"SLUICE_HOME": str(tmp_path)}))


def test_secrets_in_urls_are_masked():
    assert redact("postgresql://u:hunter2@db:5432/x") == "postgresql://u:***@db:5432/x"
    masked = redact("mysql://db/x?apikey=abc123&sslmode=require&access_token=t0k")
    assert "abc123" not in masked and "t0k" not in masked and "sslmode=require" in masked


@pytest.mark.parametrize("command", [["status", "diabetes"], ["run", "configs/diabetes.yaml"]])
def test_the_cli_exits_8_with_the_uri_when_the_registry_is_down(tmp_path, command):
    uri = f"http://127.0.0.1:{_dead_port()}"
    env = {**os.environ, "SLUICE_HOME": str(tmp_path), "MLFLOW_TRACKING_URI": uri}
    done = subprocess.run([SLUICE, *command], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 8, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("error:") and uri in lines[-1], done.stderr
    assert "Traceback" not in done.stderr
