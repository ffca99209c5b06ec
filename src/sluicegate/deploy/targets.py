"""The Kubernetes target: manifests for the model image (the container target builds and runs it: `deploy.container`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sluicegate.config import DeployConfig, PackagingConfig
from sluicegate.deploy.staged import DeployResult, Staged
from sluicegate.packaging import BentoResult, safe_name, verify_model_artifact
from sluicegate.settings import Settings


# ---------------------------------------------------------------- kubernetes target
def kubernetes_manifests(bento: BentoResult, spec: DeployConfig, packaging: PackagingConfig) -> list[dict[str, Any]]:
    """Deployment (probes on /readyz and /livez), Service and HorizontalPodAutoscaler for the Bento's image."""
    name = safe_name(bento.project).replace("_", "-").replace(".", "-")
    labels = {"app.kubernetes.io/name": name, "app.kubernetes.io/managed-by": "sluicegate"}
    image = spec.image or bento.bento_tag
    env: list[dict[str, Any]] = [
        {"name": "BENTOML_HOST", "value": "0.0.0.0"},  # inside the pod; exposure is the Service's job
        {"name": "BENTOML_PORT", "value": "3000"},
        {"name": "SLUICE_HOME", "value": "/home/bentoml/sluice"},
    ]
    if packaging.auth_token is not None:
        env.append({"name": packaging.auth_token.env, "valueFrom": {
            "secretKeyRef": {"name": f"{name}-auth", "key": "token"}}})
    probe = {"httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": 5, "timeoutSeconds": 3}
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": {**labels, "sluicegate/model-version": bento.version}},
        "spec": {
            "replicas": spec.replicas,
            "selector": {"matchLabels": labels},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {"labels": {**labels, "sluicegate/model-version": bento.version}},
                "spec": {"containers": [{
                    "name": "bento",
                    "image": image,
                    "args": ["serve"],
                    "ports": [{"name": "http", "containerPort": 3000}],
                    "env": env,
                    "readinessProbe": {**probe, "initialDelaySeconds": 5, "failureThreshold": 3},
                    "livenessProbe": {**probe, "httpGet": {"path": "/livez", "port": "http"},
                                      "initialDelaySeconds": 30, "failureThreshold": 6},
                    "resources": {"requests": {"cpu": "500m", "memory": "512Mi"},
                                  "limits": {"memory": "2Gi"}},
                }]},
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "labels": labels},
        "spec": {"type": "ClusterIP", "selector": labels,
                 "ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
    }
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": spec.hpa.min_replicas,
            "maxReplicas": spec.hpa.max_replicas,
            "metrics": [{"type": "Resource", "resource": {
                "name": "cpu", "target": {"type": "Utilization", "averageUtilization": spec.hpa.cpu_target_percent}}}],
        },
    }
    return [deployment, service, hpa]


def stage_kubernetes(bento: BentoResult, spec: DeployConfig, packaging: PackagingConfig, out_dir: Path,
                     settings: Settings) -> Staged:
    """Check the artifact and render the manifests; they are written to `out_dir` on commit."""
    verify_model_artifact(bento, settings)
    docs = kubernetes_manifests(bento, spec, packaging)
    return Staged("kubernetes", lambda: _write_manifests(bento, spec, docs, out_dir), lambda: None)


def _write_manifests(bento: BentoResult, spec: DeployConfig, docs: list[dict[str, Any]], out_dir: Path) -> DeployResult:
    import yaml

    out_dir.mkdir(parents=True, exist_ok=True)
    files = []
    for doc in docs:
        path = out_dir / f"{doc['kind'].lower()}.yaml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        files.append(str(path))
    image = spec.image or bento.bento_tag
    return DeployResult("kubernetes", bento.project, bento.version, bento.bento_tag, None, tuple(files),
                        f"wrote {len(files)} manifests to {out_dir} for image {image}; build it with "
                        f"`bentoml containerize {bento.bento_tag} -t {image}`, push it, then `kubectl apply -f {out_dir}`")


def deploy_kubernetes(bento: BentoResult, spec: DeployConfig, packaging: PackagingConfig, out_dir: Path,
                      settings: Settings) -> DeployResult:
    """Write the Kubernetes manifests of the Bento's image into `out_dir` (applying them is `kubectl`'s job)."""
    return stage_kubernetes(bento, spec, packaging, out_dir, settings).commit()
