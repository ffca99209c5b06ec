"""Secrets in SQL URLs never reach an error line: config errors, `config check --connect`, ingestion."""

from __future__ import annotations

import pytest
import yaml

from sluicegate.cli import main
from sluicegate.config import load_config
from sluicegate.errors import DataSourceError
from sluicegate.settings import redact
from tests.helpers import churn_config

PASSWORD, APIKEY = "pw-S3CRET-1", "key-S3CRET-2"


def _project(root, url) -> str:
    cfg = churn_config(root)
    cfg["data"]["source"] = {"kind": "sql", "url": url, "query": "SELECT * FROM churn"}
    (root / "configs").mkdir(parents=True, exist_ok=True)
    path = root / "configs" / "churn.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return str(path)


def _no_secret(text: str) -> None:
    assert PASSWORD not in text and APIKEY not in text, text


def test_config_error_masks_the_password_it_refuses(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = _project(tmp_path, f"postgresql://etl:{PASSWORD}@127.0.0.1:1/db?apikey={APIKEY}&sslmode=disable")
    assert main(["config", "check", path]) == 2
    err = capsys.readouterr().err
    _no_secret(err)
    assert "data.source.url: the URL holds a password" in err
    assert "postgresql://etl:***@127.0.0.1:1/db?apikey=***&sslmode=disable" in err, err


@pytest.mark.parametrize("url", [
    f"postgres//etl:{PASSWORD}@127.0.0.1:1/db?apikey={APIKEY}",  # malformed: no scheme separator
    f"postgresql://etl:{PASSWORD}@127.0.0.1:1/db?apikey={APIKEY}",  # a driver option it refuses, nothing listening
    f"nosuchdb://etl:{PASSWORD}@127.0.0.1:1/db?apikey={APIKEY}",  # no such dialect
])
def test_sql_errors_never_print_the_secret(tmp_path, capsys, monkeypatch, url):
    from sluicegate import data as core

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SLUICE_FAULTS_DB_URL", url)
    path = _project(tmp_path, {"env": "SLUICE_FAULTS_DB_URL"})
    assert main(["config", "check", "--connect", path]) == 2
    err = capsys.readouterr().err
    _no_secret(err)
    assert "data.source." in err, err
    cfg = load_config(path)
    with pytest.raises(DataSourceError) as caught:
        core.ingest_data(cfg.data.source, tmp_path, "churned", tmp_path / "store", "churn")
    message = str(caught.value)
    _no_secret(message)
    assert message.startswith("data.source."), message
    # nothing chained either (a traceback with --debug, or Prefect's failure record, prints the chain)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_redact_masks_urls_quoted_inside_driver_messages():
    # SQLAlchemy 2.0 quoted the URL it could not parse; other drivers quote their DSN
    text = f"Could not parse SQLAlchemy URL from string 'postgres//etl:{PASSWORD}@h/db?apikey={APIKEY}&x=1'"
    assert redact(text) == "Could not parse SQLAlchemy URL from string 'postgres//etl:***@h/db?apikey=***&x=1'"
    assert redact(f"https://h/x?token={APIKEY};region=eu") == "https://h/x?token=***;region=eu"
    assert redact(f"postgresql://u:p@ss{PASSWORD}@h/db") == "postgresql://u:***@h/db"
    assert redact("sqlite:////home/me/.sluice/mlflow.db") == "sqlite:////home/me/.sluice/mlflow.db"
