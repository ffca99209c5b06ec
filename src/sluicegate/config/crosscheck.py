"""Checks that span sections, run by `ProjectConfig`'s validator: metrics for the task, the split,
each model section against its kind's trainer, candidates and their search spaces, and exposure
of the server."""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from sluicegate.schema_base import unknown_choice
from sluicegate.trainers import registry

Problem = tuple[tuple, str]


class CrossCheckError(ValueError):
    """Raised inside validation with (yaml path, message) pairs; `format_errors` prints one line each."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("; ".join(f"{'.'.join(map(str, p))}: {m}" for p, m in problems))


def cross_field_problems(cfg: Any) -> list[Problem]:
    """Every problem between sections of a validated `ProjectConfig`, located by YAML path."""
    problems: list[Problem] = []
    metrics = cfg.metrics
    what = f"metric for {cfg.task}"
    if cfg.gates.primary_metric not in metrics:
        problems.append((("gates", "primary_metric"), unknown_choice(cfg.gates.primary_metric, metrics, what)))
    for name in cfg.gates.thresholds:
        if name not in metrics:
            problems.append((("gates", "thresholds", name), unknown_choice(name, metrics, what)))
    for name in cfg.gates.slice_thresholds:
        if name not in metrics:
            problems.append((("gates", "slice_thresholds", name), unknown_choice(name, metrics, what)))
    if cfg.split.method == "stratified" and cfg.task == "regression":
        problems.append((("split", "method"), "stratified splits need a classification task (got regression)"))
    if cfg.split.method == "time" and not (cfg.split.time_column or cfg.data.time_column):
        problems.append((("split", "time_column"), "a time split needs split.time_column or data.time_column"))
    problems.extend(_sql_problems(cfg.data.source))
    problems.extend(_exposure_problems(cfg))
    problems.extend((("model",) + loc, msg) for loc, msg in registry.check_model_config(cfg.model, cfg.task))
    problems.extend(_candidate_problems(cfg))
    problems.extend(_monitoring_problems(cfg, metrics, what))
    return problems


# values of `data.source.params` that are bound to the configured window, never formatted into SQL
SQL_WINDOW_PLACEHOLDERS = ("window_start", "window_end", "window_start_epoch", "window_end_epoch")
# SQLAlchemy's own pattern for `:name` bind parameters in text() (`::int` casts are not binds)
_BIND = re.compile(r"(?<![:\w\\]):(\w+)(?!:)")
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")


def _sql_problems(source: Any) -> list[Problem]:
    """A SQL source's parameters: each `:name` has a value, each value a `:name`, and window
    placeholders are whole values, known, and backed by `window_days`."""
    if getattr(source, "kind", None) != "sql":
        return []
    at: tuple = ("data", "source")
    binds = list(dict.fromkeys(_BIND.findall(source.query)))
    problems: list[Problem] = []
    for name in binds:
        if name not in source.params:
            problems.append(((*at, "query"), f"the parameter :{name} has no value; add data.source.params.{name} "
                                             f"(values are bound by the driver, never written into the SQL)"))
    uses_window = False
    for name, value in source.params.items():
        here = (*at, "params", name)
        if name not in binds:
            shown = ", ".join(f":{b}" for b in binds) or "none"
            problems.append((here, f"the query has no :{name} parameter (its parameters: {shown})"))
        if not isinstance(value, str) or not _PLACEHOLDER.search(value):
            continue
        whole = re.fullmatch(r"\s*\{(\w+)\}\s*", value)
        if whole is None:
            problems.append((here, f"a window placeholder must be the whole value, e.g. '{{window_start}}' "
                                   f"(got {value!r}); it is bound as a parameter, never formatted into SQL"))
        elif whole.group(1) not in SQL_WINDOW_PLACEHOLDERS:
            problems.append((here, unknown_choice(whole.group(1), SQL_WINDOW_PLACEHOLDERS, "placeholder")))
        elif source.window_days is None:
            problems.append((here, f"{value.strip()} needs data.source.window_days (the window's length in days)"))
        else:
            uses_window = True
    if source.window_days is not None and not uses_window:
        problems.append(((*at, "window_days"), "no parameter uses the window; bind one, e.g. "
                                               "params: {since: '{window_start}'} with WHERE ts >= :since"))
    return problems


def _monitoring_problems(cfg: Any, metrics: tuple[str, ...], what: str) -> list[Problem]:
    perf = cfg.monitoring.performance
    if perf.metric is not None and perf.metric not in metrics:
        return [(("monitoring", "performance", "metric"), unknown_choice(perf.metric, metrics, what))]
    return []


def is_loopback(host: str) -> bool:
    """Whether `host` is reachable from this machine only (`localhost`, 127.0.0.0/8, ::1)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[] ")).is_loopback
    except ValueError:
        return False  # a host name or a wildcard: other machines may reach it


def _exposure_problems(cfg: Any) -> list[Problem]:
    """A server bound beyond loopback answers anyone who can reach it, so it needs a token."""
    if is_loopback(cfg.deploy.host) or cfg.packaging.auth_token is not None:
        return []
    return [(("deploy", "host"),
             f"{cfg.deploy.host!r} is not a loopback address and packaging.auth_token is not set, so anyone "
             f"who reaches the port could call the model; set packaging.auth_token: {{env: VAR_NAME}} "
             f"or bind to 127.0.0.1")]


def _candidate_problems(cfg: Any) -> list[Problem]:
    """Candidate models, budgets, and search spaces checked against each model kind's parameters."""
    problems: list[Problem] = []
    for i, c in enumerate(cfg.candidates):
        problems += [(("candidates", i, "model") + loc, msg) for loc, msg in registry.check_model_config(c.model, cfg.task)]
    seen: dict[str, int] = {}
    for i, cand in enumerate(cfg.model_candidates()):
        here: tuple = () if i == 0 else ("candidates", i - 1)
        if cand.name in seen:
            problems.append(((*here, "name"), f"duplicate candidate name {cand.name!r}; give each candidate a unique 'name'"))
        seen[cand.name] = i
        tuning = cand.tuning
        if tuning is None or not tuning.enabled or registry.check_model_config(cand.model, cfg.task):
            continue  # no tuning, or a broken model section (reported above) to fix first
        own = cfg.tuning if i == 0 else cfg.candidates[i - 1].tuning
        at = (*here, "tuning") if own is not None else ("tuning",)
        if tuning.n_trials is None and tuning.timeout_s is None:
            problems.append((at, "no budget: give n_trials, timeout_s or both"))
        trainer = registry.get_trainer(cand.model.kind)
        space = tuning.search_space
        if space is None:
            if not trainer.default_search_space(cand.model, cfg.task):
                problems.append((at, f"{cand.name} has no default search space; list parameters under search_space"))
            continue
        for name, p in space.items():
            values = p.choices if p.type == "categorical" else [p.low, p.high]
            for value in dict.fromkeys(values):
                if p.type == "int":
                    value = int(value)
                found = registry.check_params(cand.model, cfg.task, {name: value})
                if found:
                    loc, msg = found[0]
                    problems.append(((*at, "search_space", name), msg if loc else f"{value!r}: {msg}"))
                    break
    return problems
