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
    frame: pd.DataFrame, spec: ValidationConfig, target: str, task: str, feature_columns: dict[str, list[str]] | None = None
) -> list[CheckResult]:
    """Checks every project gets: rows, target present and not constant, NaN/inf share, column types.

    Args:
        frame: the raw data.
        spec: the `validation` section.
        target: target column.
        task: classification or regression (a regression target must be numeric).
        feature_columns: explicitly listed `numeric`/`categorical` feature columns, which must exist.

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
        s = frame[col]
        bad = s.isna()
        if pd.api.types.is_float_dtype(s):
            bad = bad | np.isinf(s.to_numpy(dtype=float, na_value=np.nan))
        share = float(bad.mean())
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


# ---------------------------------------------------------------- Great Expectations
def expectations_from_config(spec: ValidationConfig) -> list[tuple[str, dict, str]]:
    """The YAML's column rules and raw expectations as (type, kwargs, severity)."""
    out: list[tuple[str, dict, str]] = []
    for col, rule in spec.columns.items():
        out += _column_expectations(col, rule)
    for e in spec.expectations:
        out.append((e.type, dict(e.kwargs), e.severity))
    if spec.max_rows is not None or spec.min_rows > 1:
        out.append(("expect_table_row_count_to_be_between",
                    {"min_value": spec.min_rows, "max_value": spec.max_rows}, "error"))
    return out


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


def run_expectations(
    frame: pd.DataFrame, expectations: list[tuple[str, dict, str]], docs_dir: Path | None, suite_name: str
) -> tuple[list[CheckResult], str | None]:
    """Validate with Great Expectations, fast first (BOOLEAN_ONLY), detailed only on failure.

    Returns:
        The check results and the Data Docs index path (None when docs were not built).
    """
    if not expectations:
        return [], None
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    batch_def = (
        context.data_sources.add_pandas("sluice")
        .add_dataframe_asset(suite_name)
        .add_batch_definition_whole_dataframe("whole")
    )
    suite = gx.ExpectationSuite(name=suite_name)
    for etype, kwargs, severity in expectations:
        try:
            suite.add_expectation(ExpectationConfiguration(type=etype, kwargs=kwargs, meta={"severity": severity}).to_domain_obj())
        except Exception as exc:
            raise ConfigError([f"validation: {etype} {kwargs}: {str(exc).splitlines()[0]}"]) from exc
    suite = context.suites.add(suite)
    batch = batch_def.get_batch(batch_parameters={"dataframe": frame})
    quick = batch.validate(suite, result_format="BOOLEAN_ONLY")
    result = quick if quick.success else batch.validate(suite, result_format="SUMMARY")
    checks = [_to_check(r) for r in result.results]
    docs = _build_data_docs(context, batch_def, suite, frame, docs_dir) if docs_dir is not None else None
    return checks, docs


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


def _build_data_docs(context: Any, batch_def: Any, suite: Any, frame: pd.DataFrame, docs_dir: Path) -> str | None:
    """Data Docs HTML in a fixed folder; None (and a log line) when GX cannot build it."""
    try:
        import great_expectations as gx
        from great_expectations.checkpoint import UpdateDataDocsAction

        docs_dir.mkdir(parents=True, exist_ok=True)
        site = "sluice_site"
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
        cp.run(batch_parameters={"dataframe": frame})
        index = docs_dir / "index.html"
        return str(index) if index.exists() else None
    except Exception as exc:  # docs are a convenience: never fail validation over them
        log.warning("Data Docs were not built: %s", exc)
        return None


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

    Built-in checks run first; when they show the frame is unusable (empty, no target) GX is
    skipped, because its results would only repeat the problem.

    Args:
        frame: the raw data.
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
    checks = builtin_checks(frame, spec, target, task, feature_columns)
    fatal = any(c.check in ("not_empty", "target_present") and not c.success for c in checks)
    docs = None
    if not fatal:
        gx_checks, docs = run_expectations(
            frame, expectations_from_config(spec), (out_dir / "data_docs") if spec.data_docs else None, suite_name
        )
        checks += gx_checks
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
