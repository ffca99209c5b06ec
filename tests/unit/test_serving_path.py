"""The lean request path: records validated once and handed to BentoML, one log queue item per request."""

from __future__ import annotations

import asyncio
import json
import sqlite3

from pydantic import RootModel

from sluicegate.serving import service
from sluicegate.serving.predlog import PredictionEvent, PredictionLog, log_path
from sluicegate.serving.schema import FeatureSchema, FieldSpec, record_model

SCHEMA = FeatureSchema((FieldSpec("tenure", "int", min=0), FieldSpec("plan", "category", categories=("a", "b")),
                        FieldSpec("charges", "float", nullable=True)))


def _call(guard, body: bytes, headers: list | None = None) -> list[dict]:
    sent: list[dict] = []

    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "path": "/predict", "method": "POST",
             "headers": [(b"content-type", b"application/json"), *(headers or [])]}
    asyncio.run(guard(scope, receive, send))
    return sent


def test_middleware_validates_records_once_and_hands_them_on():
    Record = record_model(SCHEMA, base=service.TaggedRecord)
    Spec = RootModel[list[Record]]
    handed, bodies = [], []

    async def app(scope, receive, send):  # stands in for BentoML: what its input parsing would get
        handed.append(service.VALIDATED.get())
        bodies.append((await receive())["body"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"[]"})

    guard = service.GuardMiddleware(app, 10_000, None, {}, record_specs={"/predict": Spec})
    body = json.dumps([{"tenure": 3, "plan": "a", "charges": None}, {"tenure": 5, "plan": "b", "charges": 1.5}]).encode()
    sent = _call(guard, body, [(b"x-sluice-traffic", b"shadow"), (b"x-sluice-prediction-id", b"id-1,id-2")])
    assert sent[0]["status"] == 200
    got = handed[0]
    assert isinstance(got, Spec) and [r.tenure for r in got.root] == [3, 5]
    # validated once: each record took its given id in order and its request's traffic tag
    assert [r._given_id for r in got.root] == ["id-1", "id-2"] and {r._traffic for r in got.root} == {"shadow"}
    assert bodies == [body]  # the body is still there for whoever reads it
    assert service.VALIDATED.get() is None  # nothing leaks past the request

    handed.clear()
    sent = _call(guard, json.dumps([{"tenure": -1, "plan": "c"}]).encode())
    assert handed == [] and sent[0]["status"] == 400
    detail = json.loads(sent[1]["body"])["detail"]
    assert {(d["record"], d["field"]) for d in detail} == {(0, "tenure"), (0, "plan"), (0, "charges")}
    sent = _call(guard, b"[{not json")
    assert handed == [] and sent[0]["status"] == 400 and json.loads(sent[1]["body"])["error"] == "invalid JSON"


def test_prediction_log_takes_one_item_per_request_and_writes_json(tmp_path):
    plog = PredictionLog(log_path(tmp_path, "p"), flush_interval_s=5)
    events = [PredictionEvent(1.0, "p", "1", "predict", "model", {"tenure": i, "plan": "é"}, 0.5 * i,
                              {"0": 0.25, "1": 0.75}, f"id-{i}") for i in range(3)]
    plog.record(events)
    plog.record([PredictionEvent(2.0, "p", "1", "predict", "model", {"tenure": 9}, float("nan"), None, "id-nan")])
    assert plog._queue.qsize() == 2  # one queue item per request, whatever its number of records
    assert plog.flush(10)
    plog.close()
    with sqlite3.connect(log_path(tmp_path, "p")) as conn:
        rows = conn.execute("SELECT prediction_id, inputs, outputs, label FROM predictions ORDER BY id").fetchall()
    assert [r[0] for r in rows] == ["id-0", "id-1", "id-2", "id-nan"]
    assert json.loads(rows[1][1]) == {"tenure": 1, "plan": "é"} and json.loads(rows[1][2]) == {"0": 0.25, "1": 0.75}
    assert json.loads(rows[2][3]) == 1.0 and rows[3][3] == "NaN"  # NaN stays NaN, as json always wrote it


def test_answers_written_with_orjson_read_as_the_pydantic_models_wrote_them():
    import numpy as np
    from pydantic import RootModel

    cases = [
        (service.Prediction, [{"prediction": 1, "model_version": "3", "fallback": False, "prediction_id": "a"},
                              {"prediction": 2.5e-07, "model_version": "3", "fallback": True, "prediction_id": "b",
                               "warnings": ["tenure: 99 is above max 80"]},
                              {"prediction": None, "model_version": "3", "fallback": False, "error": "could not score",
                               "prediction_id": "c"},
                              {"prediction": "yes", "model_version": "3", "fallback": False}, {"prediction": True,
                                                                                               "model_version": "3"}]),
        (service.Probabilities, [{"probabilities": {"0": 0.25, "1": 0.75}, "model_version": "3", "fallback": False,
                                  "prediction_id": "d"}]),
    ]
    for model, outputs in cases:
        fast = service.answer_json(outputs, model)
        slow = RootModel[list[model]]([model(**o) for o in outputs]).model_dump_json().encode()
        assert fast is not None and fast.body == slow and fast.media_type == "application/json"
    # values pydantic would convert are left to pydantic
    assert service.answer_json([{"prediction": np.float32(0.5), "model_version": "3"}], service.Prediction) is None
    assert service.answer_json([{"probabilities": {"0": 0, "1": 1}, "model_version": "3"}], service.Probabilities) is None


def test_auto_workers_is_one_per_usable_cpu_up_to_four(monkeypatch):
    from sluicegate.serving.service import MAX_AUTO_WORKERS, server_workers

    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(2)))
    assert server_workers("auto") == 2
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(32)))
    assert server_workers("auto") == MAX_AUTO_WORKERS == 4
    assert server_workers(3) == 3 and server_workers(None) == 4


def test_auto_workers_respects_a_cgroup_cpu_limit(tmp_path, monkeypatch):
    from sluicegate.serving import service

    limit = tmp_path / "cpu.max"
    limit.write_text("150000 100000\n")  # a container limited to 1.5 CPUs
    assert service.cgroup_cpus(str(limit)) == 2
    limit.write_text("max 100000\n")
    assert service.cgroup_cpus(str(limit)) is None
    assert service.cgroup_cpus(str(tmp_path / "missing")) is None
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(16)))
    monkeypatch.setattr(service, "cgroup_cpus", lambda: 1)
    assert service.server_workers("auto") == 1
