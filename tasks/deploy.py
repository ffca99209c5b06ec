"""Task: deploy a Bento to the configured target (local canary + switch, docker, kubernetes)."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.artifacts import create_markdown_artifact

from sluicegate.config import DeployConfig, PackagingConfig
from sluicegate.deploy import DeployResult, deploy_bento
from sluicegate.packaging import BentoResult
from tasks._common import artifact_key, settings


@task(name="deploy-model", retries=0)  # a failed canary is a verdict, not a hiccup: never retried
def deploy_model(bento: BentoResult, deploy: DeployConfig, packaging: PackagingConfig,
                 out_dir: str | None = None) -> DeployResult:
    """Deploy; on failure whatever was serving keeps serving and the error fails the transaction."""
    result = deploy_bento(bento, deploy, packaging, settings(), Path(out_dir) if out_dir else None)
    create_markdown_artifact(f"## {bento.project}: deployed v{bento.version} ({deploy.target})\n\n{result.message}",
                             key=artifact_key(bento.project, "deployment"),
                             description=f"{bento.project} deployment")
    print(result.message)
    return result
