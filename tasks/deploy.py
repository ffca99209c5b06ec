"""Task: release a version (package, canary, then bless and switch) with the same core the CLI calls."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.artifacts import create_markdown_artifact

from sluicegate.config import DeployConfig, NotificationsConfig, PackagingConfig
from sluicegate.deploy.staged import DeployResult
from tasks._common import artifact_key, settings, tracker
from tasks.events import prefect_emitter


@task(name="release-model", retries=0)  # a failed canary is a verdict, not a hiccup: never retried
def release_model(project: str, version: str, packaging: PackagingConfig, deploy: DeployConfig, task_type: str,
                  expected_champion: str | None, notifications: NotificationsConfig | None = None,
                  out_dir: str | None = None) -> DeployResult:
    """Deploy `version` and make it champion only after its canary passed; on failure nothing moves."""
    # imported here: every training run imports this module, and only a release needs the
    # packaging, container, proxy and rollout machinery (~80 ms of imports)
    from sluicegate.deploy.processes import read_state
    from sluicegate.deploy.release import Promotion, release_version
    from sluicegate.deploy.traffic import active_rollout
    from tasks.rollout import publish_rollout

    result = release_version(tracker(), project, version, packaging, deploy, task_type, settings(),
                             Path(out_dir) if out_dir else None, promotion=Promotion(expected_champion),
                             events=prefect_emitter(notifications))
    create_markdown_artifact(f"## {project}: deployed v{version} ({deploy.target})\n\n{result.message}",
                             key=artifact_key(project, "deployment"), description=f"{project} deployment")
    if deploy.target == "local" and active_rollout(read_state(settings(), project)):  # shadow or canary began
        publish_rollout(project)
    print(result.message)
    return result
