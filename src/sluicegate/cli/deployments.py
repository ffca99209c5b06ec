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
    typer.echo(json.dumps(build.show(_configs(configs)), indent=2))


@deployments_app.command("apply")
def deployments_apply(
    configs: list[Path] = typer.Argument(None, help="Project YAMLs or names (default: every project under configs/)."),
    pool: str = typer.Option("sluicegate", help="Process work pool; then run `prefect worker start --pool POOL`."),
) -> None:
    """Register every project's deployments on the Prefect server (PREFECT_API_URL)."""
    prepare_runtime_env()
    build = _load_deployments()
    ids = build.apply(_configs(configs), pool)
    typer.echo(f"registered {len(ids)} deployments on work pool {pool!r}; start a worker: prefect worker start --pool {pool}")


@deployments_app.command("serve")
def deployments_serve(configs: list[Path] = typer.Argument(None, help="Project YAMLs or names (default: every project under configs/).")) -> None:
    """Register every project's deployments and run them from this process (Ctrl-C stops)."""
    prepare_runtime_env()
    _load_deployments().serve(_configs(configs))


def _configs(configs: list[Path] | None) -> list[str] | None:
    """The project YAMLs meant: paths as given; names, and the default (every project), from the working
    directory's configs/ when it has one (a project folder of its own), else from the checkout's."""
    from sluicegate import projects
    from sluicegate.errors import ConfigError

    here = Path.cwd()
    own = (here / "configs").is_dir()
    if not configs:
        if not own:
            return None
        return [str(p) for p in sorted(projects.project_configs(here).values())] or None
    out = []
    for c in map(str, configs):
        if own and not projects.is_config_path(c):
            try:
                c = str(projects.resolve_project(c, here)[1] or c)
            except ConfigError:
                pass  # not one of this folder's projects: the checkout's configs/ may declare it
        out.append(c)
    return out


def _load_deployments() -> Any:
    """deployments/build.py from the working directory when it is a checkout, else from this install's."""
    import importlib

    from sluicegate.cli.base import flow_checkout

    root = flow_checkout(Path.cwd(), "deployments/build.py")
    if root is None:
        raise SluiceError(f"cannot find deployments/build.py under {Path.cwd()} or this install's checkout")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    return importlib.import_module("deployments.build")
