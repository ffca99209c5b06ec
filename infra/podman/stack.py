"""Bring infra/compose.yaml up under podman-compose in dependency order, gated by its health checks.

    python infra/podman/stack.py up   [--env-file infra/.env] [--profile dask] [-p NAME] [--timeout S]
    python infra/podman/stack.py down [--env-file infra/.env] [-p NAME] [--volumes]
    python infra/podman/stack.py ps   [-p NAME]

Why not plain `podman-compose up -d`: with podman older than 4.6 (Debian 12 ships 4.3) podman-compose
skips `depends_on: condition: service_healthy` ("Ignored ... condition check"), and without systemd
podman never runs a health check by itself. So this script starts the services one dependency tier
at a time with `podman-compose up -d --no-deps SERVICE` and runs each dependency's health check
(`podman healthcheck run`) until it passes, within the check's own interval x retries. The compose
file stays the single description of the stack; `down` removes its containers, pod and network
and says if anything is left. Needs podman, podman-compose (infra/podman/setup.sh) and PyYAML.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import yaml

INFRA = Path(__file__).resolve().parents[1]
COMPOSE_FILE = INFRA / "compose.yaml"
CONTAINERS_CONF = INFRA / "podman" / "containers.conf"
DURATION = re.compile(r"^(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s)?$")


class StackError(RuntimeError):
    """A service did not start or did not become healthy; the message says which and shows its log."""


def podman_compose() -> str:
    """podman-compose from PATH, else the venv infra/podman/setup.sh made."""
    from shutil import which

    found = which("podman-compose")
    if found:
        return found
    state = Path(os.environ.get("SLUICE_PODMAN_STATE") or Path(os.environ.get("XDG_CACHE_HOME") or
                                                              Path.home() / ".cache") / "sluicegate-podman")
    candidate = state / "venv" / "bin" / "podman-compose"
    if candidate.exists():
        return str(candidate)
    raise StackError("podman-compose not found: run infra/podman/setup.sh")


def podman_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("CONTAINERS_CONF", str(CONTAINERS_CONF))
    return env


def seconds(value: str | int | float | None, default: float) -> float:
    if value is None:
        return default
    if isinstance(value, (int, float)):
        return float(value)
    match = DURATION.match(value.strip())
    if not match or not any(match.groups()):
        return default
    return int(match.group(1) or 0) * 60 + float(match.group(2) or 0)


def active_services(spec: dict, profiles: list[str]) -> dict[str, dict]:
    return {name: svc for name, svc in spec["services"].items()
            if not svc.get("profiles") or set(svc["profiles"]) & set(profiles)}


def dependencies(svc: dict) -> dict[str, str]:
    deps = svc.get("depends_on") or {}
    if isinstance(deps, list):
        return {d: "service_started" for d in deps}
    return {name: (d or {}).get("condition", "service_started") for name, d in deps.items()}


def start_order(services: dict[str, dict]) -> list[str]:
    """Services in dependency order (stable: file order among equals); a missing dependency is an error."""
    order: list[str] = []
    visiting: set[str] = set()

    def visit(name: str, chain: tuple[str, ...]) -> None:
        if name in order:
            return
        if name not in services:
            raise StackError(f"{chain[-1]} depends on {name}, which is not in the active profiles")
        if name in visiting:
            raise StackError(f"dependency cycle: {' -> '.join((*chain, name))}")
        visiting.add(name)
        for dep in dependencies(services[name]):
            visit(dep, (*chain, name))
        visiting.discard(name)
        order.append(name)

    for name in services:
        visit(name, (name,))
    return order


class Stack:
    def __init__(self, project: str, env_file: Path | None, profiles: list[str]):
        self.spec = yaml.safe_load(COMPOSE_FILE.read_text())
        self.project = project or self.spec.get("name", "sluicegate")
        self.env_file = env_file
        self.profiles = profiles
        self.env = podman_env()

    def compose(self, *args: str, profiles: list[str] | None = None, check: bool = True) -> subprocess.CompletedProcess:
        cmd = [podman_compose(), "-p", self.project, "-f", str(COMPOSE_FILE)]
        if self.env_file:
            cmd += ["--env-file", str(self.env_file)]
        for profile in self.profiles if profiles is None else profiles:
            cmd += ["--profile", profile]
        out = subprocess.run([*cmd, *args], env=self.env, capture_output=True, text=True, timeout=600)
        if check and out.returncode != 0:
            raise StackError(f"{' '.join(cmd[1:] + list(args))} exited {out.returncode}:\n{out.stdout[-2000:]}{out.stderr[-2000:]}")
        return out

    def podman(self, *args: str, timeout: int = 120) -> subprocess.CompletedProcess:
        return subprocess.run(["podman", *args], env=self.env, capture_output=True, text=True, timeout=timeout)

    def containers(self, service: str | None = None) -> list[str]:
        filters = ["--filter", f"label=io.podman.compose.project={self.project}"]
        if service:
            filters += ["--filter", f"label=com.docker.compose.service={service}"]
        out = self.podman("ps", "-a", *filters, "--format", "{{.Names}}")
        return [line for line in out.stdout.split() if line]

    def logs(self, container: str) -> str:
        out = self.podman("logs", "--tail", "40", container)
        return (out.stdout + out.stderr)[-3000:]

    def wait_for(self, service: str, condition: str, deadline_s: float | None = None) -> None:
        svc = self.spec["services"][service]
        names = self.containers(service)
        if not names:
            raise StackError(f"{service} has no container")
        if condition == "service_completed_successfully":
            for name in names:
                code = self.podman("wait", name, timeout=int(deadline_s or 600)).stdout.strip()
                if code != "0":
                    raise StackError(f"{service} ({name}) exited {code}:\n{self.logs(name)}")
            return
        if condition != "service_healthy":
            return
        check = svc.get("healthcheck") or {}
        if not check.get("test"):
            raise StackError(f"{service} is waited on as healthy but has no healthcheck")
        interval = seconds(check.get("interval"), 30)
        budget = deadline_s or seconds(check.get("start_period"), 0) + interval * int(check.get("retries", 3)) + 5
        for name in names:
            deadline = time.monotonic() + budget
            while True:
                state = self.podman("inspect", "--format", "{{.State.Status}}", name).stdout.strip()
                if state in ("exited", "stopped", "dead"):
                    raise StackError(f"{service} ({name}) stopped before it was healthy:\n{self.logs(name)}")
                if self.podman("healthcheck", "run", name, timeout=int(seconds(check.get("timeout"), 30)) + 30).returncode == 0:
                    break
                if time.monotonic() > deadline:
                    raise StackError(f"{service} ({name}) not healthy after {budget:.0f}s:\n{self.logs(name)}")
                time.sleep(interval)

    def up(self) -> list[str]:
        services = active_services(self.spec, self.profiles)
        order = start_order(services)
        healthy: set[tuple[str, str]] = set()
        for name in order:
            for dep, condition in dependencies(services[name]).items():
                if (dep, condition) not in healthy:
                    t0 = time.monotonic()
                    self.wait_for(dep, condition)
                    healthy.add((dep, condition))
                    print(f"[stack] {dep}: {condition.removeprefix('service_')} ({time.monotonic() - t0:.0f}s)", flush=True)
            self.compose("up", "-d", "--no-deps", name)
            print(f"[stack] {name}: started", flush=True)
        # like `up --wait`: every service with a health check is healthy before this returns
        for name in order:
            if (services[name].get("healthcheck") or {}).get("test") and (name, "service_healthy") not in healthy:
                t0 = time.monotonic()
                self.wait_for(name, "service_healthy")
                healthy.add((name, "service_healthy"))
                print(f"[stack] {name}: healthy ({time.monotonic() - t0:.0f}s)", flush=True)
        return order

    def down(self, volumes: bool = False) -> list[str]:
        """Remove every container of the project (all profiles), its pod and network; return what is left."""
        every_profile = sorted({p for svc in self.spec["services"].values() for p in svc.get("profiles", [])})
        self.compose("down", *(["-v"] if volumes else []), profiles=every_profile, check=False)
        return self.leftovers()

    def leftovers(self) -> list[str]:
        left = [f"container {c}" for c in self.containers()]
        pods = self.podman("pod", "ps", "--filter", f"name=pod_{self.project}", "--format", "{{.Name}}").stdout.split()
        left += [f"pod {p}" for p in pods]
        nets = self.podman("network", "ls", "--format", "{{.Name}}").stdout.split()
        left += [f"network {n}" for n in nets if n.startswith(f"{self.project}_")]
        return left


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["up", "down", "ps"])
    parser.add_argument("--env-file", type=Path)
    parser.add_argument("--profile", action="append", default=[])
    parser.add_argument("-p", "--project-name", default="")
    parser.add_argument("--volumes", action="store_true", help="down: remove the named volumes too")
    args = parser.parse_args(argv)
    stack = Stack(args.project_name, args.env_file, args.profile)
    try:
        if args.command == "up":
            stack.up()
        elif args.command == "down":
            left = stack.down(args.volumes)
            if left:
                print("[stack] still there after down: " + ", ".join(left), file=sys.stderr)
                return 1
            print(f"[stack] {stack.project}: no containers, pods or networks left")
        else:
            print(stack.podman("ps", "-a", "--filter", f"label=io.podman.compose.project={stack.project}").stdout)
    except StackError as exc:
        print(f"[stack] {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
