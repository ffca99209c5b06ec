"""Append-only prediction log: SQLite in WAL mode, written by a background thread, read back as a DataFrame."""

from __future__ import annotations

import json
import logging
import queue
import sqlite3
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

log = logging.getLogger(__name__)

DB_NAME = "predictions.sqlite"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS predictions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    project TEXT NOT NULL,
    model_version TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    source TEXT NOT NULL,
    inputs TEXT NOT NULL,
    outputs TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS predictions_ts ON predictions (ts);
"""


@dataclass(frozen=True)
class PredictionEvent:
    """One scored record: what came in, what went out, which model answered, when."""

    ts: float
    project: str
    model_version: str
    endpoint: str
    source: str
    inputs: dict[str, Any]
    outputs: Any


def log_path(home: Path, project: str) -> Path:
    """Where a project's prediction log lives: SLUICE_HOME/predictions/<project>/predictions.sqlite."""
    return home / "predictions" / project / DB_NAME


def _connect(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=30, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.executescript(_SCHEMA)
    return conn


class PredictionLog:
    """Queue of events drained by one writer thread, so requests never wait on disk.

    `record` only enqueues. The thread writes whatever has queued up in one transaction, at
    least every `flush_interval_s`. `close` drains the queue and waits for the last write; it
    runs at graceful shutdown. A full queue drops events (and counts them) rather than
    blocking requests.
    """

    def __init__(self, path: Path, flush_interval_s: float = 0.2, max_queue: int = 100_000):
        self.path = path
        self.flush_interval_s = flush_interval_s
        self.dropped = 0
        self.written = 0
        self._queue: queue.Queue[PredictionEvent | None] = queue.Queue(maxsize=max_queue)
        self._conn = _connect(path)
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    def record(self, events: list[PredictionEvent]) -> None:
        for ev in events:
            try:
                self._queue.put_nowait(ev)
            except queue.Full:
                self.dropped += 1

    def _run(self) -> None:
        stop = False
        while not stop:
            batch: list[PredictionEvent] = []
            try:
                item = self._queue.get(timeout=self.flush_interval_s)
            except queue.Empty:
                continue
            while True:
                if item is None:
                    stop = True
                else:
                    batch.append(item)
                if len(batch) >= 5000:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            if batch:
                self._write(batch)

    def _write(self, batch: list[PredictionEvent]) -> None:
        rows = [(e.ts, e.project, e.model_version, e.endpoint, e.source,
                 json.dumps(e.inputs, default=str), json.dumps(e.outputs, default=str)) for e in batch]
        for attempt in range(5):
            try:
                with self._conn:
                    self._conn.executemany(
                        "INSERT INTO predictions (ts, project, model_version, endpoint, source, inputs, outputs)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
                self.written += len(rows)
                return
            except sqlite3.OperationalError as exc:  # locked by another worker: wait and retry
                log.warning("prediction log write failed (%s), retry %d", exc, attempt + 1)
                time.sleep(0.2 * (attempt + 1))
        self.dropped += len(rows)

    def close(self, timeout_s: float = 10.0) -> None:
        """Write everything queued, then stop the thread; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._thread.join(timeout_s)
        self._conn.close()
        if self.dropped:
            log.warning("prediction log dropped %d events", self.dropped)


def read_prediction_log(
    project: str, last_n: int | None = None, since: datetime | str | float | None = None,
    home: Path | None = None,
) -> pd.DataFrame:
    """The logged predictions of a project, oldest first, one row per scored record.

    Args:
        project: project name.
        last_n: only the newest `last_n` rows.
        since: only rows at or after this time (datetime, ISO string or epoch seconds; naive means UTC).
        home: SLUICE_HOME (default: from the environment).

    Returns:
        Columns `ts` (UTC timestamp), `model_version`, `endpoint`, `source`, `prediction`, then one
        column per input feature. Empty (with the fixed columns) when nothing was logged yet.
    """
    if home is None:
        from sluicegate.settings import load_settings

        home = load_settings().home
    path = log_path(home, project)
    fixed = ["ts", "model_version", "endpoint", "source", "prediction"]
    if not path.exists():
        return pd.DataFrame(columns=fixed)
    query = "SELECT ts, model_version, endpoint, source, inputs, outputs FROM predictions"
    params: list[Any] = []
    if since is not None:
        query += " WHERE ts >= ?"
        params.append(_epoch(since))
    query += " ORDER BY id DESC"
    if last_n is not None:
        query += " LIMIT ?"
        params.append(int(last_n))
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30) as conn:
        rows = conn.execute(query, params).fetchall()
    rows.reverse()
    if not rows:
        return pd.DataFrame(columns=fixed)
    inputs = pd.DataFrame([json.loads(r[4]) for r in rows])
    base = pd.DataFrame({
        "ts": pd.to_datetime([r[0] for r in rows], unit="s", utc=True),
        "model_version": [r[1] for r in rows],
        "endpoint": [r[2] for r in rows],
        "source": [r[3] for r in rows],
        "prediction": [json.loads(r[5]) for r in rows],
    })
    return pd.concat([base, inputs], axis=1)


def _epoch(value: datetime | str | float) -> float:
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.timestamp()
