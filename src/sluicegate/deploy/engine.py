"""The container engine behind `deploy.target: container`: podman (or a CLI like it), called as a program.

Only the calls the container target needs: build, run, state, health check, logs, remove, list
by label. Every call goes through `engine_env`, which points podman at the checkout's
`infra/podman/containers.conf` (runc, ulimits this kind of machine allows, netavark) unless
CONTAINERS_CONF is set already.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from sluicegate.errors import DeployError

# labels on every image and container the container target makes
LABEL_PROJECT = "sluicegate.project"
LABEL_VERSION = "sluicegate.version"
LABEL_BENTO = "sluicegate.bento"
LABEL_HOME = "sluicegate.home"  # the SLUICE_HOME that owns the container (several may share one engine)
LABEL_BASE = "sluicegate.base-id"  # the id of the base image an image was built on
CONTAINERS_CONF = Path(__file__).resolve().parents[3] / "infra" / "podman" / "containers.conf"


def engine_env() -> dict[str, str]:
    env = dict(os.environ)
    if "CONTAINERS_CONF" not in env and CONTAINERS_CONF.is_file():
        env["CONTAINERS_CONF"] = str(CONTAINERS_CONF)
    return env


def call(engine: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run `engine args...`; a missing engine or a timeout becomes a DeployError."""
    try:
        return subprocess.run([engine, *args], env=engine_env(), capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise DeployError(f"deploy.target container: `{engine}` is not installed (install podman and run "
                          f"infra/podman/setup.sh, or set SLUICE_CONTAINER_ENGINE)") from None
    except subprocess.TimeoutExpired:
        raise DeployError(f"`{engine} {' '.join(args[:2])}` did not finish within {timeout:.0f}s") from None


def engine_missing(engine: str, base: str) -> str | None:
    """Why the container target cannot run here (no engine, engine not answering, no base image), or None."""
    if shutil.which(engine) is None:
        return f"`{engine}` is not installed"
    info = call(engine, "info", "--format", "{{.Host.Arch}}", timeout=60)
    if info.returncode != 0:
        return f"`{engine} info` failed: {(info.stderr or info.stdout).strip()[-300:]}"
    if not image_id(engine, base):
        return f"the base image {base} is missing (infra/podman/setup.sh builds it)"
    return None


def image_id(engine: str, ref: str) -> str | None:
    out = call(engine, "image", "inspect", "--format", "{{.Id}}", ref)
    return (out.stdout.strip() or None) if out.returncode == 0 else None


def image_label(engine: str, ref: str, label: str) -> str | None:
    out = call(engine, "image", "inspect", "--format", f'{{{{index .Labels "{label}"}}}}', ref)
    return (out.stdout.strip() or None) if out.returncode == 0 else None


def ensure_network(engine: str, name: str) -> None:
    """Create the bridge network model containers publish their ports from, once.

    Its own network, not podman's default one: a host where the default bridge was first made
    by another network backend can keep a stale route to the same subnet, and published ports
    then time out.
    """
    if call(engine, "network", "exists", name).returncode == 0:
        return
    made = call(engine, "network", "create", "--label", "sluicegate=models", name)
    if made.returncode != 0 and call(engine, "network", "exists", name).returncode != 0:
        raise DeployError(f"could not create the container network {name}: {made.stderr.strip()[-500:]}")


def container_state(engine: str, name: str) -> str | None:
    """`running`, `exited`, `created`, ... or None when there is no such container."""
    out = call(engine, "container", "inspect", "--format", "{{.State.Status}}", name)
    return (out.stdout.strip() or None) if out.returncode == 0 else None


def container_pid(engine: str, name: str) -> int:
    """The host pid of a running container's first process (rootful podman: a process of this host), 0 if none."""
    out = call(engine, "container", "inspect", "--format", "{{.State.Pid}}", name)
    try:
        return int(out.stdout.strip()) if out.returncode == 0 else 0
    except ValueError:
        return 0


def health_check(engine: str, name: str, timeout: float = 60) -> bool:
    """Run the container's own health check now (podman runs none by itself without systemd)."""
    return call(engine, "healthcheck", "run", name, timeout=timeout).returncode == 0


def container_logs(engine: str, name: str, lines: int = 15) -> str:
    out = call(engine, "logs", "--tail", str(lines), name)
    text = (out.stdout + out.stderr).strip().splitlines()
    return " | ".join(text)[-1500:]


def remove_container(engine: str, name: str, timeout_s: int = 20) -> None:
    """Stop a container gracefully (its stop signal, then SIGKILL after `timeout_s`) and remove it."""
    if not name or container_state(engine, name) is None:
        return
    call(engine, "stop", "-t", str(timeout_s), name, timeout=timeout_s + 60)
    call(engine, "rm", "-f", "-v", name, timeout=120)
    if container_state(engine, name) is not None:
        raise DeployError(f"container {name} could not be removed; remove it with `{engine} rm -f {name}`")


def containers(engine: str, labels: dict[str, str], running_only: bool = False) -> list[str]:
    """Names of the containers carrying all `labels`."""
    args = ["ps", "--format", "{{.Names}}"] + ([] if running_only else ["-a"])
    for key, value in labels.items():
        args += ["--filter", f"label={key}={value}"]
    out = call(engine, *args)
    return [line for line in out.stdout.split() if line]
