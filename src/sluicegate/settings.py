"""Where things live, from the environment: embedded local defaults, servers by configuration alone."""

from __future__ import annotations

import os
import re
import stat
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
        SLUICE_CONTAINER_ENGINE: the engine of `deploy.target: container` (default `podman`).
        SLUICE_CONTAINER_NETWORK: a container network the model containers join too (the compose
            stack's `sluicegate_default`), so that a SLUICE_PREDICTION_LOG_URL naming `postgres` resolves.
        SLUICE_PREDICTION_LOG_URL: a PostgreSQL URL for the prediction log and feedback labels, shared by
            every host and container (default: a SQLite file per project in SLUICE_HOME/predictions).
        SLUICE_CONTAINER_BASE: the image model images are built on (default the lock image that
            infra/podman/setup.sh builds, `localhost/sluicegate-python:lock`).
    """

    home: Path
    tracking_uri: str
    registry_uri: str
    artifact_root: str
    optuna_storage: str
    bentoml_home: Path
    task_runner: str = "threads"
    dask_address: str | None = None
    container_engine: str = "podman"
    container_base: str = "localhost/sluicegate-python:lock"
    prediction_log_url: str | None = None
    container_network: str | None = None

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
        container_engine=env.get("SLUICE_CONTAINER_ENGINE") or "podman",
        container_base=env.get("SLUICE_CONTAINER_BASE") or "localhost/sluicegate-python:lock",
        prediction_log_url=(env.get("SLUICE_PREDICTION_LOG_URL") or "").strip() or None,
        container_network=(env.get("SLUICE_CONTAINER_NETWORK") or "").strip() or None,
    )


_SECRET_PARAM = re.compile(r"""([?&;](?:[^=&;#\s]*(?:key|token|secret|pass|pwd|auth|signature|credential)[^=&;#\s]*)=)[^&;#\s'"]+""",
                           re.IGNORECASE)


def redact(url: str) -> str:
    """A URL safe to print: its password and secret-looking query values masked.

    `postgresql://user:***@host/db`, `https://host/x?apikey=***&region=eu`. Works on a URL
    inside a longer text too (a driver's error message quoting it).
    """
    # `//user:password@`, also in a malformed URL (`postgres//...`) and with an `@` inside the password
    url = re.sub(r"""//([^/:@\s'"]+):[^/\s'"]+@""", r"//\1:***@", str(url))
    return _SECRET_PARAM.sub(r"\1***", url)


PRIVATE_UMASK = 0o077


def make_private(home: Path) -> Path:
    """Keep local state readable by its owner only: umask 077, SLUICE_HOME mode 0700.

    The MLflow DB, the prediction log (raw request inputs), data snapshots and Prefect's
    database all live under SLUICE_HOME. Called where a process starts working (the CLI, the
    model server, the tasks), never at import. The umask is process-wide and inherited by the
    servers started from here, so every file made afterwards is 0600 and every folder 0700.
    A shared folder used as SLUICE_HOME (world-writable with the sticky bit, like /tmp) is
    left as it is; the files made in it are still private.

    Returns:
        `home`, created if missing.
    """
    os.umask(PRIVATE_UMASK)
    home = Path(home)
    home.mkdir(parents=True, exist_ok=True)
    try:
        st = home.stat()
        if not st.st_mode & stat.S_ISVTX and st.st_uid == os.getuid() and stat.S_IMODE(st.st_mode) != 0o700:
            home.chmod(0o700)
    except OSError:  # not ours to change: the umask still protects what we write
        pass
    return home
