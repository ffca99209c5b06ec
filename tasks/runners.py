"""Task runners from settings: threads on a laptop, a Dask cluster (local or remote) for scale-out."""

from __future__ import annotations

import os
from typing import Any

from sluicegate.errors import ConfigError
from sluicegate.settings import Settings, load_settings

RUNNERS = ("threads", "dask")


def local_cluster_kwargs(n_workers: int) -> dict[str, Any]:
    """A local Dask cluster of `n_workers` single-threaded processes, no dashboard (nothing else to bind)."""
    # more processes than cores never speeds up CPU-bound trials or partitions on one machine
    workers = max(1, min(n_workers, os.cpu_count() or 1))
    # dashboard_address=None alone still serves the scheduler's HTTP routes on port 8787 of every
    # interface: bind them, and the scheduler and workers, to loopback on free ports instead
    return {"n_workers": workers, "threads_per_worker": 1, "processes": True, "host": "127.0.0.1",
            "dashboard_address": None, "scheduler_kwargs": {"dashboard_address": "127.0.0.1:0"}}


def task_runner_from_settings(n_workers: int = 2, settings: Settings | None = None) -> Any:
    """The Prefect task runner for work submitted in parallel (trials, partitions).

    Args:
        n_workers: threads for `threads`; worker processes of a local Dask cluster when
            `dask` has no scheduler address (a remote cluster keeps its own size).
        settings: default `load_settings()` (SLUICE_TASK_RUNNER, SLUICE_DASK_ADDRESS).

    Returns:
        `ThreadPoolTaskRunner(max_workers=n_workers)` or `prefect_dask.DaskTaskRunner`.

    Raises:
        ConfigError: SLUICE_TASK_RUNNER names another runner.
    """
    s = settings or load_settings()
    if s.task_runner == "threads":
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=max(1, n_workers))
    if s.task_runner == "dask":
        from prefect_dask import DaskTaskRunner

        if s.dask_address:
            return DaskTaskRunner(address=s.dask_address)
        return DaskTaskRunner(cluster_class="distributed.LocalCluster", cluster_kwargs=local_cluster_kwargs(n_workers))
    raise ConfigError([f"SLUICE_TASK_RUNNER: must be one of {', '.join(RUNNERS)} (got {s.task_runner!r})"])


def describe_runner(settings: Settings | None = None) -> str:
    """One line for logs and `sluice doctor`: which runner and where."""
    s = settings or load_settings()
    if s.task_runner == "dask":
        return f"dask scheduler {s.dask_address}" if s.dask_address else "dask local cluster (started per flow run)"
    return s.task_runner
