"""Benchmark: Optuna pruning and parallel trials, against unpruned and one-worker studies in the same run.

1. Pruned vs unpruned: the same random draws (same sampler seed), so both studies see the same
   candidate parameters; pruning may only save time on weak trials. Prints the wall-time ratio
   (goal: <= 0.5) and both best validation scores (they must agree within 0.002).
2. Two workers (threads against the shared storage) vs one worker, one CPU thread per trial in
   both, so the ratio is the gain from parallel trials alone; one worker with two CPU threads per
   trial is printed too (on a busy two-core machine, two OpenMP threads per fit can be far slower).
Each study is capped by a timeout, so the whole run stays within a few minutes on two cores.
Usage: python benchmarks/tuning.py [--quick]
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

from _common import ROOT, feature_set  # noqa: F401  (ROOT puts the checkout on sys.path)

from sluicegate.config import CandidateConfig, TorchModelConfig, TuningConfig, XGBoostModelConfig
from sluicegate.tuning import tune_model

QUICK = "--quick" in sys.argv
CAP_S = 90 if not QUICK else 40  # per study




def study(fs, model, name, folder, **tuning):
    cand = CandidateConfig(name=name, model=model, tuning=TuningConfig(timeout_s=CAP_S, **tuning))
    start = time.perf_counter()
    result = tune_model(fs, cand, "classification", "roc_auc", 0, f"{name}-{time.time_ns()}",
                        f"sqlite:///{folder / 'optuna.db'}")
    return time.perf_counter() - start, result


def pruning(fs, folder, label, model, space, n_trials, pruner):
    print(f"\n== pruning, {label}: {n_trials} random draws, {pruner} pruner vs none", flush=True)
    common = dict(search_space=space, sampler="random", n_trials=n_trials)
    t_none, r_none = study(fs, model, f"{label}-none", folder, pruner="none", **common)
    t_pruned, r_pruned = study(fs, model, f"{label}-{pruner}", folder, pruner=pruner, **common)
    ratio = t_pruned / t_none
    gap = abs(r_pruned.best_value - r_none.best_value)
    print(f"  unpruned: {t_none:6.1f} s, {len(r_none.trials)} trials, best roc_auc {r_none.best_value:.4f}")
    print(f"  {pruner:>8}: {t_pruned:6.1f} s, {len(r_pruned.trials)} trials ({r_pruned.count('PRUNED')} pruned), "
          f"best roc_auc {r_pruned.best_value:.4f}")
    same = len(r_none.trials) == len(r_pruned.trials) == n_trials
    print(f"  RATIO pruned/unpruned wall time = {ratio:.2f} (goal <= 0.5: {'met' if ratio <= 0.5 else 'NOT met'}); "
          f"best-score gap {gap:.4f} ({'within' if gap <= 0.002 else 'OUTSIDE'} 0.002)"
          + ("" if same else "  [a study hit its time cap: compare with care]"))
    return ratio, gap


def workers(fs, folder, label, model, space, n_trials):
    print(f"\n== parallel trials, {label}: {n_trials} trials, no pruning", flush=True)
    common = dict(search_space=space, sampler="random", n_trials=n_trials, pruner="none")
    t1, r1 = study(fs, model, f"{label}-w1", folder, n_workers=1, **common)
    t2, r2 = study(fs, model, f"{label}-w2", folder, n_workers=2, **common)
    two = model.model_copy(update={"num_threads": 2} if model.kind == "torch" else {"params": {**model.params, "n_jobs": 2}})
    t12, r12 = study(fs, two, f"{label}-w1t2", folder, n_workers=1, **common)
    print(f"  1 worker  x 1 thread : {t1:6.1f} s ({len(r1.trials)} trials)")
    print(f"  2 workers x 1 thread : {t2:6.1f} s ({len(r2.trials)} trials)")
    print(f"  1 worker  x 2 threads: {t12:6.1f} s ({len(r12.trials)} trials)  [for reference]")
    full = len(r1.trials) == len(r2.trials) == n_trials
    print(f"  RATIO 2 workers / 1 worker wall time = {t2 / t1:.2f} (below 1 means parallel trials help)"
          + ("" if full else "  [a study hit its time cap: compare with care]"))
    return t2 / t1


def main() -> None:
    load = os.getloadavg()
    print(f"cpus {os.cpu_count()}, load average {load[0]:.2f} (other processes on the machine skew these timings)")
    folder = Path(tempfile.mkdtemp(prefix="sluice-bench-tuning-"))
    n_rows = 3000 if QUICK else 6000
    fs = feature_set(folder, n_rows)
    # one CPU thread per fit everywhere: see the module docstring
    xgb = XGBoostModelConfig(kind="xgboost", params={"n_estimators": 300, "n_jobs": 1}, early_stopping_rounds=None)
    xgb_space = {"learning_rate": {"type": "float", "low": 1e-3, "high": 0.3, "log": True},
                 "max_depth": {"type": "int", "low": 2, "high": 8},
                 "subsample": {"type": "float", "low": 0.5, "high": 1.0}}
    mlp = TorchModelConfig(kind="torch", hidden_layers=[64, 32], epochs=30, patience=None, batch_size=128,
                           num_threads=1)
    mlp_space = {"lr": {"type": "float", "low": 1e-5, "high": 3e-2, "log": True},
                 "dropout": {"type": "float", "low": 0.0, "high": 0.5},
                 "weight_decay": {"type": "float", "low": 1e-6, "high": 1e-2, "log": True}}
    print(f"data: {n_rows} rows x 20 features (60/20/20 split); storage SQLite in {folder}")
    # warm-up outside the timings: torch/xgboost imports and the storage's table creation
    for model in (xgb, mlp):
        study(fs, model.model_copy(update={"epochs": 1} if model.kind == "torch" else {}), "warmup", folder,
              n_trials=1, pruner="none")
    results = {}
    n_x, n_t = (16, 10) if QUICK else (24, 16)
    results["xgb-median"] = pruning(fs, folder, "xgboost", xgb, xgb_space, n_x, "median")
    results["xgb-hyperband"] = pruning(fs, folder, "xgboost", xgb, xgb_space, n_x, "hyperband")
    results["torch-median"] = pruning(fs, folder, "torch", mlp, mlp_space, n_t, "median")
    results["xgb-workers"] = workers(fs, folder, "xgboost", xgb, xgb_space, 6 if QUICK else 12)
    results["torch-workers"] = workers(fs, folder, "torch", mlp, mlp_space, 4 if QUICK else 8)
    print("\nsummary:")
    for k, v in results.items():
        print(f"  {k}: " + (f"time ratio {v[0]:.2f}, best gap {v[1]:.4f}" if isinstance(v, tuple) else f"time ratio {v:.2f}"))


if __name__ == "__main__":
    main()
