"""What every `sluice` command shares: the Typer apps, `--debug`, the runtime environment, quiet
expected failures, loading flows from the checkout, resolving a project, the release context."""

from __future__ import annotations

import logging
import os
import re
import sys
from pathlib import Path
from typing import Any, Optional

import typer

from sluicegate.errors import ConfigError, SluiceError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Sluicegate: gated ML pipelines on Prefect.")
config_app = typer.Typer(no_args_is_help=True, help="Check project YAML files and print the schema.")
app.add_typer(config_app, name="config")
server_app = typer.Typer(no_args_is_help=True, help="The local Prefect server that commands share (UI included).")
app.add_typer(server_app, name="server")
rollout_app = typer.Typer(no_args_is_help=True, help="Shadow and canary rollouts (deploy.strategy): check, promote, abort.")
app.add_typer(rollout_app, name="rollout")
deployments_app = typer.Typer(no_args_is_help=True, help="Prefect deployments: training, drift check, retraining on drift.")
app.add_typer(deployments_app, name="deployments")
feedback_app = typer.Typer(no_args_is_help=True, help="True labels for served predictions (what POST /feedback takes, in bulk).")
app.add_typer(feedback_app, name="feedback")

_state: dict[str, Any] = {"debug": False}


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show tracebacks.")) -> None:
    _state["debug"] = debug


def prepare_runtime_env(env: dict[str, str] | None = None, use_server: bool = True) -> None:
    """Point Prefect at local state under SLUICE_HOME unless a server is configured.

    With `use_server`, the local Prefect server (started once, reused by later commands) becomes
    this process's API unless PREFECT_API_URL is set or SLUICE_PREFECT_SERVER=off.
    """
    from sluicegate.settings import load_settings, make_private

    env = os.environ if env is None else env
    s = load_settings(env)
    make_private(s.home)
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
    if use_server:
        from sluicegate.localserver import ensure_server

        ensure_server(env, s.home, announce=lambda line: typer.echo(f"sluice: {line}", err=True))


def _probe_registry() -> None:
    """A dead registry is exit 8 within seconds, before minutes of work that would need it."""
    from sluicegate.settings import load_settings
    from sluicegate.stores import probe_store  # no pandas, no MLflow: a dead registry is found in a second

    s = load_settings()
    for uri in dict.fromkeys((s.tracking_uri, s.registry_uri)):
        probe_store(uri)


def _sluice_error_names() -> set[str]:
    names, todo = set(), [SluiceError]
    while todo:
        cls = todo.pop()
        names.add(cls.__name__)
        todo += cls.__subclasses__()
    return names


class ExpectedFailureFilter(logging.Filter):
    """Keeps Prefect's console quiet about failures Sluicegate expects (a SluiceError).

    Prefect's flow and task engines log a failing run's exception with its traceback, then its
    Failed state; for a validation failure, a rejected gate or an unreadable source that is two
    tracebacks before the CLI's own one line. This filter sits on console handlers only: the
    Prefect API (and UI) still receives every record. `--debug` shows everything.
    """

    _FAILED_STATE = re.compile(r"Finished in state Failed\('.*?exception:? (\w+):")

    def filter(self, record: logging.LogRecord) -> bool:
        if _state["debug"]:
            return True
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, SluiceError):
            return False
        if record.name.startswith("prefect.") and record.levelno >= logging.ERROR or "Failed(" in str(record.msg):
            found = self._FAILED_STATE.search(record.getMessage())
            if found and found.group(1) in _sluice_error_names():
                return False
        return True


def quiet_expected_failures() -> None:
    """Install `ExpectedFailureFilter` on the console handlers Prefect configured (idempotent)."""
    loggers = [logging.getLogger(), logging.getLogger("prefect")]
    loggers += [logging.getLogger(n) for n in list(logging.Logger.manager.loggerDict) if n.startswith("prefect.")]
    for logger in loggers:
        for handler in getattr(logger, "handlers", []):
            if "API" in type(handler).__name__ or any(isinstance(f, ExpectedFailureFilter) for f in handler.filters):
                continue
            handler.addFilter(ExpectedFailureFilter())


def load_flow(root: Path, module: str, name: str) -> Any:
    """Load a flow from the checkout's `flows/` by entrypoint, as a Prefect deployment would.

    `flows` and `tasks` live in the project checkout, not in the wheel, so the library never
    imports them statically. A module written `..tasks.x` is loaded from `tasks/` instead.
    """
    import importlib

    package, module = ("tasks", module[len("..tasks."):]) if module.startswith("..tasks.") else ("flows", module)
    candidate = flow_checkout(root, f"{package}/{module}.py")
    if candidate is None:
        raise SluiceError(f"cannot find {package}/{module}.py under {root} or {Path.cwd()}; run sluice from the project checkout")
    if str(candidate) not in sys.path:
        sys.path.insert(0, str(candidate))
    loaded = getattr(importlib.import_module(f"{package}.{module}"), name)
    quiet_expected_failures()  # Prefect has configured its logging by now
    logging.getLogger("EventsWorker").addFilter(_event_drain_notice)
    return loaded


def _event_drain_notice(record: logging.LogRecord) -> bool:
    """Drop Prefect's "Still processing items" warning at exit: a command that emitted an event
    waits for it to be sent; the notice only says it is being sent (with --debug it shows)."""
    return _state["debug"] or not str(record.msg).startswith("Still processing items")


def flow_checkout(root: Path, file: str = "flows/training.py") -> Optional[Path]:
    """The checkout `load_flow` loads `file` from: the project root, the working directory or this install's."""
    return next((c for c in dict.fromkeys((root, Path.cwd(), _checkout())) if (c / file).exists()), None)


def resolve(arg: str, registered: bool = True, known: Any = None) -> tuple[str, Optional[Path]]:
    """(name, YAML) of a project given as its name or as its YAML file, from the current checkout.

    With `registered`, a name that no YAML under configs/ declares is accepted when the model
    registry knows it (its YAML is then None); otherwise it is a ConfigError with a did-you-mean.
    `known` lists the registered names instead of a full MLflow `Tracker` (the status reader).
    """
    from sluicegate.projects import resolve_project

    def names() -> list[str]:
        if known is not None:
            return known()
        from sluicegate.settings import load_settings
        from sluicegate.tracking import Tracker

        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        return Tracker(load_settings()).projects()

    return resolve_project(arg, Path.cwd(), names if registered else None)


def _release_context(project: str, target: Optional[str] = None, port: Optional[int] = None):
    """(name, packaging, deploy, task, out_dir, settings, tracker, notifications) from a project name or YAML.

    A name uses the YAML under configs/ declaring it; a name only the registry knows, defaults.
    """
    from sluicegate.config import DeployConfig, PackagingConfig, load_config, resolve_path
    from sluicegate.settings import load_settings
    from sluicegate.tracking import Tracker

    name, path = resolve(project)
    cfg = load_config(path) if path else None
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
    champ = tracker.champion(name)
    task = cfg.task if cfg else (champ.tags.get("sluice.task", "classification") if champ else "classification")
    return name, packaging, deploy, task, out_dir, settings, tracker, (cfg.notifications if cfg else None)


def _emitter(notifications: Any, who: Optional[str] = None) -> Any:
    """The CLI's events, through the checkout's tasks layer (the library imports no Prefect); release
    events are recorded in the audit trail as done by `who` (default: the OS user)."""
    return load_flow(Path.cwd(), "..tasks.events", "command_emitter")(notifications, who)


def _checkout() -> Path:
    """The checkout this sluicegate was installed from (editable install: src/sluicegate/cli -> the root)."""
    return Path(__file__).resolve().parents[3]




def _rollout_emitter(notifications: Any, who: Optional[str] = None) -> Any:
    """The CLI's emitter; outside a checkout (the front starts `rollout check` wherever the deploy ran),
    the library's own: the audit trail and webhooks, no Prefect event."""
    try:
        return _emitter(notifications, who)
    except Exception:
        from sluicegate import audit
        from sluicegate.events import Emitter
        from sluicegate.settings import load_settings
        from sluicegate.tracking import Tracker

        return Emitter(notifications=notifications, record=audit.audit_recorder(Tracker(load_settings()), who))
