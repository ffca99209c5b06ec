"""Local process supervision with real processes and signals: the deploy lock, process trees, ports."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

from sluicegate.deploy.processes import (
    CANDIDATE_FILE,
    LOCK_FILE,
    STATE_FILE,
    ServingState,
    backend_alive,
    free_port,
    pid_alive,
    port_is_free,
    process_tree,
    project_lock,
    read_state,
    reap_orphan_candidate,
    record_candidate,
    state_dir,
    stop_process_group,
    write_state,
)
from sluicegate.errors import DeployError
from sluicegate.settings import load_settings


def _wait(predicate, timeout_s: float = 20.0) -> None:
    end = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < end, "condition not met in time"
        time.sleep(0.05)


def test_deploy_lock_serializes_and_dies_with_its_holder(tmp_path, monkeypatch):
    monkeypatch.setenv("SLUICE_HOME", str(tmp_path))
    settings = load_settings()
    code = ("import sys, time\nfrom sluicegate.deploy.processes import project_lock\n"
            "from sluicegate.settings import load_settings\n"
            "with project_lock(load_settings(), 'p'):\n    print('held', flush=True)\n    time.sleep(120)\n")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, env=os.environ.copy())
    try:
        assert holder.stdout.readline().strip() == b"held"
        with pytest.raises(DeployError, match=f"pid {holder.pid}"):
            with project_lock(settings, "p", timeout_s=0.5):
                pass
        holder.kill()  # a crash: no cleanup runs, the kernel drops the lock
        holder.wait(timeout=20)
        with project_lock(settings, "p", timeout_s=20):
            assert (state_dir(settings, "p") / LOCK_FILE).read_text() == str(os.getpid())
    finally:
        holder.kill()
        holder.wait(timeout=20)


def test_stop_reaches_descendants_that_left_the_process_group(tmp_path):
    pidfile = tmp_path / "grandchild.pid"
    # the child starts a grandchild in a session of its own, as a worker manager may
    code = ("import subprocess, sys, time\n"
            f"p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'], start_new_session=True)\n"
            f"open({str(pidfile)!r}, 'w').write(str(p.pid))\ntime.sleep(120)\n")
    child = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    try:
        _wait(lambda: pidfile.exists() and pidfile.read_text().strip() != "")
        grandchild = int(pidfile.read_text())
        assert grandchild in process_tree(child.pid)
        assert os.getpgid(grandchild) != child.pid
        stop_process_group(child.pid, timeout_s=10)
        child.wait(timeout=10)
        _wait(lambda: not pid_alive(grandchild), 10)
    finally:
        child.kill()


def test_port_in_time_wait_is_free_but_a_listener_is_not():
    port = free_port()
    server = socket.create_server(("127.0.0.1", port))
    client = socket.create_connection(("127.0.0.1", port))
    conn, _ = server.accept()
    assert not port_is_free("127.0.0.1", port)
    conn.close()  # the server side closes first: its socket on `port` goes to TIME-WAIT
    server.close()
    time.sleep(0.1)
    client.close()
    assert port_is_free("127.0.0.1", port)


def test_probes_mark_their_requests_as_canary_traffic():
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from sluicegate.config import PackagingConfig
    from sluicegate.deploy.local import wait_serving_version
    from sluicegate.deploy.processes import wait_ready

    seen: list[tuple[str, str | None]] = []

    class Service(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            seen.append((self.path, self.headers.get("X-Sluice-Traffic")))
            body = json.dumps({"version": "3"}).encode()
            self.send_response(200)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Service)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        wait_ready(None, url, 10)
        wait_serving_version(url, "3", PackagingConfig(), 10)
    finally:
        server.shutdown()
        server.server_close()
    assert seen == [("/readyz", "canary"), ("/metadata", "canary")]
    from sluicegate.deploy.canary import probe_headers

    assert probe_headers(PackagingConfig())["X-Sluice-Traffic"] == "canary"  # the canary's /predict requests


def test_state_files_without_the_container_fields_read_as_a_process_backend(tmp_path):
    import json

    settings = load_settings({"SLUICE_HOME": str(tmp_path)})
    folder = state_dir(settings, "p")
    folder.mkdir(parents=True)
    old = {"project": "p", "version": "1", "bento_tag": "p:v1-x", "host": "127.0.0.1", "port": 3000, "front_pid": 0,
           "backend_pid": os.getpid(), "backend_port": 1, "started_at": "t", "front_token": "", "rollout": None}
    (folder / STATE_FILE).write_text(json.dumps(old))
    state = read_state(settings, "p")
    assert (state.backend_container, state.engine, state.image) == ("", "", "")
    assert not backend_alive(state)  # pytest is no model server: the marker does not match
    in_container = ServingState(**{**old, "backend_pid": 0, "backend_container": "c", "engine": "podman", "image": "i"})
    write_state(settings, in_container)
    assert read_state(settings, "p") == in_container


def test_an_orphan_container_whose_engine_is_gone_never_blocks_the_next_deploy(tmp_path, capsys):
    settings = load_settings({"SLUICE_HOME": str(tmp_path)})
    state_dir(settings, "p").mkdir(parents=True)
    record_candidate(settings, "p", "container:no-such-engine-here:sluicegate-p-v1-abc")
    reap_orphan_candidate(settings, "p")
    assert not (state_dir(settings, "p") / CANDIDATE_FILE).exists()
    assert "no-such-engine-here rm -f sluicegate-p-v1-abc" in capsys.readouterr().err
