"""What a registered run records about where it came from (tags, library versions, pip requirements,
git SHA), and the checks that a tracking store answers before MLflow is asked (fail fast, never
"nothing there"). No MLflow import: `sluice run` probes the registry before importing MLflow."""

from __future__ import annotations

import json
import platform
import sqlite3
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

from sluicegate.errors import RegistryError
from sluicegate.procs import process_gone
from sluicegate.settings import redact

MODEL_PACKAGES = ("scikit-learn", "xgboost", "pandas", "numpy", "scipy", "cloudpickle", "pyarrow", "torch", "sluicegate")


def library_versions(names: tuple[str, ...] = MODEL_PACKAGES) -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def run_tags(project: str, task: str, target: str, data_fingerprint: str, data_snapshot: str, config_hash: str,
             config_path: str, root: Path, selected_candidate: str | None = None,
             request_rules: str | None = None) -> dict[str, str]:
    """The `sluice.*` tags of a training run: what it trained on, with which config, code and libraries.

    Args:
        project: project name.
        task: classification or regression.
        target: target column (serving and packaging read it back).
        data_fingerprint: content hash of the data snapshot.
        data_snapshot: path of the snapshot (the drift check's reference).
        config_hash: hash of the validated config.
        config_path: the project YAML.
        root: the project checkout (for the git SHA).
        selected_candidate: the candidate model selection chose, when there was a choice.
        request_rules: `validation.columns` rules as JSON (`serving.schema.request_rules`): the served
            model applies them to requests.

    Returns:
        Tag name to value.
    """
    return {
        "sluice.project": project,
        "sluice.task": task,
        "sluice.target": target,
        "sluice.data_fingerprint": data_fingerprint,
        "sluice.data_snapshot": data_snapshot,
        "sluice.config_hash": config_hash,
        "sluice.config_path": config_path,
        "sluice.git_sha": git_sha(root),
        **{f"sluice.lib.{k}": v for k, v in library_versions().items()},
        **({"sluice.selected_candidate": selected_candidate} if selected_candidate else {}),
        **({"sluice.request_rules": request_rules} if request_rules and request_rules != "{}" else {}),
    }


def uses_torch(model: Any) -> bool:
    """Whether a fitted pipeline holds a PyTorch estimator (its environment then needs torch)."""
    steps = getattr(model, "steps", None) or [(None, model)]
    return any(type(step).__module__.startswith("sluicegate.trainers.torch") for _, step in steps)


def pip_requirements(model: Any = None) -> list[str]:
    """Pinned requirements for the logged model (inference by MLflow costs 7-20 s a call).

    torch (the CPU build, ~700 MB) is listed only for models that use it.
    """
    vers = library_versions()
    skip = {"python", "sluicegate"} | (set() if model is not None and uses_torch(model) else {"torch"})
    return [f"{n}=={v}" for n, v in vers.items() if n not in skip]


def git_sha(folder: Path) -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, timeout=5)
        sha = out.stdout.strip()
        if out.returncode == 0 and sha:
            dirty = subprocess.run(["git", "status", "--porcelain"], cwd=folder, capture_output=True, text=True, timeout=5)
            return sha + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return "unknown"


def prepare_sqlite(uri: str, timeout_s: int = 30) -> str:
    """WAL mode and a busy timeout, so parallel writers wait instead of failing.

    Raises:
        RegistryError: the database file is empty, corrupt or cannot be written (disk full).
    """
    if not uri.startswith("sqlite:///"):
        return uri
    path = Path(uri[len("sqlite:///"):].split("?")[0])
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and path.stat().st_size == 0:
        raise RegistryError(f"the MLflow database {path} is an empty file (0 bytes), not a registry: restore it "
                            f"from a backup, or delete it to start an empty registry")
    try:
        with sqlite3.connect(path, timeout=timeout_s) as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            bad = conn.execute("PRAGMA quick_check").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        raise RegistryError(_sqlite_problem(path, exc)) from None
    if bad != "ok":
        raise RegistryError(_sqlite_problem(path, sqlite3.DatabaseError(bad)))
    return uri if "?" in uri else f"{uri}?timeout={timeout_s}"


def _sqlite_problem(path: Path, exc: Exception) -> str:
    text = str(exc)
    if "malformed" in text or "not a database" in text or "file is encrypted" in text:
        return (f"the MLflow database {path} is corrupt ({text}); restore it from a backup "
                f"(SLUICE_HOME state is not rebuilt automatically)")
    if "disk I/O" in text or "full" in text or "readonly" in text:
        return f"the MLflow database {path} cannot be written ({text}): is the disk full or read-only?"
    return f"the MLflow database {path} cannot be opened: {text}"


# MLflow's HTTP client retries 7 times with exponential backoff and waits 120 s per request by default:
# against a dead server that is minutes of silence. Fail within seconds instead (the user's settings win).
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                 "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}
CONNECT_TIMEOUT_S = 3.0


def probe_store(uri: str, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """Fail within seconds when a tracking/registry server or database does not accept connections.

    Raises:
        RegistryError: nothing answers at the URI's host and port (exit code 8), the URI named.
    """
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(uri)
    scheme = parts.scheme.split("+")[0]
    ports = {"http": 80, "https": 443, "postgresql": 5432, "postgres": 5432, "mysql": 3306, "mssql": 1433}
    if scheme not in ports or not parts.hostname:
        return
    try:
        with socket.create_connection((parts.hostname, parts.port or ports[scheme]), timeout=timeout_s):
            pass
    except OSError as exc:
        raise registry_unreachable(uri, exc) from None


def registry_unreachable(uri: str, exc: Exception) -> RegistryError:
    """The error for a registry at `uri` that does not answer (exit code 8), the URI redacted."""
    return RegistryError(f"the model registry at {redact(uri)} does not answer ({exc}); start it or "
                         f"point MLFLOW_TRACKING_URI at a running server")


def version_verdict(tags: dict[str, str], run_status: str | None, run_tag_values: dict[str, str]) -> dict[str, str]:
    """A registered version's verdict and summary; never None: an undecided version says why it has none.

    Args:
        tags: the version's tags (`sluice.verdict`, `sluice.verdict_summary` once decided).
        run_status: its training run's MLflow status, None when the run could not be read.
        run_tag_values: that run's tags (`sluice.pid`, `sluice.host`: who owns it).

    Returns:
        {"verdict", "summary"}: the recorded verdict; "pending" while a live process still trains
        it; else "none" (the run was interrupted before its gates).
    """
    verdict = tags.get("sluice.verdict")
    if verdict:
        return {"verdict": verdict, "summary": tags.get("sluice.verdict_summary") or verdict}
    if run_status == "RUNNING" and process_gone(run_tag_values.get("sluice.pid"), run_tag_values.get("sluice.host")) is None:
        return {"verdict": "pending", "summary": "no verdict yet (its training run is still in progress)"}
    return {"verdict": "none", "summary": "no verdict (interrupted run): re-run `sluice run` with the same "
                                          "config to finish it"}


def _is_absent(exc: Exception) -> bool:
    """MLflow's way of saying "no such model / alias", as opposed to "could not ask"."""
    code = getattr(exc, "error_code", "")
    text = str(exc)
    return code == "RESOURCE_DOES_NOT_EXIST" or (code == "INVALID_PARAMETER_VALUE" and "alias" in text
                                                 and "not found" in text)


# ---------------------------------------------------------------- the audit trail, as both readers store and read it
AUDIT_SUFFIX = ".audit"  # the experiment `<project>.audit` holds a project's audit trail (project names have no dots)
AUDIT_TAG = "sluice.audit.record"  # the record as JSON; cut to fit MLflow's tag limit, then marked truncated


def audit_tag_value(record: dict[str, Any], limit: int = 7900) -> str:
    """The record for its tag: whole, or (over MLflow's tag limit) shortened and marked truncated."""
    blob = json.dumps(record, default=str)
    if len(blob) > limit:  # the artifact `audit_record.json` keeps the whole record
        short = {**record, "why": str(record.get("why", ""))[:2000], "details": {"truncated": True}}
        blob = json.dumps(short, default=str)[:limit]
    return blob


def audit_records_from_tags(rows: list[tuple[str | None, Any]], whole: Callable[[Any], dict[str, Any] | None]) -> list[dict[str, Any]]:
    """Audit records from (tag value, run handle) pairs, newest first by the record's own timestamp.

    A tag value that is missing, not JSON, or marked truncated is replaced by `whole(handle)` (the
    run's `audit_record.json`); when that cannot be read either, the short record is kept.
    """
    out = []
    for blob, handle in rows:
        try:
            rec = json.loads(blob) if blob is not None else {"details": {"truncated": True}}
        except ValueError:
            rec = {"details": {"truncated": True}}
        if (rec.get("details") or {}).get("truncated"):
            rec = whole(handle) or rec
        out.append(rec)
    # runs started in the same millisecond: the record's own microsecond timestamp orders them
    return sorted(out, key=lambda r: str(r.get("when", "")), reverse=True)
