"""Benchmark: one Optuna study (same data, space, budget) on the thread runner vs a local Dask cluster of two processes.

Both runs go through the flow's `tune-shards` subflow (two Prefect tasks, each a worker of the
shared SQLite study), so the ratio is what SLUICE_TASK_RUNNER=dask buys over =threads on this
machine. Two workload kinds, because threads and processes differ exactly there:
  - xgboost: fits in C++ with the GIL released, so two threads already run in parallel;
  - sklearn random forest with n_jobs=1: tree building in Cython/Python holds parts of the GIL.
The Dask cluster is started once, before timing (its start-up is printed separately); a warm-up
flow starts Prefect's temporary API first, and an untimed 2-trial Dask run per kind pays the
workers' imports (and, with no PREFECT_API_URL, each worker's own temporary Prefect API).
One CPU thread per trial in every case. The machine may be shared: compare ratios, not seconds.
Usage: python benchmarks/distributed_tuning.py [--quick]
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

from _common import ROOT, feature_set  # noqa: F401  (ROOT puts the checkout on sys.path)

QUICK = "--quick" in sys.argv
WORKERS = 2




def candidates(n_trials: int):
    from sluicegate.config import CandidateConfig, SklearnModelConfig, TuningConfig, XGBoostModelConfig

    xgb = CandidateConfig(
        name="xgboost",
        model=XGBoostModelConfig(kind="xgboost", params={"n_estimators": 200, "n_jobs": 1}, early_stopping_rounds=None),
        tuning=TuningConfig(n_trials=n_trials, sampler="random", pruner="none", search_space={
            "max_depth": {"type": "int", "low": 3, "high": 7},
            "learning_rate": {"type": "float", "low": 0.03, "high": 0.3, "log": True}}))
    forest = CandidateConfig(
        name="forest",
        model=SklearnModelConfig(kind="sklearn", estimator="random_forest", params={"n_estimators": 60, "n_jobs": 1}),
        tuning=TuningConfig(n_trials=n_trials, sampler="random", pruner="none", search_space={
            "max_depth": {"type": "int", "low": 4, "high": 12},
            "min_samples_leaf": {"type": "int", "low": 1, "high": 20}}))
    return [xgb, forest]


def run(runner_env: dict, fs, cand, storage: str) -> tuple[float, list[dict], int]:
    import optuna

    from flows.scale_out import tune_shards
    from tasks.runners import task_runner_from_settings

    os.environ.update(runner_env)
    name = f"bench-{cand.name}-{time.time_ns()}"
    start = time.perf_counter()
    (shards,) = tune_shards.with_options(task_runner=task_runner_from_settings(WORKERS))(
        fs, [{"candidate": cand, "study_name": name, "storage": storage}], "classification", "roc_auc", 0, WORKERS)
    seconds = time.perf_counter() - start
    trials = len(optuna.load_study(study_name=name, storage=storage).trials)
    return seconds, shards, trials


def main() -> None:
    folder = Path(tempfile.mkdtemp(prefix="sluice-bench-dist-"))
    os.environ.update({"SLUICE_HOME": str(folder / "home"), "PREFECT_HOME": str(folder / "prefect"),
                       "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_LOGGING_LEVEL": "WARNING",
                       "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180"})
    (folder / "prefect").mkdir(parents=True)
    from distributed import LocalCluster
    from prefect import flow

    from sluicegate.tuning import open_storage

    n_rows, n_trials = (4000, 8) if QUICK else (8000, 16)
    fs = feature_set(folder, n_rows)
    storage = f"sqlite:///{folder / 'optuna.db'}"
    open_storage(storage)  # WAL mode before two processes write

    @flow(name="warm-up")
    def warm_up() -> None:
        pass

    t0 = time.perf_counter()
    warm_up()
    print(f"Prefect temporary API started in {time.perf_counter() - t0:.1f} s (not counted)")
    t0 = time.perf_counter()
    from tasks.runners import local_cluster_kwargs

    cluster = LocalCluster(**local_cluster_kwargs(WORKERS))
    print(f"local Dask cluster of {WORKERS} processes started in {time.perf_counter() - t0:.1f} s (not counted)")
    print(f"{os.cpu_count()} CPU cores; {n_rows} rows x 20 features; {n_trials} trials per study; "
          f"{WORKERS} workers, one CPU thread per trial\n")
    threads_env = {"SLUICE_TASK_RUNNER": "threads"}
    dask_env = {"SLUICE_TASK_RUNNER": "dask", "SLUICE_DASK_ADDRESS": cluster.scheduler_address}
    try:
        for cand in candidates(n_trials):
            # the first Dask run of a kind pays the workers' imports; run it once, untimed
            run(dask_env, fs, cand.model_copy(update={"tuning": cand.tuning.model_copy(update={"n_trials": 2})}),
                storage)
            t_threads, _, n_threads = run(threads_env, fs, cand, storage)
            t_dask, shards, n_dask = run(dask_env, fs, cand, storage)
            pids = sorted({s["host"] for s in shards})
            print(f"== {cand.name}")
            print(f"  threads (2 threads, 1 process): {t_threads:6.1f} s, {n_threads} trials")
            print(f"  dask    (2 worker processes):   {t_dask:6.1f} s, {n_dask} trials on {', '.join(pids)}")
            print(f"  ratio dask / threads: {t_dask / t_threads:.2f}  (below 1: the processes were faster)\n", flush=True)
    finally:
        cluster.close()


if __name__ == "__main__":
    main()
