"""Serving latency and throughput: the Bento vs a minimal FastAPI + uvicorn app vs a bare http.server floor.

All three serve the same fitted pipeline (16 numeric + 3 categorical columns, XGBoost 100 trees,
n_jobs=1) on loopback, one worker process each. The FastAPI app validates with the same generated
pydantic record model as the Bento; the raw floor does no validation (json.loads + DataFrame +
predict). The load generator is a minimal asyncio HTTP/1.1 client with keep-alive connections.
Each scenario is bounded in time and in requests. Run: `.venv/bin/python benchmarks/serving.py`.

`--shadow-overhead` runs only `shadow_overhead()`: the champion's p50 through the front at c=1
with prediction logging on, plain forwarding vs mirroring 100% of requests to a shadow candidate.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from sluicegate.deploy import free_port as _free_port

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

NUMERIC = tuple(f"x{i}" for i in range(16))
CATEGORICAL = ("plan", "region", "channel")


# ---------------------------------------------------------------- the servers under test
def _load(workdir: Path):
    import joblib

    from sluicegate.serving.schema import FeatureSchema

    model = joblib.load(workdir / "model.pkl")
    schema = FeatureSchema.from_dict(json.loads((workdir / "schema.json").read_text()))
    return model, schema


def run_fastapi(workdir: Path, port: int) -> None:
    import uvicorn
    from fastapi import FastAPI

    from sluicegate.serving.schema import record_model, records_frame

    model, schema = _load(workdir)
    Record = record_model(schema)
    app = FastAPI()

    def predict(records):
        frame = records_frame(records, schema)
        return [{"prediction": int(v)} for v in model.predict(frame)]

    # real annotations (this module has postponed ones): FastAPI reads the body type from them
    predict.__annotations__ = {"records": list[Record], "return": list[dict]}
    app.post("/predict")(predict)

    uvicorn.run(app, host="127.0.0.1", port=port, http="httptools", loop=_uvicorn_loop(), log_level="warning",
                access_log=False)


def _uvicorn_loop() -> str:
    try:
        import uvloop  # noqa: F401

        return "uvloop"
    except ImportError:
        return "asyncio"


def run_raw(workdir: Path, port: int) -> None:
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    import pandas as pd

    model, schema = _load(workdir)
    columns = schema.columns

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body go out in separate writes

        def do_POST(self):  # noqa: N802
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            frame = pd.DataFrame(json.loads(body), columns=columns)
            out = json.dumps([{"prediction": int(v)} for v in model.predict(frame)]).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def log_message(self, *args):
            pass

    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer.request_queue_size = 256  # the default backlog of 5 resets connections at c=32
    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


# ---------------------------------------------------------------- load generator
async def _worker(port: int, body: bytes, stop_at: float, budget: list[int], latencies: list[float],
                  errors: list[int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = (f"POST /predict HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n\r\n").encode()
    try:
        while time.perf_counter() < stop_at and budget[0] > 0:
            budget[0] -= 1
            start = time.perf_counter()
            writer.write(head + body)
            await writer.drain()
            status = await reader.readline()
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
            if b" 200 " in status:
                latencies.append(time.perf_counter() - start)
            elif b" 503 " in status:  # BentoML sheds load when the batch queue would exceed max_latency_ms
                errors.append(503)
                await asyncio.sleep(0.05)
            else:
                raise RuntimeError(f"server answered {status!r}")
    finally:
        writer.close()


def load(port: int, body: bytes, concurrency: int, seconds: float, max_requests: int) -> dict:
    errors: list[int] = []

    async def main() -> tuple[list[float], float]:
        latencies: list[float] = []
        budget = [max_requests]
        start = time.perf_counter()
        await asyncio.gather(*(_worker(port, body, start + seconds, budget, latencies, errors)
                               for _ in range(concurrency)))
        return latencies, time.perf_counter() - start

    latencies, elapsed = asyncio.run(main())
    latencies.sort()
    n = len(latencies)
    return {"requests": n, "p50_ms": 1000 * latencies[n // 2], "p99_ms": 1000 * latencies[min(n - 1, int(n * 0.99))],
            "rps": n / elapsed, "shed": len(errors)}


# ---------------------------------------------------------------- orchestration


def _wait(port: int, path: str | None, deadline_s: float = 120) -> None:
    import httpx

    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            if path is None:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    return
            elif httpx.get(f"http://127.0.0.1:{port}{path}", timeout=2).status_code == 200:
                return
        except Exception:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"server on {port} not ready")


def _start(cmd: list[str], env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def _stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGKILL)


def prepare(workdir: Path, log_predictions: bool = False):
    """Fit the model, write it for the baselines, and build the Bento."""
    import joblib
    from sklearn.pipeline import Pipeline
    from xgboost import XGBClassifier

    from benchmarks._common import wide_frame
    from sluicegate.config import DeployConfig, FeaturesConfig, PackagingConfig
    from sluicegate.features import FeatureColumns, FeaturePipeline, build_preprocessor
    from sluicegate.packaging import PackageInputs, build_bento
    from sluicegate.serving.schema import infer_feature_schema
    from sluicegate.settings import load_settings
    from sluicegate.tracking import ModelRecord

    frame = wide_frame(5000)
    cols = FeatureColumns(NUMERIC, CATEGORICAL, ())
    spec = FeaturesConfig(numeric={"columns": list(NUMERIC)}, categorical={"columns": list(CATEGORICAL)})
    X = frame[[*NUMERIC, *CATEGORICAL]]
    features = FeaturePipeline(build_preprocessor(spec, cols).fit(X), cols)
    est = XGBClassifier(n_estimators=100, max_depth=4, n_jobs=1, random_state=0)
    model = Pipeline([("features", features), ("model", est)]).fit(X, frame["churned"])
    schema = infer_feature_schema(frame, NUMERIC, CATEGORICAL)
    joblib.dump(model, workdir / "model.pkl")
    (workdir / "schema.json").write_text(json.dumps(schema.to_dict()))
    settings = load_settings({"SLUICE_HOME": str(workdir / "home"), "BENTOML_HOME": str(workdir / "bentoml")})
    record = ModelRecord("bench", "1", "bench-run", "models:/bench/1", {}, {})
    packaging = PackagingConfig(max_batch_size=1000, max_latency_ms=1000, log_predictions=log_predictions)
    bento = build_bento(PackageInputs(record, model, None, schema, X.tail(5), "2026-01-01T00:00:00+00:00"),
                        packaging, DeployConfig(), "classification", settings)
    rows = json.loads(X.head(100).to_json(orient="records"))
    return bento, settings, rows


# ---------------------------------------------------------------- shadow mirroring through the front
def shadow_overhead(seconds: float = 4.0, rounds: int = 3, max_requests: int = 5000) -> dict:
    """The champion's p50 through the front at c=1 (one row, prediction logging on): plain forwarding
    (`deploy.strategy: direct`) vs shadow mirroring of 100% of live requests to a candidate.

    Two `bentoml serve` processes of the same Bento share the prediction log; the front is the
    real one (`sluicegate.deploy.proxy`). Rounds alternate direct / shadow so the machine's other
    load falls on both alike; the medians of the rounds are compared. Goal: shadow adds <= 10%.
    """
    import secrets

    from sluicegate.config import ShadowConfig
    from sluicegate.deploy.processes import renice_tree
    from sluicegate.deploy.proxy import ROUTING_FILE, start_front, write_backend
    from sluicegate.packaging import bentoml_env

    workdir = Path(tempfile.mkdtemp(prefix="sluice-bench-shadow-"))
    print(f"workdir {workdir}", flush=True)
    bento, settings, rows = prepare(workdir, log_predictions=True)
    env = {**os.environ, **bentoml_env(settings), "SLUICE_HOME": str(settings.home)}
    ports = {side: _free_port() for side in ("champion", "candidate", "front")}
    folder = workdir / "front"
    folder.mkdir()
    procs = [_start([sys.executable, "-m", "bentoml", "serve", bento.bento_tag, "--host", "127.0.0.1", "--port",
                     str(ports[side])], env) for side in ("champion", "candidate")]
    front = None
    try:
        for side in ("champion", "candidate"):
            _wait(ports[side], "/readyz")
        renice_tree(procs[1].pid, ShadowConfig().nice)  # as a shadow rollout does (deploy.shadow.nice)
        write_backend(folder, ports["champion"])
        front = start_front("127.0.0.1", ports["front"], folder, secrets.token_hex(8), 5)
        routing = {"mode": "shadow", "project": "bench", "share": 1.0, "candidate_port": ports["candidate"],
                   "started_at": time.time()}
        body = json.dumps(rows[:1]).encode()
        # "routed": the front's request-by-request path with nothing mirrored (share 0), to tell its own
        # cost from the candidate's (which shares the CPUs with the champion)
        p50: dict[str, list[float]] = {"direct": [], "routed": [], "shadow": []}
        for _ in range(rounds):
            for mode in p50:
                if mode != "direct":
                    (folder / ROUTING_FILE).write_text(json.dumps({**routing, "share": 1.0 if mode == "shadow" else 0}))
                else:
                    (folder / ROUTING_FILE).unlink(missing_ok=True)
                time.sleep(0.2)
                load(ports["front"], body, 1, 1.0, 500)  # warm-up; new connections see the new mode
                r = load(ports["front"], body, 1, seconds, max_requests)
                p50[mode].append(r["p50_ms"])
                print(f"front {mode:6s} c=1 rows=1 p50 {r['p50_ms']:7.2f} ms  p99 {r['p99_ms']:7.2f} ms  "
                      f"{r['rps']:7.1f} req/s ({r['requests']} ok)", flush=True)
        stats = json.loads((folder / "traffic-stats.json").read_text()) if (folder / "traffic-stats.json").exists() else {}
    finally:
        if front is not None:
            _stop(front)
        for proc in procs:
            _stop(proc)
    direct, shadow = sorted(p50["direct"])[rounds // 2], sorted(p50["shadow"])[rounds // 2]
    routed = sorted(p50["routed"])[rounds // 2]
    ratio = shadow / direct
    cand = stats.get("candidate", {})
    print(f"shadow copies answered: {cand.get('requests', 0)} (dropped {cand.get('dropped', 0)}, errors "
          f"{cand.get('errors', 0)}, statuses {cand.get('statuses')}), candidate p50 "
          f"{cand.get('p50_ms') or float('nan'):.2f} ms")
    print(f"the front's routed path alone (nothing mirrored): median p50 {routed:.2f} ms = {routed / direct:.2f}x direct")
    print(f"goal shadow mirroring of 100% adds <= 10% to the champion's p50 at c=1: median p50 direct {direct:.2f} ms,"
          f" shadow {shadow:.2f} ms = {ratio:.2f}x -> {'met' if ratio <= 1.10 else 'NOT met'}")
    return {"direct_p50_ms": direct, "routed_p50_ms": routed, "shadow_p50_ms": shadow, "ratio": ratio, "rounds": p50}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="time per scenario")
    parser.add_argument("--max-requests", type=int, default=20000, help="request cap per scenario")
    parser.add_argument("--role", choices=["fastapi", "raw"], help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--shadow-overhead", action="store_true",
                        help="only measure shadow mirroring through the front (see shadow_overhead)")
    args = parser.parse_args(argv)
    if args.shadow_overhead:
        shadow_overhead(args.seconds)
        return 0
    if args.role == "fastapi":
        run_fastapi(args.workdir, args.port)
        return 0
    if args.role == "raw":
        run_raw(args.workdir, args.port)
        return 0

    workdir = Path(tempfile.mkdtemp(prefix="sluice-bench-serving-"))
    print(f"workdir {workdir}", flush=True)
    bento, settings, rows = prepare(workdir)
    from sluicegate.packaging import bentoml_env

    servers: dict[str, tuple[list[str], dict | None, str | None]] = {}
    ports = {name: _free_port() for name in ("bento", "fastapi", "raw")}
    env = {**os.environ, **bentoml_env(settings), "SLUICE_HOME": str(settings.home)}
    servers["bento"] = ([sys.executable, "-m", "bentoml", "serve", bento.bento_tag, "--host", "127.0.0.1",
                         "--port", str(ports["bento"])], env, "/readyz")
    for role in ("fastapi", "raw"):
        servers[role] = ([sys.executable, str(Path(__file__).resolve()), "--role", role, "--workdir", str(workdir),
                          "--port", str(ports[role])], None, None)
    scenarios = [(1, 1), (1, 100), (32, 1), (32, 100)]
    results: dict[tuple[str, int, int], dict] = {}
    for name, (cmd, env_, ready) in servers.items():
        proc = _start(cmd, env_)
        try:
            _wait(ports[name], ready)
            for conc, batch in scenarios:
                body = json.dumps(rows[:batch]).encode()
                load(ports[name], body, conc, 1.0, 2000)  # warm-up (bounded)
                results[(name, conc, batch)] = r = load(ports[name], body, conc, args.seconds, args.max_requests)
                print(f"{name:8s} c={conc:<3d} rows={batch:<4d} p50 {r['p50_ms']:7.2f} ms  p99 {r['p99_ms']:7.2f} ms  "
                      f"{r['rps']:8.1f} req/s  ({r['requests']} ok, {r['shed']} shed with 503)", flush=True)
        finally:
            _stop(proc)
    print(f"\nbaseline: FastAPI {__import__('fastapi').__version__} + uvicorn {__import__('uvicorn').__version__} "
          f"(http=httptools, loop={_uvicorn_loop()}), 1 worker; raw floor: http.server ThreadingHTTPServer")
    print("ratios (Bento / FastAPI):")
    for conc, batch in scenarios:
        b, f = results[("bento", conc, batch)], results[("fastapi", conc, batch)]
        print(f"  c={conc:<3d} rows={batch:<4d} p50 {b['p50_ms'] / f['p50_ms']:.2f}x  throughput {b['rps'] / f['rps']:.2f}x")
    p50 = results[("bento", 1, 1)]["p50_ms"] / results[("fastapi", 1, 1)]["p50_ms"]
    thr = results[("bento", 32, 1)]["rps"] / results[("fastapi", 32, 1)]["rps"]
    print(f"goal p50 at c=1 <= 1.5x FastAPI: {p50:.2f}x -> {'met' if p50 <= 1.5 else 'NOT met'}")
    print(f"goal throughput at c=32 (1 row) >= 1.5x FastAPI: {thr:.2f}x -> {'met' if thr >= 1.5 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
