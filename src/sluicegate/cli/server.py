"""`sluice server start|stop|status`: the local Prefect server that commands share."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from sluicegate.cli.base import prepare_runtime_env, server_app


def _server_home() -> Path:
    from sluicegate.settings import load_settings

    prepare_runtime_env(use_server=False)
    return load_settings().home


@server_app.command("start")
def server_start() -> None:
    """Start the local Prefect server in the background (reused by every later command)."""
    from sluicegate.localserver import configured_port, server_status, start_server

    home = _server_home()
    was = server_status(home)
    info = start_server(home, configured_port(os.environ), Path(os.environ.get("PREFECT_HOME") or home / "prefect"))
    verb = "already running" if was.running else "started"
    typer.echo(f"Prefect server {verb}: {info.url} (pid {info.pid}; UI at {info.url}, log {info.log_file})")


@server_app.command("stop")
def server_stop() -> None:
    """Stop the local Prefect server."""
    from sluicegate.localserver import stop_server

    info = stop_server(_server_home())
    typer.echo(f"Prefect server stopped (pid {info.pid}, {info.url})" if info else "Prefect server: not running")


@server_app.command("status")
def server_status_cmd() -> None:
    """Say whether the local Prefect server runs and answers (exit 10 when not)."""
    from sluicegate.errors import ServiceUnreachableError
    from sluicegate.localserver import server_status

    if os.environ.get("PREFECT_API_URL"):
        typer.echo(f"PREFECT_API_URL is set ({os.environ['PREFECT_API_URL']}): commands use that server")
    st = server_status(_server_home())
    if not st.running:
        raise ServiceUnreachableError(f"local Prefect server: {st.detail}")
    typer.echo(f"local Prefect server: {st.detail}")
