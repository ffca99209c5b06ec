"""`sluice deployments`: show, apply or serve each project's Prefect deployments."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer

from sluicegate.cli.base import deployments_app, prepare_runtime_env
from sluicegate.errors import SluiceError


@deployments_app.command("show")
def deployments_show(configs: list[Path] = typer.Argument(None, help="Project YAMLs or names (default: every project under configs/).")) -> None:
    """Print the deployments each project gets (names, parameters, schedules, trigger)."""
    build = _load_deployments()
    typer.echo(json.dumps(build.show([str(c) for c in configs] if configs else None), indent=2))


@deployments_app.command("apply")
def deployments_apply(
    configs: list[Path] = typer.Argument(None, help="Project YAMLs or names (default: every project under configs/)."),
    pool: str = typer.Option("sluicegate", help="Process work pool; then run `prefect worker start --pool POOL`."),
) -> None:
    """Register every project's deployments on the Prefect server (PREFECT_API_URL)."""
    prepare_runtime_env()
    build = _load_deployments()
    ids = build.apply([str(c) for c in configs] if configs else None, pool)
    typer.echo(f"registered {len(ids)} deployments on work pool {pool!r}; start a worker: prefect worker start --pool {pool}")


@deployments_app.command("serve")
def deployments_serve(configs: list[Path] = typer.Argument(None, help="Project YAMLs or names (default: every project under configs/).")) -> None:
    """Register every project's deployments and run them from this process (Ctrl-C stops)."""
    prepare_runtime_env()
    _load_deployments().serve([str(c) for c in configs] if configs else None)


def _load_deployments() -> Any:
    import importlib

    root = Path.cwd()
    if not (root / "deployments" / "build.py").exists():
        raise SluiceError(f"cannot find deployments/build.py under {root}; run sluice from the project checkout")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    return importlib.import_module("deployments.build")
