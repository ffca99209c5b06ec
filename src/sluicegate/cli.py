"""The `sluice` command line: one readable line per error, documented exit codes, `--debug` for tracebacks."""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any, Optional

import typer

from sluicegate.errors import ConfigError, GateRejected, SluiceError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Sluicegate: gated ML pipelines on Prefect.")
config_app = typer.Typer(no_args_is_help=True, help="Check project YAML files and print the schema.")
app.add_typer(config_app, name="config")

_state: dict[str, Any] = {"debug": False}

EXIT_CODE_DOC = """Exit codes: 0 ok (promoted, or unchanged); 1 unexpected error; 2 bad config or usage;
3 data source unreadable; 4 data validation failed; 5 training failed; 6 candidate rejected by the gates;
7 champion changed during the run; 8 registry lookup failed; 9 deploy failed."""


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show tracebacks.")) -> None:
    _state["debug"] = debug


def prepare_runtime_env(env: dict[str, str] | None = None) -> None:
    """Point Prefect at local state under SLUICE_HOME unless a server is configured."""
    from sluicegate.settings import load_settings

    env = os.environ if env is None else env
    s = load_settings(env)
    if not env.get("PREFECT_API_URL") and not env.get("PREFECT_HOME"):
        env["PREFECT_HOME"] = str(s.home / "prefect")
    if env.get("PREFECT_HOME"):
        Path(env["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)
    env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # the temporary API migrates its database on first start: 20 s is too tight on 2 cores
    env.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    env.setdefault("GX_ANALYTICS_ENABLED", "false")
    env.setdefault("BENTOML_DO_NOT_TRACK", "true")
    env.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    env.setdefault("BENTOML_HOME", str(s.bentoml_home))


def load_flow(root: Path, module: str, name: str) -> Any:
    """Load a flow from the checkout's `flows/` by entrypoint, as a Prefect deployment would.

    `flows` and `tasks` live in the project checkout, not in the wheel, so the library never
    imports them statically.
    """
    import importlib

    for candidate in (root, Path.cwd()):
        if (candidate / "flows" / f"{module}.py").exists():
            if str(candidate) not in sys.path:
                sys.path.insert(0, str(candidate))
            return getattr(importlib.import_module(f"flows.{module}"), name)
    raise SluiceError(f"cannot find flows/{module}.py under {root} or {Path.cwd()}; run sluice from the project checkout")


@app.command()
def run(
    config: Path = typer.Argument(..., help="Project YAML, e.g. configs/breast_cancer.yaml"),
    set_: list[str] = typer.Option([], "--set", help="Override a key: --set model.params.max_depth=4"),
    reason: Optional[str] = typer.Option(None, help="Why this run started (stored with the run)."),
    as_json: bool = typer.Option(False, "--json", help="Print the outcome as JSON."),
) -> None:
    """Run the gated training pipeline for one project."""
    from sluicegate.config import load_config

    cfg = load_config(config, set_)  # fail fast, before Prefect starts
    prepare_runtime_env()
    training_pipeline = load_flow(cfg.root, "training", "training_pipeline")
    typer.echo(f"sluice: training {cfg.project} ({cfg.model.kind}, {cfg.task}) from {config}", err=True)

    result = training_pipeline(str(config), list(set_) or None, reason)
    if as_json:
        typer.echo(json.dumps(result, indent=2, default=str))
    else:
        typer.echo(f"{result['project']}: {result['outcome']} (version {result['version']}, champion {result['champion']})")
        typer.echo(f"  {result['summary']}")
    if result["outcome"] == "rejected":
        raise GateRejected(f"{result['project']}: candidate v{result['version']} rejected; champion stays v{result['champion']}")


@app.command()
def status(
    project: str = typer.Argument(..., help="Project name or its YAML file."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Show the champion, its metrics and data fingerprint, and the last verdict."""
    from sluicegate.settings import load_settings
    from sluicegate.tracking import Tracker

    if project.endswith((".yaml", ".yml")):
        from sluicegate.config import load_config

        project = load_config(project).project
    info = Tracker(load_settings()).status(project)
    if as_json:
        typer.echo(json.dumps(info, indent=2, default=str))
        return
    if info["versions"] == 0:
        typer.echo(f"{project}: no versions registered yet ({info['tracking_uri']})")
        return
    typer.echo(f"{project}: champion v{info['champion']}  ({info['versions']} versions)")
    for k, v in sorted(info["metrics"].items()):
        typer.echo(f"  {k} = {v:.4f}")
    typer.echo(f"  data fingerprint {info['data_fingerprint']}")
    lv = info["last_verdict"]
    if lv:
        typer.echo(f"  last verdict: v{lv['version']} {lv['verdict']}: {lv['summary']}")


@config_app.command("check")
def config_check(paths: list[Path] = typer.Argument(..., help="Project YAML files.")) -> None:
    """Validate project YAML files; print one line per problem."""
    from sluicegate.config import load_config

    problems: list[str] = []
    for path in paths:
        try:
            cfg = load_config(path)
            if cfg.validation.expectations:
                from sluicegate.validation import check_expectation_specs

                try:
                    check_expectation_specs(list(cfg.validation.expectations))
                except ConfigError as exc:
                    raise ConfigError([f"{path}: {p}" for p in exc.problems]) from None
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


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code (callable from tests)."""
    from typer._click.exceptions import ClickException, NoArgsIsHelpError  # typer vendors click

    argv = list(sys.argv[1:] if argv is None else argv)
    _state["debug"] = "--debug" in argv
    try:
        app(args=argv, prog_name="sluice", standalone_mode=False)
        return 0
    except SluiceError as exc:
        if _state["debug"]:
            traceback.print_exc()
        lines = str(exc).splitlines() or [type(exc).__name__]
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
    sys.exit(main())


if __name__ == "__main__":
    app_main()
