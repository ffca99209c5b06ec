"""Ground-truth labels for logged predictions: parse, validate, store beside the log, join back."""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from sluicegate.errors import FeedbackError
from sluicegate.serving.logstore import log_store, table_names
from sluicegate.serving.predlog import (
    LabelSchema,
    label_schemas,
    log_frame,
    select_log_rows,
    uniform_column,
)

STATUSES = ("accepted", "late", "duplicate", "unknown_id", "wrong_class", "invalid_label")
STORED = ("accepted", "late")
LATE_AFTER_DAYS = 30.0
MAX_PROBLEMS = 10


@dataclass(frozen=True)
class FeedbackItem:
    """One label as sent: which prediction (by id, or by the project's id column) and the label."""

    index: int
    label: Any
    prediction_id: str | None = None
    id_value: str | None = None

    @property
    def key(self) -> str:
        return self.prediction_id if self.prediction_id is not None else f"id={self.id_value}"


@dataclass(frozen=True)
class FeedbackOutcome:
    """What happened to one item: a status from `STATUSES` and, unless accepted, why."""

    index: int
    status: str
    prediction_id: str | None
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"index": self.index, "status": self.status, "prediction_id": self.prediction_id}
        if self.detail:
            out["detail"] = self.detail
        return out


@dataclass(frozen=True)
class FeedbackResult:
    """Per-item outcomes and the count per status."""

    outcomes: tuple[FeedbackOutcome, ...]

    @property
    def counts(self) -> dict[str, int]:
        seen = Counter(o.status for o in self.outcomes)
        return {s: seen.get(s, 0) for s in STATUSES}

    @property
    def stored(self) -> int:
        return sum(self.counts[s] for s in STORED)

    def summary(self) -> str:
        c = self.counts
        return f"{len(self.outcomes)} labels: " + ", ".join(f"{c[s]} {s}" for s in STATUSES)

    def to_dict(self) -> dict[str, Any]:
        return {"summary": {"received": len(self.outcomes), **self.counts},
                "items": [o.to_dict() for o in self.outcomes]}


def await_logged(conn: Any, items: list[FeedbackItem], timeout_s: float = 1.0, step_s: float = 0.05) -> int:
    """Wait up to `timeout_s` until every `prediction_id` the items name is in the log; returns how many
    are still missing.

    Another process may have answered them (a canary candidate, a second worker): its log writer
    batches rows for a moment (`PredictionLog.linger_s`), so a label sent right after the answer can
    arrive first. The service flushes its own writer; this covers the others.
    """
    ids = sorted({i.prediction_id for i in items if i.prediction_id is not None})
    deadline = time.monotonic() + timeout_s
    missing = len(ids)
    while ids:
        found = set()
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            found |= {r[0] for r in conn.execute(
                f"SELECT prediction_id FROM predictions WHERE prediction_id IN ({', '.join('?' * len(chunk))})", chunk)}
        missing = len(ids) - len(found)
        if not missing or time.monotonic() >= deadline:
            break
        time.sleep(step_s)
    return missing


def parse_feedback(body: Any, id_column: str | None = None) -> list[FeedbackItem]:
    """Check the shape of a feedback body: a list of `{"prediction_id": ..., "label": ...}` objects.

    An item may name its prediction by `<id_column>` (the project's `data.id_column`) instead of
    `prediction_id`. Values are not checked here (see `record_feedback`); only the shape.

    Args:
        body: the decoded JSON body (a JSON string is a string, not JSON text), or its raw bytes.
        id_column: the project's id column, when it has one.

    Returns:
        One `FeedbackItem` per element, in order.

    Raises:
        FeedbackError: the body is not JSON, not a non-empty list of objects, or an item lacks
            `label` or an id, or has unknown keys; one line per problem (the first ten).
    """
    if isinstance(body, (bytes, bytearray)):
        try:
            body = json.loads(body)
        except ValueError as exc:
            raise FeedbackError([f"the body is not valid JSON: {exc}"]) from None
    example = '[{"prediction_id": "<id from the prediction response>", "label": <true label>}]'
    if isinstance(body, dict):
        raise FeedbackError([f"send a JSON list of objects, not a single object, e.g. {example}"])
    if not isinstance(body, list):
        raise FeedbackError([f"send a JSON list of objects (got {type(body).__name__}), e.g. {example}"])
    if not body:
        raise FeedbackError([f"the list is empty; send at least one label, e.g. {example}"])
    ids = "'prediction_id'" + (f" or {id_column!r}" if id_column else "")
    allowed = {"prediction_id", "label", *([id_column] if id_column else [])}
    problems: list[str] = []
    items: list[FeedbackItem] = []
    for i, raw in enumerate(body):
        if not isinstance(raw, dict):
            problems.append(f"item {i}: must be an object with {ids} and 'label' (got {_show(raw)})")
            continue
        unknown = sorted(set(map(str, raw)) - allowed)
        if unknown:
            problems.append(f"item {i}: unknown key {unknown[0]!r}; allowed keys are {', '.join(sorted(allowed))}")
            continue
        if "label" not in raw:
            problems.append(f"item {i}: missing 'label'")
            continue
        pid = raw.get("prediction_id")
        idv = raw.get(id_column) if id_column else None
        if pid is None and idv is None:
            problems.append(f"item {i}: missing {ids}: say which prediction this label is for")
            continue
        if pid is not None and (not isinstance(pid, str) or not pid.strip()):
            problems.append(f"item {i}: 'prediction_id' must be the id string from the prediction response (got {_show(pid)})")
            continue
        if pid is None and (isinstance(idv, bool) or not isinstance(idv, (str, int, float))
                            or (isinstance(idv, float) and not idv.is_integer())):
            problems.append(f"item {i}: {id_column!r} must be a string or an integer (got {_show(idv)})")
            continue
        items.append(FeedbackItem(i, raw["label"], pid.strip() if pid is not None else None,
                                  id_text(idv) if pid is None else None))
    if problems:
        more = len(problems) - MAX_PROBLEMS
        raise FeedbackError(problems[:MAX_PROBLEMS] + ([f"... and {more} more"] if more > 0 else []))
    return items


def id_text(value: Any) -> str | None:
    """An id value as stored in the log: integers without a decimal point, everything else as text."""
    if value is None:
        return None
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


def check_label(value: Any, schema: LabelSchema) -> tuple[str, Any, str]:
    """Is `value` a label this model could have predicted?

    Classification: one of the classes seen in training (1, 1.0 and "1" all name class 1).
    Regression: a finite number.

    Returns:
        (status, the label as stored, why not) with status `accepted`, `wrong_class` or `invalid_label`.
    """
    if hasattr(value, "item"):
        value = value.item()
    if schema.task == "regression":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return "invalid_label", None, f"the label must be a number for regression (got {_show(value)})"
        if not math.isfinite(value):
            return "invalid_label", None, f"the label must be a finite number (got {value})"
        return "accepted", float(value), ""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "invalid_label", None, "the label is empty"
    if isinstance(value, (dict, list)):
        return "invalid_label", None, f"the label must be one class (got {_show(value)})"
    classes = list(schema.classes or ())
    for c in classes:
        if type(c) is type(value) and c == value:
            return "accepted", c, ""
    for c in classes:  # 1.0 or "1" for class 1, "true" is not True
        if not isinstance(value, bool) and not isinstance(c, bool) and isinstance(value, (int, float)) \
                and isinstance(c, (int, float)) and c == value:
            return "accepted", c, ""
        if isinstance(value, str) and str(c) == value.strip():
            return "accepted", c, ""
    shown = ", ".join(map(repr, classes[:20])) + (", ..." if len(classes) > 20 else "")
    return "wrong_class", None, f"{_show(value)} is not a class this model knows ({shown})"


def record_feedback(
    conn: Any,
    items: list[FeedbackItem],
    *,
    current: LabelSchema | None = None,
    source: str = "api",
    now: float | None = None,
    late_after_days: float = LATE_AFTER_DAYS,
) -> FeedbackResult:
    """Validate each label against the prediction it names and store the valid ones.

    A label by prediction id names that prediction; a label by id value names the newest live
    prediction for that value. The first label for a prediction is kept: later ones are answered
    `duplicate` and not stored (re-sending a batch is harmless; a correction must be made in the
    store). A label for a prediction older than `late_after_days` is stored and answered `late`.

    Args:
        conn: a connection from `LogStore.connect` (the prediction log's SQLite file or PostgreSQL schema).
        items: from `parse_feedback`.
        current: the serving model's label schema, for versions the log has none for.
        source: who sent the labels (`api`, `import:<file>`), stored with each.
        now: receipt time, epoch seconds (default: now).
        late_after_days: labels for older predictions are `late`.

    Returns:
        A `FeedbackResult` with one outcome per item, in order.
    """
    now = time.time() if now is None else now
    schemas = label_schemas(conn)
    outcomes: list[FeedbackOutcome] = []
    with conn:
        for item in items:
            outcomes.append(_record_one(conn, item, schemas, current, source, now, late_after_days))
    return FeedbackResult(tuple(outcomes))


def _record_one(conn: Any, item: FeedbackItem, schemas: dict[str, LabelSchema],
                current: LabelSchema | None, source: str, now: float, late_after_days: float) -> FeedbackOutcome:
    if item.prediction_id is not None:
        row = conn.execute("SELECT prediction_id, ts, model_version, id_value FROM predictions"
                           " WHERE prediction_id = ? LIMIT 1", (item.prediction_id,)).fetchone()
        missing = f"no logged prediction has id {item.prediction_id!r}"
    else:
        row = conn.execute("SELECT prediction_id, ts, model_version, id_value FROM predictions"
                           " WHERE id_value = ? AND COALESCE(traffic, 'live') = 'live' AND prediction_id IS NOT NULL"
                           " ORDER BY id DESC LIMIT 1", (item.id_value,)).fetchone()
        missing = f"no logged live prediction has id value {item.id_value!r}"
    if row is None:
        return FeedbackOutcome(item.index, "unknown_id", item.prediction_id, missing)
    pid, ts, version, id_value = row
    schema = schemas.get(str(version)) or current
    if schema is None:
        return FeedbackOutcome(item.index, "invalid_label", pid,
                               f"model v{version} recorded no label schema; redeploy it to accept feedback")
    status, label, why = check_label(item.label, schema)
    if status != "accepted":
        return FeedbackOutcome(item.index, status, pid, why)
    late = (now - float(ts)) > late_after_days * 86400
    cur = conn.execute("INSERT INTO feedback (prediction_id, id_value, label, received_ts, source, late)"
                       " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (prediction_id) DO NOTHING", (pid, id_value, json.dumps(label), now, source, int(late)))
    if cur.rowcount == 0:
        first = conn.execute("SELECT label FROM feedback WHERE prediction_id = ?", (pid,)).fetchone()
        return FeedbackOutcome(item.index, "duplicate", pid,
                               f"already labelled {first[0]}; the first label is kept")
    if late:
        days = (now - float(ts)) / 86400
        return FeedbackOutcome(item.index, "late", pid,
                               f"stored, but the prediction is {days:.0f} days old (late after {late_after_days:g})")
    return FeedbackOutcome(item.index, "accepted", pid)


def read_feedback_file(path: Path, id_column: str | None, target: str | None) -> list[dict[str, Any]]:
    """Rows of a CSV or Parquet file as feedback items (`prediction_id` or the id column, and the label).

    The label column is `label`, or the target's name.

    Raises:
        FeedbackError: the file is missing, unreadable, or lacks an id or label column.
    """
    path = Path(path)
    if not path.is_file():
        raise FeedbackError([f"{path}: file not found"])
    try:
        frame = pd.read_parquet(path) if path.suffix.lower() in (".parquet", ".pq") else pd.read_csv(path)
    except Exception as exc:
        raise FeedbackError([f"{path}: cannot read it as {'Parquet' if path.suffix.lower() in ('.parquet', '.pq') else 'CSV'}: "
                             f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"]) from None
    label_col = "label" if "label" in frame.columns else (target if target in frame.columns else None)
    id_cols = [c for c in ("prediction_id", id_column) if c and c in frame.columns]
    problems = []
    if label_col is None:
        problems.append(f"{path}: no label column: name it 'label'" + (f" or {target!r}" if target else "")
                        + f" (columns: {', '.join(map(str, frame.columns[:20]))})")
    if not id_cols:
        problems.append(f"{path}: no id column: add 'prediction_id'" + (f" or {id_column!r}" if id_column else ""))
    if problems:
        raise FeedbackError(problems)
    if frame.empty:
        raise FeedbackError([f"{path}: the file has no rows"])
    items = []
    for row in frame[[*id_cols, label_col]].itertuples(index=False):
        values = dict(zip([*id_cols, "label"], row))
        item: dict[str, Any] = {"label": _native(values["label"])}
        pid = values.get("prediction_id")
        if pid is not None and not (isinstance(pid, float) and math.isnan(pid)):
            item["prediction_id"] = str(pid)
        elif id_column and id_column in values:
            item[id_column] = _native(values[id_column])
        items.append(item)
    return items


def import_feedback(project: str, path: Path, home: Path | None = None, *, source: str | None = None,
                    late_after_days: float = LATE_AFTER_DAYS, now: float | None = None) -> FeedbackResult:
    """Store the labels of a CSV/Parquet file against a project's prediction log (same checks as POST /feedback).

    Raises:
        FeedbackError: no prediction log, no label schema recorded, or an unreadable file.
        ServiceUnreachableError: the log is in PostgreSQL and it does not answer.
    """
    store = log_store(project, _home(home))
    if not store.exists():
        raise FeedbackError([f"{project}: no prediction log at {store}; serve the model (packaging.log_predictions: true) "
                             "before importing labels"])
    conn = store.connect()
    try:
        schemas = label_schemas(conn)
        current = list(schemas.values())[-1] if schemas else None
        if current is None:
            raise FeedbackError([f"{project}: the prediction log records no label schema; redeploy the model "
                                 "with this version of sluicegate first"])
        raw = read_feedback_file(path, current.id_column, current.target)
        items = parse_feedback(raw, current.id_column)
        return record_feedback(conn, items, current=current, source=source or f"import:{Path(path).name}",
                               now=now, late_after_days=late_after_days)
    finally:
        conn.close()


def read_labelled_predictions(
    project: str,
    home: Path | None = None,
    *,
    since: Any = None,
    last_n: int | None = None,
    traffic: Iterable[str] | None = ("live",),
    include_late: bool = True,
    model_version: str | None = None,
) -> pd.DataFrame:
    """Logged predictions that received a label, joined with it (for live performance and retraining).

    Args:
        project: project name.
        home: SLUICE_HOME (default: from the environment).
        since: only predictions made at or after this time.
        last_n: only the newest `last_n` labelled predictions.
        traffic: which traffic (default live only); None for all.
        include_late: keep labels that arrived after the late window.
        model_version: only the predictions this registered version made (None: every version).

    Returns:
        The columns of `read_prediction_log`, then the label in a column named after the target
        (`label` when no target is recorded), `label_ts` (UTC receipt time), `label_source` and
        `label_late`. Empty when nothing is labelled.

    Raises:
        ServiceUnreachableError: the log is in PostgreSQL (SLUICE_PREDICTION_LOG_URL) and it does not answer.
    """
    conn = log_store(project, _home(home)).reader()
    if conn is None:
        return log_frame([])
    try:
        if "feedback" not in table_names(conn):
            return log_frame([])
        schemas = label_schemas(conn)
        where = "prediction_id IN (SELECT prediction_id FROM feedback" + ("" if include_late else " WHERE late = 0") + ")"
        params: list = []
        if model_version is not None:
            where += " AND model_version = ?"
            params.append(str(model_version))
        rows = select_log_rows(conn, where, params, since=since, last_n=last_n, traffic=traffic)
        labels = conn.execute("SELECT prediction_id, label, received_ts, source, late FROM feedback").fetchall()
    finally:
        conn.close()
    target = next((s.target for s in reversed(list(schemas.values())) if s.target), None) or "label"
    frame = log_frame(rows)
    if target in frame.columns:  # never overwrite a feature: the label is what was added
        target = f"{target}_label"
    fb = pd.DataFrame({
        "prediction_id": pd.Series([r[0] for r in labels], dtype=object),  # object even when no label yet
        target: pd.Series([json.loads(r[1]) for r in labels], dtype=object),
        "label_ts": pd.to_datetime([r[2] for r in labels], unit="s", utc=True),
        "label_source": [r[3] for r in labels],
        "label_late": [bool(r[4]) for r in labels],
    })
    out = frame.merge(fb, on="prediction_id", how="inner")
    out[target] = uniform_column(out[target])
    return out


def _home(home: Path | None) -> Path:
    if home is not None:
        return Path(home)
    from sluicegate.settings import load_settings

    return load_settings().home


def _native(value: Any) -> Any:
    value = value.item() if hasattr(value, "item") else value
    return None if isinstance(value, float) and math.isnan(value) else value


def _show(value: Any) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, float) or math.isfinite(value) else str(value)
    return text if len(text) <= 60 else text[:57] + "..."
