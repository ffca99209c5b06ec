"""Benchmark: Sluicegate's Evidently drift check against plain numpy/scipy per-column tests.

On N rows x 20 columns (default 1,000,000; half the columns shifted) it measures, each in its
own process so peak memory is comparable:
  baseline  numpy/scipy: KS for numeric columns, PSI for categorical ones
  full      check_drift with max_rows >= N (Evidently on every row)
  sampled   check_drift with the default max_rows (100,000-row samples of both sides)
and prints time and whole-process peak-RSS ratios against the baseline (goal <= 5x) and whether the sampled
verdicts equal the full ones.
Usage: python benchmarks/drift.py [rows]
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time

import numpy as np
import pandas as pd

ROWS = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
N_NUM, N_CAT = 16, 4


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
            out[col] = bool(stats.ks_2samp(ref[col].to_numpy(), cur[col].to_numpy()).pvalue < 0.05)
        else:
            cats = sorted(set(ref[col].unique()) | set(cur[col].unique()))
            p = ref[col].value_counts(normalize=True).reindex(cats, fill_value=0).to_numpy() + 1e-6
            q = cur[col].value_counts(normalize=True).reindex(cats, fill_value=0).to_numpy() + 1e-6
            out[col] = bool(np.sum((q - p) * np.log(q / p)) > 0.1)
    return out


def sluice(ref: pd.DataFrame, cur: pd.DataFrame, max_rows: int) -> dict[str, bool]:
    from sluicegate.config import MonitoringConfig
    from sluicegate.drift import check_drift

    spec = MonitoringConfig(max_rows=max_rows, min_rows=100)
    report = check_drift(ref, cur, list(ref.columns), spec, None, html=False)
    return {c.column: c.drifted for c in report.columns}


def child(mode: str) -> None:
    if mode != "baseline":
        import evidently  # noqa: F401  (imports are not what we measure)
        import evidently.metrics  # noqa: F401
    ref, cur = frames(ROWS)
    start = time.perf_counter()
    verdicts = baseline(ref, cur) if mode == "baseline" else sluice(ref, cur, ROWS if mode == "full" else 100_000)
    seconds = time.perf_counter() - start
    # whole-process peak (data and imports included): a delta would hide the data's own footprint
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"mode": mode, "seconds": seconds, "peak_mb": peak_mb, "verdicts": verdicts}))


def main() -> None:
    print(f"drift benchmark: {ROWS} reference rows, {ROWS // 2} current rows, {N_NUM} numeric + {N_CAT} categorical columns")
    results = {}
    for mode in ("baseline", "sampled", "full"):
        done = subprocess.run([sys.executable, __file__, str(ROWS), "--child", mode], capture_output=True, text=True, timeout=1800)
        if done.returncode != 0:
            print(f"  {mode}: FAILED\n{done.stderr[-2000:]}")
            continue
        results[mode] = json.loads(done.stdout.strip().splitlines()[-1])
        r = results[mode]
        print(f"  {mode:8s}: {r['seconds']:7.2f} s, peak RSS {r['peak_mb']:.0f} MB, "
              f"{sum(r['verdicts'].values())} of {len(r['verdicts'])} columns drifted")
    base = results["baseline"]
    for mode in ("sampled", "full"):
        if mode in results:
            r = results[mode]
            t, m = r["seconds"] / base["seconds"], r["peak_mb"] / base["peak_mb"]
            print(f"RATIO {mode}/numpy: time {t:.1f}x, peak memory {m:.1f}x (goal <= 5x): {'MET' if max(t, m) <= 5 else 'NOT MET'}")
    if "sampled" in results and "full" in results:
        same = results["sampled"]["verdicts"] == results["full"]["verdicts"]
        print(f"sampled verdicts {'EQUAL' if same else 'DIFFER FROM'} the full run's")


if __name__ == "__main__":
    if "--child" in sys.argv:
        child(sys.argv[sys.argv.index("--child") + 1])
    else:
        main()
