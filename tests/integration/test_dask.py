"""Scale-out on a real local Dask cluster (two worker processes): a shared Optuna study, then partitioned scoring."""

from __future__ import annotations

import os

import pandas as pd
import pytest

from tests.helpers import churn_config, churn_frame, write_project

pytestmark = pytest.mark.slow

N_TRIALS = 6
WORKERS = 2


def _tuned_config(root) -> dict:
    cfg = churn_config(root)
    cfg["model"] = {"kind": "xgboost", "params": {"n_estimators": 40, "n_jobs": 1}, "early_stopping_rounds": 10}
    cfg["tuning"] = {
        "n_trials": N_TRIALS, "pruner": "none", "sampler": "random",
        "search_space": {"max_depth": {"type": "int", "low": 2, "high": 5},
                         "learning_rate": {"type": "float", "low": 0.03, "high": 0.3, "log": True}},
    }
    return cfg


@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory, prefect_harness):
    """Two single-threaded worker processes; the environment is set first, since workers copy it when spawned.

    The workers get the harness's API URL, as a real worker gets PREFECT_API_URL: without one,
    each worker process would start a temporary Prefect API of its own.
    """
    distributed = pytest.importorskip("distributed")
    from prefect.settings import PREFECT_API_URL

    home = tmp_path_factory.mktemp("dask-home")
    saved = {k: os.environ.get(k) for k in ("SLUICE_HOME", "SLUICE_TASK_RUNNER", "SLUICE_DASK_ADDRESS",
                                            "PREFECT_API_URL")}
    os.environ["SLUICE_HOME"] = str(home / "home")
    os.environ["PREFECT_API_URL"] = PREFECT_API_URL.value()
    from tasks.runners import local_cluster_kwargs

    cluster = distributed.LocalCluster(**local_cluster_kwargs(WORKERS))  # 2 processes, 1 thread each, loopback
    os.environ["SLUICE_TASK_RUNNER"] = "dask"
    os.environ["SLUICE_DASK_ADDRESS"] = cluster.scheduler_address
    try:
        with distributed.Client(cluster) as client:
            pids = set(client.run(os.getpid).values())
        yield {"root": home, "cluster": cluster, "worker_pids": pids}
    finally:
        cluster.close()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="module")
def tuned(dask_cluster, prefect_harness):
    """Distributed tuning of a churn project, then the training pipeline on the same study."""
    from flows.scale_out import distributed_tuning

    root = dask_cluster["root"]
    path = write_project(root, churn_frame(600, seed=4), _tuned_config(root))
    result = distributed_tuning(str(path), WORKERS)
    return {"path": path, "result": result}


def _study_trials(name: str) -> int:
    import optuna

    from sluicegate.settings import load_settings

    return len(optuna.load_study(study_name=name, storage=load_settings().optuna_storage).trials)


def test_trials_of_one_study_run_in_both_worker_processes(tuned, dask_cluster):
    result = tuned["result"]
    assert result["runner"].startswith("dask scheduler tcp://127.0.0.1:")
    (study,) = result["studies"]
    # the budget holds across workers: at most one extra trial per worker racing for the last one
    assert N_TRIALS <= study["trials"] <= N_TRIALS + WORKERS - 1
    assert study["complete"] == study["trials"]
    assert _study_trials(study["study_name"]) == study["trials"]
    hosts = {w["host"].rsplit(":", 1)[1] for w in study["workers"]}
    assert {int(pid) for pid in hosts} <= dask_cluster["worker_pids"]
    assert os.getpid() not in {int(pid) for pid in hosts}
    assert len(study["workers"]) == WORKERS
    assert set(study["best_params"]) == {"max_depth", "learning_rate"}


def test_trials_are_logged_to_mlflow_under_one_parent(tuned):
    from sluicegate.settings import load_settings
    from sluicegate.tracking import Tracker

    (study,) = tuned["result"]["studies"]
    tracker = Tracker(load_settings())
    exp = tracker.client.get_experiment_by_name("churn")
    parents = tracker.client.search_runs([exp.experiment_id], "tags.`sluice.kind` = 'tuning'")
    assert [p.data.tags["sluice.study"] for p in parents] == [study["study_name"]]
    trials = tracker.client.search_runs([exp.experiment_id], "tags.`sluice.trial` != ''")
    assert len(trials) == study["trials"]


def test_training_reuses_the_finished_study_and_partitioned_scoring_matches_single_process(tuned, tmp_path):
    from flows.scale_out import partitioned_scoring
    from flows.scoring import scoring_pipeline
    from flows.training import training_pipeline

    (study,) = tuned["result"]["studies"]
    trained = training_pipeline(str(tuned["path"]), None, "after distributed tuning")
    assert trained.outcome == "promoted", trained.summary
    assert _study_trials(study["study_name"]) == study["trials"]  # no new trials: the budget was spent

    rows = churn_frame(1000, seed=11).drop(columns=["churned"])
    src = tmp_path / "batch.csv"
    rows.to_csv(src, index=False)
    parted = partitioned_scoring("churn", str(src), str(tmp_path / "scored-parted.parquet"), 3)
    single = scoring_pipeline("churn", str(src), str(tmp_path / "scored-single.parquet"))

    assert parted["partitions"] == 3 and parted["rows"] == 1000
    assert parted["model_version"] == str(trained.version)
    assert parted["input_fingerprint"] == single["input_fingerprint"]
    a = pd.read_parquet(parted["output_path"])
    b = pd.read_parquet(single["output_path"])
    pd.testing.assert_frame_equal(a, b)
    assert not (tmp_path / ".scored-parted.parquet.parts").exists()


def test_unknown_runner_is_refused_with_the_variable_named(monkeypatch):
    from sluicegate.errors import ConfigError
    from tasks.runners import task_runner_from_settings

    monkeypatch.setenv("SLUICE_TASK_RUNNER", "ray")
    with pytest.raises(ConfigError, match="SLUICE_TASK_RUNNER: must be one of threads, dask"):
        task_runner_from_settings(2)
