"""Task: validate the snapshot; error-severity failures stop the run before training."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.artifacts import create_link_artifact, create_markdown_artifact

from sluicegate import validation
from sluicegate.config import ValidationConfig
from sluicegate.data import DatasetRef, load_snapshot
from sluicegate.errors import DataValidationError
from sluicegate.validation import ValidationReport
from tasks._common import artifact_key, content_cache, digest, settings


def _key(p: dict) -> str:
    return digest(p["dataset"].fingerprint, p["spec"], p["target"], p["task_type"], p["feature_columns"])


@task(name="validate-data", cache_key_fn=content_cache(_key), persist_result=True)
def validate_data(
    dataset: DatasetRef, spec: ValidationConfig, target: str, task_type: str, project: str,
    feature_columns: dict[str, list[str]] | None = None,
) -> ValidationReport:
    """Run the built-in checks and the Great Expectations suite; publish the report."""
    out_dir = settings().runs_dir / project / "validation" / dataset.fingerprint
    report = validation.validate_data(load_snapshot(dataset, markers=True), spec, target, task_type, out_dir,
                              feature_columns, suite_name=project, fingerprint=dataset.fingerprint)
    create_markdown_artifact(report.to_markdown(), key=artifact_key(project, "validation"),
                             description=f"Data validation of {dataset.fingerprint}")
    if report.docs_path:
        create_link_artifact(Path(report.docs_path).resolve().as_uri(), link_text="Great Expectations Data Docs",
                             key=artifact_key(project, "data-docs"))
    if not report.passed:
        raise DataValidationError(
            f"data validation failed, training did not start: {report.failure_summary()} "
            f"(report: {report.json_path})", report.json_path)
    for w in report.warnings:
        print(f"validation warning: {w.column or '<table>'}: {w.message}")
    return report
