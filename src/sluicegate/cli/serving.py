"""Using a champion: serve it, batch-score a file, check drift, import true labels."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Optional

import typer

from sluicegate.cli.base import _release_context, app, feedback_app, load_flow, prepare_runtime_env, resolve
from sluicegate.errors import ConfigError


@app.command()
def serve(
    project: str = typer.Argument(..., help="Project name or its YAML file."),
    port: Optional[int] = typer.Option(None, help="Override deploy.port."),
) -> None:
    """Serve the champion in the foreground with `bentoml serve` (Ctrl-C stops it)."""
    import subprocess

    from sluicegate.packaging import bentoml_env, package_model

    name, packaging, spec, task, _, settings, tracker, _ = _release_context(project, None, port)
    bento = package_model(tracker, name, None, packaging, spec, task, settings)
    typer.echo(f"sluice: serving {name} v{bento.version} ({bento.bento_tag}) on http://{spec.host}:{spec.port}", err=True)
    cmd = [sys.executable, "-m", "bentoml", "serve", bento.bento_tag, "--host", spec.host, "--port", str(spec.port)]
    code = subprocess.call(cmd, env={**os.environ, **bentoml_env(settings), "SLUICE_HOME": str(settings.home)})
    if code not in (0, -2, 130):
        raise typer.Exit(code)


@app.command()
def predict(
    project: str = typer.Argument(..., help="Project name or its YAML file."),
    input_path: Path = typer.Argument(..., help="Rows to score: .csv or .parquet."),
    output_path: Path = typer.Argument(..., help="Where to write the scored rows: .csv or .parquet."),
    version: Optional[str] = typer.Option(None, help="Score with this version instead of the champion."),
    runtime: str = typer.Option("auto", help="auto (the version's ONNX graph where it passed parity, as served), "
                                "onnx or native."),
) -> None:
    """Score a file with the champion (batch scoring flow); adds prediction, model version and input fingerprint."""
    project = resolve(project)[0]
    prepare_runtime_env()
    scoring_pipeline = load_flow(Path.cwd(), "scoring", "scoring_pipeline")

    result = scoring_pipeline(project, str(input_path), str(output_path), version, runtime)
    typer.echo(f"{project}: scored {result['rows']} rows with v{result['model_version']} ({result['runtime']}) "
               f"-> {result['output_path']}")


@app.command()
def drift(
    project: str = typer.Argument(..., help="Project name or its YAML file."),
    current: Optional[Path] = typer.Option(None, help="Check this CSV/Parquet batch instead of the prediction log."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Run the drift and performance check once (what the scheduled deployment runs).

    Prints the verdict and the rule that decided it, each drifted column with its method,
    statistic and threshold, the live performance, and the path of the HTML report.
    """
    _, config = resolve(project, registered=False)
    prepare_runtime_env()
    drift_check = load_flow(Path.cwd(), "monitoring", "drift_check")
    result = drift_check(str(config), str(current) if current else None)
    if as_json:
        typer.echo(json.dumps(result, indent=2, default=str))
    else:
        typer.echo(result["text"])


@feedback_app.command("import")
def feedback_import(
    project: str = typer.Argument(..., help="Project name or its YAML file."),
    file: Path = typer.Argument(..., help="Labels: .csv or .parquet with prediction_id (or the project's id column) and label."),
    late_days: float = typer.Option(30.0, "--late-days", min=0, help="Labels for predictions older than this are counted late."),
    as_json: bool = typer.Option(False, "--json", help="Print every item's status as JSON."),
) -> None:
    """Store labels from a file against the prediction log; prints a count per status.

    Exit 0 when a label was stored (or all were there already), 2 for an unreadable or invalid file, 4 when none was stored.
    """
    from sluicegate.errors import DataValidationError
    from sluicegate.serving.feedback import STATUSES, import_feedback
    from sluicegate.serving.predlog import log_store

    try:
        name = resolve(project)[0]
    except ConfigError:
        if not log_store(project).exists():
            raise
        name = project  # a project known only by its prediction log (served from the registry)
    result = import_feedback(name, file, late_after_days=late_days)
    counts = result.counts
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
    else:
        typer.echo(f"{name}: {result.summary()} (from {file})")
        shown = [o for o in result.outcomes if o.status not in ("accepted", "duplicate")][:5]
        for o in shown:
            typer.echo(f"  row {o.index}: {o.status}: {o.detail}")
    if result.stored == 0 and counts["duplicate"] != len(result.outcomes):
        raise DataValidationError(f"{name}: no label from {file} was stored ("
                                  + ", ".join(f"{counts[s]} {s}" for s in STATUSES if counts[s]) + ")")
