"""Benchmark: the drift check at its defaults, for speed against numpy/scipy and for how often it is right.

Part 1, rates (in this process). A champion (logistic regression on 7 numeric inputs and 2
categories; the target depends mostly on x0, then x1 and plan) and its permutation importance on
a holdout, as the scheduled check computes them. Then, at the defaults, 100 checks each of:
  - random resamples of the training data (false alarms), and fresh draws of the same generator
    (false alarms when the reference's own sampling noise counts too);
  - x0 (the top input) shifted by 0.5, 1 and 2 std; x6 (an input the model ignores) shifted by 1 std;
  - a categorical shift: 30% of rows move to plan "pro" (total-variation distance 0.24, that of a
    0.6-std shift of a normal).
Each check uses `fast_column_drift` (the same per-column statistics as the Evidently path, checked
equal first on one window) and the real verdict, `decide_drift`.

Part 2, speed (each in its own process so peak memory is comparable), on the SAME rows on both
sides (no sampling: max_rows >= the rows):
  baseline  numpy/scipy: KS for numeric columns, PSI for categorical ones
  fast      fast_column_drift (scipy K-S and the corrected chi-square)
  check     check_drift (Evidently, the explicit methods; no HTML)
prints time and peak RSS (whole process, and the increase during the check) and the ratios.

Usage: python benchmarks/drift.py [rows] [--checks N]
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.helpers import drift_inputs  # noqa: E402 (the checkout is on the path now)

ARGS = [a for a in sys.argv[1:] if not a.startswith("--")]
ROWS = int(ARGS[0]) if ARGS and ARGS[0].isdigit() else 100_000
CHECKS = int(sys.argv[sys.argv.index("--checks") + 1]) if "--checks" in sys.argv else 100
N_NUM, N_CAT = 16, 4
INPUTS = [f"x{i}" for i in range(7)] + ["plan", "region"]


# ---------------------------------------------------------------- part 1: rates
def inputs(n: int, seed: int) -> pd.DataFrame:
    return drift_inputs(n, seed, plan_effect=0.8)


def champion(train: pd.DataFrame, holdout: pd.DataFrame):
    from sklearn.compose import make_column_transformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    from sluicegate.monitoring import champion_importance

    model = make_pipeline(make_column_transformer((OneHotEncoder(), ["plan", "region"]), remainder="passthrough"),
                          LogisticRegression(max_iter=500))
    model.fit(train[INPUTS], train.y)
    return champion_importance(model, holdout[INPUTS + ["y"]], "y", "classification", "roc_auc", INPUTS, seed=0)


def rates() -> None:
    from sluicegate.config import MonitoringConfig
    from sluicegate.drift import ColumnDrift, check_drift, decide_drift, fast_column_drift, importance_weights

    spec = MonitoringConfig()
    train, holdout = inputs(1000, 0), inputs(300, 1)
    importance = champion(train, holdout)
    weights, ranks = importance_weights(importance, INPUTS)
    print("champion importance (share): " + ", ".join(f"{c} {weights[c]:.0%}" for c in sorted(ranks, key=ranks.get)))
    probe = inputs(300, 5).assign(x1=lambda f: f.x1 + 0.3)
    slow = check_drift(train, probe, INPUTS, spec, None, importance=importance)
    fast = fast_column_drift(train, probe, INPUTS, spec)
    same = all(abs(a.score - b.score) <= 1e-9 + 1e-6 * abs(b.score) and a.drifted == b.drifted
               for a, b in zip(fast, slow.columns))
    print(f"fast path vs Evidently on one window: {'SAME statistics' if same else 'DIFFERENT'}")
    if not same:
        raise SystemExit(1)

    def alerts(make) -> tuple[int, dict[str, int]]:
        n, why = 0, {}
        for seed in range(CHECKS):
            cols = [ColumnDrift(c.column, c.method, c.score, c.threshold, c.drifted, weights.get(c.column, 0.0),
                                ranks.get(c.column)) for c in fast_column_drift(train, make(seed), INPUTS, spec)]
            verdict = decide_drift(cols, spec)
            n += verdict.drifted
            for check in verdict.checks:
                why[check.rule] = why.get(check.rule, 0) + check.fired
        return n, why

    def shifted(col: str, std: float, size: int):
        return lambda seed: (lambda f: f.assign(**{col: f[col] + std}))(inputs(size, 10_000 + seed))

    def moved_plan(size: int):
        def make(seed: int) -> pd.DataFrame:
            f = inputs(size, 20_000 + seed)
            return f.assign(plan=np.where(np.random.default_rng(seed).random(size) < 0.3, "pro", f.plan))
        return make

    print(f"\nrates at the defaults ({CHECKS} checks each; reference {len(train)} training rows; p < 0.001 per column; "
          f"top_k {spec.top_k}, importance_share {spec.importance_share}, drift_share {spec.drift_share})")
    for size in (100, 200, 1000):
        cases = [
            ("false alarms: resamples of the training data", lambda s: train.sample(size, replace=True, random_state=s)),
            ("false alarms: fresh draws, same distribution", lambda s: inputs(size, 30_000 + s)),
            ("detection: x0 (top input) +0.5 std", shifted("x0", 0.5, size)),
            ("detection: x0 (top input) +1 std", shifted("x0", 1.0, size)),
            ("detection: x0 (top input) +2 std", shifted("x0", 2.0, size)),
            ("detection: plan, 30% of rows moved to 'pro'", moved_plan(size)),
            ("x6 (ignored by the model) +1 std", shifted("x6", 1.0, size)),
        ]
        print(f"  window of {size} rows:")
        for name, make in cases:
            n, why = alerts(make)
            fired = ", ".join(f"{k} {v}" for k, v in why.items() if v) or "-"
            print(f"    {name:48s} {n:3d}/{CHECKS}  (rules fired: {fired})")


# ---------------------------------------------------------------- part 2: speed
def frames(n: int):
    rng = np.random.default_rng(0)
    ref = {f"n{i}": rng.normal(0, 1, n) for i in range(N_NUM)}
    ref.update({f"c{i}": rng.choice(list("abcde"), n) for i in range(N_CAT)})
    cur = {f"n{i}": rng.normal(0.3 if i % 2 == 0 else 0.0, 1, n // 2) for i in range(N_NUM)}
    cur.update({f"c{i}": rng.choice(list("abcde"), n // 2, p=[0.4, 0.15, 0.15, 0.15, 0.15] if i % 2 == 0 else None)
                for i in range(N_CAT)})
    return pd.DataFrame(ref), pd.DataFrame(cur)


def baseline(ref: pd.DataFrame, cur: pd.DataFrame) -> dict[str, bool]:
    from scipy import stats

    out = {}
    for col in ref.columns:
        if col.startswith("n"):
            out[col] = bool(stats.ks_2samp(ref[col].to_numpy(), cur[col].to_numpy()).pvalue < 0.001)
        else:
            cats = sorted(set(ref[col].unique()) | set(cur[col].unique()))
            p = ref[col].value_counts(normalize=True).reindex(cats, fill_value=0).to_numpy() + 1e-6
            q = cur[col].value_counts(normalize=True).reindex(cats, fill_value=0).to_numpy() + 1e-6
            out[col] = bool(np.sum((q - p) * np.log(q / p)) > 0.1)
    return out


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child(mode: str) -> None:
    from sluicegate.config import MonitoringConfig
    from sluicegate.drift import check_drift, fast_column_drift

    if mode == "check":
        import evidently  # noqa: F401  (imports are not what we measure)
        import evidently.metrics  # noqa: F401
    import scipy.stats  # noqa: F401
    ref, cur = frames(ROWS)
    spec = MonitoringConfig(max_rows=ROWS, min_rows=100)  # every row on both sides: the same rows as the baseline
    before = _rss_mb()
    start = time.perf_counter()
    if mode == "baseline":
        verdicts = baseline(ref, cur)
    elif mode == "fast":
        verdicts = {c.column: c.drifted for c in fast_column_drift(ref, cur, list(ref.columns), spec)}
    else:
        verdicts = {c.column: c.drifted for c in check_drift(ref, cur, list(ref.columns), spec, None, html=False).columns}
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"mode": mode, "seconds": seconds, "peak_mb": peak_mb, "peak_increase_mb": peak_mb - before,
                      "verdicts": verdicts}))


def speed() -> None:
    print(f"\nspeed: {ROWS} reference rows, {ROWS // 2} current rows, {N_NUM} numeric + {N_CAT} categorical columns, "
          "same rows on every side")
    results = {}
    for mode in ("baseline", "fast", "check"):
        done = subprocess.run([sys.executable, __file__, str(ROWS), "--child", mode], capture_output=True, text=True,
                              timeout=3600)
        if done.returncode != 0:
            print(f"  {mode}: FAILED\n{done.stderr[-2000:]}")
            continue
        results[mode] = r = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"  {mode:8s}: {r['seconds']:7.2f} s, peak RSS {r['peak_mb']:.0f} MB (+{r['peak_increase_mb']:.0f} MB "
              f"during the check), {sum(r['verdicts'].values())} of {len(r['verdicts'])} columns drifted")
    base = results.get("baseline")
    for mode in ("fast", "check"):
        if base and mode in results:
            r = results[mode]
            t, m = r["seconds"] / base["seconds"], r["peak_mb"] / base["peak_mb"]
            print(f"RATIO {mode}/numpy: time {t:.1f}x, peak memory {m:.1f}x (goal <= 5x): {'MET' if max(t, m) <= 5 else 'NOT MET'}")
    if "fast" in results and "check" in results:
        same = results["fast"]["verdicts"] == results["check"]["verdicts"]
        print(f"fast-path verdicts {'EQUAL' if same else 'DIFFER FROM'} the Evidently check's")


if __name__ == "__main__":
    if "--child" in sys.argv:
        child(sys.argv[sys.argv.index("--child") + 1])
    else:
        if "--speed-only" not in sys.argv:
            rates()
        if "--rates-only" not in sys.argv:
            speed()
