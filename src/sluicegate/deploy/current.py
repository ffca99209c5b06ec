"""What the local deployment serves now, read without packaging, BentoML or MLflow: whether its front
answers, and the release key of what it serves (so a repeated deploy of it is a quick no-op)."""

from __future__ import annotations

import hashlib
import json
import os
import time
from typing import Any

from sluicegate.deploy.processes import BACKEND_MARKER, FRONT_MARKER, ServingState, pid_alive, read_state, state_dir
from sluicegate.deploy.proxy import is_our_front
from sluicegate.deploy.staged import DeployResult
from sluicegate.settings import Settings

RELEASE_KEY_FILE = "release-key"


def front_serves(state: ServingState | None, attempts: int = 3) -> bool:
    """Whether the recorded front answers on its port with the pid and token recorded with it.

    Asked a few times before saying no: a busy machine may be slow to answer, and a front
    that does not answer is stopped by the next deploy.
    """
    if state is None or not state.front_token or not pid_alive(state.front_pid, FRONT_MARKER):
        return False
    for attempt in range(attempts):
        if is_our_front(state.host, state.port, state.front_pid, state.front_token):
            return True
        if attempt + 1 < attempts:
            time.sleep(0.5)
    return False


def release_key(project: str, version: str, packaging: Any, spec: Any, task: str) -> str:
    """What the served Bento is built from besides the version's own files: packaging and deploy
    settings, task, sluicegate code and model library versions."""
    from sluicegate.runkey import code_fingerprint
    from sluicegate.stores import library_versions

    blob = json.dumps({"project": project, "version": str(version), "task": task,
                       "packaging": packaging.model_dump(mode="json"), "deploy": spec.model_dump(mode="json"),
                       "code": code_fingerprint(), "libraries": library_versions()}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def write_release_key(settings: Settings, project: str, key: str) -> None:
    """Record the key of the release the local front now serves (after a successful switch or no-op)."""
    path = state_dir(settings, project) / RELEASE_KEY_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(key)
    os.replace(tmp, path)


def already_serving(settings: Settings, project: str, version: str, key: str, host: str, port: int) -> DeployResult | None:
    """The no-op result when `version`, released with `key`, serves healthy at host:port with no
    rollout beside it; None when a deploy has anything to do."""
    state = read_state(settings, project)
    if state is None or str(state.version) != str(version) or (state.host, state.port) != (host, port):
        return None
    if (state.rollout or {}).get("status") == "active":
        return None
    path = state_dir(settings, project) / RELEASE_KEY_FILE
    if not path.exists() or path.read_text().strip() != key:
        return None
    if not front_serves(state) or not pid_alive(state.backend_pid, BACKEND_MARKER):
        return None
    url = f"http://{host}:{port}"
    return DeployResult("local", project, str(version), state.bento_tag, url,
                        message=f"{project} v{version} already serving at {url}; nothing to do", was=str(version))
