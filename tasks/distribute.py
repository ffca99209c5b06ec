"""Tasks that run on any worker of the task runner: one share of a shared Optuna study, one partition to score."""

from __future__ import annotations

import os
import socket
from dataclasses import asdict

from prefect import task

from sluicegate import partitions as parts
from sluicegate.config import CandidateConfig, TuningConfig
from sluicegate.features import FeatureSet
from sluicegate.partitions import PartitionPlan, PartResult
from sluicegate.tuning import TuningResult, open_storage, stop_at_total_trials, tune_model
from tasks._common import tracker, transient_only


def _worker() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@task(name="prepare-study-storage", retries=2, retry_delay_seconds=[2, 5], retry_condition_fn=transient_only)
def prepare_study_storage(urls: list[str]) -> None:
    """Create Optuna's tables once, here, before workers start: workers creating them on an
    empty database at the same instant race (duplicate CREATE TABLE)."""
    for url in dict.fromkeys(urls):
        open_storage(url)


@task(name="tune-shard", retries=0)
def tune_shard(features: FeatureSet, candidate: CandidateConfig, task_type: str, metric: str, seed: int,
               study_name: str, storage: str, worker: int) -> dict:
    """Run trials of the shared study from this worker until the study holds its budget.

    Each worker offsets the sampler seed by its index, or workers that start together would
    draw the same first parameters (`tune_model` seeds the sampler with seed + trials done).
    """
    tuning = candidate.tuning or TuningConfig()
    # one trial at a time per worker: the parallelism is the workers
    share = candidate.model_copy(update={"tuning": tuning.model_copy(update={"n_workers": 1})})
    callbacks = [stop_at_total_trials(tuning.n_trials)] if tuning.n_trials else []
    result = tune_model(features, share, task_type, metric, seed + worker, study_name, storage, None, callbacks)
    print(f"worker {worker} ({_worker()}): study {study_name} held {result.resumed_from} trials at start, "
          f"{len(result.trials)} at the end ({result.seconds:.1f}s)")
    return {"worker": worker, "host": _worker(), "trials_at_start": result.resumed_from,
            "trials_at_end": len(result.trials), "seconds": round(result.seconds, 2)}


@task(name="summarize-study")
def summarize_study(features: FeatureSet, candidate: CandidateConfig, task_type: str, metric: str, seed: int,
                    study_name: str, storage: str, project: str) -> TuningResult:
    """Read the finished study (no new trials: its budget is spent) and log every trial to MLflow."""
    tuning = candidate.tuning or TuningConfig()
    # a budget already reached makes tune_model run no trial and return the stored ones;
    # a time-only budget (n_trials unset) is treated as "at least one trial"
    done = candidate.model_copy(update={"tuning": tuning.model_copy(update={"n_workers": 1,
                                                                          "n_trials": tuning.n_trials or 1})})
    result = tune_model(features, done, task_type, metric, seed, study_name, storage, None)
    tracker().log_trials(project, result.study_name, result.candidate, result.metric,
                         [asdict(t) for t in result.trials], result.best_params)
    print(f"study {study_name}: {len(result.trials)} trials, best {metric} {result.best_value:.4f}")
    return result


@task(name="pin-champion", retries=1, retry_delay_seconds=5, retry_condition_fn=transient_only)
def pin_champion(project: str) -> str:
    """The champion's version now, so every partition is scored by the same model."""
    return parts.pin_champion(tracker(), project)


@task(name="split-partitions", retries=1, retry_delay_seconds=5, retry_condition_fn=transient_only)
def split_partitions(input_path: str, partitions: int, work_dir: str) -> PartitionPlan:
    """Cut the input into contiguous Parquet parts on storage every worker can read."""
    return parts.split_partitions(input_path, partitions, work_dir)


@task(name="score-partition", retries=1, retry_delay_seconds=5, retry_condition_fn=transient_only)
def score_partition(project: str, version: str, index: int, part_path: str, fingerprint: str) -> PartResult:
    """Score one part with the pinned version (loaded once per worker process)."""
    result = parts.score_partition(tracker(), project, version, index, part_path, fingerprint)
    print(f"partition {index}: {result.rows} rows on {_worker()}")
    return result


@task(name="merge-partitions")
def merge_partitions(results: list[PartResult], output_path: str) -> str:
    """Write the scored parts, in input order, to the output file."""
    return str(parts.merge_partitions(results, output_path))
