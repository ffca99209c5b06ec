"""A read-only view of the MLflow model registry for `sluice status`, without importing MLflow.

`import mlflow` costs ~4 s (plus pandas), more than the whole budget of `sluice status`. This
reader answers the same questions as `Tracker.status` and `Tracker.projects`:

- SQLite URIs: read-only SQL on MLflow's own tables (`registered_models`, `model_versions`,
  `registered_model_aliases`, `model_version_tags`, `latest_metrics`, `runs`), default workspace;
- http(s) URIs: MLflow's REST API over urllib;
- anything else (Postgres, MySQL, databricks, a registry URI apart from the tracking URI):
  `reader_for` returns None and the caller uses the full `Tracker`.

It depends on MLflow's storage schema and REST API, which MLflow may change: the parity test in
tests/unit/test_registry_reader.py compares it with `Tracker.status` on the same database, so a
change fails a test instead of printing a wrong status. It never writes (the SQLite file is
opened with `mode=ro`), and it never imports mlflow, so `tracking.py` stays MLflow's only owner.
"""

from __future__ import annotations

import json
import sqlite3
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Protocol

from sluicegate.errors import RegistryError
from sluicegate.settings import Settings, redact
from sluicegate.stores import AUDIT_SUFFIX, AUDIT_TAG, audit_records_from_tags, registry_unreachable, version_verdict

CHAMPION = "champion"  # the same names as tracking.CHAMPION (importing tracking would import pandas)
DELETED_STAGE = "Deleted_Internal"  # MLflow marks a deleted version so in model_versions
WORKSPACE = "default"
HTTP_TIMEOUT_S = 10.0


class RegistryReader(Protocol):
    def projects(self) -> list[str]: ...

    def status(self, project: str) -> dict[str, Any]: ...

    def champion_record(self, project: str) -> dict[str, Any] | None: ...


def reader_for(settings: Settings) -> RegistryReader | None:
    """A light reader for the settings' stores, or None when only MLflow itself can read them."""
    if settings.tracking_uri != settings.registry_uri:
        return None
    uri = settings.tracking_uri
    if uri.startswith("sqlite:///"):
        return SqliteRegistryReader(uri)
    if uri.startswith(("http://", "https://")):
        return HttpRegistryReader(uri)
    return None


def _status(project: str, tracking_uri: str, champ: dict | None, versions: list[int], latest: dict | None,
            decision: dict | None) -> dict[str, Any]:
    """The dict `Tracker.status` returns, from plain records {version, metrics, tags}."""
    return {
        "project": project,
        "tracking_uri": redact(tracking_uri),
        "champion": int(champ["version"]) if champ else None,
        "champion_uri": f"models:/{project}@champion" if champ else None,
        "metrics": {k: v for k, v in (champ["metrics"] if champ else {}).items() if k.startswith("test_")},
        "data_fingerprint": champ["tags"].get("sluice.data_fingerprint") if champ else None,
        "config_hash": champ["tags"].get("sluice.config_hash") if champ else None,
        "versions": len(versions),
        "latest_version": int(latest["version"]) if latest else None,
        "last_verdict": {
            "version": int(latest["version"]),
            **version_verdict(latest["tags"], latest.get("run_status"), latest.get("run_tags") or {}),
            "checks": (decision or {}).get("checks"),
        } if latest else None,
    }


def _local_artifact(artifact_uri: str, name: str) -> dict | None:
    """A JSON artifact stored on this machine's disk, or None (absent, remote, unreadable)."""
    if artifact_uri.startswith("file://"):
        path = Path(urllib.parse.unquote(urllib.parse.urlsplit(artifact_uri).path))
    elif "://" not in artifact_uri and ":" not in artifact_uri.split("/")[0]:
        path = Path(artifact_uri)
    else:
        return None
    try:
        return json.loads((path / name).read_text())
    except (OSError, ValueError):
        return None


class SqliteRegistryReader:
    """Read-only SQL on an MLflow SQLite store (what `Tracker.status` reads through MLflow)."""

    def __init__(self, uri: str):
        self.uri = uri
        self.path = Path(uri[len("sqlite:///"):].split("?")[0])

    def _connect(self) -> sqlite3.Connection | None:
        if not self.path.exists():
            return None  # no registry yet: nothing is registered (Tracker would create an empty one)
        try:
            conn = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
            conn.execute("SELECT 1 FROM model_versions LIMIT 1")
            return conn
        except sqlite3.DatabaseError as exc:
            raise RegistryError(f"the MLflow database {self.path} cannot be read: {exc}") from None

    def projects(self) -> list[str]:
        conn = self._connect()
        if conn is None:
            return []
        with conn:
            rows = conn.execute("SELECT name FROM registered_models WHERE workspace = ?", (WORKSPACE,)).fetchall()
        return sorted(r[0] for r in rows)

    def _record(self, conn: sqlite3.Connection, project: str, version: int) -> dict:
        run_id, artifact_uri, run_status = conn.execute(
            "SELECT mv.run_id, r.artifact_uri, r.status FROM model_versions mv LEFT JOIN runs r ON r.run_uuid = mv.run_id "
            "WHERE mv.workspace = ? AND mv.name = ? AND mv.version = ?", (WORKSPACE, project, version)).fetchone()
        tags = dict(conn.execute("SELECT key, value FROM model_version_tags WHERE workspace = ? AND name = ? AND version = ?",
                                 (WORKSPACE, project, version)).fetchall())
        metrics = {k: (float("nan") if is_nan else v) for k, v, is_nan in conn.execute(
            "SELECT key, value, is_nan FROM latest_metrics WHERE run_uuid = ?", (run_id,)).fetchall()}
        run_tags = dict(conn.execute("SELECT key, value FROM tags WHERE run_uuid = ? AND key IN ('sluice.pid', 'sluice.host')",
                                     (run_id,)).fetchall())
        return {"version": version, "run_id": run_id, "artifact_uri": artifact_uri or "", "metrics": metrics, "tags": tags,
                "run_status": run_status, "run_tags": run_tags}

    def champion_record(self, project: str) -> dict[str, Any] | None:
        """The champion's `{version, run_id, metrics, tags, ...}`; None when there is none."""
        conn = self._connect()
        if conn is None:
            return None
        with conn:
            alias = conn.execute("SELECT version FROM registered_model_aliases WHERE workspace = ? AND name = ? AND alias = ?",
                                 (WORKSPACE, project, CHAMPION)).fetchone()
            return self._record(conn, project, alias[0]) if alias else None

    def status(self, project: str) -> dict[str, Any]:
        conn = self._connect()
        if conn is None:
            return _status(project, self.uri, None, [], None, None)
        with conn:
            versions = [r[0] for r in conn.execute(
                "SELECT version FROM model_versions WHERE workspace = ? AND name = ? AND "
                "(current_stage IS NULL OR current_stage != ?)", (WORKSPACE, project, DELETED_STAGE)).fetchall()]
            alias = conn.execute("SELECT version FROM registered_model_aliases WHERE workspace = ? AND name = ? AND alias = ?",
                                 (WORKSPACE, project, CHAMPION)).fetchone()
            champ = self._record(conn, project, alias[0]) if alias else None
            latest = self._record(conn, project, max(versions)) if versions else None
        decision = _local_artifact(latest["artifact_uri"], "gate_decision.json") if latest else None
        return _status(project, self.uri, champ, versions, latest, decision)

    def audit_records(self, project: str, limit: int | None = None) -> list[dict[str, Any]]:
        """What `Tracker.audit_records` returns (`sluice history`), by SQL on the runs of `<project>.audit`."""
        conn = self._connect()
        if conn is None:
            return []
        with conn:
            exp = conn.execute("SELECT experiment_id FROM experiments WHERE workspace = ? AND name = ?",
                               (WORKSPACE, f"{project}{AUDIT_SUFFIX}")).fetchone()
            if exp is None:
                return []
            rows = conn.execute(
                "SELECT r.artifact_uri, rec.value FROM runs r "
                "JOIN tags kind ON kind.run_uuid = r.run_uuid AND kind.key = 'sluice.kind' AND kind.value = 'audit' "
                f"LEFT JOIN tags rec ON rec.run_uuid = r.run_uuid AND rec.key = '{AUDIT_TAG}' "
                "WHERE r.experiment_id = ? AND r.lifecycle_stage = 'active' ORDER BY r.start_time DESC"
                + (" LIMIT ?" if limit else ""), (exp[0], *((int(limit),) if limit else ()))).fetchall()
        return audit_records_from_tags([(blob, uri) for uri, blob in rows],
                                       lambda uri: _local_artifact(uri or "", "audit_record.json"))


class HttpRegistryReader:
    """MLflow's REST API over urllib (what MlflowClient calls, without importing it)."""

    def __init__(self, uri: str):
        self.uri = uri.rstrip("/")

    def _get(self, route: str, **params: Any) -> dict | None:
        """GET a JSON endpoint; None for RESOURCE_DOES_NOT_EXIST."""
        url = f"{self.uri}{route}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT_S) as resp:
                return json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as exc:
            body = exc.read().decode(errors="replace")
            if exc.code == 404 or "RESOURCE_DOES_NOT_EXIST" in body:
                return None
            raise RegistryError(f"the model registry at {redact(self.uri)} answered {exc.code} to {route}: {body[:300]}") from None
        except (OSError, ValueError) as exc:
            raise registry_unreachable(self.uri, exc) from None

    def projects(self) -> list[str]:
        names: list[str] = []
        token = None
        while True:
            page = self._get("/api/2.0/mlflow/registered-models/search", max_results=1000,
                             **({"page_token": token} if token else {})) or {}
            names += [m["name"] for m in page.get("registered_models", [])]
            token = page.get("next_page_token")
            if not token:
                return sorted(names)

    def _record(self, mv: dict) -> dict:
        run = (self._get("/api/2.0/mlflow/runs/get", run_id=mv["run_id"]) or {}).get("run", {})
        metrics = {m["key"]: m["value"] for m in run.get("data", {}).get("metrics", [])}
        return {"version": int(mv["version"]), "run_id": mv["run_id"], "metrics": metrics,
                "tags": {t["key"]: t.get("value") for t in mv.get("tags", [])},
                "run_status": run.get("info", {}).get("status"),
                "run_tags": {t["key"]: t.get("value") for t in run.get("data", {}).get("tags", [])}}

    def champion_record(self, project: str) -> dict[str, Any] | None:
        """The champion's `{version, run_id, metrics, tags, ...}`; None when there is none."""
        found = self._get("/api/2.0/mlflow/registered-models/alias", name=project, alias=CHAMPION)
        return self._record(found["model_version"]) if found else None

    def status(self, project: str) -> dict[str, Any]:
        versions: list[int] = []
        token = None
        while True:
            page = self._get("/api/2.0/mlflow/model-versions/search", filter=f"name = '{project}'", max_results=1000,
                             **({"page_token": token} if token else {})) or {}
            versions += [int(m["version"]) for m in page.get("model_versions", [])]
            token = page.get("next_page_token")
            if not token:
                break
        found = self._get("/api/2.0/mlflow/registered-models/alias", name=project, alias=CHAMPION)
        champ = self._record(found["model_version"]) if found else None
        latest = None
        decision = None
        if versions:
            mv = (self._get("/api/2.0/mlflow/model-versions/get", name=project, version=str(max(versions))) or {})
            latest = self._record(mv["model_version"])
            try:
                decision = self._get("/get-artifact", path="gate_decision.json", run_uuid=latest["run_id"])
            except RegistryError:
                decision = None
        return _status(project, self.uri, champ, versions, latest, decision)
