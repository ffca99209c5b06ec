"""What every task module shares: settings, the MLflow tracker, content-keyed caching."""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import uuid
from pathlib import Path
from typing import Any, Callable

from sluicegate.runkey import code_fingerprint  # the sluicegate source: a changed step never hits an old cache entry
from sluicegate.settings import Settings, load_settings, make_private

# the checkout's code that a training run's key covers besides the sluicegate package: `flows/` and
# `tasks/` (the training flow tags its version with that key; the unchanged flow compares it)
CODE_FOLDERS = (Path(__file__).resolve().parents[1] / "flows", Path(__file__).resolve().parent)


def settings() -> Settings:
    """Runtime settings; SLUICE_HOME made private (0700, umask 077) before a task writes there."""
    s = load_settings()
    _private(s.home)
    return s


@functools.cache
def _private(home: Path) -> None:
    make_private(home)


@functools.cache
def _tracker(s: Settings):
    from sluicegate.tracking import Tracker

    return Tracker(s)


def tracker():
    """One MLflow tracker per process and settings."""
    return _tracker(settings())


def store_id(home: Path) -> str:
    """An id of this SLUICE_HOME; deleting the folder invalidates every cached result."""
    path = home / "store-id"
    if not path.exists():
        home.mkdir(parents=True, exist_ok=True)
        path.write_text(uuid.uuid4().hex)
    return path.read_text().strip()


def digest(*parts: Any) -> str:
    blob = json.dumps(parts, sort_keys=True, default=_default)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def _default(o: Any) -> Any:
    if hasattr(o, "model_dump"):
        return o.model_dump(mode="json")
    if hasattr(o, "__dataclass_fields__"):
        from dataclasses import asdict

        return asdict(o)
    return str(o)


def content_cache(key_of: Callable[[dict[str, Any]], str | None]) -> Callable:
    """A Prefect `cache_key_fn`: task source + sluicegate code + store + the content key.

    `key_of(parameters)` returns None when the content cannot be known without doing the
    work (a SQL query), which disables the cache for that call.
    """

    def cache_key(context: Any, parameters: dict[str, Any]) -> str | None:
        key = key_of(parameters)
        if key is None:
            return None
        fn = context.task.fn
        source = hashlib.sha256(inspect.getsource(fn).encode()).hexdigest()[:12]
        return f"{context.task.name}-{source}-{code_fingerprint()}-{store_id(settings().home)}-{key}"

    return cache_key


def transient_only(task: Any, task_run: Any, state: Any) -> bool:
    """Retry I/O hiccups, never a deterministic refusal (a SluiceError such as a missing file)."""
    from sluicegate.errors import SluiceError

    try:
        state.result()
    except SluiceError:
        return False
    except Exception:
        return True
    return False


def load_prefect_secret(name: str) -> str:
    """The value of a Prefect Secret block: the loader the core's `resolve_secret` is given."""
    from prefect.blocks.system import Secret

    return Secret.load(name).get()


def resolve_secret(ref: Any, where: str) -> str:
    """A secret reference (`{env: VAR}` or `{prefect_secret: NAME}`) resolved with Prefect's blocks."""
    from sluicegate.data import resolve_secret as resolve

    return resolve(ref, where, load_prefect_secret)


def artifact_key(project: str, name: str) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes only."""
    raw = f"{project}-{name}".lower()
    return "".join(ch if ch.isalnum() or ch == "-" else "-" for ch in raw)


OWNER_TAG = "sluice-pid"


def reap_crashed_flow_runs(flow_name: str) -> list[str]:
    """Tag the current flow run with its process; mark runs of `flow_name` whose process died Crashed.

    A SIGKILLed process cannot report its own end, so its flow run would stay Running for good.
    Only runs tagged by this function on this host are judged (see `process_gone`).

    Returns:
        One line per flow run marked Crashed.
    """
    import os
    import socket

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.context import FlowRunContext
    from prefect.runtime import flow_run
    from prefect.states import Crashed

    from sluicegate.procs import process_gone

    me = f"{OWNER_TAG}:{socket.gethostname()}:{os.getpid()}"
    done: list[str] = []
    try:
        with get_client(sync_client=True) as client:
            if flow_run.id:
                # the engine read this flow run as it started it: its tags need no second request
                ctx = FlowRunContext.get()
                current = ctx.flow_run if ctx and ctx.flow_run and str(ctx.flow_run.id) == str(flow_run.id) \
                    else client.read_flow_run(flow_run.id)
                client.update_flow_run(flow_run.id, tags=[*current.tags, me])
            running = client.read_flow_runs(
                flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])),
                flow_run_filter=FlowRunFilter(state=FlowRunFilterState(
                    type=FlowRunFilterStateType(any_=[StateType.RUNNING]))),
                limit=200)
            for run in running:
                owner = next((t for t in run.tags if t.startswith(f"{OWNER_TAG}:")), None)
                if owner is None or str(run.id) == str(flow_run.id):
                    continue
                _, host, pid = owner.split(":", 2)
                why = process_gone(pid, host)
                if why is not None:
                    client.set_flow_run_state(run.id, Crashed(message=f"{why}; marked crashed by the next run"),
                                              force=True)
                    done.append(f"flow run {run.name} ({run.id}) was left Running ({why}): marked Crashed")
    except Exception as exc:  # housekeeping never stops a run
        done.append(f"could not check for crashed flow runs: {type(exc).__name__}: {exc}")
    return done


def recover_interrupted_runs(project: str) -> list[str]:
    """MLflow runs of `project` left RUNNING by a dead process, marked KILLED (versions wait for
    `register-candidate`, which knows whether to adopt them)."""
    try:
        return tracker().recover_interrupted(project, versions=False)
    except Exception as exc:  # housekeeping never stops a run; the registry's own errors come later
        return [f"could not check for interrupted MLflow runs: {type(exc).__name__}: {exc}"]
