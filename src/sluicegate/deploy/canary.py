"""The canary: replay the held-out rows stored in a Bento against a served candidate and compare answers."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

from sluicegate.config import DeployConfig, PackagingConfig
from sluicegate.deploy.processes import CANARY_HEADERS
from sluicegate.errors import DeployError
from sluicegate.packaging import BentoResult, canary_data
from sluicegate.settings import Settings


@dataclass(frozen=True)
class CanaryReport:
    """Served answers compared with the offline predictions stored in the Bento."""

    rows: int
    mismatches: int
    max_abs_diff: float
    examples: tuple[str, ...] = field(default_factory=tuple)

    @property
    def passed(self) -> bool:
        return self.mismatches == 0


def auth_headers(packaging: PackagingConfig) -> dict[str, str]:
    """The bearer header the service expects, from the environment variable the config names."""
    if packaging.auth_token is None:
        return {}
    token = os.environ.get(packaging.auth_token.env or "", "")
    if not token:
        raise DeployError(f"packaging.auth_token: environment variable {packaging.auth_token.env} is not set; "
                          "the service would refuse every request")
    return {"Authorization": f"Bearer {token}"}


def probe_headers(packaging: PackagingConfig) -> dict[str, str]:
    """Headers of every request the deploy code sends to a model server: auth, and the canary mark."""
    return {**auth_headers(packaging), **CANARY_HEADERS}


def compare_predictions(served: list[Any], offline: list[Any], tolerance: float) -> CanaryReport:
    """Compare served and offline values: labels exactly, numbers and probabilities within `tolerance`."""
    mismatches, worst, examples = 0, 0.0, []
    if len(served) != len(offline):
        return CanaryReport(len(offline), len(offline), math.inf, (f"got {len(served)} answers for {len(offline)} rows",))
    for i, (a, b) in enumerate(zip(served, offline)):
        diff = _difference(a, b)
        worst = max(worst, diff)
        if diff > tolerance:
            mismatches += 1
            if len(examples) < 3:
                examples.append(f"row {i}: served {a!r}, offline {b!r}")
    return CanaryReport(len(offline), mismatches, worst, tuple(examples))


def _difference(a: Any, b: Any) -> float:
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return math.inf
        return max((_difference(a[k], b[k]) for k in a), default=0.0)
    if isinstance(a, bool) or isinstance(b, bool) or isinstance(a, str) or isinstance(b, str):
        return 0.0 if a == b else math.inf
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        if math.isnan(a) and math.isnan(b):
            return 0.0
        return abs(float(a) - float(b)) / max(1.0, abs(float(b)))
    return 0.0 if a == b else math.inf


def run_canary(url: str, bento: BentoResult, spec: DeployConfig, packaging: PackagingConfig,
               settings: Settings) -> CanaryReport:
    """Replay the held-out rows stored in the Bento against a served candidate and compare.

    Every request carries `X-Sluice-Traffic: canary`, so the service keeps these rows out of
    the monitoring windows.

    Raises:
        DeployError: a request failed or an answer disagrees with the offline prediction.
    """
    import httpx

    data = canary_data(bento, settings)
    headers = probe_headers(packaging)
    records = data["records"][: spec.canary_rows]
    checks = [("predict", "prediction", data["predictions"][: len(records)])]
    if "probabilities" in data:
        checks.append(("predict_proba", "probabilities", data["probabilities"][: len(records)]))
    worst: CanaryReport | None = None
    for route, key, expected in checks:
        try:
            resp = httpx.post(f"{url}/{route}", json=records, headers=headers, timeout=60)
        except httpx.HTTPError as exc:
            raise DeployError(f"canary: POST /{route} failed: {exc}") from exc
        if resp.status_code != 200:
            raise DeployError(f"canary: POST /{route} answered {resp.status_code}: {resp.text[:300]}")
        answers = resp.json()
        errors = [a.get("error") for a in answers if a.get("error") or a.get("fallback")]
        if errors:
            raise DeployError(f"canary: the candidate failed on {len(errors)} of {len(records)} rows: {errors[0]}")
        report = compare_predictions([a[key] for a in answers], expected, spec.canary_tolerance)
        if not report.passed:
            raise DeployError(
                f"canary: {report.mismatches} of {report.rows} /{route} answers differ from the offline "
                f"predictions (max relative difference {report.max_abs_diff:.3g} > {spec.canary_tolerance}): "
                + "; ".join(report.examples))
        worst = report if worst is None or report.max_abs_diff > worst.max_abs_diff else worst
    assert worst is not None
    return worst
