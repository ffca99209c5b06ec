"""What a training run ended with (`TrainingOutcome`): light, so the CLI reads it without the training stack."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class TrainingOutcome:
    """What a training run ended with: the flow's result, read by the CLI and by callers.

    `outcome` is `promoted` (the candidate is the champion now), `unchanged` (the candidate IS
    the champion: same data, config and code) or `rejected` (the gates kept the champion).
    """

    project: str
    outcome: str
    version: int
    champion: int | None
    primary_metric: str
    metrics: dict[str, float]
    summary: str
    model_uri: str
    data_fingerprint: str
    selected_candidate: str | None = None
    deployment: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def training_outcome(project: str, outcome: str, candidate_version: str, champion_version: str | None,
                     primary_metric: str, metrics: dict[str, float], summary: str, data_fingerprint: str,
                     selected_candidate: str | None = None, deployment: str | None = None) -> TrainingOutcome:
    """The `TrainingOutcome` of a run; the champion is the candidate when it was promoted.

    Args:
        project: project name.
        outcome: from `gates.decide_outcome`.
        candidate_version: the registered candidate's version.
        champion_version: the champion's version before the run (None: there was none).
        primary_metric: the gates' primary metric.
        metrics: the candidate's holdout metrics.
        summary: the gate decision's one-line summary.
        data_fingerprint: the data snapshot's fingerprint.
        selected_candidate: the candidate model selection chose, if any.
        deployment: what the deploy did, when it ran.
    """
    champion = int(candidate_version) if outcome == "promoted" else (int(champion_version) if champion_version else None)
    return TrainingOutcome(project, outcome, int(candidate_version), champion, primary_metric, dict(metrics), summary,
                           f"models:/{project}/{candidate_version}", data_fingerprint, selected_candidate, deployment)
