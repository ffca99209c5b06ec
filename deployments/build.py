"""Build each project's three deployments from its YAML: training, drift check, retraining on drift or degradation.

    python deployments/build.py serve [configs/x.yaml ...]   # register and run them (one process)
    python deployments/build.py apply [--pool NAME] [...]    # register them for a process work pool
    python deployments/build.py show [...]                   # print what would be registered

`sluice deployments serve|apply|show` calls the same functions.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sluicegate import projects  # noqa: E402
from sluicegate.config import ProjectConfig, load_config  # noqa: E402
from sluicegate.events import RETRAIN_TRIGGERS, resource_id  # noqa: E402

EVENTS = RETRAIN_TRIGGERS  # drift detected or performance degraded, for the deployment's project


def project_configs(paths: list[str] | None = None) -> list[Path]:
    """The YAML of each project named (by name or path), default every project under configs/.

    Two files declaring one project are refused: they would give two deployments one name.
    """
    if not paths:
        return sorted(projects.project_configs(ROOT).values())
    resolved = [projects.resolve_project(p, ROOT)[1] for p in paths]
    projects.unique_projects(resolved)
    return resolved


def specs(cfg: ProjectConfig, config_path: str) -> list[dict]:
    """The three deployments of a project, as plain data (tested without a server)."""
    p = cfg.project
    retrain: dict = {"flow": "retraining", "name": f"{p}-retraining", "parameters": {"project": config_path},
                     "cron": None, "concurrency_limit": 1, "collision_strategy": "CANCEL_NEW"}
    if cfg.monitoring.retrain:
        retrain["description"] = f"Retrain {p} when drift or degraded performance is detected (debounced, one at a time)."
        retrain["trigger"] = {"expect": list(EVENTS), "match": {"prefect.resource.id": resource_id(p)},
                              "parameters": {"project": config_path, "reason": "{{ event.payload.reason }}"}}
    else:  # alerts only: no trigger, and the flow itself skips if started by hand
        retrain["description"] = f"Retrain {p} (monitoring.retrain is false: alerts only, not started by events)."
    return [
        {"flow": "training", "name": f"{p}-training", "parameters": {"config_path": config_path},
         "cron": cfg.monitoring.training_schedule, "description": f"Train and gate {p} (run from the UI with overrides)."},
        {"flow": "drift", "name": f"{p}-drift-check", "parameters": {"project": config_path},
         "cron": cfg.monitoring.schedule,
         "description": f"Scheduled drift check of {p}'s champion; advances an open shadow or canary rollout "
                        "(promotes a canary after its window, rolls back a breach)."},
        retrain,
    ]


def runner_deployments(paths: list[str] | None = None, module_path: bool = False) -> list:
    """Prefect RunnerDeployments for every project config.

    `module_path=True` names flows as `flows.training.training_pipeline`, which a process
    worker started in the checkout imports directly (no image or remote storage needed).
    """
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
    from prefect.deployments.runner import EntrypointType
    from prefect.events import DeploymentEventTrigger

    from flows.monitoring import drift_check
    from flows.retraining import retraining_pipeline
    from flows.training import training_pipeline

    flows = {"training": training_pipeline, "drift": drift_check, "retraining": retraining_pipeline}
    out = []
    for path in project_configs(paths):
        cfg = load_config(path)
        rel = str(path.resolve().relative_to(ROOT)) if path.resolve().is_relative_to(ROOT) else str(path.resolve())
        for spec in specs(cfg, rel):
            kwargs: dict = {"name": spec["name"], "parameters": spec["parameters"], "description": spec["description"],
                            "tags": ["sluicegate", cfg.project]}
            if spec["cron"]:
                kwargs["cron"] = spec["cron"]
            if "trigger" in spec:
                t = spec["trigger"]
                kwargs["triggers"] = [DeploymentEventTrigger(
                    name=f"{cfg.project}-on-drift", expect=set(t["expect"]), match=t["match"],
                    parameters=t["parameters"])]
            if "concurrency_limit" in spec:
                kwargs["concurrency_limit"] = ConcurrencyLimitConfig(
                    limit=spec["concurrency_limit"], collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW)
            if module_path:
                kwargs["entrypoint_type"] = EntrypointType.MODULE_PATH
                # a process worker runs flows in a temporary folder: point it at this checkout
                kwargs["job_variables"] = {"working_dir": str(ROOT), "env": {"PYTHONPATH": str(ROOT)}}
            out.append(flows[spec["flow"]].to_deployment(**kwargs))
    return out


def serve(paths: list[str] | None = None) -> None:
    """Register the deployments and execute their runs in this process (Ctrl-C stops)."""
    import prefect

    # each run is a subprocess started in the working directory, which may be a project folder of its
    # own (configs/, data/) rather than this checkout: it imports flows/ and tasks/ from here
    paths_now = os.environ.get("PYTHONPATH", "")
    if str(ROOT) not in paths_now.split(os.pathsep):
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), paths_now) if p)
    prefect.serve(*runner_deployments(paths), limit=2)


def apply(paths: list[str] | None = None, pool: str = "sluicegate") -> list:
    """Register the deployments for a process work pool; run `prefect worker start --pool POOL`."""
    import prefect
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound

    deployments = runner_deployments(paths, module_path=True)  # a bad or duplicate config stops here, before the server
    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(pool)
        except ObjectNotFound:
            client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
    return prefect.deploy(*deployments, work_pool_name=pool, build=False, push=False, print_next_steps_message=False)


def show(paths: list[str] | None = None) -> list[dict]:
    return [s for path in project_configs(paths) for s in specs(load_config(path), str(path))]


if __name__ == "__main__":
    cmd, *rest = sys.argv[1:] or ["show"]
    pool = "sluicegate"
    if "--pool" in rest:
        i = rest.index("--pool")
        pool = rest[i + 1]
        rest = rest[:i] + rest[i + 2:]
    if cmd == "serve":
        serve(rest or None)
    elif cmd == "apply":
        apply(rest or None, pool)
    else:
        import json

        print(json.dumps(show(rest or None), indent=2))
