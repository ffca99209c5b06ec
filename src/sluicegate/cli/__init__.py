"""The `sluice` command line: one readable line per error, documented exit codes, `--debug` for tracebacks.

Commands live in one module per group (training, release, approval, serving, deployments, check,
server); each imports what it uses inside the command, so `sluice --help` and `config check` stay quick.
"""

from __future__ import annotations

import gc
import os
import sys
import traceback

import typer

from sluicegate.cli.base import (
    ExpectedFailureFilter,
    _state,
    app,
    load_flow,
    prepare_runtime_env,
    quiet_expected_failures,
    resolve,
)
from sluicegate.errors import SluiceError

# the command modules register themselves on `app` as they load: this order is `sluice --help`'s
# isort: off
from sluicegate.cli import training, release, approval, serving, deployments, check, server  # noqa: F401, E402
# isort: on

__all__ = ["ExpectedFailureFilter", "app", "app_main", "load_flow", "main", "prepare_runtime_env",
           "quiet_expected_failures", "resolve"]


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code (callable from tests)."""
    from typer._click.exceptions import ClickException, NoArgsIsHelpError  # typer vendors click

    argv = list(sys.argv[1:] if argv is None else argv)
    _state["debug"] = "--debug" in argv
    os.umask(0o077)  # state files (registry, prediction log, snapshots, prefect.db) are the user's only
    try:
        app(args=argv, prog_name="sluice", standalone_mode=False)
        return 0
    except SluiceError as exc:
        if _state["debug"]:
            traceback.print_exc()
        lines = str(exc).splitlines() or [type(exc).__name__]
        report = getattr(exc, "report_path", None)
        if report and report not in str(exc):
            lines[-1] += f" (report: {report})"
        for line in lines:
            typer.echo(f"error: {line}", err=True)
        return exc.exit_code
    except typer.Exit as exc:
        return exc.exit_code
    except NoArgsIsHelpError as exc:
        exc.show()
        return 0
    except ClickException as exc:
        exc.show()
        return 2
    except typer.Abort:
        typer.echo("aborted", err=True)
        return 130
    except Exception as exc:  # anything else: one line, unless --debug
        if _state["debug"]:
            traceback.print_exc()
        else:
            typer.echo(f"error: {type(exc).__name__}: {exc} (re-run with --debug for the traceback)", err=True)
        return 1


def app_main() -> None:
    _state["own_process"] = True  # the command owns this process (not a test calling main)
    code = main()
    # The process ends now. Python's teardown would run full garbage collections over every object
    # still alive (~0.5M after a training run: 1-2.5 s, as long as some runs' training). The OS frees
    # them anyway: freezing moves them out of the collector's sight. Exit handlers (Prefect's event
    # and log flushing, logging.shutdown) still run, and objects they create are still collected.
    gc.freeze()
    sys.exit(code)
