"""Where things live, from the environment: embedded local defaults, servers by configuration alone."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping


@dataclass(frozen=True)
class Settings:
    """Runtime locations. What to train is project config; where it goes is settings.

    Environment variables (all optional):
        SLUICE_HOME: local state folder (default `./.sluice`).
        MLFLOW_TRACKING_URI / MLFLOW_REGISTRY_URI: MLflow server or DB (default SQLite in SLUICE_HOME).
        SLUICE_ARTIFACT_ROOT: MLflow artifact location for new experiments (path or s3:// URL).
        SLUICE_OPTUNA_STORAGE: SQLAlchemy URL of the Optuna storage (default SQLite in SLUICE_HOME).
        BENTOML_HOME: BentoML store (default SLUICE_HOME/bentoml).
        SLUICE_TASK_RUNNER: `threads` (default) or `dask`, for trials and partitions submitted in parallel.
        SLUICE_DASK_ADDRESS: a Dask scheduler (`tcp://host:8786`); unset with `dask`: a local cluster.
    """

    home: Path
    tracking_uri: str
    registry_uri: str
    artifact_root: str
    optuna_storage: str
    bentoml_home: Path
    task_runner: str = "threads"
    dask_address: str | None = None

    @property
    def data_store(self) -> Path:
        return self.home / "data"

    @property
    def runs_dir(self) -> Path:
        return self.home / "runs"


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Settings from `env` (default: the process environment); nothing is created here."""
    env = os.environ if env is None else env
    home = Path(env.get("SLUICE_HOME") or ".sluice").resolve()
    tracking = env.get("MLFLOW_TRACKING_URI") or f"sqlite:///{home / 'mlflow.db'}"
    return Settings(
        home=home,
        tracking_uri=tracking,
        registry_uri=env.get("MLFLOW_REGISTRY_URI") or tracking,
        artifact_root=env.get("SLUICE_ARTIFACT_ROOT") or str(home / "mlartifacts"),
        optuna_storage=env.get("SLUICE_OPTUNA_STORAGE") or f"sqlite:///{home / 'optuna.db'}",
        bentoml_home=Path(env.get("BENTOML_HOME") or home / "bentoml"),
        task_runner=(env.get("SLUICE_TASK_RUNNER") or "threads").strip().lower(),
        dask_address=env.get("SLUICE_DASK_ADDRESS") or None,
    )


_SECRET_PARAM = re.compile(r"([?&;](?:[^=&;#\s]*(?:key|token|secret|pass|pwd|auth|signature|credential)[^=&;#\s]*)=)[^&;#\s]+",
                           re.IGNORECASE)


def redact(url: str) -> str:
    """A URL safe to print: its password and secret-looking query values masked.

    `postgresql://user:***@host/db`, `https://host/x?apikey=***&region=eu`.
    """
    url = re.sub(r"://([^/:@\s]+):[^/@\s]+@", r"://\1:***@", str(url))
    return _SECRET_PARAM.sub(r"\1***", url)
