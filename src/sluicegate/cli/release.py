"""Serving releases: deploy, stop, rollback, rollouts (check, promote, abort), compare, manual promote."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer

from sluicegate.cli.base import _emitter, _release_context, _rollout_emitter, app, load_flow, resolve, rollout_app
from sluicegate.errors import ConfigError, SluiceError


@app.command()
def deploy(
    project: str = typer.Argument(..., help="Project name or its YAML file."),
    version: Optional[str] = typer.Option(None, help="Deploy this version instead of the champion."),
    target: Optional[str] = typer.Option(None, help="Override deploy.target: local, container (docker) or kubernetes."),
    port: Optional[int] = typer.Option(None, help="Override deploy.port."),
) -> None:
    """Package the champion as a Bento and deploy it; canary first, the old model keeps serving on failure."""
    quick = _already_serving(project, version) if target is None and port is None else None
    if quick is not None:
        typer.echo(quick.message)
        return
    from sluicegate.deploy.release import release_version  # packaging: pandas, BentoML

    name, packaging, spec, task, out_dir, settings, tracker, notifications = _release_context(project, target, port)
    result = release_version(tracker, name, version, packaging, spec, task, settings, out_dir,
                             events=_emitter(notifications))
    from sluicegate.deploy.processes import read_state
    from sluicegate.deploy.traffic import active_rollout

    if active_rollout(read_state(settings, name)):
        _publish_rollout(name)
    typer.echo(result.message)


def _publish_rollout(project: str) -> None:
    """Refresh the `<project>-rollout` Prefect artifact (nothing without a Prefect API)."""
    try:
        load_flow(Path.cwd(), "..tasks.rollout", "publish_rollout")(project)
    except Exception as exc:  # the command's action is done; the artifact is only a view of it
        typer.echo(f"sluice: rollout artifact not updated: {type(exc).__name__}: {exc}", err=True)


def _already_serving(project: str, version: Optional[str]) -> Any:
    """The no-op result when the champion (or `version`) already serves locally, released with the same
    packaging and deploy settings, code and libraries; read without MLflow, BentoML or Prefect.
    None when a deploy has anything to do, or when that cannot be known cheaply."""
    from sluicegate.deploy.current import already_serving, release_key
    from sluicegate.registry_reader import reader_for
    from sluicegate.runkey import load_config_for_key
    from sluicegate.settings import load_settings

    settings = load_settings()
    reader = reader_for(settings)
    if reader is None:
        return None
    name, path = resolve(project, known=reader.projects)
    champion = reader.champion_record(name) if path is not None else None
    if champion is None:
        return None
    cfg = load_config_for_key(path)  # deploy releases a registered version: the model section is not used
    spec, want = cfg.deploy, str(version or champion["version"])
    if spec.target != "local":
        return None
    return already_serving(settings, name, want, release_key(name, want, cfg.packaging, spec, cfg.task), spec.host, spec.port)


@app.command()
def stop(project: str = typer.Argument(..., help="Project name or its YAML file.")) -> None:
    """Stop the project's deployment (front process, and the model server process or container)."""
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


@rollout_app.command("check")
def rollout_check(project: str = typer.Argument(..., help="Project name or its YAML file.")) -> None:
    """Judge the canary now: roll back a breach, promote one that held for its window, else report."""
    from sluicegate.deploy.traffic import check_rollout, rollout_approval_needed

    name, packaging, spec, task, out_dir, settings, tracker, notifications = _release_context(project)
    cfg_path = resolve(project)[1]
    policy = "never"
    if cfg_path is not None:
        from sluicegate.config import load_config

        policy = load_config(cfg_path).gates.approval
    needed = rollout_approval_needed(tracker, settings, name, policy)
    try:
        out = check_rollout(tracker, settings, name, packaging, task, approval_needed=needed,
                            events=_rollout_emitter(notifications))
    finally:
        _publish_rollout(name)
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
    try:
        result = promote_rollout(tracker, settings, name, packaging, events=_rollout_emitter(notifications, by),
                                 reason=f"promoted by {(by or '').strip() or 'hand'}")
    finally:
        _publish_rollout(name)
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
    _publish_rollout(name)
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
    after = tracker.champion(name)
    if after is not None and after.version != record.version:  # a shadow or canary rollout began: no move yet
        typer.echo(f"{name}: champion stays v{before} until the rollout of v{record.version} is promoted "
                   f"(`sluice rollout promote {name}`) ({text}). {message}")
        return
    typer.echo(f"{name}: champion v{before} -> v{record.version} ({text}). {message}")
