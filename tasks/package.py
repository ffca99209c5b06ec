"""Task: package the champion as a Bento; if the release transaction fails, its hook moves the champion back."""

from __future__ import annotations

from prefect import task

from sluicegate.config import DeployConfig, PackagingConfig
from sluicegate.deploy import restore_champion
from sluicegate.packaging import BentoResult, package_model
from tasks._common import settings, tracker, transient_only


@task(name="package-model", retries=1, retry_delay_seconds=5, retry_condition_fn=transient_only)
def package_champion(project: str, version: str, packaging: PackagingConfig, deploy: DeployConfig,
                     task_type: str) -> BentoResult:
    """Build the Bento (model, schema, canary rows, service) for a registered version."""
    bento = package_model(tracker(), project, version, packaging, deploy, task_type, settings())
    print(f"{'reused' if bento.reused else 'built'} bento {bento.bento_tag} (model {bento.model_tag})")
    return bento


@package_champion.on_rollback
def restore_previous_champion(txn) -> None:
    """The release failed after promotion: point `champion` back at the version still serving."""
    project, previous = txn.get("project", None), txn.get("previous_champion", None)
    if project and previous:
        left = restore_champion(tracker(), project, previous)
        print(f"{project}: deploy failed; champion moved back to v{previous} (from v{left})")
        from prefect.events import emit_event

        emit_event("sluicegate.model.rolled_back", resource={"prefect.resource.id": f"sluicegate.project.{project}"},
                   payload={"champion": previous, "from": left, "reason": "deploy failed"})
