"""Deploy faults injected for real: concurrent deploys, stop under load, unloadable and corrupted models."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from sluicegate.cli import main
from sluicegate.config import PackagingConfig
from sluicegate.deploy.local import stop_local
from sluicegate.deploy.processes import (
    BACKEND_MARKER,
    FRONT_MARKER,
    free_port,
    pid_alive,
    port_is_free,
    process_tree,
    read_state,
    state_dir,
)
from sluicegate.deploy.proxy import front_identity
from sluicegate.errors import DeployError
from tests.helpers import (
    Registry,
    churn_config,
    deploy_spec,
    env_var,
    feature_records,
    loopback_webhook,
    release,
    served_version,
    write_project,
)

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    home = tmp_path_factory.mktemp("faults") / "home"
    with env_var("SLUICE_HOME", str(home)):
        reg = Registry(home)
        reg.v1, reg.v2 = reg.register(1.0), reg.register(0.05)
        reg.promote(reg.v1)
        try:
            yield reg
        finally:
            stop_local(reg.settings, "churn")


@pytest.fixture(scope="module")
def hook():
    """A loopback webhook receiver: what `sluice deploy|rollback` notify."""
    with loopback_webhook() as receiver:
        yield receiver


@pytest.fixture(scope="module")
def project_yaml(tmp_path_factory, hook):
    """The churn project's YAML, notifying the loopback webhook (what `sluice deploy|rollback FILE` reads)."""
    root = tmp_path_factory.mktemp("project")
    cfg = churn_config(root)
    cfg["notifications"] = {"webhook_url": f"{hook.url}/hook"}
    return str(write_project(root, None, cfg))


def _ours(marker: str, registry) -> list[int]:
    """Group leaders running `marker` for this test's SLUICE_HOME (other sessions share the machine)."""
    folder, home = str(state_dir(registry.settings, "churn")), str(registry.settings.home)
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(entry / "cwd")
            leader = os.getpgid(int(entry.name)) == int(entry.name)
        except OSError:
            continue
        if leader and marker in cmd and (folder in cmd or cwd == home):
            found.append(int(entry.name))
    return found


def test_concurrent_deploys_leave_one_front_live_pids_and_stop_frees_the_port(registry, tmp_path):
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    deploys = [subprocess.Popen([sys.executable, "-m", "sluicegate.cli", "deploy", "churn", "--port", str(port),
                                 "--version", v], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
               for v in (registry.v1, registry.v2)]
    outputs = [p.communicate(timeout=900)[0] for p in deploys]
    assert [p.returncode for p in deploys] == [0, 0], outputs

    state = read_state(registry.settings, "churn")
    assert pid_alive(state.front_pid, FRONT_MARKER) and pid_alive(state.backend_pid, BACKEND_MARKER)
    who = front_identity("127.0.0.1", port)
    assert (who["pid"], who["token"], who["backend_port"]) == (state.front_pid, state.front_token, state.backend_port)
    assert _ours("sluicegate.deploy.proxy", registry) == [state.front_pid]
    assert _ours("bentoml serve", registry) == [state.backend_pid]
    assert served_version(f"http://127.0.0.1:{port}") == state.version

    tree = [state.front_pid, state.backend_pid, *process_tree(state.backend_pid)]
    assert main(["stop", "churn"]) == 0
    assert port_is_free("127.0.0.1", port)
    assert not [p for p in tree if pid_alive(p)]
    assert read_state(registry.settings, "churn") is None


def test_stop_under_load_answers_every_accepted_request_and_the_port_is_reusable_at_once(registry):
    port = free_port()
    url = release(registry, port, registry.v1).url
    rows = feature_records(registry.frame, 3)
    outcomes: list[str] = []
    done = threading.Event()

    def post_continuously(keep_alive: bool) -> None:
        client = httpx.Client(timeout=60) if keep_alive else None
        while not done.is_set():
            try:
                resp = (client.post if client else httpx.post)(f"{url}/predict", json=rows, timeout=60)
                outcomes.append("ok" if resp.status_code == 200 else f"http {resp.status_code}")
            except httpx.ConnectError:  # refused: the front no longer accepts, nothing was taken
                outcomes.append("refused")
                time.sleep(0.05)
            except httpx.HTTPError as exc:
                outcomes.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=post_continuously, args=(i % 2 == 0,)) for i in range(4)]
    for t in threads:
        t.start()
    try:
        end = time.monotonic() + 60
        while outcomes.count("ok") < 8 and time.monotonic() < end:
            time.sleep(0.1)
        stop_local(registry.settings, "churn")
        refused_from = len(outcomes)
        time.sleep(0.5)
    finally:
        done.set()
        for t in threads:
            t.join(timeout=90)
    counts = Counter(outcomes)
    assert counts["ok"] >= 8
    assert set(counts) <= {"ok", "refused"}, counts  # no reset, no 5xx for a request the front took
    assert set(outcomes[refused_from:]) <= {"refused"}

    again = release(registry, port, registry.v1)  # sockets of the old front in TIME-WAIT do not block it
    assert served_version(again.url) == registry.v1


def _registered_model_files(home: Path) -> set[Path]:
    return {p for p in home.rglob("model.pkl") if "bentoml" not in p.parts}


def test_unloadable_model_is_exit_9_and_moves_no_alias(registry, project_yaml, hook, capsys):
    port = free_port()
    release(registry, port, registry.v1)
    before = _registered_model_files(registry.settings.home)
    v3 = registry.register(0.5)
    [model_file] = _registered_model_files(registry.settings.home) - before
    model_file.write_bytes(model_file.read_bytes()[:100])  # unpickling fails: not a DeployError at the source
    hook.events()

    assert main(["deploy", project_yaml, "--port", str(port), "--version", v3]) == DeployError.exit_code
    assert "deploy failed" in capsys.readouterr().err
    assert registry.champion() == registry.v1
    assert served_version(f"http://127.0.0.1:{port}") == registry.v1
    assert hook.events() == ["sluicegate.deploy.failed"]

    registry.promote(v3)  # blessed by hand while v1 serves: its failed deploy must not leave it champion
    assert main(["deploy", project_yaml, "--port", str(port)]) == DeployError.exit_code
    assert registry.champion() == registry.v1
    previous = registry.tracker.alias("churn", "previous-champion")
    assert previous is None or previous.version != registry.v1
    assert served_version(f"http://127.0.0.1:{port}") == registry.v1
    assert hook.events() == ["sluicegate.model.rolled_back", "sluicegate.deploy.failed"]


def test_corrupted_store_model_is_rebuilt_on_retry(registry):
    from sluicegate.packaging import package_model

    port = free_port()
    release(registry, port, registry.v1)
    bento = package_model(registry.tracker, "churn", registry.v2, PackagingConfig(), deploy_spec(port), "classification",
                          registry.settings)
    stored = Path(registry.settings.bentoml_home) / "models" / bento.model_tag.replace(":", "/") / "model.pkl"
    stored.write_bytes(stored.read_bytes()[:200])
    with pytest.raises(DeployError, match="corrupted"):
        release(registry, port, registry.v2)
    assert served_version(f"http://127.0.0.1:{port}") == registry.v1

    result = release(registry, port, registry.v2)  # the damaged copy is not reused
    assert served_version(result.url) == registry.v2
    from sluicegate.data import hash_file

    assert hash_file(stored) == bento.model_sha256


def test_cli_rollback_notifies_and_swaps_the_aliases(registry, project_yaml, hook):
    port = free_port()
    registry.promote(registry.v2)
    champion_before = registry.champion()
    release(registry, port)
    previous = registry.tracker.alias("churn", "previous-champion").version
    hook.events()
    assert main(["rollback", project_yaml, "--port", str(port)]) == 0
    assert registry.champion() == previous
    assert registry.tracker.alias("churn", "previous-champion").version == champion_before
    assert served_version(f"http://127.0.0.1:{port}") == previous
    assert hook.events() == ["sluicegate.model.rolled_back"]
