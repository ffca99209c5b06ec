"""Data validation: built-in checks in pandas plus the YAML's Great Expectations suite (the only GX import)."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sluicegate.config import ColumnCheck, ExpectationSpec, ValidationConfig
from sluicegate.data import carried_rows, strip_markers
from sluicegate.errors import ConfigError

log = logging.getLogger(__name__)

# pandas dtype names GX compares against, per YAML type name
TYPE_LISTS = {
    "int": ["int8", "int16", "int32", "int64", "Int8", "Int16", "Int32", "Int64", "uint8", "uint16", "uint32", "uint64"],
    "float": ["float16", "float32", "float64", "Float32", "Float64"],
    "str": ["object", "str", "string", "StringDtype"],
    "bool": ["bool", "boolean"],
    "datetime": ["datetime64[ns]", "datetime64[us]", "datetime64[ms]", "datetime64[s]", "datetime64[ns, UTC]"],
}
TYPE_LISTS["number"] = TYPE_LISTS["int"] + TYPE_LISTS["float"]


@dataclass(frozen=True)
class CheckResult:
    """One check's outcome, worded so a person can act on it."""

    check: str
    column: str | None
    severity: str
    success: bool
    observed: Any = None
    message: str = ""


@dataclass(frozen=True)
class ValidationReport:
    """Every check on a dataset; `passed` is False when any error-severity check failed."""

    passed: bool
    rows: int
    checks: tuple[CheckResult, ...]
    json_path: str | None = None
    docs_path: str | None = None
    data_fingerprint: str | None = None
    extra: dict = field(default_factory=dict)

    @property
    def errors(self) -> list[CheckResult]:
        return [c for c in self.checks if not c.success and c.severity == "error"]

    @property
    def warnings(self) -> list[CheckResult]:
        return [c for c in self.checks if not c.success and c.severity == "warn"]

    def failure_summary(self, limit: int = 5) -> str:
        items = [f"{c.column or '<table>'}: {c.message}" for c in self.errors[:limit]]
        more = len(self.errors) - limit
        return "; ".join(items) + (f"; and {more} more" if more > 0 else "")

    def to_markdown(self) -> str:
        verdict = "PASSED" if self.passed else "FAILED"
        lines = [
            f"## Data validation: {verdict}",
            f"{self.rows} rows, {len(self.checks)} checks, {len(self.errors)} errors, {len(self.warnings)} warnings.",
            "",
            "| check | column | severity | result | observed | message |",
            "|---|---|---|---|---|---|",
        ]
        ordered = sorted(self.checks, key=lambda c: (c.success, c.severity != "error"))
        for c in ordered:
            obs = json.dumps(c.observed, default=str)[:60] if c.observed is not None else ""
            lines.append(f"| {c.check} | {c.column or ''} | {c.severity} | {'ok' if c.success else '**FAIL**'} | {obs} | {c.message} |")
        if self.docs_path:
            lines += ["", f"Great Expectations Data Docs: `{self.docs_path}`"]
        if self.json_path:
            lines += [f"Full result: `{self.json_path}`"]
        return "\n".join(lines)


# ---------------------------------------------------------------- built-in checks
def builtin_checks(
    frame: pd.DataFrame, spec: ValidationConfig, target: str, task: str, feature_columns: dict[str, list[str]] | None = None,
    carried: dict[str, pd.Series] | None = None,
) -> list[CheckResult]:
    """Checks every project gets: rows, target present and not constant, NaN/inf share, column types.

    Args:
        frame: the raw data.
        spec: the `validation` section.
        target: target column.
        task: classification or regression (a regression target must be numeric).
        feature_columns: explicitly listed `numeric`/`categorical` feature columns, which must exist.
        carried: per column that not every row has (production rows lack the columns the prediction
            log does not record), the rows that carry it; its NaN share counts those rows only.

    Returns:
        One `CheckResult` per check.
    """
    out: list[CheckResult] = []
    n = len(frame)
    out.append(CheckResult("row_count", None, "error", n >= spec.min_rows and (spec.max_rows is None or n <= spec.max_rows), n,
                           f"{n} rows (need at least {spec.min_rows}{'' if spec.max_rows is None else f', at most {spec.max_rows}'})"))
    if n == 0:
        return [CheckResult("not_empty", None, "error", False, 0, "the dataset is empty")] + out
    if target not in frame.columns:
        hint = _close(target, frame.columns)
        out.append(CheckResult("target_present", target, "error", False, None,
                               f"target column {target!r} is missing{hint} (columns: {', '.join(map(str, frame.columns[:12]))})"))
    else:
        y = frame[target]
        distinct = int(y.nunique(dropna=True))
        out.append(CheckResult("target_not_constant", target, "error", distinct >= 2, distinct,
                               f"the target has {distinct} distinct value{'s' if distinct != 1 else ''}"
                               + (" (a single class cannot be learned)" if distinct < 2 else "")))
        if y.isna().any():
            out.append(CheckResult("target_not_null", target, "error", False, int(y.isna().sum()),
                                   f"{int(y.isna().sum())} rows have no target"))
        if task == "regression" and not pd.api.types.is_numeric_dtype(y):
            out.append(CheckResult("target_numeric", target, "error", False, str(y.dtype),
                                   f"a regression target must be numeric (dtype {y.dtype})"))
    for col in frame.columns:
        s = frame[col] if col not in (carried or {}) else frame.loc[carried[col], col]
        bad = s.isna()
        if pd.api.types.is_float_dtype(s):
            bad = bad | np.isinf(s.to_numpy(dtype=float, na_value=np.nan))
        share = float(bad.mean()) if len(bad) else 0.0
        if share > spec.max_nan_share:
            out.append(CheckResult("nan_share", str(col), spec.nan_severity, False, round(share, 4),
                                   f"{share:.1%} of values are NaN/inf (allowed {spec.max_nan_share:.1%})"))
    out.append(CheckResult("nan_share", "<all>", spec.nan_severity,
                           not any(c.check == "nan_share" for c in out), None,
                           f"every column at most {spec.max_nan_share:.1%} NaN/inf"))
    for kind, cols in (feature_columns or {}).items():
        for col in cols:
            if col not in frame.columns:
                out.append(CheckResult("feature_present", col, "error", False, None,
                                       f"{kind} feature column {col!r} is missing{_close(col, frame.columns)}"))
            elif kind == "numeric" and not pd.api.types.is_numeric_dtype(frame[col]):
                out.append(CheckResult("feature_type", col, "error", False, str(frame[col].dtype),
                                       f"numeric feature {col!r} holds text (dtype {frame[col].dtype}); "
                                       f"was the file's schema changed?"))
    return out


def _close(name: str, columns) -> str:
    import difflib

    hint = difflib.get_close_matches(str(name), [str(c) for c in columns], n=1)
    return f"; did you mean {hint[0]!r}?" if hint else ""


# ---------------------------------------------------------------- column rules (pandas)
# The YAML's `validation.columns` rules are checked here, in pandas, over every row: GX evaluated the
# same rules 8-10x slower than pandas on 1M rows (BOOLEAN_ONLY included). The check names are the GX
# expectation types they stand for, and tests/unit/test_validation.py checks parity with GX on the
# same frames. Great Expectations runs the YAML's raw `validation.expectations` and builds Data Docs.
_TYPE_WORDS = {"int": "integers", "float": "numbers", "number": "numbers", "str": "text", "bool": "booleans",
               "datetime": "datetimes"}


def _example(values: pd.Series) -> str:
    return repr(values.iloc[0].item() if hasattr(values.iloc[0], "item") else values.iloc[0])


def _numeric_problem(s: pd.Series) -> str | None:
    """"expected numbers, got text e.g. 'abc'" for a column that holds text where numbers belong."""
    if pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s):
        return None
    values = s.dropna()
    if pd.api.types.is_bool_dtype(s):
        return f"expected numbers, got booleans e.g. {_example(values)}" if len(values) else None
    bad = values[pd.to_numeric(values, errors="coerce").isna()] if len(values) else values
    if len(bad):
        return f"expected numbers, got text e.g. {_example(bad)} ({len(bad)} such values)"
    return f"expected numbers, got dtype {s.dtype}"


def _type_ok(s: pd.Series, kind: str) -> bool:
    return str(s.dtype) in TYPE_LISTS[kind]


def check_column_rules(frame: pd.DataFrame, columns: dict[str, ColumnCheck],
                       carried: dict[str, pd.Series] | None = None) -> list[CheckResult]:
    """The YAML's column rules over every row, worded in the user's terms.

    Same semantics as the GX expectations they stand for: nulls are ignored by range, allowed-set
    and uniqueness rules (`max_null_share` counts them); ranges are inclusive; `type` compares the
    column's dtype with the type's dtype names. A column in `carried` (see `builtin_checks`) is
    judged on the rows that carry it.

    Returns:
        One `CheckResult` per rule, named after the GX expectation type.
    """
    out: list[CheckResult] = []
    for col, rule in columns.items():
        sev = rule.severity
        if col not in frame.columns:
            out.append(CheckResult("expect_column_to_exist", col, "error", False, None,
                                   f"column is missing{_close(col, frame.columns)}"))
            continue
        out.append(CheckResult("expect_column_to_exist", col, "error", True, None, "ok"))
        s = frame[col] if col not in (carried or {}) else frame.loc[carried[col], col]
        if rule.type:
            ok = _type_ok(s, rule.type)
            if ok:
                msg = "ok"
            elif rule.type in ("int", "float", "number") and _numeric_problem(s):
                msg = _numeric_problem(s)
            else:
                msg = f"expected {_TYPE_WORDS[rule.type]} ({rule.type}), got dtype {s.dtype}"
                if rule.type == "int" and pd.api.types.is_float_dtype(s) and s.isna().any():
                    msg += f" (it has {int(s.isna().sum())} missing values, which make pandas read it as float)"
            out.append(CheckResult("expect_column_values_to_be_in_type_list", col, sev, ok, str(s.dtype), msg))
        if rule.min is not None or rule.max is not None:
            problem = _numeric_problem(s)
            if problem:
                out.append(CheckResult("expect_column_values_to_be_between", col, sev, False, None, problem))
            else:
                values = s.dropna()
                parts, bad = [], 0
                for side, bound, mask in (("below min", rule.min, values < rule.min if rule.min is not None else None),
                                          ("above max", rule.max, values > rule.max if rule.max is not None else None)):
                    if mask is not None and mask.any():
                        n = int(mask.sum())
                        bad += n
                        worst = values[mask].min() if side == "below min" else values[mask].max()
                        parts.append(f"{n} value{'s' if n != 1 else ''} {side} {bound:g}, e.g. {_example(pd.Series([worst]))}")
                out.append(CheckResult("expect_column_values_to_be_between", col, sev, not parts, bad, "; ".join(parts) or "ok"))
        if rule.max_null_share is not None:
            n = int(s.isna().sum())
            share = n / len(s) if len(s) else 0.0
            ok = share <= rule.max_null_share + 1e-12
            out.append(CheckResult("expect_column_values_to_not_be_null", col, sev, ok, n,
                                   "ok" if ok else f"{n} missing value{'s' if n != 1 else ''} ({share:.1%}; allowed {rule.max_null_share:.1%})"))
        if rule.allowed is not None:
            values = s.dropna()
            bad = values[~values.isin(rule.allowed)]
            shown = ", ".join(map(str, rule.allowed[:8])) + (", ..." if len(rule.allowed) > 8 else "")
            out.append(CheckResult(
                "expect_column_values_to_be_in_set", col, sev, bad.empty, len(bad),
                "ok" if bad.empty else f"{len(bad)} value{'s' if len(bad) != 1 else ''} not allowed, e.g. "
                f"{', '.join(repr(v) for v in pd.unique(bad)[:3])} (allowed: {shown})"))
        if rule.unique:
            values = s.dropna()
            dup = values[values.duplicated(keep=False)]
            out.append(CheckResult(
                "expect_column_values_to_be_unique", col, sev, dup.empty, len(dup),
                "ok" if dup.empty else f"{len(dup)} rows share a value with another row, e.g. {_example(dup)}"))
    return out


# ---------------------------------------------------------------- Great Expectations
def expectations_from_config(spec: ValidationConfig) -> list[tuple[str, dict, str]]:
    """The YAML's column rules and raw expectations as (type, kwargs, severity): the GX suite of Data Docs."""
    out: list[tuple[str, dict, str]] = []
    for col, rule in spec.columns.items():
        out += _column_expectations(col, rule)
    for e in spec.expectations:
        out.append((e.type, dict(e.kwargs), e.severity))
    if spec.max_rows is not None or spec.min_rows > 1:
        out.append(("expect_table_row_count_to_be_between",
                    {"min_value": spec.min_rows, "max_value": spec.max_rows}, "error"))
    return out


def raw_expectations(spec: ValidationConfig) -> list[tuple[str, dict, str]]:
    """Only the YAML's raw `validation.expectations` (column rules and row counts are checked in pandas)."""
    return [(e.type, dict(e.kwargs), e.severity) for e in spec.expectations]


def _column_expectations(col: str, rule: ColumnCheck) -> list[tuple[str, dict, str]]:
    sev = rule.severity
    out = [("expect_column_to_exist", {"column": col}, "error")]
    if rule.type:
        out.append(("expect_column_values_to_be_in_type_list", {"column": col, "type_list": TYPE_LISTS[rule.type]}, sev))
    if rule.min is not None or rule.max is not None:
        out.append(("expect_column_values_to_be_between", {"column": col, "min_value": rule.min, "max_value": rule.max}, sev))
    if rule.max_null_share is not None:
        out.append(("expect_column_values_to_not_be_null", {"column": col, "mostly": 1.0 - rule.max_null_share}, sev))
    if rule.allowed is not None:
        out.append(("expect_column_values_to_be_in_set", {"column": col, "value_set": list(rule.allowed)}, sev))
    if rule.unique:
        out.append(("expect_column_values_to_be_unique", {"column": col}, sev))
    return out


def check_expectation_specs(specs: list[ExpectationSpec]) -> None:
    """Build every raw expectation so an unknown type or a missing kwarg fails at config time.

    Raises:
        ConfigError: naming `validation.expectations.<i>`.
    """
    if not specs:
        return
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    problems = []
    for i, e in enumerate(specs):
        try:
            ExpectationConfiguration(type=e.type, kwargs=dict(e.kwargs)).to_domain_obj()
        except Exception as exc:  # GX raises its own and pydantic v1 errors here
            first = str(exc).strip().splitlines()
            problems.append(f"validation.expectations.{i}: {e.type}: {' '.join(first[:3])}")
    if problems:
        raise ConfigError(problems)


_GX: dict[str, Any] = {}  # one ephemeral context per process: creating it costs seconds


def _gx_context() -> Any:
    """The process's ephemeral GX context and pandas data source, created on first use."""
    if "context" not in _GX:
        os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        context = gx.get_context(mode="ephemeral")
        context.variables.progress_bars = ProgressBarsConfig(globally=False)
        _GX.update(context=context, source=context.data_sources.add_pandas("sluice"), n=0)
    return _GX["context"]


def run_expectations(
    frame: pd.DataFrame, expectations: list[tuple[str, dict, str]], docs_dir: Path | None, suite_name: str
) -> tuple[list[CheckResult], str | None]:
    """Validate with Great Expectations, fast first (BOOLEAN_ONLY), detailed only on failure.

    With `docs_dir`, the Data Docs checkpoint (SUMMARY) is the only validation run, and its results
    are the checks: one pass over the data instead of two.

    Returns:
        The check results and the Data Docs index path (None when docs were not built).
    """
    if not expectations:
        return [], None
    import great_expectations as gx
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    context = _gx_context()
    _GX["n"] += 1
    name = f"{suite_name}-{_GX['n']}"  # names are unique per context; the context lives as long as the process
    batch_def = _GX["source"].add_dataframe_asset(name).add_batch_definition_whole_dataframe("whole")
    suite = gx.ExpectationSuite(name=name)
    for etype, kwargs, severity in expectations:
        try:
            suite.add_expectation(ExpectationConfiguration(type=etype, kwargs=kwargs, meta={"severity": severity}).to_domain_obj())
        except Exception as exc:
            raise ConfigError([f"validation: {etype} {kwargs}: {str(exc).splitlines()[0]}"]) from exc
    suite = context.suites.add(suite)
    if docs_dir is not None:
        results, docs = _build_data_docs(context, batch_def, suite, frame, docs_dir)
        if results is not None:
            return [_to_check(r) for r in results], docs
    batch = batch_def.get_batch(batch_parameters={"dataframe": frame})
    quick = batch.validate(suite, result_format="BOOLEAN_ONLY")
    result = quick if quick.success else batch.validate(suite, result_format="SUMMARY")
    return [_to_check(r) for r in result.results], None


def _to_check(r: Any) -> CheckResult:
    cfg = r.expectation_config
    kwargs = {k: v for k, v in cfg.kwargs.items() if k != "batch_id"}
    col = kwargs.pop("column", None)
    severity = (cfg.meta or {}).get("severity", "error")
    res = r.result or {}
    observed = res.get("observed_value", res.get("unexpected_count"))
    if r.success:
        return CheckResult(cfg.type, col, severity, True, observed, "ok")
    message = _exception_message(r.exception_info)
    if not message:
        parts = []
        if "observed_value" in res:
            parts.append(f"observed {res['observed_value']!r}")
        if res.get("unexpected_count"):
            parts.append(f"{res['unexpected_count']} unexpected values ({res.get('unexpected_percent', 0):.1f}%)")
            if res.get("partial_unexpected_list"):
                parts.append(f"e.g. {res['partial_unexpected_list'][:3]}")
        message = ", ".join(parts) or "failed"
    expected = ", ".join(f"{k}={v}" for k, v in kwargs.items() if v is not None and k != "type_list")
    if expected:
        message += f" (expected {expected})"
    return CheckResult(cfg.type, col, severity, False, observed, message)


def _exception_message(info: Any) -> str:
    """GX reports a missing column as exception_info keyed by metric id; handle both shapes."""
    if not info:
        return ""
    if isinstance(info, dict) and info.get("raised_exception"):
        return str(info.get("exception_message", "")).splitlines()[0]
    if isinstance(info, dict):
        for v in info.values():
            if isinstance(v, dict) and v.get("raised_exception"):
                return str(v.get("exception_message", "")).splitlines()[0]
    return ""


def _build_data_docs(context: Any, batch_def: Any, suite: Any, frame: pd.DataFrame, docs_dir: Path) -> tuple[Any, str | None]:
    """Run the suite through a checkpoint that writes Data Docs in a fixed folder.

    Returns:
        (the expectation results, the docs index path); (None, None) and a log line when GX cannot
        build docs, and the caller validates without them.
    """
    try:
        import great_expectations as gx
        from great_expectations.checkpoint import UpdateDataDocsAction

        docs_dir.mkdir(parents=True, exist_ok=True)
        site = f"sluice_site_{suite.name}"
        context.add_data_docs_site(
            site_name=site,
            site_config={
                "class_name": "SiteBuilder",
                "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir)},
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            },
        )
        vd = context.validation_definitions.add(gx.ValidationDefinition(name=f"{suite.name}-vd", data=batch_def, suite=suite))
        cp = context.checkpoints.add(gx.Checkpoint(
            name=f"{suite.name}-cp", validation_definitions=[vd],
            actions=[UpdateDataDocsAction(name="docs", site_names=[site])], result_format="SUMMARY"))
        run = cp.run(batch_parameters={"dataframe": frame})
        results = next(iter(run.run_results.values())).results
        index = docs_dir / "index.html"
        return results, (str(index) if index.exists() else None)
    except Exception as exc:  # docs are a convenience: never fail validation over them
        log.warning("Data Docs were not built: %s", exc)
        return None, None


# ---------------------------------------------------------------- the step
def validate_data(
    frame: pd.DataFrame,
    spec: ValidationConfig,
    target: str,
    task: str,
    out_dir: Path,
    feature_columns: dict[str, list[str]] | None = None,
    suite_name: str = "sluice",
    fingerprint: str | None = None,
) -> ValidationReport:
    """Run the built-in checks and the YAML's GX suite; write the JSON result (and Data Docs).

    Built-in checks run first; when they show the frame is unusable (empty, no target) the rest
    is skipped, because its results would only repeat the problem. Column rules are checked in
    pandas over every row; Great Expectations runs the raw `validation.expectations` (BOOLEAN_ONLY,
    SUMMARY only on failure) and, with `data_docs`, the whole suite once to write Data Docs.

    Args:
        frame: the raw data, with or without the snapshot's marker columns (with them, a column the
            prediction log lacks is judged on the rows that carry it).
        spec: the `validation` section.
        target: target column.
        task: task type.
        out_dir: folder for `validation.json` and `data_docs/`.
        feature_columns: explicitly listed feature columns that must exist.
        suite_name: GX suite name (the project).
        fingerprint: data fingerprint, recorded in the report.

    Returns:
        A `ValidationReport`; the caller decides what a failure means (the task stops the run).
    """
    carried = carried_rows(frame)
    frame = strip_markers(frame)
    checks = builtin_checks(frame, spec, target, task, feature_columns, carried)
    fatal = any(c.check in ("not_empty", "target_present") and not c.success for c in checks)
    docs = None
    if not fatal:
        checks += check_column_rules(frame, spec.columns, carried)
        gx_frame = frame  # GX's expectations see the rows that carry every column (the source rows)
        if carried:
            gx_frame = frame.loc[pd.concat(list(carried.values()), axis=1).all(axis=1)]
        if spec.data_docs is True:  # the docs show the whole suite, column rules included: GX checks them there too
            gx_checks, docs = run_expectations(gx_frame, expectations_from_config(spec), out_dir / "data_docs", suite_name)
            own = {(t, kw["column"]) for col, rule in spec.columns.items() for t, kw, _ in _column_expectations(col, rule)}
            checks += [c for c in gx_checks if (c.check, c.column) not in own and c.check != "expect_table_row_count_to_be_between"]
        else:
            checks += run_expectations(gx_frame, raw_expectations(spec), None, suite_name)[0]
            if spec.data_docs == "on_failure" and any(not c.success for c in checks):
                docs = run_expectations(gx_frame, expectations_from_config(spec), out_dir / "data_docs", suite_name)[1]
    passed = not any(not c.success and c.severity == "error" for c in checks)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "validation.json"
    report = ValidationReport(passed, len(frame), tuple(checks), str(json_path), docs, fingerprint)
    json_path.write_text(json.dumps(
        {"passed": passed, "rows": len(frame), "data_fingerprint": fingerprint, "docs_path": docs,
         "checks": [asdict(c) for c in checks]}, indent=2, default=str))
    log.info("validation %s: %d rows, %d checks, %d errors, %d warnings",
             "passed" if passed else "FAILED", len(frame), len(checks), len(report.errors), len(report.warnings))
    return report
