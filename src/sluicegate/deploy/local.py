"""The local target: a canaried `bentoml serve` process behind a front process that owns the configured port.

The container target (`sluicegate.deploy.container`) shares the front and the switch: its
backend is a container whose port is published on loopback instead of a process.
"""

from __future__ import annotations

import logging
import secrets
import subprocess
import time
from dataclasses import dataclass
from datetime import datetime, timezone

from sluicegate.config import DeployConfig, PackagingConfig
from sluicegate.deploy.canary import CanaryReport, probe_headers, run_canary
from sluicegate.deploy.current import front_serves
from sluicegate.deploy.engine import remove_container
from sluicegate.deploy.processes import (
    FRONT_MARKER,
    STATE_FILE,
    ServingState,
    backend_alive,
    free_port,
    pid_alive,
    port_is_free,
    project_lock,
    read_state,
    record_candidate,
    start_backend,
    state_dir,
    stop_backend,
    stop_process_group,
    stop_rollout_candidate,
    wait_ready,
    write_state,
)
from sluicegate.deploy.proxy import DEFAULT_DRAIN_S, start_front, write_backend
from sluicegate.deploy.staged import DeployResult, Staged
from sluicegate.errors import DeployError
from sluicegate.packaging import BentoResult, verify_model_artifact
from sluicegate.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LocalCandidate:
    """A candidate model server that answered /readyz and passed the canary on a free loopback port:
    a `bentoml serve` process, or (container target) a container publishing its port there."""

    bento: BentoResult
    proc: subprocess.Popen | None  # None for a container
    port: int
    report: CanaryReport
    previous: ServingState | None  # what the front served when the candidate started
    front_ok: bool  # the recorded front process runs on the configured host and port
    container: str = ""  # the container target: the candidate's container, its engine and image
    engine: str = ""
    image: str = ""

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc is not None else 0

    @property
    def target(self) -> str:
        return "container" if self.container else "local"


@dataclass(frozen=True)
class FrontCheck:
    """What serves a project's port before a deploy (see `check_front`)."""

    state: ServingState | None
    front_ok: bool  # the recorded front answers on the configured host and port
    old_backend: bool  # the recorded backend still runs
    unchanged: Staged | None  # the same Bento already serves the same way: nothing to do


def serving_version(settings: Settings, project: str) -> str | None:
    """The version the local deployment serves, or None when its front does not answer."""
    state = read_state(settings, project)
    return state.version if front_serves(state) else None


def check_front(bento: BentoResult, spec: DeployConfig, settings: Settings, in_container: bool) -> FrontCheck:
    """Before starting a candidate: is our front serving the configured port, is the port free
    otherwise, does the old backend run, and does the same Bento already serve (as a process, or in a
    container when `in_container`)?

    A front of ours that does not answer is stopped here: it blocks the port.

    Raises:
        DeployError: the configured port is taken by another process.
    """
    folder = state_dir(settings, bento.project)
    folder.mkdir(parents=True, exist_ok=True)
    state = read_state(settings, bento.project)
    front_ok = front_serves(state) and (state.host, state.port) == (spec.host, spec.port)  # type: ignore[union-attr]
    if not front_ok and state is not None and (state.host, state.port) == (spec.host, spec.port) \
            and pid_alive(state.front_pid, FRONT_MARKER):
        stop_process_group(state.front_pid, FRONT_MARKER)  # ours but not answering: it blocks the port
    if not front_ok and not port_is_free(spec.host, spec.port):
        raise DeployError(f"port {spec.port} on {spec.host} is in use by another process; stop it or set "
                          f"deploy.port to a free port")
    old_backend = state is not None and backend_alive(state)
    target = "container" if in_container else "local"
    if front_ok and old_backend and state.bento_tag == bento.bento_tag \
            and bool(state.backend_container) == in_container:  # type: ignore[union-attr]
        url = f"http://{spec.host}:{spec.port}"
        result = DeployResult(target, bento.project, bento.version, bento.bento_tag, url,
                              message=f"{bento.project} v{bento.version} already serving at {url}; nothing to do",
                              was=bento.version)
        return FrontCheck(state, front_ok, old_backend, Staged(target, lambda: result, lambda: None))
    return FrontCheck(state, front_ok, old_backend, None)


def stage_local(bento: BentoResult, spec: DeployConfig, packaging: PackagingConfig, settings: Settings) -> Staged:
    """Start the Bento on a free loopback port and canary it; nothing that serves is touched yet.

    Raises:
        DeployError: corrupted artifact, port taken by another process, candidate not ready,
            or canary mismatch. The candidate is stopped.
    """
    verify_model_artifact(bento, settings)
    folder = state_dir(settings, bento.project)
    front = check_front(bento, spec, settings, in_container=False)
    if front.unchanged is not None:
        return front.unchanged
    state = front.state
    cand_port = free_port("127.0.0.1")
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    log_file = folder / f"backend-v{bento.version}-{stamp}.log"
    cand_url = f"http://127.0.0.1:{cand_port}"
    proc = start_backend(bento, "127.0.0.1", cand_port, settings, log_file)
    record_candidate(settings, bento.project, proc.pid)  # a deploy killed from here on leaves an orphan to reap
    try:
        wait_ready(proc, cand_url, spec.readiness_timeout_s, log_file)
        report = run_canary(cand_url, bento, spec, packaging, settings)
    except BaseException:
        _discard(settings, bento.project, proc)
        raise
    cand = LocalCandidate(bento, proc, cand_port, report, state if front.old_backend else None, front.front_ok)
    return Staged("local", lambda: switch_traffic(cand, spec, packaging, settings),
                  lambda: discard_candidate(settings, cand), cand)


def _discard(settings: Settings, project: str, proc: subprocess.Popen) -> None:
    stop_process_group(proc.pid)
    record_candidate(settings, project, None)


def discard_candidate(settings: Settings, cand: LocalCandidate) -> None:
    """Stop a candidate that will not serve: its process group, or its container (removed)."""
    if cand.container:
        remove_container(cand.engine, cand.container)
        record_candidate(settings, cand.bento.project, None)
    elif cand.proc is not None:
        _discard(settings, cand.bento.project, cand.proc)


def switch_traffic(cand: LocalCandidate, spec: DeployConfig, packaging: PackagingConfig,
                   settings: Settings) -> DeployResult:
    """Point the front at the candidate (starting the front if needed), record it, stop the old backend
    (a process, or a container: stopped and removed).

    Raises:
        DeployError: the front did not start or did not switch; the old backend serves again
            and the candidate is stopped.
    """
    bento, state, folder = cand.bento, cand.previous, state_dir(settings, cand.bento.project)
    recorded = read_state(settings, bento.project)
    write_backend(folder, cand.port)
    try:
        if cand.front_ok:
            front_pid, token = recorded.front_pid, recorded.front_token  # type: ignore[union-attr]
        else:
            if recorded is not None and pid_alive(recorded.front_pid, FRONT_MARKER):
                stop_process_group(recorded.front_pid, FRONT_MARKER)  # the front of the old port
            token = secrets.token_hex(16)
            front_pid = start_front(spec.host, spec.port, folder, token, DEFAULT_DRAIN_S).pid
        url = f"http://{spec.host}:{spec.port}"
        wait_serving_version(url, bento.version, packaging, deadline_s=30)
    except BaseException:
        if state is not None:
            write_backend(folder, state.backend_port)
        discard_candidate(settings, cand)
        raise
    write_state(settings, ServingState(bento.project, bento.version, bento.bento_tag, spec.host, spec.port,
                                       front_pid, cand.pid, cand.port, datetime.now(timezone.utc).isoformat(),
                                       token, backend_container=cand.container, engine=cand.engine,
                                       image=cand.image))
    record_candidate(settings, bento.project, None)
    note = ""
    if state is not None and (state.backend_pid, state.backend_container) != (cand.pid, cand.container):
        time.sleep(0.5)  # let requests already forwarded to the old backend finish
        try:
            stop_backend(state)
        except DeployError as exc:  # the switch is done; what is left of the old backend is only reported
            log.warning("%s: the old backend of v%s was not stopped: %s", bento.project, state.version, exc)
            note = f"; the old backend was NOT stopped: {exc}"
    was = f" (was v{state.version})" if state is not None else ""
    where = f" from container {cand.container} (image {cand.image})" if cand.container else ""
    return DeployResult(cand.target, bento.project, bento.version, bento.bento_tag, url, (str(folder / STATE_FILE),),
                        f"{bento.project} v{bento.version} serving at {url}{where}{was}; canary {cand.report.rows} "
                        f"rows matched (max difference {cand.report.max_abs_diff:.2g}){note}",
                        state.version if state is not None else None)


def deploy_local(bento: BentoResult, spec: DeployConfig, packaging: PackagingConfig, settings: Settings) -> DeployResult:
    """Canary a Bento on a free loopback port, then switch the configured port to it.

    A small front process owns the configured port and forwards each new connection to the
    backend named in a file. A candidate starts on a free port, must answer /readyz before
    the deadline and reproduce the offline predictions of the held-out rows; only then is
    the backend file switched and the old backend stopped. On any failure the candidate is
    stopped and the old backend keeps serving. (The release in `sluicegate.deploy.release`
    runs the two halves, `stage_local` and its commit, with the alias move in between.)

    Raises:
        DeployError: see `stage_local` and `switch_traffic`. Nothing that was serving is touched.
    """
    with project_lock(settings, bento.project):
        return stage_local(bento, spec, packaging, settings).commit()


def wait_serving_version(url: str, version: str, packaging: PackagingConfig, deadline_s: float) -> None:
    """Wait until the front answers GET /metadata with `version`."""
    import httpx

    headers = probe_headers(packaging)
    end = time.monotonic() + deadline_s
    last = ""
    while time.monotonic() < end:
        try:
            resp = httpx.get(f"{url}/metadata", headers=headers, timeout=5)
            if resp.status_code == 200 and str(resp.json().get("version")) == str(version):
                return
            last = f"{resp.status_code} {resp.text[:200]}"
        except (httpx.HTTPError, ValueError) as exc:
            last = str(exc)
        time.sleep(0.2)
    raise DeployError(f"{url} did not switch to v{version} within {deadline_s:.0f}s (last answer: {last})")


def stop_local(settings: Settings, project: str) -> ServingState | None:
    """Stop a project's local deployment (process or container backend) gracefully and forget its state.

    The front stops accepting first and lets accepted requests finish (at most its drain timeout);
    only then is the backend stopped, with every process it started. Waits for a deploy of
    the same project that is under way.
    """
    with project_lock(settings, project):
        state = read_state(settings, project)
        if state is None:
            return None
        folder = state_dir(settings, project)
        stop_rollout_candidate(settings, state)  # a shadow or canary candidate first: the front sends it nothing more
        if pid_alive(state.front_pid, FRONT_MARKER):
            # the front exits once its connections are done (bounded by its own drain timeout)
            stop_process_group(state.front_pid, FRONT_MARKER, timeout_s=DEFAULT_DRAIN_S + 10)
        stop_backend(state)  # the model server's process group, or its container
        (folder / STATE_FILE).unlink(missing_ok=True)
        return state
