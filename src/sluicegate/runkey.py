"""Whether a `sluice run` would change anything, decided before the training stack is imported.

A run's key covers the source's bytes, the whole validated config (overrides included), the code
(sluicegate, and the checkout's flows and tasks) and the model libraries' versions. The training flow tags the version it ends
with by that key; when the champion carries the key of a new run, every cached step would return
what it returned then, the candidate key would find the champion itself, and the outcome would be
`unchanged`: the CLI records that in a small flow run without importing pandas, scikit-learn or
MLflow. Anything this cannot know cheaply (a SQL source, labelled production rows, a registry only
MLflow can read) has no key, and the full pipeline runs.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import sluicegate
from sluicegate.config.schema import BundledSource, CsvSource, DataSource, ParquetSource
from sluicegate.config.sources import relative_name, source_files
from sluicegate.errors import DataSourceError
from sluicegate.outcome import TrainingOutcome, training_outcome
from sluicegate.stores import library_versions
from sluicegate.trainers.registry import without_model_checks

if TYPE_CHECKING:
    from sluicegate.config import ProjectConfig

RUN_KEY_TAG = "sluice.run_key"


def hash_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def source_key(source: DataSource, root: Path) -> str | None:
    """A cheap key that changes whenever the source's bytes change; None when unknowable (SQL).

    Files are hashed whole (far cheaper than parsing them), so an edited file never hits a
    cache entry of its old content even if its size and mtime were kept. For a folder or a
    glob the key covers the sorted file list and every file's content, so a new partition
    file changes it.
    """
    if isinstance(source, (CsvSource, ParquetSource)):
        try:
            files = source_files(source, root)
        except DataSourceError:
            return None
        listing = hashlib.sha256()
        for path in files:
            listing.update(f"{relative_name(path, root)}\0{hash_file(path)}\n".encode())
        return f"{source.kind}:{listing.hexdigest()}:{source.model_dump_json()}"
    if isinstance(source, BundledSource):
        # the installed distribution's version, without importing scikit-learn (seconds)
        return f"bundled:{source.name}:sklearn-{importlib.metadata.version('scikit-learn')}"
    return None


@functools.cache
def code_fingerprint(*folders: Path) -> str:
    """Hash of the sluicegate package source and of the `.py` files in `folders`."""
    h = hashlib.sha256(sluicegate.__version__.encode())
    for root in (Path(sluicegate.__file__).parent, *folders):
        for path in sorted(root.rglob("*.py")):
            h.update(path.relative_to(root).as_posix().encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:16]


def run_key(cfg: ProjectConfig, code_folders: Iterable[Path] = ()) -> str | None:
    """The key of a training run of `cfg` with this code; None when the data cannot be known
    without reading it (a SQL source, labelled production rows)."""
    from sluicegate.config import config_hash

    if cfg.data.production.enabled:
        return None
    key = source_key(cfg.data.source, cfg.root)
    if key is None:
        return None
    blob = json.dumps({"project": cfg.project, "root": str(cfg.root), "source": key, "config": config_hash(cfg),
                       "code": code_fingerprint(*sorted(Path(f).resolve() for f in code_folders)),
                       "libraries": library_versions()}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def load_config_for_key(path: str | Path, overrides: Iterable[str] = ()) -> ProjectConfig:
    """The config, loaded to compute its run key: without the model checks that import an estimator
    library. A key equal to the champion's means this exact config passed them with this code and
    these libraries; any other outcome must load it again with `load_config`."""
    from sluicegate.config import load_config

    with without_model_checks():
        return load_config(path, list(overrides))


def unchanged_outcome(cfg: ProjectConfig, key: str | None, champion: dict[str, Any] | None) -> TrainingOutcome | None:
    """The outcome of a run whose key the champion already carries; None when something changed.

    Args:
        cfg: the run's validated config.
        key: `run_key(cfg, ...)` (None: unknown, never unchanged).
        champion: the champion's registry record, `{version, metrics, tags}` (None: there is none).
    """
    if key is None or champion is None or champion["tags"].get(RUN_KEY_TAG) != key:
        return None
    version = str(champion["version"])
    metrics = {k[len("test_"):]: v for k, v in champion["metrics"].items() if k.startswith("test_")}
    summary = (f"Unchanged: the candidate is champion v{version}; nothing to promote "
               f"(same data, config and code as the run that made it; nothing was retrained).")
    return training_outcome(cfg.project, "unchanged", version, version, cfg.gates.primary_metric, metrics, summary,
                            champion["tags"].get("sluice.data_fingerprint", ""),
                            champion["tags"].get("sluice.selected_candidate"))
