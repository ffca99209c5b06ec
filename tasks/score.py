"""Task: score a CSV or Parquet file with the champion."""

from __future__ import annotations

from prefect import task

from sluicegate import scoring
from sluicegate.scoring import ScoreResult
from tasks._common import tracker, transient_only


@task(name="score-batch", retries=1, retry_delay_seconds=5, retry_condition_fn=transient_only)
def score_batch(project: str, input_path: str, output_path: str, version: str | None = None,
                runtime: str = "auto") -> ScoreResult:
    """Score every row; the output adds predictions, the model version and the input fingerprint."""
    result = scoring.score_batch(tracker(), project, input_path, output_path, version, runtime)
    print(f"scored {result.rows} rows with {project} v{result.model_version} ({result.runtime}) -> {result.output_path}")
    return result
