"""Batch scoring with the champion: a file in, the same rows with predictions out."""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file by Prefect's loader: make `tasks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prefect import flow

from tasks.score import score_batch


@flow(name="scoring-pipeline", log_prints=True)
def scoring_pipeline(project: str, input_path: str, output_path: str, version: str | None = None,
                     runtime: str = "auto") -> dict:
    """Score a CSV or Parquet file with the project's champion model.

    The output keeps every input column and adds `prediction` (and `proba_<class>` for
    classifiers), `model_version` and `input_fingerprint`, so each scored row says which
    model and which input produced it.

    Args:
        project: the project name (its registered model).
        input_path: a .csv or .parquet file.
        output_path: where to write the scored rows (.csv or .parquet).
        version: a registered version to use instead of the champion.
        runtime: auto (the version's ONNX graph where it passed parity at packaging, as served), onnx or native.
    """
    result = score_batch(project, input_path, output_path, version, runtime)
    return {"project": project, "rows": result.rows, "model_version": result.model_version, "runtime": result.runtime,
            "input_fingerprint": result.input_fingerprint, "output_path": result.output_path}
