"""The local target: a canaried `bentoml serve` process behind a front process that owns the configured port."""

from __future__ import annotations

import secrets
import subprocess
import time
from dataclasses import dataclass
from datetime import datetime, timezone

from sluicegate.config import DeployConfig, PackagingConfig
from sluicegate.deploy.canary import CanaryReport, probe_headers, run_canary
from sluicegate.deploy.current import front_serves
from sluicegate.deploy.processes import (
    BACKEND_MARKER,
    FRONT_MARKER,
    STATE_FILE,
    ServingState,
    free_port,
    pid_alive,
    port_is_free,
    project_lock,
    read_state,
    record_candidate,
    start_backend,
    state_dir,
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


@dataclass(frozen=True)
class LocalCandidate:
    """A candidate model server that answered /readyz and passed the canary on a free loopback port."""

    bento: BentoResult
    proc: subprocess.Popen
    port: int
    report: CanaryReport
    previous: ServingState | None  # what the front served when the candidate started
    front_ok: bool  # the recorded front process runs on the configured host and port


def serving_version(settings: Settings, project: str) -> str | None:
    """The version the local deployment serves, or None when its front does not answer."""
    state = read_state(settings, project)
    return state.version if front_serves(state) else None


def stage_local(bento: BentoResult, spec: DeployConfig, packaging: PackagingConfig, settings: Settings) -> Staged:
    """Start the Bento on a free loopback port and canary it; nothing that serves is touched yet.

    Raises:
        DeployError: corrupted artifact, port taken by another process, candidate not ready,
            or canary mismatch. The candidate is stopped.
    """
    verify_model_artifact(bento, settings)
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
    old_backend = state is not None and pid_alive(state.backend_pid, BACKEND_MARKER)
    if front_ok and old_backend and state.bento_tag == bento.bento_tag:  # type: ignore[union-attr]
        url = f"http://{spec.host}:{spec.port}"
        result = DeployResult("local", bento.project, bento.version, bento.bento_tag, url,
                              message=f"{bento.project} v{bento.version} already serving at {url}; nothing to do",
                              was=bento.version)
        return Staged("local", lambda: result, lambda: None)

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
    cand = LocalCandidate(bento, proc, cand_port, report, state if old_backend else None, front_ok)
    return Staged("local", lambda: switch_traffic(cand, spec, packaging, settings),
                  lambda: _discard(settings, bento.project, proc), cand)


def _discard(settings: Settings, project: str, proc: subprocess.Popen) -> None:
    stop_process_group(proc.pid)
    record_candidate(settings, project, None)


def switch_traffic(cand: LocalCandidate, spec: DeployConfig, packaging: PackagingConfig,
                   settings: Settings) -> DeployResult:
    """Point the front at the candidate (starting the front if needed), record it, stop the old backend.

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
        _discard(settings, bento.project, cand.proc)
        raise
    write_state(settings, ServingState(bento.project, bento.version, bento.bento_tag, spec.host, spec.port,
                                       front_pid, cand.proc.pid, cand.port, datetime.now(timezone.utc).isoformat(),
                                       token))
    record_candidate(settings, bento.project, None)
    if state is not None and state.backend_pid != cand.proc.pid:
        time.sleep(0.5)  # let requests already forwarded to the old backend finish
        stop_process_group(state.backend_pid, BACKEND_MARKER)
    was = f" (was v{state.version})" if state is not None else ""
    return DeployResult("local", bento.project, bento.version, bento.bento_tag, url, (str(folder / STATE_FILE),),
                        f"{bento.project} v{bento.version} serving at {url}{was}; canary {cand.report.rows} rows "
                        f"matched (max difference {cand.report.max_abs_diff:.2g})",
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
    """Stop a project's local deployment gracefully and forget its state.

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
        stop_process_group(state.backend_pid, BACKEND_MARKER)
        (folder / STATE_FILE).unlink(missing_ok=True)
        return state
