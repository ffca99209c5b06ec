"""MLflow tracking and registry (the only MLflow import): runs, versions, aliases, compare-and-set promotion."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import socket
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from sluicegate.errors import PromotionConflictError, RegistryError
from sluicegate.procs import process_gone
from sluicegate.settings import Settings, make_private, redact
from sluicegate.stores import (  # noqa: F401 - run_tags, library_versions, pip_requirements, git_sha: public here too
    AUDIT_SUFFIX,
    AUDIT_TAG,
    HTTP_DEFAULTS,
    MODEL_PACKAGES,
    _is_absent,
    audit_records_from_tags,
    audit_tag_value,
    git_sha,
    library_versions,
    pip_requirements,
    prepare_sqlite,
    probe_store,
    run_tags,
    uses_torch,
    version_verdict,
)

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
PREVIOUS = "previous-champion"
DATA_ARTIFACTS = "data"  # a version's training snapshot and holdout, on a shared tracking store


@contextlib.contextmanager
def _quiet_model_logging():
    """MLflow's advice printed on every registration, which does not apply here: the integer-column
    hint (the request schema, not MLflow's signature, validates requests) and the pickle warning
    (cloudpickle is chosen on purpose: the pipeline holds custom transformers)."""
    logger = logging.getLogger("mlflow.sklearn")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer", category=UserWarning)
            yield
    finally:
        logger.setLevel(level)


@dataclass(frozen=True)
class ModelRecord:
    """A registered version: where it is, what produced it, how it scored."""

    project: str
    version: str
    run_id: str
    model_uri: str
    metrics: dict[str, float]
    tags: dict[str, str]

    @property
    def registry_uri(self) -> str:
        return f"models:/{self.project}/{self.version}"


class Tracker:
    """MLflow for one process, built from settings (the URIs are set here, never at import)."""

    def __init__(self, settings: Settings):
        import mlflow
        from mlflow.tracking import MlflowClient

        self.settings = settings
        make_private(settings.home)
        for key, value in HTTP_DEFAULTS.items():
            os.environ.setdefault(key, value)
        for uri in dict.fromkeys((settings.tracking_uri, settings.registry_uri)):
            probe_store(uri)
        self.tracking_uri = prepare_sqlite(settings.tracking_uri)
        self.registry_uri = prepare_sqlite(settings.registry_uri)
        self.mlflow = mlflow
        self.client = MlflowClient(self.tracking_uri, self.registry_uri)
        self._activate()

    def _activate(self) -> None:
        """Point MLflow's process-global fluent API at this tracker's stores.

        Called before every fluent call, since another Tracker may have moved them. MLflow
        also copies the URIs into os.environ, where they would outrank SLUICE_HOME for later
        Trackers: the user's environment is put back as it was.
        """
        saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
        self.mlflow.set_tracking_uri(self.tracking_uri)
        self.mlflow.set_registry_uri(self.registry_uri)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

    # ------------------------------------------------------------ experiments and runs
    def experiment_id(self, project: str) -> str:
        exp = self.client.get_experiment_by_name(project)
        if exp is not None:
            return exp.experiment_id
        location = self.settings.artifact_root
        if not re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]+:", location):  # a path, not s3://, mlflow-artifacts:, file:
            location = Path(location, project).resolve().as_uri()
        else:
            location = f"{location.rstrip('/')}/{project}"
        try:
            return self.client.create_experiment(project, artifact_location=location)
        except Exception:  # another process created it first
            return self.client.get_experiment_by_name(project).experiment_id

    def find_candidate(self, project: str, candidate_key: str) -> ModelRecord | None:
        """The newest version registered for exactly this data, config and code, if any.

        Found by the version's own tags, so a version whose registering process was killed
        before it could tag its run is found too (and adopted: see `adopt_unfinished`).
        """
        try:
            found = list(self.client.search_model_versions(
                f"name = '{project}' and tags.`sluice.candidate_key` = '{candidate_key}'"))
        except Exception as exc:
            if _is_absent(exc):
                return None
            raise RegistryError(f"{project}: could not search versions in {redact(self.registry_uri)}: "
                                f"{type(exc).__name__}: {str(exc)[:300]}") from exc
        if not found:
            return None
        return self.version(project, str(max(int(m.version) for m in found)))

    def recover_interrupted(self, project: str, candidate_key: str | None = None, versions: bool = True) -> list[str]:
        """Finish what a killed process left half-done, before a new run of `project` starts.

        - Runs left RUNNING by a process that no longer exists on this host are terminated
          as KILLED and tagged `sluice.interrupted` (a run of another host is left alone:
          its process cannot be checked from here).
        - Versions with no verdict whose registering process is gone are tagged
          `sluice.verdict=abandoned`, except the one with `candidate_key`: the caller adopts it.
          Skipped with `versions=False` (at the start of a run, before its candidate key is known).

        Returns:
            One line per thing repaired (also logged).
        """
        exp = self.client.get_experiment_by_name(project)
        if exp is None:
            return []
        done: list[str] = []
        dead_runs: set[str] = set()
        for run in self.client.search_runs([exp.experiment_id], filter_string="attributes.status = 'RUNNING'",
                                           max_results=1000):
            why = _dead_owner(run.data.tags)
            if why is None:
                continue
            self.client.set_tag(run.info.run_id, "sluice.interrupted", f"{why}; marked KILLED by the next run")
            self.client.set_terminated(run.info.run_id, "KILLED")
            dead_runs.add(run.info.run_id)
            done.append(f"run {run.info.run_id} was left RUNNING ({why}): marked KILLED")
        for mv in self._search_versions(project) if versions else []:
            tags = dict(mv.tags or {})
            if tags.get("sluice.verdict") or tags.get("sluice.candidate_key") == candidate_key:
                continue
            why = None if mv.run_id not in dead_runs else "its run was interrupted"
            if why is None:
                try:
                    run = self.client.get_run(mv.run_id)
                except Exception:  # the run was deleted: the version can never be decided
                    why = "its run is gone"
                else:
                    why = _dead_owner(run.data.tags)
            if why is None:
                continue
            summary = f"abandoned: the process that registered v{mv.version} stopped before the gates decided ({why})"
            self._set_verdict(project, str(mv.version), mv.run_id, "abandoned", summary)
            done.append(f"v{mv.version} had no verdict ({why}): tagged abandoned")
        for line in done:
            log.warning("%s: %s", project, line)
        return done

    def adopt_unfinished(self, record: ModelRecord) -> bool:
        """Whether `record` was left without a verdict by an interrupted run (and is now adopted).

        The caller decides its gates as if it had just registered it; its run is tagged so the
        history says which run finished it.
        """
        if record.tags.get("sluice.verdict"):
            return False
        note = f"adopted by pid {os.getpid()} on {socket.gethostname()} after an interrupted run"
        self.client.set_tag(record.run_id, "sluice.adopted", note)
        self.client.set_tag(record.run_id, "sluice.version", record.version)
        log.warning("%s: v%s had no verdict (interrupted run): %s", record.project, record.version, note)
        return True

    def register_candidate(
        self,
        project: str,
        model: Any,
        input_example: pd.DataFrame,
        params: dict[str, Any],
        metrics: dict[str, float],
        tags: dict[str, str],
        artifacts: dict[str, str] | None = None,
        run_name: str | None = None,
        data_files: dict[str, str] | None = None,
    ) -> ModelRecord:
        """Log a run with the model (signature, input example), register it, alias it challenger.

        Args:
            project: experiment and registered model name.
            model: the full scikit-learn pipeline (features + estimator).
            input_example: a few raw rows, to infer the signature.
            params, metrics, tags: logged on the run; tags also on the version.
            artifacts: name to local file path, logged under `reports/`.
            run_name: display name of the run.
            data_files: file name to local path (the training snapshot, the holdout), logged under `data/`
                when the tracking store is a server: a drift check on another machine (the compose
                stack's worker) reads them from there (`fetch_version_data`); a local store has the files.

        Returns:
            The new `ModelRecord`.
        """
        import mlflow.sklearn
        from mlflow.models import infer_signature

        exp_id = self.experiment_id(project)
        self._activate()
        # who owns the run, so the next run can tell a killed process from a running one
        owner = {"sluice.pid": str(os.getpid()), "sluice.host": socket.gethostname()}
        with self.mlflow.start_run(experiment_id=exp_id, run_name=run_name, tags=owner) as run:
            self.mlflow.log_params({k: _param(v) for k, v in params.items()})
            self.mlflow.log_metrics(metrics)
            self.mlflow.set_tags(tags)
            for path in (artifacts or {}).values():
                if path and Path(path).exists():
                    self.mlflow.log_artifact(path, artifact_path="reports")
            if self.shared_store:
                self._log_data_files(data_files or {})
            with _quiet_model_logging():
                signature = infer_signature(input_example, model.predict(input_example))
                info = mlflow.sklearn.log_model(
                    model, name="model", signature=signature, input_example=input_example,
                    pip_requirements=pip_requirements(model), serialization_format="cloudpickle",
                )
            mv = self.mlflow.register_model(info.model_uri, project, tags=tags)
            self.client.set_tag(run.info.run_id, "sluice.version", str(mv.version))
        self.client.set_registered_model_alias(project, CHALLENGER, mv.version)
        log.info("registered %s version %s (run %s)", project, mv.version, run.info.run_id)
        return ModelRecord(project, str(mv.version), run.info.run_id, info.model_uri, metrics, tags)

    @property
    def shared_store(self) -> bool:
        """Whether runs and their artifacts live on a tracking server that other machines read."""
        return self.settings.tracking_uri.startswith(("http://", "https://"))

    def _log_data_files(self, files: dict[str, str]) -> None:
        import shutil
        import tempfile

        with tempfile.TemporaryDirectory(prefix="sluice-data-") as tmp:
            for name, path in files.items():
                if path and Path(path).is_file():
                    shutil.copyfile(path, Path(tmp) / name)
            if any(Path(tmp).iterdir()):
                self.mlflow.log_artifacts(tmp, artifact_path=DATA_ARTIFACTS)

    def local_version_file(self, record: ModelRecord, path: str | None, name: str, dst: Path) -> str | None:
        """`path` when this machine has it, else the copy stored with the version (`data/<name>`, fetched under
        `dst`: a version trained on another machine), else None."""
        if path and Path(path).exists():
            return path
        fetched = self.fetch_version_data(record, name, dst)
        return str(fetched) if fetched is not None else None

    def fetch_version_data(self, record: ModelRecord, name: str, dst: Path) -> Path | None:
        """A data file stored with a version (`data/<name>`), copied under `dst` once; None when it has none."""
        local = dst / DATA_ARTIFACTS / name
        if local.is_file():
            return local
        try:
            names = {a.path for a in self.client.list_artifacts(record.run_id, DATA_ARTIFACTS)}
        except Exception:
            return None
        if f"{DATA_ARTIFACTS}/{name}" not in names:
            return None
        dst.mkdir(parents=True, exist_ok=True)
        return Path(self.client.download_artifacts(record.run_id, f"{DATA_ARTIFACTS}/{name}", str(dst)))

    def record_decision(self, record: ModelRecord, decision: dict) -> None:
        """Store the gate verdicts with the run and as version tags."""
        verdict = "promoted" if decision["promote"] else "rejected"
        self.client.log_dict(record.run_id, decision, "gate_decision.json")
        self._set_verdict(record.project, record.version, record.run_id, verdict, decision["summary"])

    def _set_verdict(self, project: str, version: str, run_id: str | None, verdict: str, summary: str) -> None:
        if run_id:
            self.client.set_tag(run_id, "sluice.verdict", verdict)
            self.client.set_tag(run_id, "sluice.verdict_summary", summary[:4900])
        self.client.set_model_version_tag(project, version, "sluice.verdict", verdict)
        self.client.set_model_version_tag(project, version, "sluice.verdict_summary", summary[:4900])

    def record_approval(self, record: ModelRecord, decision: dict) -> None:
        """Store a person's answer (or the timeout) with the run and as version tags.

        A refusal also turns the version's verdict into `rejected`: the gates passed, but the
        candidate was not released.
        """
        self.client.log_dict(record.run_id, decision, "approval.json")
        tags = {"sluice.approval": decision["verdict"], "sluice.approved_by": decision["approver"][:4900],
                "sluice.approval_comment": (decision.get("comment") or "")[:4900]}
        if decision["verdict"] != "approved":
            tags |= {"sluice.verdict": "rejected", "sluice.verdict_summary": decision["summary"][:4900]}
        for key, value in tags.items():
            self.client.set_tag(record.run_id, key, value)
            self.client.set_model_version_tag(record.project, record.version, key, value)

    def set_version_tags(self, project: str, version: str, tags: dict[str, str]) -> None:
        for key, value in tags.items():
            self.client.set_model_version_tag(project, str(version), key, str(value)[:4900])

    def log_version_files(self, record: ModelRecord, folder: Path, artifact_path: str, tags: dict[str, str]) -> None:
        """Store a folder of files with a version's run (`<artifact_path>/...`) and tag run and version."""
        self.client.log_artifacts(record.run_id, str(folder), artifact_path)
        for key, value in tags.items():
            self.client.set_tag(record.run_id, key, str(value)[:4900])
        self.set_version_tags(record.project, record.version, tags)

    def download_version_files(self, record: ModelRecord, artifact_path: str, dst: Path) -> Path | None:
        """The folder `artifact_path` of a version's run, copied under `dst`; None when the run has none."""
        names = {a.path for a in self.client.list_artifacts(record.run_id)}
        if artifact_path not in names:
            return None
        dst.mkdir(parents=True, exist_ok=True)
        return Path(self.client.download_artifacts(record.run_id, artifact_path, str(dst)))

    # ------------------------------------------------------------ audit trail (see sluicegate.audit)
    def append_audit(self, project: str, record: dict[str, Any]) -> str:
        """Add one audit record: a finished run in the experiment `<project>.audit`, never changed after.

        The record is kept whole in the tag `sluice.audit.record` (what `audit_records` reads) and
        as the artifact `audit_record.json`; its main fields are also tags, to search and filter on.

        Returns:
            The id of the run that holds the record.
        """
        exp_id = self.experiment_id(f"{project}{AUDIT_SUFFIX}")
        stamp = int(time.time() * 1000)
        tags = {"sluice.kind": "audit", "sluice.project": project, AUDIT_TAG: audit_tag_value(record),
                **{f"sluice.audit.{k}": str(record[k])[:4900] for k in
                   ("action", "version", "who", "when", "why", "flow_run_id", "mlflow_run_id") if record.get(k) is not None}}
        name = f"{record.get('action')} v{record.get('version')}" if record.get("version") else str(record.get("action"))
        run = self.client.create_run(exp_id, start_time=stamp, tags=tags, run_name=name)
        self.client.log_dict(run.info.run_id, record, "audit_record.json")
        self.client.set_terminated(run.info.run_id, "FINISHED", end_time=stamp)
        return run.info.run_id

    def audit_records(self, project: str, limit: int | None = None) -> list[dict[str, Any]]:
        """A project's audit records as dicts, newest first (at most `limit`).

        Raises:
            RegistryError: the tracking store could not be asked.
        """
        try:
            exp = self.client.get_experiment_by_name(f"{project}{AUDIT_SUFFIX}")
            if exp is None:
                return []
            rows: list[tuple[str | None, str]] = []
            token = None
            while limit is None or len(rows) < limit:
                page = self.client.search_runs([exp.experiment_id], filter_string="tags.`sluice.kind` = 'audit'",
                                               order_by=["attributes.start_time DESC"], page_token=token,
                                               max_results=min(1000, limit - len(rows)) if limit else 1000)
                rows += [(run.data.tags.get(AUDIT_TAG), run.info.run_id) for run in page]
                token = page.token
                if not token:
                    break
            return audit_records_from_tags(rows, lambda run_id: self._load_run_dict(run_id, "audit_record.json"))
        except Exception as exc:
            raise RegistryError(f"{project}: could not read the audit trail from {redact(self.tracking_uri)}: "
                                f"{type(exc).__name__}: {str(exc)[:300]}") from exc

    def _load_run_dict(self, run_id: str, path: str) -> dict[str, Any]:
        self._activate()
        return self.mlflow.artifacts.load_dict(f"runs:/{run_id}/{path}")

    def log_trials(
        self,
        project: str,
        study_name: str,
        candidate: str,
        metric: str,
        trials: list[dict[str, Any]],
        best_params: dict[str, Any],
        artifacts: list[str] = (),
    ) -> str:
        """Log a finished study: one parent run, one nested run per trial (params, value, state).

        Logged after the study rather than from the trial threads, with explicit parent ids
        (MLflow links nested runs across threads only when told the parent).

        Args:
            trials: dicts with number, state, value, params, duration_s, error.
            artifacts: local files (plots) logged under `tuning/` on the parent run.

        Returns:
            The parent run id.
        """
        from mlflow.entities import Metric, Param, RunTag

        exp_id = self.experiment_id(project)
        now = int(time.time() * 1000)
        parent = self.client.create_run(exp_id, run_name=f"tune-{candidate}", tags={
            "sluice.kind": "tuning", "sluice.study": study_name, "sluice.candidate": candidate})
        pid = parent.info.run_id
        complete = [t for t in trials if t["state"] == "COMPLETE"]
        self.client.log_batch(pid, metrics=[
            Metric("trials", len(trials), now, 0), Metric("trials_complete", len(complete), now, 0),
            Metric("trials_pruned", sum(t["state"] == "PRUNED" for t in trials), now, 0),
            Metric("trials_failed", sum(t["state"] == "FAIL" for t in trials), now, 0),
        ], params=[Param(f"best.{k}", str(_param(v))[:6000]) for k, v in best_params.items()])
        for path in artifacts:
            if path and Path(path).exists():
                self.client.log_artifact(pid, path, artifact_path="tuning")
        status = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}
        for t in trials:
            run = self.client.create_run(exp_id, run_name=f"{candidate}-trial-{t['number']}", tags={
                "mlflow.parentRunId": pid, "sluice.study": study_name, "sluice.trial": str(t["number"]),
                "sluice.trial_state": t["state"]})
            # a pruned trial has no score under the metric's name: its state says pruned, and where
            metrics = [Metric(metric, float(t["value"]), now, 0)] if t.get("value") is not None and t["state"] == "COMPLETE" else []
            if t["state"] == "PRUNED" and t.get("last_step") is not None:
                metrics.append(Metric("pruned_at_step", float(t["last_step"]), now, 0))
            if t.get("duration_s") is not None:
                metrics.append(Metric("duration_s", float(t["duration_s"]), now, 0))
            tags = [RunTag("sluice.trial_error", str(t["error"])[:4900])] if t.get("error") else []
            self.client.log_batch(run.info.run_id, metrics=metrics, tags=tags,
                                  params=[Param(k, str(_param(v))[:6000]) for k, v in t["params"].items()])
            self.client.set_terminated(run.info.run_id, status.get(t["state"], "FINISHED"))
        self.client.set_terminated(pid, "FINISHED")
        log.info("logged %d trials of study %s under run %s", len(trials), study_name, pid)
        return pid

    # ------------------------------------------------------------ registry
    def version(self, project: str, version: str) -> ModelRecord:
        try:
            mv = self.client.get_model_version(project, str(version))
        except Exception as exc:
            if _is_absent(exc):
                raise RegistryError(f"{project} has no version {version}") from None
            raise RegistryError(f"{project}: could not read version {version} from {redact(self.registry_uri)}: "
                                f"{type(exc).__name__}: {str(exc)[:300]}") from exc
        run = self.client.get_run(mv.run_id)
        return ModelRecord(project, str(mv.version), mv.run_id, f"models:/{project}/{mv.version}",
                           dict(run.data.metrics), dict(mv.tags))

    def alias(self, project: str, alias: str = CHAMPION) -> ModelRecord | None:
        """The version behind an alias, or None when the model or alias does not exist.

        Raises:
            RegistryError: the registry could not be asked. An outage is never read as "no champion":
                under the first-model rule that would promote a candidate nobody compared.
        """
        try:
            mv = self.client.get_model_version_by_alias(project, alias)
        except Exception as exc:
            if _is_absent(exc):
                return None
            raise RegistryError(f"{project}: could not read alias {alias!r} from {redact(self.registry_uri)}: "
                                f"{type(exc).__name__}: {str(exc)[:300]}") from exc
        return self.version(project, mv.version)

    def champion(self, project: str) -> ModelRecord | None:
        return self.alias(project, CHAMPION)

    def load_model(self, uri: str) -> Any:
        import mlflow.sklearn

        self._activate()
        return mlflow.sklearn.load_model(uri)

    def promote(self, project: str, version: str, expected_champion: str | None) -> None:
        """Move `champion` to `version` only if it still points where the gates saw it.

        MLflow has no compare-and-set on aliases, so this re-reads the alias right before
        the move and refuses when another run promoted in between.

        Raises:
            PromotionConflictError: the champion changed during this run.
        """
        current = self.champion(project)
        current_version = current.version if current else None
        if current_version != expected_champion:
            message = (f"{project}: champion moved from v{expected_champion} to v{current_version} while this run "
                       f"was deciding; v{version} was not promoted (re-run to compare against the new champion)")
            # the gates said "promoted"; the history must say it lost the race instead
            try:
                mv = self.client.get_model_version(project, str(version))
                self._set_verdict(project, str(version), mv.run_id, "conflict", f"conflict: {message}")
            except Exception as exc:  # the conflict is the error to report, not the tagging
                log.warning("%s: v%s could not be tagged conflict: %s", project, version, exc)
            raise PromotionConflictError(message)
        if current_version is not None:
            self.client.set_registered_model_alias(project, PREVIOUS, current_version)
        self.client.set_registered_model_alias(project, CHAMPION, str(version))
        self.client.set_model_version_tag(project, str(version), "sluice.promoted_from", str(current_version))
        mv = self.client.get_model_version(project, str(version))
        if (mv.tags or {}).get("sluice.verdict") in ("conflict", None):  # promoted after all, on a later try
            self._set_verdict(project, str(version), mv.run_id, "promoted",
                              f"promoted over v{current_version}" if current_version else "promoted: first champion")
        log.info("%s: champion v%s -> v%s", project, current_version, version)

    def set_alias(self, project: str, alias: str, version: str) -> None:
        self.client.set_registered_model_alias(project, alias, str(version))

    def delete_alias(self, project: str, alias: str) -> None:
        """Remove an alias (a missing alias is not an error; a missing model is)."""
        self.client.delete_registered_model_alias(project, alias)

    def _search_versions(self, project: str) -> list[Any]:
        try:
            return list(self.client.search_model_versions(f"name = '{project}'"))
        except Exception as exc:
            if _is_absent(exc):
                return []
            raise RegistryError(f"{project}: could not list versions in {redact(self.registry_uri)}: "
                                f"{type(exc).__name__}: {str(exc)[:300]}") from exc

    def versions(self, project: str) -> list[ModelRecord]:
        mvs = self._search_versions(project)
        return sorted((self.version(project, m.version) for m in mvs), key=lambda r: int(r.version))

    def projects(self) -> list[str]:
        """The registered models, one per project that has registered a version."""
        names: list[str] = []
        token = None
        while True:
            page = self.client.search_registered_models(max_results=1000, page_token=token)
            names += [m.name for m in page]
            token = page.token
            if not token:
                return sorted(names)

    def status(self, project: str) -> dict[str, Any]:
        """Champion, its metrics and data fingerprint, and the latest verdict, as plain JSON."""
        champ = self.champion(project)
        # one search; only the latest version's run is read (versions() reads every run)
        found = [int(m.version) for m in self._search_versions(project)]
        latest = self.version(project, str(max(found))) if found else None
        last_decision = None
        if latest is not None:
            try:
                self._activate()
                last_decision = self.mlflow.artifacts.load_dict(f"runs:/{latest.run_id}/gate_decision.json")
            except Exception:
                last_decision = None
        return {
            "project": project,
            "tracking_uri": redact(self.tracking_uri),
            "champion": int(champ.version) if champ else None,
            "champion_uri": f"models:/{project}@champion" if champ else None,
            "metrics": {k: v for k, v in (champ.metrics if champ else {}).items() if k.startswith("test_")},
            "data_fingerprint": champ.tags.get("sluice.data_fingerprint") if champ else None,
            "config_hash": champ.tags.get("sluice.config_hash") if champ else None,
            "versions": len(found),
            "latest_version": int(latest.version) if latest else None,
            "last_verdict": {
                "version": int(latest.version),
                **self._verdict_of(latest),
                "checks": (last_decision or {}).get("checks"),
            } if latest else None,
        }


    def _verdict_of(self, record: ModelRecord) -> dict[str, str]:
        """A version's verdict and summary (`stores.version_verdict`); its run is read only when it has none."""
        if not record.tags.get("sluice.verdict"):
            try:
                run = self.client.get_run(record.run_id)
                return version_verdict(record.tags, run.info.status, run.data.tags)
            except Exception:
                pass  # an unreadable run is an interrupted one: no verdict
        return version_verdict(record.tags, None, {})


def _dead_owner(tags: dict[str, str]) -> str | None:
    """Why the process that owns a run (tags sluice.pid / sluice.host) is known to be gone, else None."""
    return process_gone(tags.get("sluice.pid"), tags.get("sluice.host"))


def _param(value: Any) -> Any:
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, default=str)[:6000]
    return value
