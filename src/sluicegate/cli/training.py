"""`sluice run` and `sluice status`: train a project through the gates, show its champion."""

from __future__ import annotations

import gc
import json
import os
from pathlib import Path
from typing import Any, Optional

import typer

from sluicegate.cli.base import _probe_registry, _state, app, flow_checkout, load_flow, prepare_runtime_env, resolve
from sluicegate.errors import GateRejected


@app.command()
def run(
    project: str = typer.Argument(..., help="Project YAML, e.g. configs/breast_cancer.yaml, or its name."),
    set_: list[str] = typer.Option([], "--set", help="Override a key: --set model.params.max_depth=4"),
    reason: Optional[str] = typer.Option(None, help="Why this run started (stored with the run)."),
    as_json: bool = typer.Option(False, "--json", help="Print the outcome as JSON."),
) -> None:
    """Run the gated training pipeline for one project."""
    from sluicegate.config import load_config
    from sluicegate.runkey import load_config_for_key

    _, config = resolve(project, registered=False)
    cfg = load_config_for_key(config, set_)  # schema and cross-checks; the estimator's own rules only if it changed
    _probe_registry()
    result = None
    if _unchanged(cfg):  # recorded as a flow run that reads the registry only; None if the champion moved meanwhile
        prepare_runtime_env()
        typer.echo(f"sluice: {cfg.project}: same data, config and code as its champion; recording an unchanged run", err=True)
        result = load_flow(cfg.root, "unchanged", "training_unchanged")(str(config), list(set_) or None, reason)
    if result is None:
        cfg = load_config(config, set_)  # every check, before Prefect starts
        prepare_runtime_env()
        _require_persistent_api(cfg.root, cfg.project, cfg.gates.approval, reason)
        training_pipeline = load_flow(cfg.root, "training", "training_pipeline")
        models = (f"best of {', '.join(c.name for c in cfg.model_candidates())}"
                  if cfg.selects_model and len(cfg.model_candidates()) > 1
                  else cfg.model.kind + (", tuned" if cfg.selects_model else ""))
        typer.echo(f"sluice: training {cfg.project} ({models}, {cfg.task}) from {config}", err=True)
        # What the imports made lives until the process ends: out of the collector's sight, the run's
        # garbage collections look at the run's own objects only (~0.3M fewer to walk each full pass)
        if _state.get("own_process"):
            gc.freeze()
        result = training_pipeline(str(config), list(set_) or None, reason)
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2, default=str))
    else:
        typer.echo(f"{result.project}: {result.outcome} (version {result.version}, champion {result.champion})")
        typer.echo(f"  {result.summary}")
    if result.outcome == "rejected":
        raise GateRejected(f"{result.project}: candidate v{result.version} rejected; champion stays v{result.champion}")


def _unchanged(cfg: Any) -> bool:
    """Whether the champion carries this run's key (same source bytes, config and code), read without
    MLflow or Prefect; False where that cannot be known cheaply (SQL, production rows, other registries)."""
    from sluicegate.registry_reader import reader_for
    from sluicegate.runkey import run_key, unchanged_outcome
    from sluicegate.settings import load_settings

    reader, checkout = reader_for(load_settings()), flow_checkout(cfg.root)
    if reader is None or checkout is None or not (checkout / "flows" / "unchanged.py").exists():
        return False
    key = run_key(cfg, (checkout / "flows", checkout / "tasks"))
    return key is not None and unchanged_outcome(cfg, key, reader.champion_record(cfg.project)) is not None


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
