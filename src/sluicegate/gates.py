"""Evaluation gates: pure decisions on whether a candidate may replace the champion, each explained."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from sluicegate.config import GatesConfig, Threshold
from sluicegate.evaluation import EvaluationReport, higher_is_better


@dataclass(frozen=True)
class GateCheck:
    """One verdict: which rule, on which numbers, and why it passed or failed."""

    gate: str
    metric: str
    candidate: float | None
    threshold: float | None
    champion: float | None
    delta: float | None
    passed: bool
    reason: str


@dataclass(frozen=True)
class GateDecision:
    """All verdicts and the outcome; `promote` is True only when every check passed."""

    promote: bool
    checks: tuple[GateCheck, ...]
    champion_version: str | None
    summary: str
    unchanged: bool = False  # the candidate is the champion itself: nothing was decided
    holdout: str = ""  # which rows both were scored on, in words
    warnings: tuple[str, ...] = ()  # what the gates could not look at (slices not evaluated), recorded with the verdict

    @property
    def verdict(self) -> str:
        """`promoted`, `unchanged` or `rejected`."""
        return "promoted" if self.promote else "unchanged" if self.unchanged else "rejected"

    def to_dict(self) -> dict:
        return {
            "promote": self.promote,
            "champion_version": self.champion_version,
            "summary": self.summary,
            "holdout": self.holdout,
            "checks": [asdict(c) for c in self.checks],
            "warnings": list(self.warnings),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=str)

    def to_markdown(self) -> str:
        head = "| gate | metric | candidate | threshold | champion | delta | verdict | reason |\n|---|---|---|---|---|---|---|---|\n"
        rows = "".join(
            f"| {c.gate} | {c.metric} | {_fmt(c.candidate)} | {_fmt(c.threshold)} | {_fmt(c.champion)} "
            f"| {_fmt(c.delta)} | {'pass' if c.passed else '**FAIL**'} | {c.reason} |\n"
            for c in self.checks
        )
        verdict = self.verdict.upper()
        notes = "".join(f"\n- warning: {w}" for w in self.warnings)
        return f"## Gate decision: {verdict}\n\n{self.summary}\n\n{head}{rows}" + (f"\n{notes}\n" if notes else "")


def _fmt(v: float | None) -> str:
    return "" if v is None else f"{v:.4f}"


def _threshold_checks(gate: str, metrics: dict[str, float], thresholds: dict[str, Threshold], prefix: str = "") -> list[GateCheck]:
    checks = []
    for metric, bound in thresholds.items():
        value = metrics.get(metric)
        name = f"{prefix}{metric}"
        if value is None:
            checks.append(GateCheck(gate, name, None, bound.min if bound.min is not None else bound.max, None, None, False,
                                    f"{metric} could not be computed on this data"))
            continue
        if bound.min is not None and value < bound.min:
            checks.append(GateCheck(gate, name, value, bound.min, None, value - bound.min, False,
                                    f"{metric} {value:.4f} is below the minimum {bound.min}"))
        elif bound.max is not None and value > bound.max:
            checks.append(GateCheck(gate, name, value, bound.max, None, value - bound.max, False,
                                    f"{metric} {value:.4f} is above the maximum {bound.max}"))
        else:
            limit = bound.min if bound.min is not None else bound.max
            checks.append(GateCheck(gate, name, value, limit, None, None, True, f"{metric} {value:.4f} within bounds"))
    return checks


def decide_promotion(
    candidate: EvaluationReport,
    champion_test: dict[str, float] | None,
    champion_version: str | None,
    gates: GatesConfig,
    champion_error: str | None = None,
    *,
    project: str | None = None,
    candidate_version: str | None = None,
) -> GateDecision:
    """Decide whether the candidate replaces the champion.

    Args:
        candidate: the candidate's metrics on train, validation and the holdout.
        champion_test: the champion's metrics re-scored on the SAME holdout, or None when
            there is no champion yet.
        champion_version: the champion's registry version, recorded for compare-and-set.
        gates: the `gates` section.
        champion_error: why the champion could not be re-scored on this holdout, if it could not.
        project, candidate_version: name the candidate in the advice a failing check gives
            (`sluice promote churn 4 --reason ...`).

    Returns:
        A `GateDecision` whose checks explain every verdict.
    """
    primary = gates.primary_metric
    checks = _threshold_checks("threshold", candidate.test, gates.thresholds)

    if gates.max_train_valid_gap is not None:
        tr, va = candidate.train.get(primary), candidate.valid.get(primary)
        if tr is not None and va is not None:
            gap = (tr - va) if higher_is_better(primary) else (va - tr)
            ok = gap <= gates.max_train_valid_gap
            checks.append(GateCheck(
                "overfitting", primary, gap, gates.max_train_valid_gap, None, gap - gates.max_train_valid_gap, ok,
                f"train-validation gap {gap:.4f} {'<=' if ok else '>'} {gates.max_train_valid_gap}"
                + ("" if ok else " (the model is overfitting)")))

    for column, groups in candidate.slices.items():
        for value, metrics in groups.items():
            for c in _threshold_checks("slice", metrics, gates.slice_thresholds, prefix=f"{column}={value}:"):
                checks.append(c)

    cand = candidate.test.get(primary)
    if champion_version is not None and champion_test is None:
        checks.append(GateCheck(
            "champion", primary, cand, None, None, None, False,
            f"champion v{champion_version} could not be re-scored on this holdout ({champion_error or 'unknown error'}); "
            f"compare by hand and promote with `{promote_command(project, candidate_version)}`"))
    elif champion_test is None:
        ok = gates.first_model == "promote"
        checks.append(GateCheck(
            "champion", primary, cand, None, None, None, ok,
            "no champion yet: the first model is promoted when every other gate passes" if ok
            else f"no champion yet and gates.first_model is 'reject': promote by hand with "
                 f"`{promote_command(project, candidate_version)}`"))
    else:
        champ = champion_test.get(primary)
        if cand is None or champ is None:
            checks.append(GateCheck("champion", primary, cand, None, champ, None, False,
                                    f"{primary} missing for {'candidate' if cand is None else 'champion'}"))
        else:
            delta = (cand - champ) if higher_is_better(primary) else (champ - cand)
            ok = delta >= gates.min_improvement and delta > 0
            verb = "beats" if ok else "does not beat"
            checks.append(GateCheck(
                "champion", primary, cand, gates.min_improvement, champ, delta, ok,
                f"candidate {verb} champion v{champion_version} by the margin {gates.min_improvement} "
                f"({primary} {cand:.4f} vs {champ:.4f} on the same holdout, improvement {delta:+.4f})"))

    failed = [c for c in checks if not c.passed]
    promote = not failed
    if promote:
        summary = f"All {len(checks)} gates passed; {primary} = {_fmt(cand)}."
    else:
        summary = "Rejected: " + "; ".join(c.reason for c in failed) + "."
    if candidate.holdout:  # after drift, which rows decided matters: say it in the verdict
        summary += f" {candidate.holdout[0].upper()}{candidate.holdout[1:]}."
    if candidate.slice_warnings:
        summary += f" ({len(candidate.slice_warnings)} slice(s) not evaluated: see warnings)"
    return GateDecision(promote, tuple(checks), champion_version, summary, holdout=candidate.holdout,
                        warnings=tuple(candidate.slice_warnings))


def promote_command(project: str | None, version: str | None) -> str:
    """The command that promotes a version by hand (the advice a failing gate gives)."""
    return f"sluice promote {project or 'PROJECT'} {version or 'VERSION'} --reason \"...\""


def same_model_decision(version: str) -> GateDecision:
    """The candidate IS the champion (an unchanged, cached re-run): nothing to promote."""
    check = GateCheck("champion", "-", None, None, None, None, False,
                      f"the candidate is the current champion v{version} (unchanged data, config and code)")
    return GateDecision(False, (check,), version, f"Unchanged: the candidate is champion v{version}; nothing to promote.",
                        unchanged=True)


def decide_outcome(decision: GateDecision, candidate_version: str, champion_version: str | None) -> str:
    """The run's outcome: `promoted` on a passing decision, `unchanged` when the candidate is
    the champion itself (a re-run of the same data, config and code), else `rejected`."""
    if decision.promote:
        return "promoted"
    if decision.unchanged or (champion_version is not None and champion_version == candidate_version):
        return "unchanged"
    return "rejected"


# ---------------------------------------------------------------- human approval
RETRAIN_REASON_PREFIXES = ("retrain", "drift", "performance")
"""A run whose reason starts with one of these came from an event or the retraining flow
(the retraining flow passes `retrain: <event reason>`, drift events `drift: ...`)."""


@dataclass(frozen=True)
class ApprovalRequirement:
    """Whether a passing candidate waits for a human before its release, and why."""

    required: bool
    reason: str


def approval_required(policy: str, run_reason: str | None) -> ApprovalRequirement:
    """Apply `gates.approval` to a run.

    Args:
        policy: `never`, `always` or `on_retrain`.
        run_reason: the run's reason (`manual`, `retrain: drift: ...`, ...).

    Returns:
        An `ApprovalRequirement` saying whether to wait and why.
    """
    if policy == "always":
        return ApprovalRequirement(True, "gates.approval is 'always'")
    if policy == "on_retrain":
        why = (run_reason or "manual").strip()
        if why.lower().startswith(RETRAIN_REASON_PREFIXES):
            return ApprovalRequirement(True, f"gates.approval is 'on_retrain' and this run is a retrain ({why[:200]})")
        return ApprovalRequirement(False, f"gates.approval is 'on_retrain' and this run is not a retrain ({why[:200]})")
    return ApprovalRequirement(False, "gates.approval is 'never'")


@dataclass(frozen=True)
class ApprovalAnswer:
    """What a person answered (the Prefect UI form or `sluice approve/reject`); None fields were left blank."""

    approve: bool
    comment: str = ""
    approver: str | None = None
    timed_out: bool = False


TIMEOUT_APPROVER = "sluicegate (approval timeout)"
UNNAMED_APPROVER = "unnamed (Prefect UI)"


@dataclass(frozen=True)
class ApprovalDecision:
    """The outcome of an approval: `approved`, `rejected` or `timed_out`, by whom and why."""

    verdict: str
    approver: str
    comment: str
    summary: str

    @property
    def approved(self) -> bool:
        return self.verdict == "approved"

    def to_dict(self) -> dict:
        return asdict(self)


def decide_approval(answer: ApprovalAnswer, project: str, version: str, timeout_minutes: float) -> ApprovalDecision:
    """Turn an answer into the decision recorded with the version.

    Args:
        answer: the person's answer, or the timeout's (`timed_out=True`, never an approval).
        project, version: the candidate, for the summary.
        timeout_minutes: `gates.approval_timeout_minutes`, for the summary.

    Returns:
        An `ApprovalDecision`; only an explicit `approve=True` that did not time out approves.
    """
    comment = (answer.comment or "").strip()
    said = f": {comment}" if comment else ""
    if answer.timed_out:
        return ApprovalDecision("timed_out", TIMEOUT_APPROVER, comment,
                                f"{project} v{version}: no approval within {timeout_minutes:g} minutes; rejected")
    approver = (answer.approver or "").strip() or UNNAMED_APPROVER
    if answer.approve:
        return ApprovalDecision("approved", approver, comment, f"{project} v{version}: approved by {approver}{said}")
    return ApprovalDecision("rejected", approver, comment, f"{project} v{version}: rejected by {approver}{said}")
