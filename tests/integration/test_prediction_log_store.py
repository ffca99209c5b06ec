"""The prediction log and its labels in a real PostgreSQL (SLUICE_PREDICTION_LOG_URL): the same rows back as SQLite
gives, a store that is down named in one line, and a writer that outlives an outage."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pandas as pd
import pytest

from sluicegate.cli import main
from sluicegate.errors import ConfigError, ServiceUnreachableError
from sluicegate.serving.feedback import import_feedback, parse_feedback, read_labelled_predictions, record_feedback
from sluicegate.serving.logstore import RECONNECT_AFTER_S, URL_ENV, log_store, pg_schema
from sluicegate.serving.predlog import (
    LabelSchema,
    PredictionEvent,
    PredictionLog,
    label_schemas,
    read_prediction_log,
    register_label_schema,
)
from tests.helpers import Postgres, pg_unavailable, postgres_bin, running_postgres, write_log

pytestmark = pytest.mark.slow

NOW = 2_000_000_000.0
DAY = 86400.0
SCHEMA = LabelSchema("classification", "churned", (0, 1), "customer_id", "1")


def _event(i: int, endpoint: str = "predict", traffic: str = "live", ts: float = NOW - 60, version: str = "1",
           customer: int | None = None) -> PredictionEvent:
    inputs = {"tenure": i, "plan": "basic" if i % 2 else "pro", "customer_id": customer, "score": i / 3}
    if endpoint == "predict_proba":
        p1 = (i % 10) / 10
        return PredictionEvent(ts + i, "churn", version, endpoint, "model", inputs, int(p1 > 0.5),
                               {"0": 1 - p1, "1": p1}, f"p{i}", traffic, str(customer) if customer is not None else None)
    return PredictionEvent(ts + i, "churn", version, endpoint, "model", inputs, i % 2, None, f"p{i}", traffic,
                           str(customer) if customer is not None else None)


EVENTS = ([_event(i, customer=100 + i) for i in range(4)]
          + [_event(i, "predict_proba", customer=100 + i) for i in range(4, 8)]
          + [_event(i, traffic="canary") for i in range(8, 11)]
          + [_event(11, "predict_proba", traffic="health")]
          + [_event(12, ts=NOW - 45 * DAY, customer=112)]
          + [_event(13, customer=101, version="2"), _event(14, traffic="canary", customer=101)])
# accepted, by id value (customer 101: its newest live prediction, p13), wrong class, unknown id, late, duplicate
LABELS = [{"prediction_id": "p0", "label": 1}, {"customer_id": 101, "label": "0"}, {"prediction_id": "p2", "label": 7},
          {"prediction_id": "nope", "label": 1}, {"prediction_id": "p12", "label": 0},
          {"prediction_id": "p4", "label": 1.0}, {"prediction_id": "p0", "label": 0}, {"prediction_id": "p8", "label": 0}]


@pytest.fixture(scope="module")
def pg():
    yield from running_postgres("predlog")


@pytest.fixture()
def pg_url(pg, monkeypatch):
    """SLUICE_PREDICTION_LOG_URL set to a fresh schema's database (each test its own project name)."""
    url = pg.url("predlog")
    monkeypatch.setenv(URL_ENV, url)
    return url


def _both(tmp_path, monkeypatch, url: str, project: str, read):
    """`read(home)` on the SQLite log and on the PostgreSQL log of the same writes."""
    out = {}
    for kind in ("sqlite", "postgresql"):
        home = tmp_path / kind
        if kind == "sqlite":
            monkeypatch.delenv(URL_ENV, raising=False)
        else:
            monkeypatch.setenv(URL_ENV, url)
        out[kind] = read(home)
    return out


def test_postgres_log_reads_back_the_rows_sqlite_gives(pg_url, tmp_path, monkeypatch):
    """The same writes through the real writer and feedback core: every reader returns the same frame."""
    project = "churn_same"
    events = [PredictionEvent(e.ts, project, *(getattr(e, f) for f in ("model_version", "endpoint", "source", "inputs",
                                                                        "prediction", "probabilities", "prediction_id",
                                                                        "traffic", "id_value"))) for e in EVENTS]

    def write(home):
        result = write_log(home, project, events, SCHEMA, LABELS, now=NOW)
        more = write_log(home, project, [], SCHEMA, [{"prediction_id": "p5", "label": 0}, {"prediction_id": "p0", "label": 1}],
                         now=NOW + 10)  # a second batch: p0 is a duplicate across batches
        return [o.to_dict() for o in result.outcomes + more.outcomes]

    outcomes = _both(tmp_path, monkeypatch, pg_url, project, write)
    assert outcomes["postgresql"] == outcomes["sqlite"]
    assert [o["status"] for o in outcomes["sqlite"]] == [
        "accepted", "accepted", "wrong_class", "unknown_id", "late", "accepted", "duplicate", "accepted",
        "accepted", "duplicate"]
    assert not (tmp_path / "postgresql" / "predictions").exists()  # nothing written to the local disk

    readers = {
        "live": lambda h: read_prediction_log(project, h),
        "all": lambda h: read_prediction_log(project, h, traffic=None),
        "canary": lambda h: read_prediction_log(project, h, traffic=("canary",)),
        "none": lambda h: read_prediction_log(project, h, traffic=()),
        "last_n": lambda h: read_prediction_log(project, h, last_n=3),
        "since": lambda h: read_prediction_log(project, h, since=NOW - 55),
        "version": lambda h: read_prediction_log(project, h, model_version="2"),
        "labelled": lambda h: read_labelled_predictions(project, h),
        "labelled_all": lambda h: read_labelled_predictions(project, h, traffic=None, include_late=False),
        "labelled_v1": lambda h: read_labelled_predictions(project, h, model_version="1", last_n=2),
    }
    for name, read in readers.items():
        frames = _both(tmp_path, monkeypatch, pg_url, project, read)
        assert len(frames["sqlite"]) or name == "none", name
        pd.testing.assert_frame_equal(frames["postgresql"], frames["sqlite"], obj=name)
    labelled = _both(tmp_path, monkeypatch, pg_url, project, readers["labelled"])["postgresql"]
    assert dict(zip(labelled["prediction_id"], labelled["churned"])) == {"p0": 1, "p4": 1, "p5": 0, "p12": 0, "p13": 0}

    def schemas(home):
        conn = log_store(project, home).reader()
        try:
            return label_schemas(conn)
        finally:
            conn.close()

    got = _both(tmp_path, monkeypatch, pg_url, project, schemas)
    assert got["postgresql"] == got["sqlite"] == {"1": SCHEMA}


def test_import_and_cli_use_the_configured_store(pg_url, tmp_path, monkeypatch, capsys):
    """`sluice feedback import` and import_feedback store labels in PostgreSQL, and the readers see them."""
    project = "churn_import"
    events = [PredictionEvent(NOW + i, project, "1", "predict", "model", {"tenure": i}, 0, None, f"q{i}", "live", None)
              for i in range(3)]
    write_log(tmp_path, project, events, SCHEMA, [])
    csv = tmp_path / "labels.csv"
    pd.DataFrame({"prediction_id": ["q0", "q1"], "label": [1, 0]}).to_csv(csv, index=False)
    result = import_feedback(project, csv, tmp_path, now=NOW + 60)
    assert result.counts["accepted"] == 2
    pd.DataFrame({"prediction_id": ["q2"], "label": [1]}).to_csv(csv, index=False)
    monkeypatch.setenv("SLUICE_HOME", str(tmp_path))
    assert main(["feedback", "import", project, str(csv)]) == 0
    assert "1 accepted" in capsys.readouterr().out
    got = read_labelled_predictions(project, tmp_path)
    assert list(got["prediction_id"]) == ["q0", "q1", "q2"] and list(got["churned"]) == [1, 0, 1]
    assert not (tmp_path / "predictions").exists()
    assert log_store(project).schema == pg_schema(project) == "predlog_churn_import"


def _port(offset: int) -> int:
    """0 (any free port), or SLUICE_TEST_PG_PORT + offset where ports are handed out by range."""
    fixed = int(os.environ.get("SLUICE_TEST_PG_PORT") or 0)
    return fixed + offset if fixed else 0


def _dead_port() -> socket.socket:
    """A loopback port nothing listens on, held (bound, never listening) so nothing else takes it meanwhile."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", _port(2)))
    return sock


def test_a_store_that_is_down_is_one_clear_error_not_an_empty_log(pg, tmp_path, monkeypatch, capsys):
    sock = _dead_port()
    try:
        port = sock.getsockname()[1]
        monkeypatch.setenv(URL_ENV, f"postgresql://sluice:s3cret@127.0.0.1:{port}/predlog")
        for read in (lambda: read_prediction_log("churn", tmp_path), lambda: read_labelled_predictions("churn", tmp_path)):
            with pytest.raises(ServiceUnreachableError) as err:
                read()
            text = str(err.value)
            assert "\n" not in text and "s3cret" not in text
            assert f"127.0.0.1:{port}" in text and URL_ENV in text and "refused" in text.lower()
            assert text.startswith(f"prediction log store postgresql://sluice:***@127.0.0.1:{port}/predlog ({URL_ENV}): "
                                   "cannot connect: ")
        csv = tmp_path / "labels.csv"
        pd.DataFrame({"prediction_id": ["q0"], "label": [1]}).to_csv(csv, index=False)
        monkeypatch.setenv("SLUICE_HOME", str(tmp_path))
        assert main(["feedback", "import", "churn", str(csv)]) == ServiceUnreachableError.exit_code
        said = [line for line in capsys.readouterr().err.splitlines() if "prediction log store" in line]
        assert len(said) == 1 and "cannot connect" in said[0] and "s3cret" not in said[0]
    finally:
        sock.close()
    monkeypatch.setenv(URL_ENV, pg.url("predlog").replace(":sluice-test-only@", ":wrong-password@"))
    with pytest.raises(ServiceUnreachableError, match="cannot connect: .*password authentication failed") as err:
        read_prediction_log("churn", tmp_path)
    assert "wrong-password" not in str(err.value)
    monkeypatch.setenv(URL_ENV, "mysql://u@h/db")
    with pytest.raises(ConfigError, match=f"{URL_ENV}: must be a postgresql:// URL"):
        read_prediction_log("churn", tmp_path)


def test_writer_drops_and_counts_while_postgres_is_down_then_writes_again(tmp_path, monkeypatch):
    """Its own server, stopped and started under a live writer: requests never wait, losses are counted."""
    bin_dir = postgres_bin()
    if bin_dir is None:
        pg_unavailable("no PostgreSQL server binaries (initdb, pg_ctl) found")
    server = Postgres(bin_dir, port=_port(1) or None)
    try:
        server.start()
        server.create_databases("predlog")
        monkeypatch.setenv(URL_ENV, server.url("predlog"))
        store = log_store("churn", tmp_path)
        plog = PredictionLog(store, flush_interval_s=0.05)
        feedback_db = store.connect()
        register_label_schema(feedback_db, SCHEMA)
        plog.record([_event(0)])
        assert plog.flush(10) and plog.written == 1

        server.halt()
        for i in range(1, 50):
            plog.record([_event(i)])  # returns at once: nothing waits on the dead store
        assert plog.flush(30)
        assert plog.dropped == 49 and plog.written == 1 and plog._thread.is_alive()
        with pytest.raises(ServiceUnreachableError):
            record_feedback(feedback_db, parse_feedback([{"prediction_id": "p0", "label": 1}]), current=SCHEMA)

        server.restart()
        time.sleep(RECONNECT_AFTER_S + 0.5)  # past the reconnect back-off
        plog.record([_event(50), _event(51)])
        assert plog.flush(30) and plog.written == 3 and plog.dropped == 49
        result = record_feedback(feedback_db, parse_feedback([{"prediction_id": "p0", "label": 1}]), current=SCHEMA)
        assert result.counts["accepted"] == 1  # the feedback connection reconnected too
        plog.close()
        feedback_db.close()
        assert list(read_prediction_log("churn", tmp_path)["prediction_id"]) == ["p0", "p50", "p51"]
    finally:
        server.stop()



@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
def test_a_served_model_logs_to_the_configured_store_and_its_labels_join(pg, tmp_path, monkeypatch, kind):
    """`bentoml serve` with SLUICE_PREDICTION_LOG_URL in its environment: answers and labels land in PostgreSQL,
    nothing under SLUICE_HOME/predictions, and the URL (with its password) is nowhere in the bento. Unset: the
    SQLite file, as before."""
    import httpx

    from sluicegate.config import DeployConfig, PackagingConfig
    from sluicegate.deploy import free_port, start_backend, stop_process_group, wait_ready
    from sluicegate.packaging import package_model
    from tests.helpers import PASSWORD, Registry, env_var, feature_records, wait_for_log

    home = tmp_path / "home"
    monkeypatch.delenv(URL_ENV, raising=False)
    with env_var("SLUICE_HOME", str(home)), env_var(URL_ENV, pg.url("predlog") if kind == "postgresql" else ""):
        registry = Registry(home)
        registry.promote(registry.register(1.0))
        bento = package_model(registry.tracker, "churn", None, PackagingConfig(runtime="native"), DeployConfig(),
                              "classification", registry.settings)
        port = int(os.environ.get("SLUICE_TEST_SERVE_PORT") or 0) or free_port()
        log_file = home / "serve.log"
        proc = start_backend(bento, "127.0.0.1", port, registry.settings, log_file)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_ready(proc, url, 240, log_file)
            tail = registry.frame.tail(12).reset_index(drop=True)
            answers = httpx.post(f"{url}/predict", json=feature_records(registry.frame, 12), timeout=30).json()
            ids = [a["prediction_id"] for a in answers]
            proba = httpx.post(f"{url}/predict_proba", json=feature_records(registry.frame, 2), timeout=30).json()
            log = wait_for_log(set(ids) | {a["prediction_id"] for a in proba}, home)
            assert list(log["prediction_id"]) == ids + [a["prediction_id"] for a in proba]
            assert log["tenure"].tolist()[:12] == tail.tenure.tolist()
            body = [{"prediction_id": i, "label": int(y)} for i, y in zip(ids, tail.churned)]
            resp = httpx.post(f"{url}/feedback", json=body + [{"prediction_id": ids[0], "label": 0}], timeout=30)
            assert resp.status_code == 200, resp.text
            assert resp.json()["summary"]["accepted"] == 12 and resp.json()["summary"]["duplicate"] == 1
        finally:
            stop_process_group(proc.pid)
        joined = read_labelled_predictions("churn", home)
        assert dict(zip(joined["prediction_id"], joined["churned"])) == dict(zip(ids, tail.churned.tolist()))
        assert (home / "predictions" / "churn" / "predictions.sqlite").exists() == (kind == "sqlite")
        bento_files = [p for p in Path(bento.bento_path).rglob("*") if p.is_file() and p.suffix in (".json", ".yaml", ".py", ".txt")]
        assert bento_files and not [p for p in bento_files if PASSWORD in p.read_text(errors="ignore")]


def test_doctor_reaches_the_shared_log(pg_url, tmp_path):
    from sluicegate.doctor import OK, run_checks

    check = {c.name: c for c in run_checks({"SLUICE_HOME": str(tmp_path), URL_ENV: pg_url}).checks}["prediction-log"]
    assert check.status == OK and "connected" in check.detail and "sluice-test-only" not in check.target
