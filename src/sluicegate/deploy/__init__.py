"""Deploy a Bento: a canaried local process or container behind a stable port, or Kubernetes manifests.

    processes  state.json, process groups, loopback ports, the model server process
    proxy      the front process that owns a project's port (`python -m sluicegate.deploy.proxy`)
    canary     replaying held-out rows against a candidate
    staged     what a target returns: a checked candidate to commit or abort, and the deploy result
    local      the local target: stage a candidate, switch traffic, stop
    engine     podman (or a CLI like it) as a program: build, run, health check, remove
    container  the container target: the model image on the lock image, canaried, switched like local
    targets    the kubernetes target
    release    the one release procedure (release, rollback, restore champion) the flow and the CLI call
    traffic    shadow and canary rollouts beside the champion: start, check, promote, abort

The names below are re-exported for the callers of the former `sluicegate/deploy.py`; they
load on first use, so the front process imports only what it runs.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "processes": ("STATE_FILE", "BACKEND_FILE", "ServingState", "state_dir", "read_state", "pid_alive",
                  "stop_process_group", "free_port", "port_is_free", "start_backend", "wait_ready"),
    "proxy": ("start_front", "run_front"),
    "canary": ("CanaryReport", "auth_headers", "compare_predictions", "run_canary"),
    "staged": ("DeployResult", "Staged"),
    "local": ("deploy_local", "stop_local", "wait_serving_version", "serving_version"),
    "container": ("stage_container", "image_ref", "build_image"),
    "targets": ("kubernetes_manifests", "deploy_kubernetes"),
    "release": ("Promotion", "deploy_bento", "stage_bento", "restore_champion", "release_version",
                "rollback_release"),
}
_OWNER = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_OWNER)  # noqa: PLE0605 - built from _EXPORTS, a list at run time


def __getattr__(name: str) -> Any:
    module = _OWNER.get(name)
    if module is None:
        raise AttributeError(f"module 'sluicegate.deploy' has no attribute {name!r}")
    return getattr(importlib.import_module(f"sluicegate.deploy.{module}"), name)
