"""Package a registered model version as a Bento (the only BentoML import besides the service template)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from sluicegate.config import DeployConfig, PackagingConfig
from sluicegate.data import hash_file
from sluicegate.errors import ConfigError, DeployError, RegistryError
from sluicegate.serving.schema import FeatureSchema, apply_request_rules, infer_feature_schema
from sluicegate.settings import Settings, make_private
from sluicegate.stores import library_versions, pip_requirements
from sluicegate.tracking import ModelRecord, Tracker

log = logging.getLogger(__name__)

SERVICE_FILE = "service.py"
CONFIG_FILE = "sluice_service.json"
CANARY_FILE = "canary.json"
ONNX_DIR = "onnx"  # in the version's run (MLflow artifacts) and in the Bento's model folder
PARITY_FILE = "parity.json"
ONNX_TAG = "sluice.onnx"  # ok | failed | unsupported, on the version and its run
ONNX_REASON_TAG = "sluice.onnx_reason"
TEST_PATH_TAG = "sluice.test_path"  # the version's holdout split (set at registration)
PARITY_ROWS = 5000  # holdout rows the graph is compared on when there is no test split


@dataclass(frozen=True)
class BentoResult:
    """A built Bento and the model inside it."""

    project: str
    version: str
    bento_tag: str
    model_tag: str
    bento_path: str
    model_sha256: str
    task: str
    reused: bool = False
    runtime: str = "native"  # what scores requests: onnx or native (see `choose_runtime`)

    @property
    def dockerfile(self) -> str:
        return str(Path(self.bento_path) / "env" / "docker" / "Dockerfile")


@dataclass(frozen=True)
class PackageInputs:
    """Everything a Bento is built from, gathered from the registry and the data snapshot."""

    record: ModelRecord
    model: Any
    previous: tuple[str, Any] | None
    schema: FeatureSchema
    canary: pd.DataFrame
    trained_at: str
    target: str | None = None
    id_column: str | None = None
    onnx: OnnxStatus | None = None


@dataclass(frozen=True)
class OnnxStatus:
    """A version's ONNX export as stored with it: `ok` (graph passed parity), `failed` (parity did
    not hold), `unsupported` (no converter); `folder` holds model.onnx, onnx.json, parity.json."""

    status: str
    reason: str | None
    folder: str | None
    parity: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok" and self.folder is not None


@dataclass(frozen=True)
class RuntimeChoice:
    """What scores requests in the Bento (`onnx` or `native`), and why."""

    name: str
    reason: str


def choose_runtime(requested: str, onnx: OnnxStatus | None) -> RuntimeChoice:
    """`packaging.runtime` against the version's ONNX status: auto serves the graph only where parity held.

    Raises:
        DeployError: `runtime: onnx` was asked for and the version has no graph that passed parity.
    """
    if requested == "native":
        return RuntimeChoice("native", "packaging.runtime: native")
    if onnx is not None and onnx.ok:
        rows = (onnx.parity or {}).get("rows")
        return RuntimeChoice("onnx", f"ONNX graph matched the native pipeline on {rows} holdout rows")
    why = "no ONNX export was made" if onnx is None else f"ONNX export {onnx.status}: {onnx.reason}"
    if requested == "onnx":
        raise DeployError(f"packaging.runtime: onnx, but {why}; set packaging.runtime: auto to serve the native "
                          "pipeline instead")
    return RuntimeChoice("native", why)


def bentoml_env(settings: Settings) -> dict[str, str]:
    """Environment for BentoML in this process and its children: the store under settings, no telemetry."""
    return {"BENTOML_HOME": str(settings.bentoml_home), "BENTOML_DO_NOT_TRACK": "true"}


def _bentoml(settings: Settings) -> Any:
    os.environ.update(bentoml_env(settings))  # read by BentoML when first imported
    settings.bentoml_home.mkdir(parents=True, exist_ok=True)
    import bentoml

    return bentoml


def safe_name(project: str) -> str:
    """BentoML tag names allow lowercase letters, digits, '-', '_' and '.'."""
    return "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in project.lower()).strip("-_.")


def feature_frame_columns(model: Any) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """(numeric, categorical, datetime) raw columns the full pipeline's feature step reads."""
    steps = getattr(model, "named_steps", {})
    features = steps.get("features") if hasattr(steps, "get") else None
    cols = getattr(features, "columns", None)
    if cols is None:
        raise DeployError("the registered model is not a sluicegate pipeline (no 'features' step with columns); "
                          "re-train it with `sluice run`")
    return tuple(cols.numeric), tuple(cols.categorical), tuple(cols.datetime)


def gather_package_inputs(tracker: Tracker, project: str, version: str | None, canary_rows: int,
                          fallback: str = "none", task: str = "classification", export: bool = True) -> PackageInputs:
    """Load a version (default: the champion), its training data schema and held-out canary rows.

    Canary rows come from the tail of the data snapshot (the rows least likely to be the first
    training rows); their offline predictions are stored in the Bento and compared at deploy.
    With `export`, the version's ONNX export and parity report are read from the registry, or
    made and stored there on first packaging (`prepare_onnx`).

    Raises:
        RegistryError: no such version, or no champion.
        DeployError: the data snapshot the version was trained on is gone.
    """
    record = tracker.version(project, version) if version else tracker.champion(project)
    if record is None:
        raise RegistryError(f"{project}: no champion to package; train one with `sluice run` first")
    model = tracker.load_model(record.model_uri)
    from sluicegate.monitoring import champion_cache_dir

    tagged = record.tags.get("sluice.data_snapshot")
    snapshot = tracker.local_version_file(record, tagged, "snapshot.parquet",
                                          champion_cache_dir(tracker.settings.home, project, record.version)) \
        if tagged else None
    if snapshot is None:
        raise DeployError(f"{project} v{record.version}: training data snapshot {tagged!r} is missing; "
                          "the request schema is built from it (re-run training to recreate it)")
    frame = pd.read_parquet(snapshot)
    numeric, categorical, dtimes = feature_frame_columns(model)
    schema = infer_feature_schema(frame, numeric, categorical, dtimes)
    canary = frame[schema.columns].tail(canary_rows).reset_index(drop=True)
    previous = None
    prev_version = record.tags.get("sluice.promoted_from")
    if fallback == "previous" and prev_version not in (None, "", "None", record.version):
        try:
            previous = (prev_version, tracker.load_model(tracker.version(project, prev_version).model_uri))
        except Exception as exc:  # no fallback is better than no deploy
            log.warning("%s: previous v%s not loadable (%s); packaging without fallback", project, prev_version, exc)
    run = tracker.client.get_run(record.run_id)
    trained_at = datetime.fromtimestamp(run.info.start_time / 1000, tz=timezone.utc).isoformat()
    onnx = None
    if export:
        work = Path(tempfile.mkdtemp(prefix=f"onnx-{safe_name(project)}-v{record.version}-",
                                     dir=make_private(tracker.settings.home / "bento-build")))
        onnx = prepare_onnx(tracker, record, model, holdout_frame(record, frame, schema.columns), task, work)
    return PackageInputs(record, model, previous, schema, canary, trained_at, record.tags.get("sluice.target"),
                         _id_column(record, frame), onnx)


def holdout_frame(record: ModelRecord, snapshot: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """The rows the ONNX graph is compared on: the version's test split, else the snapshot's tail."""
    path = record.tags.get(TEST_PATH_TAG)
    if path and Path(path).is_file():
        test = pd.read_parquet(path)
        if set(columns) <= set(test.columns) and len(test):
            return test[columns].reset_index(drop=True)
    return snapshot[columns].tail(PARITY_ROWS).reset_index(drop=True)


def prepare_onnx(tracker: Tracker, record: ModelRecord, model: Any, holdout: pd.DataFrame, task: str,
                 work: Path) -> OnnxStatus:
    """The version's ONNX export and parity report: read back when stored, else made and stored.

    Stored with the version's run as `onnx/model.onnx`, `onnx/onnx.json`, `onnx/parity.json`
    (MLflow artifacts), and as the tags `sluice.onnx` (ok | failed | unsupported) and
    `sluice.onnx_reason` on the version and its run. A version that does not convert, or whose
    graph disagrees with the native pipeline on the holdout, says why and is served natively.
    """
    status = record.tags.get(ONNX_TAG)
    if status in ("ok", "failed", "unsupported"):
        folder = tracker.download_version_files(record, ONNX_DIR, work)
        if folder is not None and (status != "ok" or (folder / "model.onnx").is_file()):
            parity = json.loads((folder / PARITY_FILE).read_text()) if (folder / PARITY_FILE).is_file() else None
            return OnnxStatus(status, record.tags.get(ONNX_REASON_TAG) or None, str(folder), parity)
    from sluicegate.onnx_export import check_parity, export_onnx

    folder = work / ONNX_DIR
    folder.mkdir(parents=True, exist_ok=True)
    export = export_onnx(model, holdout.head(8), task)
    parity = None
    if not export.ok:
        status, reason = "unsupported", export.reason
        (folder / "onnx.json").write_text(json.dumps(export.to_dict(), indent=2, default=str))
    else:
        export.save(folder)
        report = check_parity(model, export, holdout, task)
        parity = report.to_dict()
        (folder / PARITY_FILE).write_text(json.dumps(parity, indent=2, default=str))
        status, reason = ("ok", None) if report.passed else ("failed", parity_failure(report))
    tracker.log_version_files(record, folder, ONNX_DIR, {ONNX_TAG: status, ONNX_REASON_TAG: reason or ""})
    log.info("%s v%s: ONNX export %s%s", record.project, record.version, status, f" ({reason})" if reason else "")
    return OnnxStatus(status, reason, str(folder), parity)


def parity_failure(report: Any) -> str:
    """One line on why a graph failed parity (a `ParityReport`)."""
    parts = []
    if report.max_abs_diff is not None and report.max_abs_diff > report.limit:
        parts.append(f"max |difference| {report.max_abs_diff:.3g} > limit {report.limit:.3g}")
    unexplained = report.label_mismatches - report.near_ties
    if unexplained > 0:
        parts.append(f"{unexplained} labels differ")
    what = "; ".join(parts) or "the check did not pass"
    return f"parity failed on {report.rows} holdout rows ({report.compared}): {what}"


def _id_column(record: ModelRecord, frame: pd.DataFrame) -> str | None:
    """The project's `data.id_column`, read from the config the version was trained with (labels may join on it)."""
    path = record.tags.get("sluice.config_path")
    if not path or not Path(path).is_file():
        return None
    try:
        from sluicegate.config import load_config

        column = load_config(path).data.id_column
    except Exception as exc:  # the YAML moved on since training: serve without id matching
        log.warning("%s v%s: id column not read from %s (%s)", record.project, record.version, path, exc)
        return None
    return column if column in frame.columns else None


def build_bento(inputs: PackageInputs, packaging: PackagingConfig, deploy: DeployConfig, task: str,
                settings: Settings) -> BentoResult:
    """Save the model in the BentoML store and build a Bento serving it.

    The Bento holds the service template, its JSON config, a copy of the `sluicegate` package
    (the pickled pipeline refers to its classes) and the model with canary rows and their
    offline predictions. Building the same inputs twice reuses the existing Bento.

    Args:
        inputs: the version, its model and schema (see `gather_package_inputs`).
        packaging: the `packaging` section.
        deploy: the `deploy` section (host and port the service binds by default).
        task: classification or regression.
        settings: runtime locations (BENTOML_HOME).

    Returns:
        A `BentoResult` naming the Bento and model tags.

    Raises:
        DeployError: BentoML failed to build.
    """
    import joblib

    bentoml = _bentoml(settings)
    rec = inputs.record
    try:  # requests are held to the rules the version's training data was validated against
        served = apply_request_rules(inputs.schema, rec.tags.get("sluice.request_rules"), packaging.optional_fields)
    except ValueError as exc:
        raise ConfigError([str(exc)]) from None
    name = safe_name(rec.project)
    work = settings.home / "bento-build" / name
    work.mkdir(parents=True, exist_ok=True)
    staged = work / f"model-v{rec.version}.pkl"
    joblib.dump(inputs.model, staged)
    model_sha = hash_file(staged)
    runtime = choose_runtime(packaging.runtime, inputs.onnx)
    onnx_dir = Path(inputs.onnx.folder) if inputs.onnx is not None and inputs.onnx.folder else None
    onnx_sha = hash_file(onnx_dir / "model.onnx") if onnx_dir and (onnx_dir / "model.onnx").is_file() else None
    # the graph is part of what the model tag names: a version re-packaged with its export is a new model
    model_tag = f"{name}:v{rec.version}-" + (model_sha[:12] if onnx_sha is None else
                                            hashlib.sha256((model_sha + onnx_sha).encode()).hexdigest()[:12])
    # the canary's expected answers come from the runtime that will serve (parity compared it with native)
    canary = _canary_payload(inputs.model, inputs.canary, task,
                             _predictor(onnx_dir) if runtime.name == "onnx" else None)
    onnx_meta = None if inputs.onnx is None else {
        "status": inputs.onnx.status, "reason": inputs.onnx.reason,
        "parity": {k: (inputs.onnx.parity or {}).get(k) for k in
                   ("rows", "compared", "max_abs_diff", "limit", "labels_equal", "passed")} if inputs.onnx.parity else None}
    metadata = {
        "project": rec.project,
        "version": rec.version,
        "run_id": rec.run_id,
        "task": task,
        "data_fingerprint": rec.tags.get("sluice.data_fingerprint", "unknown"),
        "git_sha": rec.tags.get("sluice.git_sha", "unknown"),
        "trained_at": inputs.trained_at,
        "config_hash": rec.tags.get("sluice.config_hash", "unknown"),
        "metrics": {k: v for k, v in rec.metrics.items() if k.startswith("test_")},
        "feature_schema": inputs.schema.to_dict(),
        "classes": [_plain(c) for c in getattr(inputs.model, "classes_", [])] or None,
        "previous_version": inputs.previous[0] if inputs.previous else None,
        "model_sha256": model_sha,
        "libraries": library_versions(),
    }
    try:
        bentoml.models.get(model_tag)
    except bentoml.exceptions.NotFound:
        with bentoml.models.create(model_tag, labels={"project": rec.project, "version": rec.version},
                                   metadata=_flat(metadata)) as m:
            shutil.copyfile(staged, m.path_of("model.pkl"))
            if inputs.previous is not None:
                joblib.dump(inputs.previous[1], m.path_of("previous.pkl"))
            Path(m.path_of(CANARY_FILE)).write_text(json.dumps(canary))
            if onnx_dir is not None:
                shutil.copytree(onnx_dir, m.path_of(ONNX_DIR))
    staged.unlink(missing_ok=True)

    service_config = {
        "project": rec.project,
        "service_name": f"{name}-service".replace(".", "-"),
        "version": rec.version,
        "task": task,
        "model_tag": model_tag,
        "model_sha256": model_sha,
        "previous_version": metadata["previous_version"],
        "runtime": {"name": runtime.name, "reason": runtime.reason, "onnx_sha256": onnx_sha},
        "schema": served.to_dict(),
        "host": deploy.host,
        "port": deploy.port,
        "packaging": {
            **packaging.model_dump(mode="json", exclude={"auth_token"}),
            "auth_token_env": packaging.auth_token.env if packaging.auth_token else None,
        },
        "labels": {"target": inputs.target, "id_column": inputs.id_column, "classes": metadata["classes"]},
        "metadata": {k: metadata[k] for k in ("project", "version", "task", "data_fingerprint", "git_sha",
                                              "trained_at", "config_hash", "metrics", "feature_schema",
                                              "classes", "previous_version")},
    }
    service_config["metadata"] |= {"runtime": runtime.name, "runtime_reason": runtime.reason, "onnx": onnx_meta}
    blob = json.dumps(service_config, sort_keys=True)
    code = _package_fingerprint()
    bento_version = f"v{rec.version}-{hashlib.sha256((blob + code).encode()).hexdigest()[:12]}"
    bento_tag = f"{name}:{bento_version}"
    try:
        existing = bentoml.bentos.get(bento_tag)
        return BentoResult(rec.project, rec.version, bento_tag, model_tag, str(existing.path), model_sha, task, True,
                           runtime.name)
    except bentoml.exceptions.NotFound:
        pass

    ctx = work / bento_version
    if ctx.exists():
        shutil.rmtree(ctx)
    ctx.mkdir(parents=True)
    template = Path(__file__).with_name("serving") / SERVICE_FILE
    shutil.copyfile(template, ctx / SERVICE_FILE)
    (ctx / CONFIG_FILE).write_text(json.dumps(service_config, indent=2))
    shutil.copytree(Path(__file__).parent, ctx / "sluicegate",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
    sys.modules.pop("service", None)  # BentoML imports the service by module name
    previous_env = os.environ.pop("SLUICE_SERVICE_CONFIG", None)
    try:
        bento = bentoml.bentos.build(
            "service:SluiceService",
            name=name,
            version=bento_version,
            build_ctx=str(ctx),
            include=[SERVICE_FILE, CONFIG_FILE, "sluicegate/**"],
            labels={"project": rec.project, "model_version": rec.version},
            description=f"{rec.project} model v{rec.version} served by sluicegate",
            python={"packages": _bento_requirements(inputs.model, runtime.name == "onnx"), "lock_packages": False},
            docker={"python_version": "3.11"},
        )
    except Exception as exc:
        raise DeployError(f"{rec.project} v{rec.version}: bentoml build failed: {type(exc).__name__}: {exc}") from exc
    finally:
        sys.modules.pop("service", None)
        if previous_env is not None:
            os.environ["SLUICE_SERVICE_CONFIG"] = previous_env
        shutil.rmtree(ctx, ignore_errors=True)
    log.info("built bento %s (model %s, runtime %s: %s)", bento.tag, model_tag, runtime.name, runtime.reason)
    return BentoResult(rec.project, rec.version, str(bento.tag), model_tag, str(bento.path), model_sha, task, False,
                       runtime.name)


def package_model(tracker: Tracker, project: str, version: str | None, packaging: PackagingConfig,
                  deploy: DeployConfig, task: str, settings: Settings) -> BentoResult:
    """Gather a version's model, schema and canary rows, and build its Bento (see `build_bento`)."""
    inputs = gather_package_inputs(tracker, project, version, deploy.canary_rows, packaging.fallback, task)
    try:
        return build_bento(inputs, packaging, deploy, task, settings)
    finally:
        if inputs.onnx is not None and inputs.onnx.folder:
            shutil.rmtree(Path(inputs.onnx.folder).parent, ignore_errors=True)


def verify_model_artifact(bento: BentoResult, settings: Settings) -> Path:
    """Check the packaged model file against the checksum recorded at build time (from the registry's model).

    A damaged copy is removed from the BentoML store, so the next packaging of the version
    rebuilds it from the registry instead of reusing it.

    Raises:
        DeployError: the model is missing from the store or its bytes changed.
    """
    bentoml = _bentoml(settings)
    try:
        model = bentoml.models.get(bento.model_tag)
    except bentoml.exceptions.NotFound:
        raise DeployError(f"{bento.bento_tag}: model {bento.model_tag} is missing from {settings.bentoml_home}") from None
    path = Path(model.path_of("model.pkl"))
    digest = hash_file(path) if path.exists() else None
    if digest == bento.model_sha256:
        return path
    bentoml.models.delete(bento.model_tag)
    what = "is missing" if digest is None else \
        f"is corrupted (sha256 {digest[:12]}, expected {bento.model_sha256[:12]})"
    raise DeployError(f"{bento.bento_tag}: model artifact {path} {what}; deploy aborted and the damaged copy "
                      f"removed from the store: `sluice deploy` again rebuilds it from the registry")


def canary_data(bento: BentoResult, settings: Settings) -> dict[str, Any]:
    """The canary records and the offline predictions stored with the model."""
    bentoml = _bentoml(settings)
    model = bentoml.models.get(bento.model_tag)
    return json.loads(Path(model.path_of(CANARY_FILE)).read_text())


def _predictor(folder: Path) -> Any:
    from sluicegate.onnx_runtime import OnnxExport, OnnxPredictor

    return OnnxPredictor(OnnxExport.load(folder))


def _canary_payload(model: Any, canary: pd.DataFrame, task: str, predictor: Any = None) -> dict[str, Any]:
    """The canary records and their offline answers, from the ONNX predictor when it will serve."""
    records = json.loads(canary.to_json(orient="records", date_format="iso"))
    labels = [str(_plain(c)) for c in getattr(model, "classes_", [])]
    if predictor is not None:
        out: dict[str, Any] = {"records": records, "predictions": predictor.predict(records), "runtime": "onnx"}
        if task == "classification" and predictor.export.proba_output:
            out["probabilities"] = [{str(k): v for k, v in row.items()} for row in predictor.predict_proba(records)]
        return out
    out = {"records": records, "predictions": [_plain(v) for v in model.predict(canary)], "runtime": "native"}
    if task == "classification" and hasattr(model, "predict_proba"):
        out["probabilities"] = [dict(zip(labels, map(float, row))) for row in model.predict_proba(canary)]
    return out


def _bento_requirements(model: Any = None, onnx: bool = False) -> list[str]:
    pins = pip_requirements(model)
    # psycopg: the prediction log goes to PostgreSQL when SLUICE_PREDICTION_LOG_URL is set where the bento serves
    for name in ("joblib", "pydantic", "orjson", "psycopg", "psycopg-binary") + (("onnxruntime",) if onnx else ()):
        try:
            from importlib import metadata as md

            pins.append(f"{name}=={md.version(name)}")
        except Exception:
            pass
    return pins


def _package_fingerprint() -> str:
    h = hashlib.sha256()
    root = Path(__file__).parent
    for path in sorted(root.rglob("*.py")):
        h.update(path.relative_to(root).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()




def _flat(metadata: dict[str, Any]) -> dict[str, Any]:
    """BentoML metadata values must be simple; nested parts go in as JSON text."""
    return {k: (json.dumps(v) if isinstance(v, (dict, list)) else v) for k, v in metadata.items()
            if v is not None}


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value
