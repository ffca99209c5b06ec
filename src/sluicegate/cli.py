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
7 champion changed during the run; 8 registry lookup failed; 9 deploy failed; 10 a configured service
does not answer (sluice doctor)."""


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


def project_name(arg: str) -> str:
    """A project given as its name or as its YAML file (then read for `project:`)."""
    if arg.endswith((".yaml", ".yml")):
        from sluicegate.config import load_config

        return load_config(arg).project
    return arg


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
    models = (f"best of {', '.join(c.name for c in cfg.model_candidates())}" if cfg.selects_model and len(cfg.model_candidates()) > 1
              else cfg.model.kind + (", tuned" if cfg.selects_model else ""))
    typer.echo(f"sluice: training {cfg.project} ({models}, {cfg.task}) from {config}", err=True)

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

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    info = Tracker(load_settings()).status(project_name(project))
    project = info["project"]
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


# ---------------------------------------------------------------- serving: deploy, rollback, serve, predict
def _release_context(project: str, target: Optional[str] = None, port: Optional[int] = None):
    """(name, packaging, deploy, task, out_dir, settings, tracker, notifications) from a project name or YAML.

    A bare name uses configs/<name>.yaml when it exists in the current folder, else defaults.
    """
    from sluicegate.config import DeployConfig, PackagingConfig, load_config, resolve_path
    from sluicegate.settings import load_settings
    from sluicegate.tracking import Tracker

    path = Path(project) if project.endswith((".yaml", ".yml")) else Path("configs") / f"{project}.yaml"
    cfg = load_config(path) if path.exists() or project.endswith((".yaml", ".yml")) else None
    packaging = cfg.packaging if cfg else PackagingConfig()
    deploy = cfg.deploy if cfg else DeployConfig()
    changes = {k: v for k, v in (("target", target), ("port", port)) if v is not None}
    if changes:
        from pydantic import ValidationError

        try:
            deploy = DeployConfig.model_validate({**deploy.model_dump(), **changes})
        except ValidationError as exc:
            raise ConfigError([f"--{e['loc'][0]}: {e['msg']} (got {e.get('input')!r})" for e in exc.errors()]) from None
    out_dir = resolve_path(cfg, deploy.output_dir) if cfg and deploy.output_dir else None
    prepare_runtime_env()
    settings = load_settings()
    tracker = Tracker(settings)
    name = cfg.project if cfg else project
    champ = tracker.champion(name)
    task = cfg.task if cfg else (champ.tags.get("sluice.task", "classification") if champ else "classification")
    return name, packaging, deploy, task, out_dir, settings, tracker, (cfg.notifications if cfg else None)


def _emitter(notifications: Any) -> Any:
    """The CLI's events: to Prefect when an API is configured (a temporary one would start only to be
    thrown away with this command), and the project's notifications either way."""
    from sluicegate.events import Emitter

    def send(name: str, resource: dict[str, str], payload: dict[str, Any]) -> Any:
        from prefect.settings import PREFECT_API_URL

        if not PREFECT_API_URL.value():
            return None
        from prefect.events import emit_event
        from prefect.events.worker import EventsWorker

        event = emit_event(name, resource=resource, payload=payload)
        EventsWorker.drain_all()  # the command exits right after; events are sent in the background
        return event

    def notify_block(block: str, subject: str, body: str) -> None:
        from prefect.blocks.core import Block

        Block.load(block).notify(body=body, subject=subject)

    return Emitter(send, notifications, notify_block)


@app.command()
def deploy(
    project: str = typer.Argument(..., help="Project name or its YAML file."),
    version: Optional[str] = typer.Option(None, help="Deploy this version instead of the champion."),
    target: Optional[str] = typer.Option(None, help="Override deploy.target: local, docker or kubernetes."),
    port: Optional[int] = typer.Option(None, help="Override deploy.port."),
) -> None:
    """Package the champion as a Bento and deploy it; canary first, the old model keeps serving on failure."""
    from sluicegate.deploy.release import release_version

    name, packaging, spec, task, out_dir, settings, tracker, notifications = _release_context(project, target, port)
    result = release_version(tracker, name, version, packaging, spec, task, settings, out_dir,
                             events=_emitter(notifications))
    typer.echo(result.message)


@app.command()
def stop(project: str = typer.Argument(..., help="Project name or its YAML file.")) -> None:
    """Stop the project's local deployment (front process and model server)."""
    from sluicegate.deploy.local import stop_local
    from sluicegate.settings import load_settings

    name = project_name(project)
    state = stop_local(load_settings(), name)
    typer.echo(f"{name}: stopped v{state.version} on {state.host}:{state.port}" if state else f"{name}: nothing was serving")


@app.command()
def rollback(
    project: str = typer.Argument(..., help="Project name or its YAML file."),
    port: Optional[int] = typer.Option(None, help="Override deploy.port."),
) -> None:
    """Make the previous champion the champion again and redeploy it."""
    from sluicegate.deploy.release import rollback_release

    name, packaging, spec, task, out_dir, settings, tracker, notifications = _release_context(project, None, port)
    back_to, back_from, result = rollback_release(tracker, name, packaging, spec, task, settings, out_dir,
                                                  events=_emitter(notifications))
    typer.echo(f"{name}: rolled back to v{back_to} (from v{back_from}). {result.message}")


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
) -> None:
    """Score a file with the champion (batch scoring flow); adds prediction, model version and input fingerprint."""
    project = project_name(project)
    prepare_runtime_env()
    scoring_pipeline = load_flow(Path.cwd(), "scoring", "scoring_pipeline")

    result = scoring_pipeline(project, str(input_path), str(output_path), version)
    typer.echo(f"{project}: scored {result['rows']} rows with v{result['model_version']} -> {result['output_path']}")


deployments_app = typer.Typer(no_args_is_help=True, help="Prefect deployments: training, drift check, retraining on drift.")
app.add_typer(deployments_app, name="deployments")


@deployments_app.command("show")
def deployments_show(configs: list[Path] = typer.Argument(None, help="Project YAMLs (default: configs/*.yaml).")) -> None:
    """Print the deployments each project gets (names, parameters, schedules, trigger)."""
    build = _load_deployments()
    typer.echo(json.dumps(build.show([str(c) for c in configs] if configs else None), indent=2))


@deployments_app.command("apply")
def deployments_apply(
    configs: list[Path] = typer.Argument(None, help="Project YAMLs (default: configs/*.yaml)."),
    pool: str = typer.Option("sluicegate", help="Process work pool; then run `prefect worker start --pool POOL`."),
) -> None:
    """Register every project's deployments on the Prefect server (PREFECT_API_URL)."""
    prepare_runtime_env()
    build = _load_deployments()
    ids = build.apply([str(c) for c in configs] if configs else None, pool)
    typer.echo(f"registered {len(ids)} deployments on work pool {pool!r}; start a worker: prefect worker start --pool {pool}")


@deployments_app.command("serve")
def deployments_serve(configs: list[Path] = typer.Argument(None, help="Project YAMLs (default: configs/*.yaml).")) -> None:
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


@app.command()
def drift(
    project: str = typer.Argument(..., help="Project name (configs/<name>.yaml) or YAML path."),
    current: Optional[Path] = typer.Option(None, help="Check this CSV/Parquet batch instead of the prediction log."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Run the drift check once (what the scheduled deployment runs)."""
    prepare_runtime_env()
    drift_check = load_flow(Path.cwd(), "monitoring", "drift_check")
    result = drift_check(project, str(current) if current else None)
    if as_json:
        typer.echo(json.dumps(result, indent=2, default=str))
    else:
        typer.echo(f"{result['project']}: {'DRIFT' if result['drifted'] else 'no drift'} "
                   f"(share {result['drift_share']:.2f}; {result['signal']})")


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


@app.command()
def doctor(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Print the runtime settings (Prefect API, MLflow, artifacts, Optuna, task runner, BentoML) and probe each."""
    from sluicegate.doctor import run_checks
    from sluicegate.errors import ServiceUnreachableError

    report = run_checks()
    typer.echo(json.dumps(report.to_dict(), indent=2) if as_json else report.to_text())
    if not report.ok:
        raise ServiceUnreachableError(f"not answering: {', '.join(f'{c.name} ({c.target})' for c in report.failed)}")


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
