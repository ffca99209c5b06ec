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
) -> GateDecision:
    """Decide whether the candidate replaces the champion.

    Args:
        candidate: the candidate's metrics on train, validation and the holdout.
        champion_test: the champion's metrics re-scored on the SAME holdout, or None when
            there is no champion yet.
        champion_version: the champion's registry version, recorded for compare-and-set.
        gates: the `gates` section.
        champion_error: why the champion could not be re-scored on this holdout, if it could not.

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
            f"compare by hand and promote with `sluice promote`"))
    elif champion_test is None:
        ok = gates.first_model == "promote"
        checks.append(GateCheck(
            "champion", primary, cand, None, None, None, ok,
            "no champion yet: the first model is promoted when every other gate passes" if ok
            else "no champion yet and gates.first_model is 'reject': promote by hand"))
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
    if candidate.slice_warnings:
        summary += f" ({len(candidate.slice_warnings)} slice(s) not evaluated: see warnings)"
    return GateDecision(promote, tuple(checks), champion_version, summary, warnings=tuple(candidate.slice_warnings))


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
