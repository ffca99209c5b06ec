"""Benchmark: the Great Expectations gate against plain pandas checks of the same expectations.

Prints the wall-time ratio (goal: at most 3x) on N rows (default 1,000,000) x 20 columns.
The timed path is what the pipeline runs on a passing dataset (`data_docs: false`): built-in
checks and the YAML's column rules in pandas over every row, Great Expectations only for raw
`validation.expectations` (BOOLEAN_ONLY; SUMMARY only on failure). Then the fixed cost: a fresh
process validating a 300-row frame (imports included), with and without Data Docs (which run
the whole suite through GX once).
Usage: python benchmarks/validation.py [rows]
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import quiet_env, wide_frame

ROWS = int(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1] != "--fixed" else 1_000_000


def spec_dict():
    cols = {f"x{i}": {"type": "float", "min": -1000, "max": 1000, "max_null_share": 0.01} for i in range(16)}
    cols["plan"] = {"allowed": ["basic", "plus", "pro"]}
    cols["region"] = {"allowed": ["north", "south", "east", "west"]}
    cols["channel"] = {"allowed": ["web", "store", "phone"]}
    cols["customer_id"] = {"type": "int", "unique": True}
    return {"min_rows": 1000, "max_nan_share": 0.1, "data_docs": False, "columns": cols}


def plain_pandas(frame, spec) -> bool:
    """The same checks written directly in pandas: the baseline."""
    ok = len(frame) >= spec["min_rows"]
    ok &= frame["churned"].nunique() >= 2
    ok &= bool((frame.isna().mean() <= spec["max_nan_share"]).all())
    for col, rule in spec["columns"].items():
        s = frame[col]
        if rule.get("type") == "float":
            ok &= s.dtype.kind == "f"
        if rule.get("type") == "int":
            ok &= s.dtype.kind == "i"
        if "min" in rule:
            ok &= bool((s.dropna() >= rule["min"]).all()) and bool((s.dropna() <= rule["max"]).all())
        if "max_null_share" in rule:
            ok &= s.isna().mean() <= rule["max_null_share"]
        if "allowed" in rule:
            ok &= bool(s.isin(rule["allowed"]).all())
        if rule.get("unique"):
            ok &= s.is_unique
    return bool(ok)


def main() -> None:
    home = Path(tempfile.mkdtemp(prefix="sluice-bench-val-"))
    quiet_env(home)
    from sluicegate.config import ValidationConfig
    from sluicegate.validation import validate_data

    frame = wide_frame(ROWS)
    spec = spec_dict()
    print(f"validation benchmark: {ROWS} rows x {frame.shape[1]} columns, {len(spec['columns'])} column rules")
    validate_data(frame.head(2000), ValidationConfig(**spec), "churned", "classification", home / "warm")  # imports, GX context
    best_plain, best_gx = float("inf"), float("inf")
    for _ in range(3):
        t = time.perf_counter()
        assert plain_pandas(frame, spec)
        best_plain = min(best_plain, time.perf_counter() - t)
        t = time.perf_counter()
        report = validate_data(frame, ValidationConfig(**spec), "churned", "classification", home / "run")
        best_gx = min(best_gx, time.perf_counter() - t)
        assert report.passed, report.failure_summary()
    print(f"  plain pandas (baseline): {best_plain:.2f} s")
    print(f"  sluice validate (built-ins + column rules in pandas; no raw GX expectations here): {best_gx:.2f} s  ({len(report.checks)} checks)")
    ratio = best_gx / best_plain
    print(f"RATIO validate/pandas = {ratio:.2f}x (goal <= 3x): {'MET' if ratio <= 3 else 'NOT MET'}")
    for docs in ("false", "true"):
        runs = sorted(float(subprocess.run([sys.executable, __file__, "--fixed", docs], capture_output=True, text=True,
                                           check=True).stdout.split()[-1]) for _ in range(3))
        print(f"  fixed cost, fresh process, 300 rows, data_docs {docs}: validate_data min {runs[0]:.2f} "
              f"median {runs[1]:.2f} s (after the sluicegate imports; GX imported inside when needed)")


def fixed(docs: bool) -> None:
    """One fresh process: import and validate a 300-row frame, as `sluice run` on a small file does."""
    home = Path(tempfile.mkdtemp(prefix="sluice-bench-val-fixed-"))
    quiet_env(home)
    from sluicegate.config import ValidationConfig
    from sluicegate.validation import validate_data

    spec = ValidationConfig(**{**spec_dict(), "min_rows": 100, "data_docs": docs})
    frame = wide_frame(300)
    t = time.perf_counter()
    report = validate_data(frame, spec, "churned", "classification", home / "run")
    assert report.passed, report.failure_summary()
    print(f"{time.perf_counter() - t:.3f}")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--fixed":
        fixed(sys.argv[2] == "true")
    else:
        main()
