"""Answering a training run that waits for approval, and the audit trail."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

from sluicegate.cli.base import _probe_registry, app, load_flow, prepare_runtime_env, resolve


def _answer(project: str, approve: bool, comment: str, by: Optional[str], version: Optional[str]) -> None:
    from sluicegate.audit import current_user

    name = resolve(project)[0]
    prepare_runtime_env()
    who = (by or "").strip() or current_user()
    answer_approval = load_flow(Path.cwd(), "..tasks.approve", "answer_approval")
    run_id, found = answer_approval(name, approve, comment, who, version)
    verb = "approved" if approve else "rejected"
    then = "it resumes and releases the candidate" if approve else "it resumes and records the rejection"
    typer.echo(f"{name} v{found}: {verb} by {who}" + (f" ({comment})" if comment else "") + f"; flow run {run_id}: {then}")


@app.command()
def approve(
    project: str = typer.Argument(..., help="Project name or its YAML file."),
    comment: str = typer.Option("", "--comment", help="Why (stored with the version and in the audit trail)."),
    by: Optional[str] = typer.Option(None, "--by", help="Who approves (default: the OS user)."),
    version: Optional[str] = typer.Option(None, "--version", help="Which candidate, when several runs wait."),
) -> None:
    """Approve the candidate a training run is waiting on (what the Prefect UI's approval form does)."""
    _answer(project, True, comment, by, version)


@app.command()
def reject(
    project: str = typer.Argument(..., help="Project name or its YAML file."),
    comment: str = typer.Option("", "--comment", help="Why (stored with the version and in the audit trail)."),
    by: Optional[str] = typer.Option(None, "--by", help="Who rejects (default: the OS user)."),
    version: Optional[str] = typer.Option(None, "--version", help="Which candidate, when several runs wait."),
) -> None:
    """Reject the candidate a training run is waiting on; the champion stays."""
    _answer(project, False, comment, by, version)


@app.command()
def history(
    project: str = typer.Argument(..., help="Project name or its YAML file."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    limit: int = typer.Option(20, "--limit", min=1, help="At most this many records."),
) -> None:
    """The audit trail, newest first: promotions, rejections, approvals, deploys, rollbacks, manual promotions."""
    from sluicegate.audit import history_json, read_history
    from sluicegate.registry_reader import reader_for
    from sluicegate.settings import load_settings

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    _probe_registry()
    name = resolve(project)[0]
    settings = load_settings()
    store = reader_for(settings)  # a SQLite registry is read by SQL, without importing MLflow
    if store is None or not hasattr(store, "audit_records"):
        from sluicegate.tracking import Tracker

        store = Tracker(settings)
    records = read_history(store, name, limit)
    if as_json:
        typer.echo(history_json(records))
        return
    if not records:
        typer.echo(f"{name}: no audit records yet")
        return
    for r in records:
        typer.echo(r.line())
