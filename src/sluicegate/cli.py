"""The `sluice` command line: one readable line per error, documented exit codes, `--debug` for tracebacks."""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import traceback
from pathlib import Path
from typing import Any, Optional

import typer

from sluicegate.errors import ConfigError, GateRejected, SluiceError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Sluicegate: gated ML pipelines on Prefect.")
config_app = typer.Typer(no_args_is_help=True, help="Check project YAML files and print the schema.")
app.add_typer(config_app, name="config")
server_app = typer.Typer(no_args_is_help=True, help="The local Prefect server that commands share (UI included).")
app.add_typer(server_app, name="server")
rollout_app = typer.Typer(no_args_is_help=True, help="Shadow and canary rollouts (deploy.strategy): check, promote, abort.")
app.add_typer(rollout_app, name="rollout")

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
    for candidate in dict.fromkeys((root, Path.cwd(), _checkout())):
        if (candidate / package / f"{module}.py").exists():
            if str(candidate) not in sys.path:
                sys.path.insert(0, str(candidate))
            loaded = getattr(importlib.import_module(f"{package}.{module}"), name)
            quiet_expected_failures()  # Prefect has configured its logging by now
            return loaded
    raise SluiceError(f"cannot find {package}/{module}.py under {root} or {Path.cwd()}; run sluice from the project checkout")


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


@app.command()
def run(
    project: str = typer.Argument(..., help="Project YAML, e.g. configs/breast_cancer.yaml, or its name."),
    set_: list[str] = typer.Option([], "--set", help="Override a key: --set model.params.max_depth=4"),
    reason: Optional[str] = typer.Option(None, help="Why this run started (stored with the run)."),
    as_json: bool = typer.Option(False, "--json", help="Print the outcome as JSON."),
) -> None:
    """Run the gated training pipeline for one project."""
    from sluicegate.config import load_config

    _, config = resolve(project, registered=False)
    cfg = load_config(config, set_)  # fail fast, before Prefect starts
    _probe_registry()
    prepare_runtime_env()
    _require_persistent_api(cfg.root, cfg.project, cfg.gates.approval, reason)
    training_pipeline = load_flow(cfg.root, "training", "training_pipeline")
    models = (f"best of {', '.join(c.name for c in cfg.model_candidates())}" if cfg.selects_model and len(cfg.model_candidates()) > 1
              else cfg.model.kind + (", tuned" if cfg.selects_model else ""))
    typer.echo(f"sluice: training {cfg.project} ({models}, {cfg.task}) from {config}", err=True)

    result = training_pipeline(str(config), list(set_) or None, reason)
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2, default=str))
    else:
        typer.echo(f"{result.project}: {result.outcome} (version {result.version}, champion {result.champion})")
        typer.echo(f"  {result.summary}")
    if result.outcome == "rejected":
        raise GateRejected(f"{result.project}: candidate v{result.version} rejected; champion stays v{result.champion}")


def _require_persistent_api(root: Path, project: str, policy: str, reason: Optional[str]) -> None:
    """A run that will wait for approval needs a Prefect API that outlives it: refuse before the
    temporary API starts (the flow checks again, for runs started elsewhere)."""
    from sluicegate.gates import approval_required

    needed = approval_required(policy, reason)
    if needed.required:  # Prefect's own settings decide (environment, profile), read through the tasks layer
        load_flow(root, "..tasks.approve", "require_persistent_api")(project, needed)


@app.command()
def status(
    project: str = typer.Argument(..., help="Project name or its YAML file."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Show the champion, its metrics and data fingerprint, and the last verdict."""
    from sluicegate.deploy.traffic import rollout_status
    from sluicegate.registry_reader import reader_for
    from sluicegate.settings import load_settings

    settings = load_settings()
    # SQLite and http(s) registries are read without importing MLflow (~4 s); others need the Tracker
    reader = reader_for(settings)
    if reader is None:
        from sluicegate.tracking import Tracker

        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        _probe_registry()
        reader = Tracker(settings)
    info = reader.status(resolve(project, known=reader.projects)[0])
    project = info["project"]
    info["serving"] = rollout_status(settings, project)
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
        said = lv["summary"] if lv["verdict"] in ("none", "pending") else f"{lv['verdict']}: {lv['summary']}"
        typer.echo(f"  last verdict: v{lv['version']} {said}")
    _echo_serving(info["serving"])


def _echo_serving(serving: Optional[dict]) -> None:
    """The local deployment and its rollout: who serves what share since when."""
    if not serving:
        return
    rollout = serving.get("rollout") or {}
    if rollout.get("status") == "active":
        share = float(rollout.get("share") or 0)
        cand, champ = rollout["candidate_version"], rollout["champion_version"]
        what = f"mirrored to v{cand} ({share:.0%} copied)" if rollout["strategy"] == "shadow" \
            else f"v{cand} answers {share:.0%}, v{champ} {1 - share:.0%}"
        typer.echo(f"  serving v{serving['version']} at {serving['url']}; {rollout['strategy']} since "
                   f"{rollout['since']}: {what}" + (" (BREACHED, rolled back)" if rollout.get("breach") else ""))
        for side in ("champion", "candidate"):
            st = (rollout.get("stats") or {}).get(side)
            if st:
                p95 = f"{st['p95_ms']:.1f} ms" if st.get("p95_ms") is not None else "n/a"
                typer.echo(f"    {side}: {st['requests']} requests, {st['errors']} errors, p95 {p95}")
    else:
        typer.echo(f"  serving v{serving['version']} at {serving['url']} since {serving['since']}")
        if rollout:
            typer.echo(f"  last rollout: {rollout.get('strategy')} of v{rollout.get('candidate_version')} "
                       f"{rollout.get('status')} at {rollout.get('ended')}: {rollout.get('reason')}")


# ---------------------------------------------------------------- serving: deploy, rollback, serve, predict
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
    """The checkout this sluicegate was installed from (editable install: src/sluicegate -> the root)."""
    return Path(__file__).resolve().parents[2]


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

    name = resolve(project)[0]
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


@rollout_app.command("check")
def rollout_check(project: str = typer.Argument(..., help="Project name or its YAML file.")) -> None:
    """Judge the canary now: roll back a breach, promote one that held for its window, else report."""
    from sluicegate.deploy.traffic import check_rollout
    from sluicegate.gates import approval_required

    name, packaging, spec, task, out_dir, settings, tracker, notifications = _release_context(project)
    cfg_path = resolve(project)[1]
    policy = "never"
    if cfg_path is not None:
        from sluicegate.config import load_config

        policy = load_config(cfg_path).gates.approval
    from sluicegate.deploy.processes import read_state

    state = read_state(settings, name)
    reason = None
    if state is not None and state.rollout:
        try:
            reason = tracker.version(name, str(state.rollout["candidate_version"])).tags.get("sluice.reason")
        except SluiceError:
            pass
    needed = approval_required(policy, reason).required
    out = check_rollout(tracker, settings, name, packaging, task, approval_needed=needed,
                        events=_rollout_emitter(notifications))
    typer.echo(out.message)
    if out.decision is not None:
        for c in out.decision.checks:
            mark = {True: "ok", False: "FAILED", None: "-"}[c.passed]
            typer.echo(f"  {c.name:<8} {mark:<6} {c.detail}")


@rollout_app.command("promote")
def rollout_promote(
    project: str = typer.Argument(..., help="Project name or its YAML file."),
    by: Optional[str] = typer.Option(None, "--by", help="Who promotes (default: the OS user)."),
) -> None:
    """Make the shadow or canary candidate the champion (compare-and-set) and send it all traffic."""
    from sluicegate.deploy.traffic import promote_rollout

    name, packaging, spec, task, out_dir, settings, tracker, notifications = _release_context(project)
    result = promote_rollout(tracker, settings, name, packaging, events=_rollout_emitter(notifications, by),
                             reason=f"promoted by {(by or '').strip() or 'hand'}")
    typer.echo(result.message)


@rollout_app.command("abort")
def rollout_abort(
    project: str = typer.Argument(..., help="Project name or its YAML file."),
    reason: str = typer.Option("aborted by hand", "--reason", help="Why (recorded in the audit trail)."),
    by: Optional[str] = typer.Option(None, "--by", help="Who aborts (default: the OS user)."),
) -> None:
    """Stop the shadow or canary candidate; the champion serves everything, no alias moves."""
    from sluicegate.deploy.traffic import abort_rollout
    from sluicegate.settings import load_settings

    name = resolve(project)[0]
    notifications = None
    cfg_path = resolve(project)[1]
    if cfg_path is not None:
        from sluicegate.config import load_config

        notifications = load_config(cfg_path).notifications
    ended = abort_rollout(load_settings(), name, reason, events=_rollout_emitter(notifications, by))
    typer.echo(f"{name}: {ended['strategy']} of v{ended['candidate_version']} aborted; "
               f"v{ended['champion_version']} serves everything")


@app.command()
def compare(
    project: str = typer.Argument(..., help="Project name or its YAML file."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    markdown: Optional[Path] = typer.Option(None, "--markdown", help="Also write the comparison as markdown here."),
) -> None:
    """Champion vs the shadow (or canary) candidate: agreement, p50/p95 latency per side, live metric."""
    from sluicegate.deploy.processes import read_state
    from sluicegate.deploy.traffic import compare_rollout
    from sluicegate.settings import load_settings

    name = resolve(project)[0]
    settings = load_settings()
    state = read_state(settings, name)
    if state is None or not state.rollout:
        raise SluiceError(f"{name}: no shadow or canary rollout to compare; set deploy.strategy and deploy a version")
    out = compare_rollout(settings, name, state.rollout)
    if markdown is not None:
        markdown.write_text(out.markdown(name))
    if as_json:
        typer.echo(json.dumps(out.to_dict(), indent=2, default=str))
    else:
        typer.echo(out.markdown(name).rstrip())


# ---------------------------------------------------------------- approval, manual promotion, audit trail
@app.command()
def promote(
    project: str = typer.Argument(..., help="Project name or its YAML file."),
    version: str = typer.Argument(..., help="The registry version to make champion."),
    reason: str = typer.Option(..., "--reason", help="Why (recorded in the audit trail and on the version)."),
    by: Optional[str] = typer.Option(None, "--by", help="Who promotes (default: the OS user)."),
) -> None:
    """Make VERSION the champion by hand, without the gates; canaried and deployed first when deploy.enabled.

    Without deploy.enabled only `champion` moves (compare-and-set against the champion read here).
    """
    from sluicegate import audit, events
    from sluicegate.deploy.release import Promotion, release_version

    if not reason.strip():
        raise ConfigError(["--reason: must say why (got an empty reason)"])
    name, packaging, spec, task, out_dir, settings, tracker, notifications = _release_context(project)
    record = tracker.version(name, version)  # RegistryError (exit 8) for a version that does not exist
    current = tracker.champion(name)
    before = current.version if current else None
    if before == record.version:
        typer.echo(f"{name}: v{record.version} is already the champion; nothing changed")
        return
    who = (by or "").strip() or audit.current_user()
    emitter = _emitter(notifications, who)
    if spec.enabled:  # the release path: package, canary, then the compare-and-set, then traffic
        message = release_version(tracker, name, record.version, packaging, spec, task, settings, out_dir,
                                  promotion=Promotion(before), events=emitter).message
    else:
        tracker.promote(name, record.version, before)
        message = "deploy.enabled is false: only the alias moved"
    tracker.set_version_tags(name, record.version, {"sluice.promoted_by": who, "sluice.promote_reason": reason})
    audit.append_record(tracker, audit.new_record(name, audit.MANUAL_PROMOTE, record.version, reason, who,
                                                  mlflow_run_id=record.run_id,
                                                  details={"champion_before": before, "deployed": spec.enabled}))
    text = f"promoted by hand by {who}: {reason}"
    emitter.emit(name, events.MODEL_PROMOTED, events.gate_payload(name, "promoted", record.version, record.version,
                                                                  f"manual: {reason}", text, record.metrics))
    typer.echo(f"{name}: champion v{before} -> v{record.version} ({text}). {message}")


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
    from sluicegate.settings import load_settings
    from sluicegate.tracking import Tracker

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    _probe_registry()
    name = resolve(project)[0]
    records = read_history(Tracker(load_settings()), name, limit)
    if as_json:
        typer.echo(history_json(records))
        return
    if not records:
        typer.echo(f"{name}: no audit records yet")
        return
    for r in records:
        typer.echo(r.line())


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


deployments_app = typer.Typer(no_args_is_help=True, help="Prefect deployments: training, drift check, retraining on drift.")
app.add_typer(deployments_app, name="deployments")


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


feedback_app = typer.Typer(no_args_is_help=True, help="True labels for served predictions (what POST /feedback takes, in bulk).")
app.add_typer(feedback_app, name="feedback")


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
    from sluicegate.serving.predlog import log_path
    from sluicegate.settings import load_settings

    try:
        name = resolve(project)[0]
    except ConfigError:
        if not log_path(load_settings().home, project).exists():
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


# ---------------------------------------------------------------- the local Prefect server
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
    sys.exit(main())


if __name__ == "__main__":
    app_main()
