"""infra/: compose and Kubernetes files parse, reference only defined variables, existing Dockerfiles and consistent ports;
the Kubernetes manifests validate against the API schemas (offline); the stack script orders services by their health gates."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from infra.podman.stack import StackError, active_services, dependencies, start_order

INFRA = Path(__file__).resolve().parents[2] / "infra"
COMPOSE = INFRA / "compose.yaml"
ENV_EXAMPLE = INFRA / ".env.example"
VAR = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(?:[:?-][^}]*)?\}")


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def env_example() -> dict[str, str]:
    out = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def k8s_docs() -> list[tuple[str, dict]]:
    return [(p.name, d) for p in sorted((INFRA / "k8s").glob("*.yaml"))
            for d in yaml.safe_load_all(p.read_text()) if d is not None]


def test_every_infra_yaml_parses():
    files = [COMPOSE, *sorted((INFRA / "k8s").glob("*.yaml"))]
    assert len(files) >= 4
    for path in files:
        assert list(yaml.safe_load_all(path.read_text())), path


def test_every_compose_variable_is_in_env_example_and_nothing_more():
    used = set(VAR.findall(COMPOSE.read_text()))
    defined = env_example()
    assert used, "compose references no variables"
    assert sorted(used - set(defined)) == []
    assert sorted(set(defined) - used) == []  # no stale entries either


def test_env_example_holds_placeholders_only():
    for key, value in env_example().items():
        if any(word in key for word in ("PASSWORD", "SECRET", "TOKEN")):
            assert value.startswith("change-me"), f"{key} must be a placeholder, got {value!r}"


def test_services_cover_the_stack_and_each_has_a_healthcheck_or_is_one_shot():
    services = compose()["services"]
    assert {"postgres", "minio", "prefect-server", "mlflow", "prefect-worker", "dask-scheduler", "dask-worker",
            "model"} <= set(services)
    assert services["dask-worker"]["deploy"]["replicas"] == 2
    assert services["dask-worker"]["deploy"]["mode"] == "replicated"  # podman-compose ignores replicas without it
    for name in ("postgres", "minio", "prefect-server", "mlflow", "dask-scheduler", "model"):
        assert "test" in services[name]["healthcheck"], name
    assert services["model"]["profiles"] == ["model"]  # needs a built bento; not part of a plain `up`
    # what cannot be built without a registry is optional; Dask is light enough to keep off by default
    assert services["minio"]["profiles"] == services["minio-init"]["profiles"] == ["minio"]
    assert services["dask-scheduler"]["profiles"] == services["dask-worker"]["profiles"] == ["dask"]


def test_the_default_stack_uses_only_images_built_here_and_health_gates_its_order():
    services = compose()["services"]
    core = active_services(compose(), [])
    assert set(core) == {"postgres", "prefect-server", "mlflow", "prefect-worker"}
    for name, svc in core.items():
        # no registry: images made by infra/podman/setup.sh from the local Debian base
        assert svc["image"].startswith("localhost/sluicegate-"), name
        # a Python (or postgres) PID 1 must stop on the signal compose sends
        assert svc.get("stop_signal") == "SIGINT", name
    assert dependencies(services["prefect-server"]) == {"postgres": "service_healthy"}
    assert dependencies(services["mlflow"]) == {"postgres": "service_healthy"}
    assert dependencies(services["prefect-worker"]) == {"prefect-server": "service_healthy", "mlflow": "service_healthy"}
    for name, svc in services.items():
        for dep, condition in dependencies(svc).items():
            if condition == "service_healthy":
                assert "test" in services[dep]["healthcheck"], f"{name} waits for {dep}, which has no healthcheck"
    assert start_order(core) == ["postgres", "prefect-server", "mlflow", "prefect-worker"]
    with_dask = start_order(active_services(compose(), ["dask"]))
    assert with_dask.index("dask-scheduler") < with_dask.index("dask-worker")
    assert with_dask.index("mlflow") < with_dask.index("dask-worker")
    # artifacts without MinIO: the MLflow server proxies them to its own volume
    mlflow_cmd = services["mlflow"]["command"]
    destination = mlflow_cmd[mlflow_cmd.index("--artifacts-destination") + 1]
    assert destination == "${MLFLOW_ARTIFACTS_DESTINATION}"
    mounts = {v.split(":")[1] for v in services["mlflow"]["volumes"]}
    assert env_example()["MLFLOW_ARTIFACTS_DESTINATION"] in mounts
    assert services["prefect-worker"]["environment"]["SLUICE_ARTIFACT_ROOT"] == "mlflow-artifacts:///sluice"


def test_start_order_refuses_a_dependency_outside_the_active_profiles():
    services = {"a": {"depends_on": {"b": {"condition": "service_healthy"}}}, "b": {"profiles": ["x"]}}
    with pytest.raises(StackError, match="a depends on b, which is not in the active profiles"):
        start_order(active_services({"services": services}, []))
    assert start_order(active_services({"services": services}, ["x"])) == ["b", "a"]
    with pytest.raises(StackError, match="cycle"):
        start_order({"a": {"depends_on": ["b"]}, "b": {"depends_on": ["a"]}})


def test_every_build_has_its_dockerfile():
    for name, svc in compose()["services"].items():
        build = svc.get("build")
        if build is None:
            continue
        if "${" in build["context"]:
            # the served model builds from a bento folder made by `sluice deploy`, outside the repo
            assert name == "model" and build["dockerfile"] == "env/docker/Dockerfile"
            continue
        dockerfile = (INFRA / build["context"] / build.get("dockerfile", "Dockerfile")).resolve()
        assert dockerfile.is_file(), f"{name}: {dockerfile} is missing"


def test_images_build_from_the_local_base_and_install_the_lock_once():
    for dockerfile in INFRA.glob("Dockerfile.*"):
        if dockerfile.name.endswith(".dockerignore"):
            continue
        froms = [line.split()[1] for line in dockerfile.read_text().splitlines() if line.startswith("FROM ")]
        args = dict(line[4:].split("=", 1) for line in dockerfile.read_text().splitlines() if line.startswith("ARG "))
        for image in froms:
            image = args.get(image.strip("${}"), image)
            assert image.startswith("localhost/sluicegate-"), f"{dockerfile.name}: FROM {image} needs a registry"
    python = (INFRA / "Dockerfile.python").read_text()
    # the lock layer: the lock is the only file copied, torch from the mounted wheels (never downloaded)
    copies = [line for line in python.splitlines() if line.startswith("COPY")]
    assert copies == ["COPY uv /usr/local/bin/uv", "COPY requirements.lock /tmp/requirements.lock"]
    assert "-r /tmp/requirements.lock" in python and 'TORCH_SOURCE="--find-links /opt/wheels"' in python
    worker = (INFRA / "Dockerfile.worker").read_text()
    assert "localhost/sluicegate-python:lock" in worker
    assert not [line for line in worker.splitlines() if "requirements" in line and not line.startswith("#")]
    assert "COPY tasks" in worker and "PYTHONPATH=/app" in worker and "--no-deps" in worker
    assert (INFRA / "Dockerfile.worker.dockerignore").read_text().count(".venv")
    setup = (INFRA / "podman" / "setup.sh").read_text()
    # the mirror is read from this host's apt sources at run time, never written into the repository
    assert "/etc/apt/sources.list.d/debian.sources" in setup and "deb.debian.org" not in setup


def test_ports_are_consistent():
    services = compose()["services"]
    published = {}
    for name, svc in services.items():
        for spec in svc.get("ports", []):
            host_ip, host, container = spec.split(":")
            assert host_ip == "127.0.0.1", f"{name} publishes beyond loopback: {spec}"
            published[name] = (host, int(container))
    assert published["prefect-server"][1] == 4200 and published["mlflow"][1] == 5000
    assert published["model"][1] == 3000
    hosts = [h for h, _ in published.values()]
    assert len(hosts) == len(set(hosts)), "two services publish the same host port"
    values = [env_example()[VAR.fullmatch(h).group(1)] for h in hosts]
    assert len(values) == len(set(values)), f"host ports collide in .env.example: {values}"
    # in-network URLs use the ports the servers listen on
    env = services["prefect-worker"]["environment"]
    assert env["PREFECT_API_URL"] == "http://prefect-server:4200/api"
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert env["SLUICE_DASK_ADDRESS"] == "tcp://dask-scheduler:8786"
    assert "--port" in services["dask-scheduler"]["command"] and "8786" in services["dask-scheduler"]["command"]
    mlflow_cmd = services["mlflow"]["command"]
    assert mlflow_cmd[mlflow_cmd.index("--port") + 1] == "5000"
    assert services["prefect-server"]["command"][-1] == "4200"
    # a shared Prefect server on SQLite answers 503 under parallel writes: Postgres it is
    url = services["prefect-server"]["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"]
    assert url.startswith("postgresql+asyncpg://")
    assert services["prefect-worker"]["command"][:5] == ["prefect", "worker", "start", "--pool", "sluicegate"]


def test_k8s_objects_are_complete_and_the_model_service_is_probed():
    docs = k8s_docs()
    kinds = {(d["kind"], d["metadata"]["name"]) for _, d in docs}
    for name, doc in docs:
        assert {"apiVersion", "kind", "metadata"} <= set(doc), name
        assert doc["metadata"].get("name"), name
    assert {("Deployment", "prefect-worker"), ("Deployment", "mlflow"), ("Service", "mlflow"),
            ("Deployment", "churn"), ("Service", "churn"), ("HorizontalPodAutoscaler", "churn")} <= kinds
    by_key = {(d["kind"], d["metadata"]["name"]): d for _, d in docs}
    model = by_key[("Deployment", "churn")]["spec"]["template"]["spec"]["containers"][0]
    assert model["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert model["livenessProbe"]["httpGet"]["path"] == "/livez"
    port_names = {p["name"] for p in model["ports"]}
    assert by_key[("Service", "churn")]["spec"]["ports"][0]["targetPort"] in port_names
    hpa = by_key[("HorizontalPodAutoscaler", "churn")]["spec"]
    assert hpa["scaleTargetRef"]["name"] == "churn" and hpa["minReplicas"] <= hpa["maxReplicas"]
    # every Deployment's selector matches its pod labels
    for (kind, name), doc in by_key.items():
        if kind == "Deployment":
            labels = doc["spec"]["template"]["metadata"]["labels"]
            assert doc["spec"]["selector"]["matchLabels"].items() <= labels.items(), name
    worker = by_key[("Deployment", "prefect-worker")]["spec"]["template"]["spec"]["containers"][0]
    assert "--type" in worker["command"] and "kubernetes" in worker["command"]


# the oldest Kubernetes still commonly run and the newest the installed kubernetes-validate knows
K8S_VERSIONS = ("1.30.0", kubernetes_validate.utils.latest_version())


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_k8s_manifests_validate_against_the_api_schemas(version):
    """Offline and strict (unknown fields are errors); no cluster is involved."""
    docs = k8s_docs()
    for name, doc in docs:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{name}: {doc['kind']}/{doc['metadata']['name']} at {where}: {exc.message} (Kubernetes {version})")
    assert len(docs) >= 12


def test_k8s_schema_check_catches_what_the_structural_checks_miss():
    by_key = {(d["kind"], d["metadata"]["name"]): d for _, d in k8s_docs()}
    deployment = yaml.safe_load(yaml.safe_dump(by_key[("Deployment", "churn")]))
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["readinessProbe"]["httpGet"]["prot"] = 3000  # a typo'd field
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[-1], strict=True)
    deployment = yaml.safe_load(yaml.safe_dump(by_key[("Deployment", "churn")]))
    deployment["spec"]["replicas"] = "two"  # a wrong type
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[-1], strict=True)


def _compose_plugin() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=20).returncode == 0


@pytest.mark.skipif(not _compose_plugin(), reason="the docker compose plugin is not installed (this machine has the "
                                                  "docker CLI without compose and no engine); the YAML checks above ran")
def test_docker_compose_config_accepts_the_file(tmp_path):
    # `compose config` resolves and validates without talking to an engine
    out = subprocess.run(["docker", "compose", "-f", str(COMPOSE), "--env-file", str(ENV_EXAMPLE), "--profile", "model",
                          "config", "--quiet"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr


def _podman_compose() -> str | None:
    from infra.podman.stack import StackError, podman_compose

    try:
        return podman_compose() if shutil.which("podman") else None
    except StackError:
        return None


@pytest.mark.skipif(_podman_compose() is None, reason="podman or podman-compose is not installed "
                                                      "(infra/podman/setup.sh installs both)")
def test_podman_compose_config_accepts_the_file_with_every_profile():
    cmd = [_podman_compose(), "-f", str(COMPOSE), "--env-file", str(ENV_EXAMPLE)]
    for profile in ("dask", "minio", "model"):
        cmd += ["--profile", profile]
    out = subprocess.run([*cmd, "config"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    resolved = yaml.safe_load(out.stdout)["services"]
    assert resolved["prefect-server"]["ports"][0].startswith("127.0.0.1:4200:")
    assert resolved["mlflow"]["command"][resolved["mlflow"]["command"].index("--artifacts-destination") + 1] == \
        "/data/mlflow-artifacts"
