"""`deploy.target: container` for real under podman: the local target's release semantics with the model in a container.

v1 is deployed into a container built on the lock image and answers as offline, logging its
predictions where the host reads them; v2 replaces it (switch, the v1 container gone); a v3
whose image cannot start its server leaves v2 serving and the champion alias unchanged; a good v3
goes through a shadow rollout in its own container (copies logged under the champion's ids),
then is promoted into the backend's place; `sluice rollback` brings v2 back in a container;
`sluice stop` leaves no container. Needs podman
and the lock image of infra/podman/setup.sh (.ci/run runs it); elsewhere it skips with one line.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from sluicegate.cli import main
from sluicegate.config import DeployConfig, PackagingConfig
from sluicegate.deploy import engine as eng
from sluicegate.deploy.container import project_containers
from sluicegate.deploy.local import stop_local
from sluicegate.deploy.processes import port_is_free, read_state
from sluicegate.deploy.release import Promotion, release_version
from sluicegate.errors import DeployError
from tests.helpers import FEATURES, Registry, churn_config, feature_records, served_version, write_project

pytestmark = [pytest.mark.containers, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
LOCK_IMAGE = "localhost/sluicegate-python:lock"


def _podman(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return eng.call("podman", *args, timeout=timeout)


def _port() -> int:
    """A free port for the front in 3500-3599 (the model containers publish on free ephemeral ports)."""
    for port in range(3500, 3600):
        if port_is_free("127.0.0.1", port):
            return port
    pytest.skip("no free port in 3500-3599")


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    reason = None if shutil.which("podman") else "podman is not installed"
    reason = reason or eng.engine_missing("podman", LOCK_IMAGE)
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI must run the container tests (.ci/run runs infra/podman/setup.sh)")
        pytest.skip(f"{reason} (run infra/podman/setup.sh; CI does)")
    home = tmp_path_factory.mktemp("container") / "home"
    old = os.environ.get("SLUICE_HOME")
    os.environ["SLUICE_HOME"] = str(home)
    reg = Registry(home)
    reg.v1, reg.v2, reg.v3 = reg.register(1.0), reg.register(0.05), reg.register(0.3)
    reg.promote(reg.v1)
    port = _port()
    # the project's YAML, as `sluice rollback|stop FILE` read it
    cfg = churn_config(home.parent / "project", deploy={"target": "container", "port": port, "canary_rows": 10,
                                                        "readiness_timeout_s": 180})
    reg.yaml = str(write_project(home.parent / "project", None, cfg, name="churn-container.yaml"))
    reg.spec = DeployConfig(**cfg["deploy"])
    reg.url = f"http://127.0.0.1:{port}"
    reg.images = set()
    reg.broken = f"localhost/sg-test-broken-base:{os.getpid()}"
    try:
        yield reg
    finally:
        stop_local(reg.settings, "churn")
        for name in project_containers(reg.settings, "churn"):
            eng.remove_container("podman", name)
        broken_id = eng.image_id("podman", reg.broken)
        if broken_id:  # the v3 image built on it, then the base itself
            reg.images.update(_podman("images", "-q", "--filter", f"label={eng.LABEL_BASE}={broken_id}").stdout.split())
        for image in (*reg.images, reg.broken):
            _podman("rmi", image)  # never -f: an image a container of another session uses stays
        if old is not None:
            os.environ["SLUICE_HOME"] = old


def _release(reg, version: str, settings=None, promotion=None):
    return release_version(reg.tracker, "churn", version, PackagingConfig(), reg.spec, "classification",
                           settings or reg.settings, promotion=promotion)


def _running(reg) -> list[str]:
    return project_containers(reg.settings, "churn", running_only=True)


def test_v1_in_a_container_answers_as_offline_and_logs_where_the_host_reads(deployed):
    reg = deployed
    result = _release(reg, reg.v1)
    state = read_state(reg.settings, "churn")
    assert result.target == "container" and state.backend_container and state.backend_pid == 0
    assert _running(reg) == [state.backend_container]
    # the image tag carries the project, the model version and the Bento's tag
    name, bento_version = state.bento_tag.split(":")
    assert state.image == f"localhost/sluicegate-{name}:{bento_version}" and bento_version.startswith(f"v{reg.v1}-")
    reg.images.add(state.image)
    labels = _podman("inspect", "--format", "{{json .Config.Labels}}", state.backend_container).stdout
    assert f'"sluicegate.bento":"{state.bento_tag}"' in labels and f'"sluicegate.version":"{reg.v1}"' in labels
    published = _podman("port", state.backend_container).stdout
    assert published.strip() == f"3000/tcp -> 127.0.0.1:{state.backend_port}"  # loopback only

    rows = feature_records(reg.frame, 30)
    answers = httpx.post(f"{reg.url}/predict", json=rows, timeout=60).json()
    offline = reg.models[reg.v1].predict(reg.frame[FEATURES].tail(30))
    assert [a["prediction"] for a in answers] == offline.tolist()
    assert {a["model_version"] for a in answers} == {reg.v1}

    from sluicegate.serving.predlog import read_prediction_log

    ids = {a["prediction_id"] for a in answers}
    for _ in range(50):  # the service flushes its log every 0.2 s
        logged = read_prediction_log("churn", reg.settings.home)
        if ids <= set(logged["prediction_id"]):
            break
        time.sleep(0.2)
    assert ids <= set(logged["prediction_id"])  # live rows only: the canary's are kept out of monitoring
    assert set(logged["model_version"].astype(str)) == {reg.v1}


def test_v2_replaces_v1_and_the_old_container_is_gone(deployed):
    reg = deployed
    before = read_state(reg.settings, "churn")
    reg.promote(reg.v2)
    result = _release(reg, reg.v2)
    state = read_state(reg.settings, "churn")
    reg.images.add(state.image)
    assert result.was == reg.v1 and served_version(reg.url) == reg.v2
    assert state.front_pid == before.front_pid  # the same front owns the port; only its backend moved
    assert _running(reg) == [state.backend_container] != [before.backend_container]
    assert eng.container_state("podman", before.backend_container) is None  # stopped and removed


def test_a_v3_whose_server_cannot_start_leaves_v2_serving_and_the_alias_unchanged(deployed):
    reg = deployed
    before = read_state(reg.settings, "churn")
    # a base image whose environment breaks the service: it names a config file that is not there
    ctx = reg.settings.home.parent / "broken-base"
    ctx.mkdir(exist_ok=True)
    (ctx / "Containerfile").write_text(f"FROM {LOCK_IMAGE}\nENV SLUICE_SERVICE_CONFIG=/nonexistent/sluice_service.json\n")
    made = _podman("build", "--pull=never", "--network=none", "-q", "-t", reg.broken, str(ctx), timeout=300)
    assert made.returncode == 0, made.stderr
    settings = dataclasses.replace(reg.settings, container_base=reg.broken)

    with pytest.raises(DeployError, match=r"container sluicegate-churn-v3-\w+ stopped before it was ready \(podman state: (exited|stopped)\)"):
        _release(reg, reg.v3, settings, Promotion(expected_champion=reg.v2))
    assert reg.champion() == reg.v2
    assert read_state(reg.settings, "churn") == before
    assert served_version(reg.url) == reg.v2
    assert _running(reg) == [before.backend_container]  # the failed candidate was removed
    assert project_containers(reg.settings, "churn") == [before.backend_container]


def test_a_shadow_rollout_runs_the_candidate_in_its_own_container_then_promotes_it(deployed):
    from sluicegate.deploy.traffic import promote_rollout
    from sluicegate.serving.predlog import read_prediction_log

    reg = deployed
    before = read_state(reg.settings, "churn")
    spec = reg.spec.model_copy(update={"strategy": "shadow"})
    result = release_version(reg.tracker, "churn", reg.v3, PackagingConfig(), spec, "classification", reg.settings,
                             promotion=Promotion(expected_champion=reg.v2))
    state = read_state(reg.settings, "churn")
    rollout = state.rollout
    assert result.target == "container" and rollout["status"] == "active" and rollout["strategy"] == "shadow"
    assert rollout["candidate_container"] and rollout["candidate_pid"] == 0
    reg.images.add(rollout["candidate_image"])
    assert sorted(_running(reg)) == sorted([before.backend_container, rollout["candidate_container"]])
    assert reg.champion() == reg.v2 and state.backend_container == before.backend_container  # nothing moved yet
    # the candidate's processes run niced (rootful podman: they are processes of this host)
    pid = eng.container_pid("podman", rollout["candidate_container"])
    assert pid and os.getpriority(os.PRIO_PROCESS, pid) == spec.shadow.nice

    with httpx.Client(timeout=60) as client:
        answers = [client.post(f"{reg.url}/predict", json=feature_records(reg.frame, 3)).json() for _ in range(10)]
    assert {a["model_version"] for ans in answers for a in ans} == {reg.v2}  # only the champion answers
    ids = {a["prediction_id"] for ans in answers for a in ans}
    for _ in range(100):
        log = read_prediction_log("churn", reg.settings.home, traffic=("live", "shadow"))
        shadow = log[log["traffic"] == "shadow"]
        if ids <= set(shadow["prediction_id"]):
            break
        time.sleep(0.2)
    assert ids <= set(shadow["prediction_id"])  # the candidate container scored a copy of each, same ids
    assert set(shadow[shadow["prediction_id"].isin(ids)]["model_version"].astype(str)) == {reg.v3}

    promote_rollout(reg.tracker, reg.settings, "churn", PackagingConfig(), reason="test")
    state = read_state(reg.settings, "churn")
    assert reg.champion() == reg.v3 and served_version(reg.url) == reg.v3
    assert state.backend_container == rollout["candidate_container"] and state.rollout["status"] == "promoted"
    assert state.front_pid == before.front_pid and _running(reg) == [state.backend_container]
    assert eng.container_state("podman", before.backend_container) is None  # the old champion's container is gone


def test_rollback_and_stop_through_the_cli(deployed):
    reg = deployed
    before = read_state(reg.settings, "churn")
    assert main(["rollback", reg.yaml]) == 0
    state = read_state(reg.settings, "churn")
    reg.images.add(state.image)
    assert reg.champion() == reg.v2 and state.version == reg.v2 and served_version(reg.url) == reg.v2
    assert state.backend_container and _running(reg) == [state.backend_container]
    assert eng.container_state("podman", before.backend_container) is None

    assert main(["stop", reg.yaml]) == 0
    assert project_containers(reg.settings, "churn") == []
    assert read_state(reg.settings, "churn") is None
    assert port_is_free("127.0.0.1", reg.spec.port)
