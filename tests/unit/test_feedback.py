"""Prediction log rows monitoring can trust, and feedback labels: parsing, validation, storage, the join."""

from __future__ import annotations

import json
import math
import sqlite3
import threading

import pandas as pd
import pytest

from sluicegate.cli import main
from sluicegate.errors import FeedbackError
from sluicegate.serving.feedback import (
    await_logged,
    check_label,
    import_feedback,
    parse_feedback,
    read_labelled_predictions,
    record_feedback,
)
from sluicegate.serving.predlog import (
    LabelSchema,
    PredictionEvent,
    PredictionLog,
    connect_log,
    log_path,
    read_prediction_log,
    register_label_schema,
)

NOW = 2_000_000_000.0
DAY = 86400.0
CLASSES = LabelSchema("classification", "churned", (0, 1), "customer_id", "1")
REGRESSION = LabelSchema("regression", "price", None, None, "1")


def _event(i: int, endpoint: str = "predict", traffic: str = "live", ts: float = NOW - 60, version: str = "1",
           customer: int | None = None, value=None) -> PredictionEvent:
    inputs = {"tenure": i, "plan": "basic" if i % 2 else "pro", "customer_id": customer}
    if endpoint == "predict_proba":
        p1 = (i % 10) / 10
        return PredictionEvent(ts, "churn", version, endpoint, "model", inputs, int(p1 > 0.5),
                               {"0": 1 - p1, "1": p1}, f"p{i}", traffic, str(customer) if customer is not None else None)
    return PredictionEvent(ts, "churn", version, endpoint, "model", inputs, i % 2 if value is None else value,
                           None, f"p{i}", traffic, str(customer) if customer is not None else None)


def _write(home, events, schema: LabelSchema | None = CLASSES, project: str = "churn") -> sqlite3.Connection:
    plog = PredictionLog(log_path(home, project))
    plog.record(events)
    plog.close()
    conn = connect_log(log_path(home, project))
    if schema is not None:
        register_label_schema(conn, schema)
    return conn


@pytest.fixture()
def churn_log(tmp_path):
    """Live /predict and /predict_proba rows, canary and health rows, one old prediction, customer ids."""
    events = [_event(i, customer=100 + i) for i in range(4)]
    events += [_event(i, "predict_proba", customer=100 + i) for i in range(4, 8)]
    events += [_event(i, traffic="canary") for i in range(8, 11)]
    events += [_event(11, "predict_proba", traffic="health")]
    events += [_event(12, ts=NOW - 45 * DAY, customer=112)]
    events += [_event(13, customer=101), _event(14, traffic="canary", customer=101)]  # customer 101 again
    conn = _write(tmp_path, events)
    yield tmp_path, conn
    conn.close()


# ---------------------------------------------------------------- the prediction log
def test_reader_returns_live_rows_flat_and_parquet_safe(churn_log, tmp_path):
    home, _ = churn_log
    frame = read_prediction_log("churn", home)
    assert list(frame.columns[:6]) == ["prediction_id", "ts", "endpoint", "model_version", "traffic", "source"]
    assert list(frame.columns[-3:]) == ["prediction", "proba_0", "proba_1"]
    assert set(frame["traffic"]) == {"live"} and len(frame) == 10
    assert str(frame["ts"].dtype) == "datetime64[ns, UTC]"
    proba_rows = frame[frame["endpoint"] == "predict_proba"]
    assert proba_rows["proba_1"].notna().all() and frame.loc[frame["endpoint"] == "predict", "proba_1"].isna().all()
    # the label of a /predict_proba row is its most probable class, a scalar like the /predict labels
    assert list(proba_rows["prediction"]) == [0, 0, 1, 1]
    assert str(frame["prediction"].dtype) == "int64"
    frame.to_parquet(tmp_path / "live.parquet", index=False)
    assert len(pd.read_parquet(tmp_path / "live.parquet")) == 10


def test_reader_filters_traffic_last_n_and_since(churn_log):
    home, _ = churn_log
    everything = read_prediction_log("churn", home, traffic=None)
    assert len(everything) == 15 and set(everything["traffic"]) == {"live", "canary", "health"}
    assert set(read_prediction_log("churn", home, traffic=("canary",))["prediction_id"]) == {"p8", "p9", "p10", "p14"}
    assert list(read_prediction_log("churn", home, last_n=2)["prediction_id"]) == ["p12", "p13"]
    assert len(read_prediction_log("churn", home, since=NOW - 30 * DAY)) == 9
    assert read_prediction_log("churn", home, traffic=()).empty
    assert read_prediction_log("nothing", home).empty


def test_readers_keep_one_versions_answers(tmp_path):
    """Monitoring judges the champion on its own answers: after a promotion the previous version's
    predictions and labels are left out of the window."""
    events = [_event(i, version="1" if i < 6 else "2") for i in range(10)]
    conn = _write(tmp_path, events)
    record_feedback(conn, parse_feedback([{"prediction_id": f"p{i}", "label": i % 2} for i in range(10)]), current=CLASSES)
    conn.close()
    assert len(read_prediction_log("churn", tmp_path)) == 10
    v2 = read_prediction_log("churn", tmp_path, model_version="2")
    assert v2.prediction_id.tolist() == ["p6", "p7", "p8", "p9"] and set(v2.model_version) == {"2"}
    assert read_prediction_log("churn", tmp_path, model_version="2", last_n=2).prediction_id.tolist() == ["p8", "p9"]
    assert read_prediction_log("churn", tmp_path, model_version="3").empty
    labelled = read_labelled_predictions("churn", tmp_path, model_version="1")
    assert sorted(labelled.prediction_id) == [f"p{i}" for i in range(6)]
    assert len(read_labelled_predictions("churn", tmp_path)) == 10


def test_labels_wait_briefly_for_rows_another_process_is_still_writing(tmp_path):
    """A canary candidate (another process) logs its answers a moment after sending them: a label that
    arrives first waits for the row instead of being called unknown."""
    conn = _write(tmp_path, [_event(0)])
    late = PredictionLog(log_path(tmp_path, "churn"))
    timer = threading.Timer(0.3, lambda: (late.record([_event(1), _event(2)]), late.flush(5.0)))
    timer.start()
    items = parse_feedback([{"prediction_id": f"p{i}", "label": 1} for i in range(3)])
    try:
        assert await_logged(conn, items, timeout_s=10.0) == 0
        result = record_feedback(conn, items, current=CLASSES)
    finally:
        timer.join()
        late.close()
    assert result.counts["accepted"] == 3
    assert await_logged(conn, parse_feedback([{"prediction_id": "never", "label": 1}]), timeout_s=0.2) == 1
    conn.close()


def test_regression_log_has_no_proba_columns(tmp_path):
    _write(tmp_path, [_event(i, value=i * 1.5) for i in range(3)] + [_event(3, value=None)], REGRESSION, "price")
    frame = read_prediction_log("price", tmp_path)
    assert not [c for c in frame.columns if c.startswith("proba_")]
    assert frame["prediction"].tolist()[:3] == [0.0, 1.5, 3.0]
    frame.to_parquet(tmp_path / "r.parquet")


def test_mixed_types_in_a_column_become_text_not_an_arrow_error(tmp_path):
    events = [PredictionEvent(NOW, "p", "1", "predict", "model", {"x": v}, label, None, f"id{i}")
              for i, (v, label) in enumerate([(1, "a"), ("b", 2), (None, None), ({"k": 1}, True)])]
    _write(tmp_path, events, None, "p")
    frame = read_prediction_log("p", tmp_path)
    frame.to_parquet(tmp_path / "p.parquet")
    assert frame["prediction"].tolist()[:2] == ["a", "2"]


def _old_log(home):
    """A log file written by the first release: no ids, no traffic, probabilities in `outputs`."""
    path = log_path(home, "churn")
    path.parent.mkdir(parents=True)
    conn = sqlite3.connect(path)
    conn.executescript("""
        CREATE TABLE predictions (id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, project TEXT NOT NULL,
            model_version TEXT NOT NULL, endpoint TEXT NOT NULL, source TEXT NOT NULL, inputs TEXT NOT NULL,
            outputs TEXT NOT NULL);
        CREATE INDEX predictions_ts ON predictions (ts);""")
    conn.executemany("INSERT INTO predictions (ts, project, model_version, endpoint, source, inputs, outputs)"
                     " VALUES (?, ?, ?, ?, ?, ?, ?)",
                     [(NOW, "churn", "1", "predict", "model", json.dumps({"tenure": 3}), "1"),
                      (NOW, "churn", "1", "predict_proba", "model", json.dumps({"tenure": 4}),
                       json.dumps({"0": 0.8, "1": 0.2}))])
    conn.commit()
    conn.close()
    return path


def test_old_log_file_reads_then_migrates_on_open(tmp_path):
    path = _old_log(tmp_path)
    old = read_prediction_log("churn", tmp_path)
    assert old["prediction"].tolist() == [1, 0] and old["proba_0"].tolist()[1] == 0.8
    assert old["prediction_id"].tolist() == ["legacy-1", "legacy-2"] and set(old["traffic"]) == {"live"}
    old.to_parquet(tmp_path / "old.parquet")
    plog = PredictionLog(path)  # the writer migrates: new columns, feedback table
    plog.record([_event(20, "predict_proba", traffic="canary"), _event(21)])
    plog.close()
    both = read_prediction_log("churn", tmp_path)
    assert both["prediction_id"].tolist() == ["legacy-1", "legacy-2", "p21"]
    with sqlite3.connect(path) as conn:
        assert {"prediction_id", "traffic", "label", "probabilities", "id_value"} <= \
            {r[1] for r in conn.execute("PRAGMA table_info(predictions)")}
        assert conn.execute("SELECT count(*) FROM feedback").fetchone() == (0,)


def test_log_keeps_every_event_under_load(tmp_path):
    plog = PredictionLog(log_path(tmp_path, "load"), flush_interval_s=0.01, max_queue=16)

    def send(k):
        for j in range(50):
            plog.record([_event(k * 1000 + j * 10 + m) for m in range(10)])

    threads = [threading.Thread(target=send, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    plog.close()
    assert plog.dropped == 0 and plog.written == 2000
    assert len(read_prediction_log("load", tmp_path)) == 2000


def test_flush_makes_recorded_events_readable(tmp_path):
    plog = PredictionLog(log_path(tmp_path, "f"), flush_interval_s=5)
    plog.record([_event(1)])
    assert plog.flush(10)
    assert len(read_prediction_log("f", tmp_path)) == 1
    plog.close()


# ---------------------------------------------------------------- malformed feedback bodies
@pytest.mark.parametrize("body, words", [
    (b"[{not json", "not valid JSON"),
    ({"prediction_id": "p1", "label": 1}, "not a single object"),
    ("just text", "got str"),
    (7, "got int"),
    (None, "got NoneType"),
    ([], "empty"),
    ([1], "item 0: must be an object"),
    ([{"prediction_id": "p1"}], "item 0: missing 'label'"),
    ([{"label": 1}], "item 0: missing 'prediction_id' or 'customer_id'"),
    ([{"prediction_id": "p1", "label": 1, "lable": 1}], "unknown key 'lable'"),
    ([{"prediction_id": 5, "label": 1}], "'prediction_id' must be the id string"),
    ([{"prediction_id": "", "label": 1}], "'prediction_id' must be the id string"),
    ([{"customer_id": [1], "label": 1}], "'customer_id' must be a string or an integer"),
    ([{"prediction_id": "p1", "label": 1}, {"label": 0}], "item 1: missing"),
])
def test_malformed_bodies_name_the_problem(body, words):
    with pytest.raises(FeedbackError) as info:
        parse_feedback(body, "customer_id")
    assert words in str(info.value)
    assert info.value.exit_code == 2


def test_many_problems_are_listed_then_counted():
    with pytest.raises(FeedbackError) as info:
        parse_feedback([{"label": 1}] * 25)
    assert len(info.value.problems) == 11 and info.value.problems[-1] == "... and 15 more"


def test_body_as_bytes_and_id_column_items_parse():
    items = parse_feedback(b'[{"prediction_id": " p1 ", "label": 1}, {"customer_id": 7.0, "label": "0"}]', "customer_id")
    assert [(i.prediction_id, i.id_value, i.label) for i in items] == [("p1", None, 1), (None, "7", "0")]


# ---------------------------------------------------------------- label checks
@pytest.mark.parametrize("value, status, stored", [
    (1, "accepted", 1), (0, "accepted", 0), (1.0, "accepted", 1), ("1", "accepted", 1),
    (2, "wrong_class", None), ("yes", "wrong_class", None), (True, "wrong_class", None),
    (None, "invalid_label", None), (math.nan, "invalid_label", None), ([1], "invalid_label", None),
])
def test_classification_labels_must_be_a_training_class(value, status, stored):
    got, label, why = check_label(value, CLASSES)
    assert (got, label) == (status, stored)
    assert (why == "") == (status == "accepted")


@pytest.mark.parametrize("value, status", [
    (3.5, "accepted"), (3, "accepted"), (math.nan, "invalid_label"), (math.inf, "invalid_label"),
    (-math.inf, "invalid_label"), ("3.5", "invalid_label"), (True, "invalid_label"), (None, "invalid_label"),
])
def test_regression_labels_must_be_finite_numbers(value, status):
    assert check_label(value, REGRESSION)[0] == status


# ---------------------------------------------------------------- storing feedback
def _send(conn, body, **kw):
    return record_feedback(conn, parse_feedback(body, "customer_id"), now=NOW, **kw)


def test_mixed_batch_answers_each_item(churn_log):
    _, conn = churn_log
    result = _send(conn, [
        {"prediction_id": "p0", "label": 1},        # accepted
        {"prediction_id": "p1", "label": 5},        # wrong class
        {"prediction_id": "nope", "label": 1},      # unknown
        {"prediction_id": "p0", "label": 0},        # duplicate within the batch: the first is kept
        {"prediction_id": "p12", "label": 0},       # 45 days old: stored, late
        {"prediction_id": "p2", "label": None},     # invalid
        {"customer_id": 103, "label": "1"},         # by id column
    ])
    assert [o.status for o in result.outcomes] == ["accepted", "wrong_class", "unknown_id", "duplicate", "late",
                                                   "invalid_label", "accepted"]
    assert result.counts == {"accepted": 2, "late": 1, "duplicate": 1, "unknown_id": 1, "wrong_class": 1,
                             "invalid_label": 1}
    assert result.stored == 3
    body = result.to_dict()
    assert body["summary"]["received"] == 7 and body["items"][6]["prediction_id"] == "p3"
    assert "already labelled 1" in body["items"][3]["detail"]
    assert "(0, 1)" in body["items"][1]["detail"] or "0, 1" in body["items"][1]["detail"]
    stored = dict(conn.execute("SELECT prediction_id, label FROM feedback").fetchall())
    assert stored == {"p0": "1", "p12": "0", "p3": "1"}


def test_duplicate_across_batches_keeps_the_first_label(churn_log):
    _, conn = churn_log
    assert _send(conn, [{"prediction_id": "p4", "label": 1}]).counts["accepted"] == 1
    again = _send(conn, [{"prediction_id": "p4", "label": 0}])
    assert again.outcomes[0].status == "duplicate"
    assert conn.execute("SELECT label FROM feedback WHERE prediction_id = 'p4'").fetchone() == ("1",)


def test_id_value_names_the_newest_live_prediction(churn_log):
    _, conn = churn_log
    result = _send(conn, [{"customer_id": 101, "label": 0}, {"customer_id": "999", "label": 0}])
    assert [o.status for o in result.outcomes] == ["accepted", "unknown_id"]
    assert result.outcomes[0].prediction_id == "p13"  # not p1 (older), not p14 (canary)


def test_late_window_is_configurable(churn_log):
    _, conn = churn_log
    assert _send(conn, [{"prediction_id": "p12", "label": 1}], late_after_days=60).outcomes[0].status == "accepted"


def test_regression_feedback_rejects_nan_inf_and_text(tmp_path):
    conn = _write(tmp_path, [_event(i, value=float(i)) for i in range(5)], REGRESSION, "price")
    body = ('[{"prediction_id": "p0", "label": NaN}, {"prediction_id": "p1", "label": Infinity},'
            ' {"prediction_id": "p2", "label": "12.5"}, {"prediction_id": "p3", "label": 12.5}]')
    result = record_feedback(conn, parse_feedback(body.encode()), now=NOW)
    assert [o.status for o in result.outcomes] == ["invalid_label", "invalid_label", "invalid_label", "accepted"]
    assert "finite" in result.outcomes[0].detail and "number" in result.outcomes[2].detail
    conn.close()


def test_labelled_predictions_join_live_rows_to_their_labels(churn_log, tmp_path):
    home, conn = churn_log
    _send(conn, [{"prediction_id": "p0", "label": 1}, {"prediction_id": "p5", "label": 0},
                 {"prediction_id": "p9", "label": 1}, {"prediction_id": "p12", "label": 1}])  # p9 is canary
    joined = read_labelled_predictions("churn", home)
    assert dict(zip(joined["prediction_id"], joined["churned"])) == {"p0": 1, "p5": 0, "p12": 1}
    assert joined.loc[joined["prediction_id"] == "p5", "endpoint"].item() == "predict_proba"
    assert joined["label_late"].tolist() == [False, False, True]
    assert set(read_labelled_predictions("churn", home, include_late=False)["prediction_id"]) == {"p0", "p5"}
    joined.to_parquet(tmp_path / "labelled.parquet")
    assert read_labelled_predictions("nothing", home).empty


# ---------------------------------------------------------------- sluice feedback import
def test_import_csv_and_parquet(churn_log, tmp_path):
    home, _ = churn_log
    csv = tmp_path / "labels.csv"
    pd.DataFrame({"prediction_id": ["p0", "p1", "zzz"], "label": [1, 7, 0]}).to_csv(csv, index=False)
    result = import_feedback("churn", csv, home, now=NOW)
    assert [o.status for o in result.outcomes] == ["accepted", "wrong_class", "unknown_id"]
    pq = tmp_path / "labels.parquet"
    pd.DataFrame({"customer_id": [102, 103], "churned": [0, 1]}).to_parquet(pq)
    assert import_feedback("churn", pq, home, now=NOW).counts["accepted"] == 2
    assert read_labelled_predictions("churn", home)["label_source"].tolist() == \
        ["import:labels.csv", "import:labels.parquet", "import:labels.parquet"]


def test_cli_import_exit_codes(churn_log, tmp_path, monkeypatch, capsys):
    home, _ = churn_log
    monkeypatch.setenv("SLUICE_HOME", str(home))
    good = tmp_path / "good.csv"
    pd.DataFrame({"prediction_id": ["p6", "p7"], "label": [0, 9]}).to_csv(good, index=False)
    assert main(["feedback", "import", "churn", str(good)]) == 0
    assert "1 accepted" in capsys.readouterr().out
    assert main(["feedback", "import", "churn", str(good)]) == 4  # p6 duplicate, p7 still a wrong class
    bad = tmp_path / "bad.parquet"
    bad.write_text("not parquet")
    assert main(["feedback", "import", "churn", str(bad)]) == 2
    assert "cannot read it as Parquet" in capsys.readouterr().err
    nolabel = tmp_path / "nolabel.csv"
    pd.DataFrame({"prediction_id": ["p6"]}).to_csv(nolabel, index=False)
    assert main(["feedback", "import", "churn", str(nolabel)]) == 2
    assert "no label column" in capsys.readouterr().err
    assert main(["feedback", "import", "churn", str(tmp_path / "missing.csv")]) == 2
    assert main(["feedback", "import", "other", str(good)]) == 2


# ---------------------------------------------------------------- the traffic header
def test_middleware_tags_the_request_and_refuses_unknown_tags():
    import asyncio

    from sluicegate.serving import service

    seen = []

    async def app(scope, receive, send):
        seen.append(service.TRAFFIC.get())
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    guard = service.GuardMiddleware(app, 1000, None, {})
    sent = []

    async def call(tag):
        headers = [(b"content-type", b"application/json")] + ([(b"x-sluice-traffic", tag)] if tag else [])
        scope = {"type": "http", "path": "/predict", "method": "POST", "headers": headers}

        async def receive():
            return {"type": "http.request", "body": b"[]", "more_body": False}

        async def send(message):
            sent.append(message)

        await guard(scope, receive, send)

    for tag in (None, b"canary", b"Shadow", b"health"):
        asyncio.run(call(tag))
    assert seen == ["live", "canary", "shadow", "health"]
    sent.clear()
    asyncio.run(call(b"bogus"))
    assert sent[0]["status"] == 400 and b"canary" in sent[1]["body"]


def test_the_store_is_chosen_by_the_environment_alone(tmp_path, monkeypatch):
    from sluicegate.errors import ConfigError
    from sluicegate.serving.logstore import URL_ENV, log_store, pg_schema

    monkeypatch.delenv(URL_ENV, raising=False)
    assert log_store("churn", tmp_path).path == log_path(tmp_path, "churn")
    monkeypatch.setenv(URL_ENV, " postgresql+psycopg://u:pw@db:5432/predictions ")
    store = log_store("churn", tmp_path)
    assert store.path is None and store.url == "postgresql://u:pw@db:5432/predictions"
    assert str(store) == "postgresql://u:***@db:5432/predictions (schema predlog_churn)" and "pw" not in repr(store)
    long = "a" * 63
    assert len(pg_schema(long)) == 63 and pg_schema(long) != pg_schema("a" * 62 + "b")
    monkeypatch.setenv(URL_ENV, "sqlite:////tmp/x.db")
    with pytest.raises(ConfigError, match=f"{URL_ENV}: must be a postgresql:// URL"):
        log_store("churn", tmp_path)
