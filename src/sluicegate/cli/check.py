"""`sluice config check|schema` and `sluice doctor`: what can be checked before anything runs."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from sluicegate.cli.base import app, config_app
from sluicegate.errors import ConfigError


@config_app.command("check")
def config_check(
    paths: list[Path] = typer.Argument(..., help="Project YAML files."),
    connect: bool = typer.Option(False, "--connect", help="Also connect to a SQL source and check its column names."),
) -> None:
    """Validate project YAML files, and a CSV/Parquet source's header; print one line per problem."""
    from sluicegate.config import check_sources, load_config

    problems: list[str] = []
    for path in paths:
        try:
            cfg = load_config(path)
            found = [f"{path}: {p}" for p in check_sources(cfg, connect)]
            if cfg.validation.expectations:
                from sluicegate.validation import check_expectation_specs  # imports Great Expectations

                try:
                    check_expectation_specs(list(cfg.validation.expectations))
                except ConfigError as exc:
                    found += [f"{path}: {p}" for p in exc.problems]
            if found:
                raise ConfigError(found)
            typer.echo(f"{path}: ok ({cfg.project}, {cfg.task}, {cfg.model.kind})")
        except ConfigError as exc:
            problems += exc.problems
    if problems:
        raise ConfigError(problems)


@config_app.command("schema")
def config_schema() -> None:
    """Print the JSON Schema of the project YAML."""
    from sluicegate.config import config_json_schema

    typer.echo(json.dumps(config_json_schema(), indent=2))


@app.command()
def doctor(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Print the runtime settings (Prefect API, MLflow, artifacts, Optuna, task runner, BentoML) and probe each."""
    from sluicegate.doctor import run_checks
    from sluicegate.errors import ServiceUnreachableError

    report = run_checks()
    typer.echo(json.dumps(report.to_dict(), indent=2) if as_json else report.to_text())
    if not report.ok:
        raise ServiceUnreachableError(f"not answering: {', '.join(f'{c.name} ({c.target})' for c in report.failed)}")
