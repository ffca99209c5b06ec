"""Append-only prediction log: SQLite in WAL mode (or a shared PostgreSQL), written by a background thread, read back as a DataFrame."""

from __future__ import annotations

import json
import logging
import math
import queue
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable

import pandas as pd

from sluicegate.errors import ServiceUnreachableError
from sluicegate.serving.logstore import (
    DB_NAME,
    LogStore,
    connect_log,  # noqa: F401  (its old home: tests and benchmarks import it here)
    log_store,
    table_columns,
    table_names,
)

log = logging.getLogger(__name__)

TRAFFIC_TAGS = ("live", "canary", "shadow", "health")
TRAFFIC_HEADER = "x-sluice-traffic"
# the columns every frame from `read_prediction_log` starts with, in this order
FIXED_COLUMNS = ("prediction_id", "ts", "endpoint", "model_version", "traffic", "source")

@dataclass(frozen=True)
class PredictionEvent:
    """One scored record: what came in, what went out, which model answered, when, and for whom.

    `prediction` is the label (classification) or value (regression); for /predict_proba it is
    the most probable class and `probabilities` holds every class. `traffic` is `live` unless the
    request said otherwise (`X-Sluice-Traffic: canary|shadow|health`).
    """

    ts: float
    project: str
    model_version: str
    endpoint: str
    source: str
    inputs: dict[str, Any]
    prediction: Any
    probabilities: dict[str, float] | None = None
    prediction_id: str | None = None
    traffic: str = "live"
    id_value: str | None = None


@dataclass(frozen=True)
class LabelSchema:
    """What a label must look like for a model version: its task, target name, classes and id column."""

    task: str
    target: str | None = None
    classes: tuple[Any, ...] | None = None
    id_column: str | None = None
    model_version: str = ""


def log_path(home: Path, project: str) -> Path:
    """Where a project's prediction log lives: SLUICE_HOME/predictions/<project>/predictions.sqlite."""
    return home / "predictions" / project / DB_NAME


def _table_columns(conn: Any, table: str) -> set[str]:
    return table_columns(conn, table)


def register_label_schema(conn: Any, schema: LabelSchema) -> None:
    """Record what labels of `schema.model_version` look like, so feedback can be checked offline too.

    `conn` is a log connection (`connect_log`, or `LogStore.connect` for either store)."""
    with conn:
        conn.execute(
            "INSERT INTO models (model_version, task, target, id_column, classes, updated_ts)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (model_version) DO UPDATE SET task = excluded.task,"
            " target = excluded.target, id_column = excluded.id_column, classes = excluded.classes,"
            " updated_ts = excluded.updated_ts",
            (schema.model_version, schema.task, schema.target, schema.id_column,
             json.dumps(list(schema.classes)) if schema.classes is not None else None, time.time()))


def label_schemas(conn: Any) -> dict[str, LabelSchema]:
    """Every recorded label schema by model version, in the order the versions were last served."""
    if "models" not in table_names(conn):
        return {}
    rows = conn.execute("SELECT model_version, task, target, id_column, classes FROM models ORDER BY updated_ts")
    return {r[0]: LabelSchema(r[1], r[2], tuple(json.loads(r[4])) if r[4] else None, r[3], r[0]) for r in rows}


@dataclass
class _Flush:
    done: threading.Event = field(default_factory=threading.Event)


class PredictionLog:
    """Queue of events drained by one writer thread, so requests never wait on disk.

    `record` only enqueues. The thread writes whatever has queued up in one transaction, at
    least every `flush_interval_s`; woken by a request, it first lingers a moment (`linger_s`) so
    that the requests arriving meanwhile go in the same transaction. Waking per request cost the
    serving thread dearly: each wake takes the GIL, and the request thread, coming back from the
    model runtime (which releases it), waited for the writer's Python (up to the 5 ms switch
    interval); measured at c=32, a 0.2 ms ONNX call took 1.25 ms inside the server. The log must stay complete: when the queue is full,
    `record` waits for room (back-pressure on the request) instead of dropping events, and a
    locked database is retried until it answers. `flush` waits until everything recorded so
    far is on disk; `close` drains the queue and waits for the last write (graceful shutdown).

    `store` is a SQLite file's path or a `LogStore` (`log_store`: PostgreSQL when configured). A
    PostgreSQL store that goes away costs no request: each batch it cannot take is dropped and
    counted at once (as on a full disk), and writing resumes when it answers again.
    """

    def __init__(self, store: Path | LogStore, flush_interval_s: float = 0.2, max_queue: int = 100_000,
                 on_written: Callable[[int], None] | None = None, on_dropped: Callable[[int], None] | None = None,
                 linger_s: float = 0.05):
        self.store = store if isinstance(store, LogStore) else LogStore(Path(store).parent.name, path=Path(store))
        self.path = self.store.path  # None for PostgreSQL
        self.flush_interval_s = flush_interval_s
        self.linger_s = min(linger_s, flush_interval_s)
        self._max_queue = max_queue
        self.dropped = 0
        self.written = 0
        # counters for /metrics (the service passes Prometheus counters' inc); called from the writer thread
        self._on_written = on_written or (lambda n: None)
        self._on_dropped = on_dropped or (lambda n: None)
        self._failing_since: float | None = None  # first drop of the current outage
        self._last_alarm = 0.0
        # one item per request (a list of events), a flush marker, or None (close); `max_queue` bounds the events
        # waiting (not the items: a request merged by the front carries hundreds)
        self._queue: queue.Queue[list[PredictionEvent] | _Flush | None] = queue.Queue()
        self._waiting = 0
        self._room = threading.Condition()
        self._conn = self.store.connect()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    @property
    def connection(self) -> Any:
        return self._conn

    def record(self, events: list[PredictionEvent]) -> None:
        """Queue one request's events as one item (one queue operation per request, not per record)."""
        if events:
            self._put(list(events))

    def _put(self, item: list[PredictionEvent] | _Flush | None) -> None:
        n = len(item) if isinstance(item, list) else 0
        with self._room:
            while n and self._waiting and self._waiting + n > self._max_queue:
                if not self._room.wait(timeout=1.0) and not self._thread.is_alive():  # nobody will ever drain it
                    self._drop(n, "the prediction log writer is not running")
                    return
            self._waiting += n
        self._queue.put(item)

    def _taken(self, n: int) -> None:
        with self._room:
            self._waiting -= n
            self._room.notify_all()

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until every event recorded before this call is written; False on timeout."""
        if self._closed or not self._thread.is_alive():
            return False
        marker = _Flush()
        self._put(marker)
        return marker.done.wait(timeout_s)

    def _run(self) -> None:
        stop = False
        while not stop:
            batch: list[PredictionEvent] = []
            markers: list[_Flush] = []
            try:
                item = self._queue.get(timeout=self.flush_interval_s)
            except queue.Empty:
                continue
            if isinstance(item, list) and self.linger_s > 0 and self._waiting < self._max_queue // 2:
                time.sleep(self.linger_s)  # let the batch build up (see the class docstring)
            while True:
                if item is None:
                    stop = True
                elif isinstance(item, _Flush):
                    markers.append(item)
                else:
                    batch += item
                if len(batch) >= 5000:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            if batch:
                self._taken(len(batch))
                self._write(batch)
            for m in markers:
                m.done.set()

    def _write(self, batch: list[PredictionEvent]) -> None:
        rows = [(e.ts, e.project, e.model_version, e.endpoint, e.source, _dumps(e.inputs),
                 _dumps(e.probabilities if e.probabilities is not None else e.prediction),
                 e.prediction_id, e.traffic, _dumps(e.prediction),
                 _dumps(e.probabilities) if e.probabilities is not None else None, e.id_value) for e in batch]
        attempt = 0
        while True:
            try:
                with self._conn:
                    self._conn.executemany(
                        "INSERT INTO predictions (ts, project, model_version, endpoint, source, inputs, outputs,"
                        " prediction_id, traffic, label, probabilities, id_value)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
                self.written += len(rows)
                self._on_written(len(rows))
                if self._failing_since is not None:
                    log.warning("prediction log %s: writing again (%d predictions were dropped in all)",
                                self.store, self.dropped)
                    self._failing_since = None
                return
            except sqlite3.OperationalError as exc:
                text = str(exc).lower()
                if "full" in text:  # waiting will not free space: drop now, say so, keep answering
                    self._drop(len(rows), f"the disk is full ({exc})")
                    return
                attempt += 1
                if attempt >= 50 or ("locked" not in text and "busy" not in text and attempt >= 3):
                    self._drop(len(rows), f"{exc}: is the disk full, gone or read-only?")
                    return
                log.warning("prediction log write failed (%s), retry %d", exc, attempt)  # locked by another worker
                time.sleep(min(2.0, 0.2 * attempt))
            except sqlite3.Error as exc:  # corrupt or unreadable file: never kill the writer thread
                self._drop(len(rows), f"{type(exc).__name__}: {exc}")
                return
            except ServiceUnreachableError as exc:  # the shared store went away
                attempt += 1
                if attempt >= 2:  # the retry reconnected and failed too: the store is down, not a stale connection
                    self._drop(len(rows), str(exc))
                    return
            except Exception as exc:  # a store refusing the rows (PostgreSQL: a type, a constraint): never kill the thread
                self._drop(len(rows), f"{type(exc).__name__}: {' '.join(str(exc).split())}")
                return

    def _drop(self, n: int, why: str) -> None:
        """Count predictions that could not be logged, and say so: at once, then at most once a minute."""
        self.dropped += n
        self._on_dropped(n)
        now = time.monotonic()
        if self._failing_since is None or now - self._last_alarm >= 60:
            log.error("prediction log %s: %d predictions not logged, %d dropped so far: %s (the answers were sent; "
                      "logging resumes when it can write)", self.store, n, self.dropped, why)
            self._last_alarm = now
        if self._failing_since is None:
            self._failing_since = now

    def close(self, timeout_s: float = 30.0) -> None:
        """Write everything queued, then stop the thread; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._put(None)
        self._thread.join(timeout_s)
        if self._thread.is_alive():  # still writing: leave the connection to it (daemon thread)
            log.warning("prediction log still writing after %.0f s at shutdown", timeout_s)
            return
        self._conn.close()
        if self.dropped:
            log.warning("prediction log dropped %d events", self.dropped)


def _dumps(value: Any) -> str:
    """JSON text of a logged value: orjson (several times faster than json on the writer thread), json for
    what orjson refuses (NaN is written as NaN, as json always did, so old and new rows read alike)."""
    if _orjson is not None:
        try:
            text = _orjson.dumps(value, option=_ORJSON_OPTIONS).decode()
            if "null" not in text or not _has_nan(value):
                return text
        except TypeError:
            pass
    return json.dumps(value, default=str)


def _has_nan(value: Any) -> bool:
    if isinstance(value, float):
        return value != value or value in (math.inf, -math.inf)
    if isinstance(value, dict):
        return any(_has_nan(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_has_nan(v) for v in value)
    return False


try:
    import orjson as _orjson

    # datetimes, numpy values and non-text keys go to json (TypeError), which writes them as it always did
    _ORJSON_OPTIONS = _orjson.OPT_PASSTHROUGH_DATETIME
except ImportError:  # an image without orjson: json writes every row
    _orjson = None  # type: ignore[assignment]
    _ORJSON_OPTIONS = 0


def read_prediction_log(
    project: str,
    home: Path | None = None,
    *,
    last_n: int | None = None,
    since: datetime | str | float | None = None,
    traffic: Iterable[str] | None = ("live",),
    model_version: str | None = None,
) -> pd.DataFrame:
    """The logged predictions of a project, oldest first, one row per scored record.

    Args:
        project: project name.
        home: SLUICE_HOME (default: from the environment).
        last_n: only the newest `last_n` rows (after the traffic filter).
        since: only rows at or after this time (datetime, ISO string or epoch seconds; naive means UTC).
        traffic: which traffic to return (default live only: canary, shadow and health checks are
            not users); None returns every row.
        model_version: only the rows this registered version answered (None: every version).

    Returns:
        Columns `prediction_id`, `ts` (UTC timestamp), `endpoint`, `model_version`, `traffic`,
        `source` (model, fallback or error), one column per input feature (a feature whose name
        clashes with these is renamed `input_<name>`), `prediction` (a scalar: the label, the
        most probable class for /predict_proba, or the value), then `proba_<class>` per class
        seen (NaN on /predict rows). Every column has one Parquet-compatible type. Empty (with
        the fixed columns) when nothing matches. Old log files are read as they are: rows
        logged before prediction ids existed get `legacy-<row>` ids and traffic `live`.

    Raises:
        ServiceUnreachableError: the log is in PostgreSQL (SLUICE_PREDICTION_LOG_URL) and it does not answer.
    """
    conn = log_store(project, home).reader()
    if conn is None:
        return _empty()
    try:
        where, params = ("model_version = ?", [str(model_version)]) if model_version is not None else ("", [])
        rows = select_log_rows(conn, where, params, since=since, last_n=last_n, traffic=traffic)
    finally:
        conn.close()
    return log_frame(rows)


_LOG_FIELDS = ("id", "prediction_id", "ts", "endpoint", "model_version", "traffic", "source", "inputs", "outputs",
               "label", "probabilities")


def select_log_rows(conn: Any, where: str, params: list[Any], *, since: Any = None,
            last_n: int | None = None, traffic: Iterable[str] | None = ("live",),
            table_alias: str = "") -> list[tuple]:
    """Rows of `_LOG_FIELDS` (missing columns of an old file read as NULL), oldest first."""
    have = _table_columns(conn, "predictions")
    p = f"{table_alias}." if table_alias else ""
    cols = []
    for name in _LOG_FIELDS:
        if name in have:
            cols.append(f"{p}{name}")
        elif name == "traffic":
            cols.append("'live'")
        else:
            cols.append("NULL")
    clauses = [where] if where else []
    params = list(params)
    if since is not None:
        clauses.append(f"{p}ts >= ?")
        params.append(_epoch(since))
    if traffic is not None:
        tags = list(traffic)
        if "traffic" in have:
            clauses.append(f"COALESCE({p}traffic, 'live') IN ({', '.join('?' * len(tags))})" if tags else "1 = 0")
            params += tags
        elif "live" not in tags:
            clauses.append("1 = 0")
    query = f"SELECT {', '.join(cols)} FROM predictions {table_alias}"
    if clauses:
        query += " WHERE " + " AND ".join(f"({c})" for c in clauses)
    query += f" ORDER BY {p}id DESC"
    if last_n is not None:
        query += " LIMIT ?"
        params.append(int(last_n))
    rows = conn.execute(query, params).fetchall()
    rows.reverse()
    return rows


def _empty() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="datetime64[ns, UTC]" if c == "ts" else object) for c in
                         (*FIXED_COLUMNS, "prediction")})


def log_frame(rows: list[tuple]) -> pd.DataFrame:
    """Log rows as one flat, typed frame (see `read_prediction_log`)."""
    if not rows:
        return _empty()
    labels: list[Any] = []
    probas: list[dict[str, float] | None] = []
    for r in rows:
        outputs = _loads(r[8])
        proba = _loads(r[10]) if r[10] is not None else (outputs if isinstance(outputs, dict) else None)
        if r[9] is not None:
            label = _loads(r[9])
        elif isinstance(outputs, dict):  # an old /predict_proba row: the label is the most probable class
            label = _key_value(max(outputs, key=lambda k: outputs[k])) if outputs else None
        else:
            label = outputs
        if isinstance(label, list) and len(label) == 1:
            label = label[0]
        labels.append(label)
        probas.append(proba)
    base = pd.DataFrame({
        "prediction_id": [r[1] if r[1] is not None else f"legacy-{r[0]}" for r in rows],
        "ts": pd.to_datetime([r[2] for r in rows], unit="s", utc=True),
        "endpoint": [r[3] for r in rows],
        "model_version": [str(r[4]) for r in rows],
        "traffic": [r[5] or "live" for r in rows],
        "source": [r[6] for r in rows],
    })
    inputs = pd.DataFrame([_loads(r[7]) or {} for r in rows])
    reserved = {*FIXED_COLUMNS, "prediction"}
    inputs = inputs.rename(columns={c: f"input_{c}" for c in inputs.columns if c in reserved or str(c).startswith("proba_")})
    for col in inputs.columns:
        inputs[col] = uniform_column(inputs[col])
    classes: list[str] = []
    for p in probas:
        for k in p or {}:
            if k not in classes:
                classes.append(k)
    proba_cols = {f"proba_{c}": [float(p[c]) if p and c in p and p[c] is not None else math.nan for p in probas]
                  for c in classes}
    out = pd.concat([base, inputs, pd.DataFrame({"prediction": uniform_column(pd.Series(labels, dtype=object))}),
                     pd.DataFrame(proba_cols, dtype="float64")], axis=1)
    return out


def uniform_column(s: pd.Series) -> pd.Series:
    """One Parquet type per column: numbers stay numbers, anything mixed becomes text (nulls kept)."""
    s = s.reset_index(drop=True)
    if s.dtype != object:
        return s
    values = s.dropna()
    kinds = {("bool" if isinstance(v, bool) else "num" if isinstance(v, (int, float)) else
              "str" if isinstance(v, str) else "other") for v in values}
    if not kinds:
        return s
    if kinds == {"num"}:
        if all(isinstance(v, int) for v in values):
            return s if s.isna().any() else s.astype("int64")
        return pd.to_numeric(s, errors="coerce").astype("float64")
    if len(kinds) == 1 and kinds != {"other"}:
        return s
    return s.map(lambda v: v if v is None or (isinstance(v, float) and math.isnan(v)) else
                 (v if isinstance(v, str) else json.dumps(v, default=str)))


def _key_value(key: str) -> Any:
    """A probability key back to the label it names ("1" -> 1), as the old log stored only keys."""
    try:
        return int(key)
    except ValueError:
        return key


def _loads(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def _epoch(value: datetime | str | float) -> float:
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, pd.Timestamp):
        value = value.to_pydatetime()
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.timestamp()
