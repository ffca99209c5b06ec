"""Shadow and canary rollouts: the pure verdicts on a candidate serving beside the champion.

Nothing here does I/O, and nothing imports beyond the standard library: the front process
(`sluicegate.deploy.proxy`) calls `decide_canary` on its own counters to roll a breaching
canary back within a second, and `sluice rollout check` calls it again with the live metric
from the labelled prediction log to promote or breach. Frames given to `compare_shadow` and
`live_metric` are pandas DataFrames, used through their methods only.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

HOLD, BREACH, PROMOTE = "hold", "breach", "promote"
VERDICTS = (HOLD, BREACH, PROMOTE)


@dataclass(frozen=True)
class SideStats:
    """What the front measured for one side (champion or candidate) since the rollout began.

    `errors` counts requests that failed (no answer, 5xx) or whose answer held a record the
    model could not score (an `error` or a `fallback` answer).
    """

    requests: int = 0
    errors: int = 0
    p50_ms: float | None = None
    p95_ms: float | None = None

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> SideStats:
        data = data or {}
        return cls(int(data.get("requests") or 0), int(data.get("errors") or 0), data.get("p50_ms"), data.get("p95_ms"))


@dataclass(frozen=True)
class CanaryLimits:
    """The canary's thresholds (`deploy.canary` in the project YAML, as plain values)."""

    window_requests: int | None = 200
    window_minutes: float | None = None
    min_requests: int = 20
    max_error_rate_increase: float = 0.02
    max_p95_ratio: float = 2.0
    max_metric_drop: float = 0.05
    min_labels: int = 30

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CanaryLimits:
        """From `CanaryTrafficConfig.model_dump()` or a routing file; unknown keys are ignored."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True)
class LiveMetric:
    """The live metric of both sides on labelled predictions (`accuracy` or `mae`)."""

    name: str
    champion: float | None
    candidate: float | None
    champion_n: int = 0
    candidate_n: int = 0
    higher_is_better: bool = True


@dataclass(frozen=True)
class Check:
    """One rule of a verdict: passed (True), failed (False) or not judged yet (None), and why."""

    name: str
    passed: bool | None
    detail: str


@dataclass(frozen=True)
class CanaryDecision:
    """The verdict on a canary: `hold` (keep the split), `breach` (roll back) or `promote`."""

    verdict: str
    reason: str
    checks: tuple[Check, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f} ms"


def decide_canary(champion: SideStats, candidate: SideStats, limits: CanaryLimits, *, elapsed_minutes: float,
                  metric: LiveMetric | None = None) -> CanaryDecision:
    """Judge a canary on what each side served since it began.

    Rules, each a `Check`: the candidate's error rate may exceed the champion's by at most
    `max_error_rate_increase`, and its p95 latency may be at most `max_p95_ratio` times the
    champion's (both judged once each side served `min_requests`); with at least `min_labels`
    labelled predictions per side, its live metric may be worse by at most `max_metric_drop`.
    Any failed rule is a breach, whenever it happens. With none failed, the canary is promoted
    once every configured window is full (`window_requests` candidate requests and/or
    `window_minutes`) and the candidate served at least `min_requests`; until then it holds.

    Args:
        champion: the champion's counters since the rollout began.
        candidate: the candidate's counters.
        limits: the thresholds.
        elapsed_minutes: time since the rollout began.
        metric: the live metric of both sides, when labels arrived.

    Returns:
        The frozen decision with one check per rule.
    """
    checks: list[Check] = []
    enough = candidate.requests >= limits.min_requests
    if not enough:
        checks.append(Check("errors", None, f"candidate served {candidate.requests} of the {limits.min_requests} "
                                            "requests needed before judging"))
    else:
        allowed = champion.error_rate + limits.max_error_rate_increase
        checks.append(Check("errors", candidate.error_rate <= allowed,
                            f"candidate error rate {candidate.error_rate:.1%} ({candidate.errors}/{candidate.requests}) "
                            f"vs champion {champion.error_rate:.1%} ({champion.errors}/{champion.requests}); "
                            f"allowed {allowed:.1%}"))
    if not enough or champion.requests < limits.min_requests or candidate.p95_ms is None or champion.p95_ms is None:
        checks.append(Check("latency", None, f"p95 candidate {_ms(candidate.p95_ms)}, champion {_ms(champion.p95_ms)}:"
                                             f" each side needs {limits.min_requests} requests"))
    else:
        allowed_ms = limits.max_p95_ratio * champion.p95_ms
        checks.append(Check("latency", candidate.p95_ms <= allowed_ms,
                            f"p95 candidate {_ms(candidate.p95_ms)} vs champion {_ms(champion.p95_ms)}; "
                            f"allowed {_ms(allowed_ms)} ({limits.max_p95_ratio:g}x)"))
    checks.append(_metric_check(metric, limits))
    failed = [c for c in checks if c.passed is False]
    if failed:
        return CanaryDecision(BREACH, "; ".join(f"{c.name}: {c.detail}" for c in failed), tuple(checks))
    full = ((limits.window_requests is None or candidate.requests >= limits.window_requests)
            and (limits.window_minutes is None or elapsed_minutes >= limits.window_minutes))
    window = (f"{candidate.requests}" + (f"/{limits.window_requests} requests" if limits.window_requests else " requests")
              + (f", {elapsed_minutes:.1f}/{limits.window_minutes:g} min" if limits.window_minutes else ""))
    checks.append(Check("window", full and enough, f"window {window}"))
    if full and enough:
        return CanaryDecision(PROMOTE, f"held for the window ({window}) with no breach", tuple(checks))
    why = "not enough traffic" if full else "window not full"
    return CanaryDecision(HOLD, f"{why} ({window})", tuple(checks))


def _metric_check(metric: LiveMetric | None, limits: CanaryLimits) -> Check:
    if metric is None or metric.champion is None or metric.candidate is None \
            or min(metric.champion_n, metric.candidate_n) < limits.min_labels:
        have = "no labels yet" if metric is None else f"labels: champion {metric.champion_n}, candidate {metric.candidate_n}"
        return Check("metric", None, f"{have}; {limits.min_labels} per side needed")
    worse = (metric.champion - metric.candidate) if metric.higher_is_better else (metric.candidate - metric.champion)
    return Check("metric", worse <= limits.max_metric_drop,
                 f"live {metric.name} candidate {metric.candidate:.4g} (n={metric.candidate_n}) vs champion "
                 f"{metric.champion:.4g} (n={metric.champion_n}); allowed drop {limits.max_metric_drop:g}")


# ---------------------------------------------------------------- live metric and shadow comparison
def _same(a: Any, b: Any, tolerance: float) -> bool:
    try:
        fa, fb = float(a), float(b)
    except (TypeError, ValueError):
        return str(a) == str(b)
    if math.isnan(fa) or math.isnan(fb):
        return math.isnan(fa) and math.isnan(fb)
    return abs(fa - fb) <= tolerance * max(1.0, abs(fb))


def live_metric(labelled: Any, target: str, task: str) -> tuple[str, float | None, int]:
    """(name, value, rows) of the live metric on labelled predictions: accuracy, or MAE for regression."""
    rows = labelled[labelled["prediction"].notna()] if len(labelled) else labelled
    n = int(len(rows))
    if task == "regression":
        if not n:
            return "mae", None, 0
        errors = [abs(float(p) - float(y)) for p, y in zip(rows["prediction"], rows[target])]
        return "mae", sum(errors) / n, n
    if not n:
        return "accuracy", None, 0
    return "accuracy", sum(_same(p, y, 0.0) for p, y in zip(rows["prediction"], rows[target])) / n, n


@dataclass(frozen=True)
class ShadowComparison:
    """Champion and shadow candidate on the same requests: agreement, latency and the live metric."""

    champion_version: str
    candidate_version: str
    pairs: int  # predictions both sides logged under one id
    agreement: float | None  # share of pairs with the same answer
    metric: LiveMetric | None
    latency_ms: dict[str, dict[str, float | None]]  # side -> {"p50", "p95"} as the front measured them
    requests: dict[str, int]  # side -> requests the front sent
    batched: int = 0  # candidate requests mirrored in batches (no latency of their own)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def markdown(self, project: str) -> str:
        """The comparison as a small markdown table (for `sluice compare --markdown` and a Prefect artifact)."""
        m = self.metric
        agree = "n/a" if self.agreement is None else f"{self.agreement:.1%}"

        def cell(v: float | None) -> str:
            return "n/a" if v is None else f"{v:.4g}"
        lines = [f"# {project}: champion v{self.champion_version} vs shadow v{self.candidate_version}", "",
                 f"Agreement on {self.pairs} paired predictions: **{agree}**", "",
                 "| | champion | candidate |", "|---|---|---|",
                 f"| requests | {self.requests.get('champion', 0)} | {self.requests.get('candidate', 0)} |",
                 f"| p50 latency (ms) | {cell(self.latency_ms['champion']['p50'])} "
                 f"| {cell(self.latency_ms['candidate']['p50'])} |",
                 f"| p95 latency (ms) | {cell(self.latency_ms['champion']['p95'])} "
                 f"| {cell(self.latency_ms['candidate']['p95'])} |"]
        if m is not None:
            lines.append(f"| live {m.name} | {cell(m.champion)} (n={m.champion_n}) | {cell(m.candidate)} "
                         f"(n={m.candidate_n}) |")
        if self.batched:
            alone = self.requests.get("candidate", 0) - self.batched
            lines += ["", f"The candidate's latency is from the {alone} cop{'y' if alone == 1 else 'ies'} sent to it alone; "
                          f"{self.batched} more "
                          "were mirrored in batches while it was busy (no latency of their own)."]
        return "\n".join(lines) + "\n"


def compare_shadow(log: Any, labelled: Any, champion_version: str, candidate_version: str, target: str, task: str,
                   stats: dict[str, Any], tolerance: float = 1e-6) -> ShadowComparison:
    """Pair the champion's live rows with the candidate's shadow rows by prediction id and compare.

    Args:
        log: prediction log rows (traffic live and shadow).
        labelled: the same joined with their labels (`read_labelled_predictions`, live and shadow).
        champion_version / candidate_version: the two versions.
        target: the label column of `labelled`.
        task: classification or regression (labels compared exactly, numbers within `tolerance`).
        stats: the front's counters (`champion`/`candidate` with requests, p50_ms, p95_ms).
    """
    def side(frame: Any, traffic: str, version: str) -> Any:
        if not len(frame):
            return frame
        return frame[(frame["traffic"] == traffic) & (frame["model_version"].astype(str) == str(version))]

    live, shadow = side(log, "live", champion_version), side(log, "shadow", candidate_version)
    keys = ["prediction_id", "endpoint"]
    pairs = live[keys + ["prediction"]].merge(shadow[keys + ["prediction"]], on=keys, suffixes=("_c", "_s")) \
        if len(live) and len(shadow) else None
    n = 0 if pairs is None else int(len(pairs))
    tol = 0.0 if task == "classification" else tolerance
    agreement = (sum(_same(a, b, tol) for a, b in zip(pairs["prediction_c"], pairs["prediction_s"])) / n) if n else None
    name, champ, champ_n = live_metric(side(labelled, "live", champion_version), target, task)
    _, cand, cand_n = live_metric(side(labelled, "shadow", candidate_version), target, task)
    metric = LiveMetric(name, champ, cand, champ_n, cand_n, higher_is_better=name != "mae")
    sides = {s: SideStats.from_dict(stats.get(s)) for s in ("champion", "candidate")}
    return ShadowComparison(str(champion_version), str(candidate_version), n, agreement, metric,
                            {s: {"p50": v.p50_ms, "p95": v.p95_ms} for s, v in sides.items()},
                            {s: v.requests for s, v in sides.items()},
                            int((stats.get("candidate") or {}).get("batched") or 0))


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (0-100) of `values` by linear interpolation, None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    k = (len(ordered) - 1) * q / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


# ---------------------------------------------------------------- the rollout's state, as words
def _pct(value: Any) -> str:
    return f"{float(value or 0):.0%}"


def _who_serves(rollout: dict[str, Any]) -> str:
    """`v2 answers 20%, v1 80%` (canary) or `mirrored to v2 (20% copied)` (shadow)."""
    share, cand, champ = float(rollout.get("share") or 0), rollout["candidate_version"], rollout["champion_version"]
    if rollout.get("strategy") == "shadow":
        return f"v{champ} answers 100%, mirrored to v{cand} ({share:.0%} copied)"
    return f"v{cand} answers {share:.0%}, v{champ} {1 - share:.0%}"


def _side_line(name: str, data: dict[str, Any] | None) -> str | None:
    if not data:
        return None
    s = SideStats.from_dict(data)
    return f"{name}: {s.requests} requests, {s.errors} errors ({s.error_rate:.1%}), p95 {_ms(s.p95_ms)}"


def _metric_text(metric: dict[str, Any] | None) -> str | None:
    if not metric or (metric.get("champion") is None and metric.get("candidate") is None):
        return None

    def cell(v: Any) -> str:
        return "n/a" if v is None else f"{float(v):.4g}"
    return (f"live {metric['name']}: champion {cell(metric.get('champion'))} (n={metric.get('champion_n', 0)}), "
            f"candidate {cell(metric.get('candidate'))} (n={metric.get('candidate_n', 0)})")


def _check_text(check: dict[str, Any]) -> str:
    verdict = check.get("verdict") or "no verdict"
    return (f"last check {check.get('at')} by {check.get('by')}: {verdict}, action {check.get('action')}: "
            f"{check.get('reason') or check.get('message')}")


def rollout_lines(serving: dict[str, Any] | None) -> list[str]:
    """`sluice status`'s lines on the local deployment: who serves what share since when, each side's
    counters, the last check's verdict and what it did, the live metric it judged on.

    Args:
        serving: what `sluicegate.deploy.traffic.rollout_status` returns (None: nothing deployed).
    """
    if not serving:
        return []
    rollout = serving.get("rollout") or {}
    if rollout.get("status") != "active":
        lines = [f"serving v{serving['version']} at {serving['url']} since {serving['since']}"]
        if rollout:
            lines.append(f"last rollout: {rollout.get('strategy')} of v{rollout.get('candidate_version')} "
                         f"{rollout.get('status')} at {rollout.get('ended')}: {rollout.get('reason')}")
        return lines
    lines = [f"serving v{serving['version']} at {serving['url']}; {rollout['strategy']} since {rollout['since']}: "
             f"{_who_serves(rollout)}" + (" (BREACHED, rolled back)" if rollout.get("breach") else "")]
    stats = rollout.get("stats") or {}
    lines += [f"  {line}" for line in (_side_line(s, stats.get(s)) for s in ("champion", "candidate")) if line]
    check = rollout.get("last_check")
    if check:
        lines.append(f"  {_check_text(check)}")
        metric = _metric_text(check.get("metric"))
        if metric:
            lines.append(f"  {metric}")
    return lines


def rollout_markdown(project: str, serving: dict[str, Any], comparison: ShadowComparison | None = None) -> str:
    """The rollout as markdown for the Prefect UI: who serves what share since when, requests, errors and
    p95 per side, agreement (shadow), the live metric once labels arrived, and the last decision.

    Args:
        project: the project.
        serving: `rollout_status` of the project, with a rollout (active or ended).
        comparison: `compare_rollout` of the same rollout (agreement and the live metric), if read.
    """
    rollout = serving["rollout"]
    cand, champ, status = rollout["candidate_version"], rollout["champion_version"], rollout.get("status")
    title = f"# {project}: {rollout['strategy']} of v{cand} beside v{champ}: {str(status).upper()}"
    if status == "active":
        now = f"{_who_serves(rollout)} since {rollout['since']}" + \
            (" (BREACHED: the front rolled it back to 0%)" if rollout.get("breach") else "")
    else:
        serves = f"v{serving['version']} serves 100%"
        now = f"{serves}; the rollout began {rollout['since']} and ended {rollout.get('ended')}: {rollout.get('reason')}"
    lines = [title, "", f"**Now:** {now}", ""]
    stats = rollout.get("stats") or {}
    sides = {s: SideStats.from_dict(stats.get(s)) for s in ("champion", "candidate")}
    lines += ["| | champion | candidate |", "|---|---|---|",
              f"| version | v{champ} | v{cand} |",
              f"| requests | {sides['champion'].requests} | {sides['candidate'].requests} |",
              f"| errors | {sides['champion'].errors} ({sides['champion'].error_rate:.1%}) "
              f"| {sides['candidate'].errors} ({sides['candidate'].error_rate:.1%}) |",
              f"| p95 latency | {_ms(sides['champion'].p95_ms)} | {_ms(sides['candidate'].p95_ms)} |"]
    check = rollout.get("last_check") or {}
    metric = asdict(comparison.metric) if comparison is not None and comparison.metric is not None \
        else check.get("metric")
    if metric and (metric.get("champion_n") or metric.get("candidate_n")):
        def cell(v: Any, n: Any) -> str:
            return f"{'n/a' if v is None else format(float(v), '.4g')} (n={n or 0})"
        lines.append(f"| live {metric['name']} | {cell(metric.get('champion'), metric.get('champion_n'))} "
                     f"| {cell(metric.get('candidate'), metric.get('candidate_n'))} |")
    else:
        lines.append("| live metric | no labels yet | no labels yet |")
    if rollout.get("strategy") == "shadow" and comparison is not None:
        agree = "n/a" if comparison.agreement is None else f"{comparison.agreement:.1%}"
        lines += ["", f"**Agreement:** {agree} on {comparison.pairs} paired predictions"]
    batched = int((stats.get("candidate") or {}).get("batched") or 0)
    if rollout.get("strategy") == "shadow" and batched:
        alone = sides["candidate"].requests - batched
        lines += ["", f"The candidate's latency is from the {alone} cop{'y' if alone == 1 else 'ies'} sent to it "
                      f"alone; {batched} more were mirrored in batches (no latency of their own)."]
    lines += ["", "## Decision", ""]
    if check:
        lines.append(f"Last check {check.get('at')} by {check.get('by')}: **{check.get('verdict') or 'no verdict'}**"
                     f", action **{check.get('action')}**. {check.get('message') or check.get('reason') or ''}")
        if check.get("checks"):
            lines += ["", "| rule | result | detail |", "|---|---|---|"]
            for c in check["checks"]:
                mark = {True: "ok", False: "not yet" if c["name"] == "window" else "FAILED", None: "-"}[c.get("passed")]
                lines.append(f"| {c['name']} | {mark} | {c['detail']} |")
    else:
        lines.append("Not checked yet: the drift-check flow or `sluice rollout check` judges it.")
    if status != "active":
        lines += ["", f"Ended **{status}** at {rollout.get('ended')}: {rollout.get('reason')}"]
    return "\n".join(lines) + "\n"
