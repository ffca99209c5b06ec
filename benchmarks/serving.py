"""Serving latency and throughput through the path a user gets, from the loopback floor to the deployed front.

Servers, each one process (plus BentoML's own) on loopback, all scoring the same fitted pipeline:

- echo          a raw asyncio HTTP/1.1 server answering a fixed body, no JSON parsing: the floor
- fastapi-onnx  minimal FastAPI + uvicorn (httptools, uvloop when installed): the same generated pydantic
                record model as the Bento, then `OnnxPredictor.predict(records)`; no prediction log
- fastapi-onnx-workers  the same app in as many uvicorn processes as the model server has workers
                (`packaging.workers: auto`), sharing the port (SO_REUSEPORT): where the model server's
                edge comes from its worker count, this baseline has it too
- fastapi-native  the same with `records_frame` + the pickled pipeline
- bento-onnx / bento-native   `bentoml serve` of the packaged Bento (packaging.runtime onnx / native),
                prediction log on; bento-onnx-nolog: the same without the prediction log (what the log costs)
- front-onnx / front-native   the deployed service (`deploy_local`, as `sluice deploy` runs it: canary,
                then the front process on the stable port forwarding to the Bento), prediction log on;
                after the runs, every answered live record must be in the log

Scenarios: one record and 100 records per request, at concurrency 1 and 32, bounded in time and in
requests, each repeated `--repeats` times (the median p50 and throughput are reported, with the best
of each beside them). For the deployed service the CPU seconds per request of the front process, the model server
(all its processes) and the load generator are printed too: where a request's CPU goes.
`--front-baseline SRC` also starts the front of another checkout (`SRC` holding `sluicegate/`, e.g.
`../main/src`) on the same model server and alternates the two, run for run: an A/B of the front alone
that the machine's other load falls on equally. The load generator is a minimal asyncio HTTP/1.1 client (uvloop when installed) with
keep-alive connections, in this process: on a 2-core machine it competes with the server for CPU, as
any client on the same machine would. The load average is printed with the figures.
Then batch scoring (`scoring.score_frame`) rows/s through the graph and natively.

Then, unless `--no-shadow`, `shadow_overhead()`: the champion's p50 through the front at c=1 with
prediction logging on, plain forwarding vs mirroring 100% of requests to a shadow candidate.

Run: `.venv/bin/python benchmarks/serving.py [--servers echo,fastapi-onnx,...] [--seconds 4] [--repeats 3]
[--ports 3400-3499]`; `--shadow-overhead` runs only the shadow comparison.
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

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sluicegate.deploy import free_port  # noqa: E402

PORT_RANGE: list[int] = []  # --ports: every port this benchmark listens on comes from here


def _free_port() -> int:
    """A free loopback port: from --ports when given (then also for the model servers `deploy_local` starts)."""
    from sluicegate.deploy.processes import port_is_free

    while PORT_RANGE:
        port = PORT_RANGE.pop(0)
        if port_is_free("127.0.0.1", port):
            return port
    if _PORTS_GIVEN:
        raise RuntimeError("--ports: no free port left in the range")
    return free_port()


_PORTS_GIVEN = False


def _use_ports(spec: str) -> None:
    global _PORTS_GIVEN
    low, _, high = spec.partition("-")
    PORT_RANGE[:] = list(range(int(low), int(high or low) + 1))
    _PORTS_GIVEN = True
    import sluicegate.deploy.local as local

    local.free_port = lambda host="127.0.0.1": _free_port()  # the candidate model servers of deploy_local

NUMERIC = tuple(f"x{i}" for i in range(16))
CATEGORICAL = ("plan", "region", "channel")
SERVERS = ("echo", "fastapi-onnx", "fastapi-onnx-workers", "fastapi-native", "bento-onnx", "bento-onnx-nolog",
           "bento-native", "front-onnx", "front-native")
SCENARIOS = ((1, 1), (1, 100), (32, 1), (32, 100))  # (concurrency, records per request)
PROJECT = "bench"
GOAL_P50_MS = 2.0
GOAL_RPS = 2000.0
GOAL_RATIO = 1.5


# ---------------------------------------------------------------- the servers under test
def _load(workdir: Path):
    import joblib

    from sluicegate.onnx_runtime import OnnxExport, OnnxPredictor
    from sluicegate.serving.schema import FeatureSchema

    model = joblib.load(workdir / "model.pkl")
    schema = FeatureSchema.from_dict(json.loads((workdir / "schema.json").read_text()))
    return model, schema, OnnxPredictor(OnnxExport.load(workdir / "onnx"), threads=1)


def run_fastapi(workdir: Path, port: int, runtime: str, reuse_port: bool = False) -> None:
    import uvicorn
    from fastapi import FastAPI

    from sluicegate.serving.schema import record_model, records_frame

    model, schema, predictor = _load(workdir)
    Record = record_model(schema)
    app = FastAPI()

    if runtime == "onnx":
        async def predict(records):
            rows = [r.model_dump(mode="json", by_alias=True) for r in records]
            return [{"prediction": v} for v in predictor.predict(rows)]
    else:
        def predict(records):  # sync: FastAPI runs it in its thread pool, as BentoML does
            frame = records_frame(records, schema)
            return [{"prediction": v} for v in model.predict(frame).tolist()]

    # real annotations (this module has postponed ones): FastAPI reads the body type from them
    predict.__annotations__ = {"records": list[Record], "return": list[dict]}
    app.post("/predict")(predict)
    if not reuse_port:
        uvicorn.run(app, host="127.0.0.1", port=port, http="httptools", loop=_uvicorn_loop(), log_level="warning",
                    access_log=False)
        return
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)  # one of several processes on one port
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", port))
    config = uvicorn.Config(app, http="httptools", loop=_uvicorn_loop(), log_level="warning", access_log=False)
    uvicorn.Server(config).run(sockets=[sock])


def _uvicorn_loop() -> str:
    try:
        import uvloop  # noqa: F401

        return "uvloop"
    except ImportError:
        return "asyncio"


def run_echo(port: int) -> None:
    """Reads each request (head, then content-length bytes) and answers a fixed JSON body."""
    body = b'[{"prediction":0}]'
    answer = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                length = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                await reader.readexactly(length)
                writer.write(answer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024)
        async with server:
            await server.serve_forever()

    _run(main())


def _run(coro) -> None:
    try:
        import uvloop

        uvloop.run(coro)
    except ImportError:
        asyncio.run(coro)


# ---------------------------------------------------------------- load generator
async def _worker(port: int, body: bytes, stop_at: float, budget: list[int], latencies: list[float],
                  errors: list[int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    request = (f"POST /predict HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
               f"content-length: {len(body)}\r\n\r\n").encode() + body
    try:
        while time.perf_counter() < stop_at and budget[0] > 0:
            budget[0] -= 1
            start = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            if head.startswith(b"HTTP/1.1 200 "):
                latencies.append(time.perf_counter() - start)
            elif head.startswith(b"HTTP/1.1 503 "):  # adaptive batching sheds load past max_latency_ms
                errors.append(503)
                await asyncio.sleep(0.05)
            else:
                raise RuntimeError(f"server answered {head[:200]!r}")
    finally:
        writer.close()


def load(port: int, body: bytes, concurrency: int, seconds: float, max_requests: int) -> dict:
    """Closed-loop load: `concurrency` connections, each sending the next request when answered."""
    errors: list[int] = []

    async def main() -> tuple[list[float], float]:
        latencies: list[float] = []
        budget = [max_requests]
        start = time.perf_counter()
        await asyncio.gather(*(_worker(port, body, start + seconds, budget, latencies, errors)
                               for _ in range(concurrency)))
        return latencies, time.perf_counter() - start

    try:
        import uvloop

        latencies, elapsed = uvloop.run(main())
    except ImportError:
        latencies, elapsed = asyncio.run(main())
    latencies.sort()
    n = len(latencies)
    return {"requests": n, "p50_ms": 1000 * latencies[n // 2] if n else float("nan"),
            "p99_ms": 1000 * latencies[min(n - 1, int(n * 0.99))] if n else float("nan"),
            "rps": n / elapsed, "shed": len(errors)}


# ---------------------------------------------------------------- orchestration
def _wait(port: int, path: str | None, deadline_s: float = 180) -> None:
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


def _start(cmd: list[str], env: dict | None = None, log: Path | None = None) -> subprocess.Popen:
    out = open(log, "ab") if log else subprocess.DEVNULL
    return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def fit(model_kind: str):
    """The pipeline on 5,000 wide rows (16 numeric, 3 categorical), its schema and its ONNX export."""
    from sklearn.pipeline import Pipeline

    from benchmarks._common import wide_frame
    from sluicegate.config import FeaturesConfig
    from sluicegate.features import FeatureColumns, FeaturePipeline, build_preprocessor
    from sluicegate.serving.schema import infer_feature_schema

    frame = wide_frame(5000)
    cols = FeatureColumns(NUMERIC, CATEGORICAL, ())
    spec = FeaturesConfig(numeric={"columns": list(NUMERIC)}, categorical={"columns": list(CATEGORICAL)})
    X = frame[[*NUMERIC, *CATEGORICAL]]
    features = FeaturePipeline(build_preprocessor(spec, cols).fit(X), cols)
    if model_kind == "logistic":
        from sklearn.linear_model import LogisticRegression

        est, task, y = LogisticRegression(max_iter=500), "classification", frame["churned"]
    elif model_kind == "ridge":
        from sklearn.linear_model import Ridge

        est, task, y = Ridge(), "regression", frame["x0"] * 3 + frame["x2"]
    else:
        from xgboost import XGBClassifier

        est, task, y = XGBClassifier(n_estimators=100, max_depth=4, n_jobs=1, random_state=0), "classification", \
            frame["churned"]
    model = Pipeline([("features", features), ("model", est)]).fit(X, y)
    return model, infer_feature_schema(frame, NUMERIC, CATEGORICAL), X, task


def prepare(workdir: Path, model_kind: str) -> dict:
    """Fit, export to ONNX with a parity check, write the baselines' files, build both Bentos."""
    import joblib

    from sluicegate.config import DeployConfig, PackagingConfig
    from sluicegate.onnx_export import check_parity, export_onnx
    from sluicegate.packaging import OnnxStatus, PackageInputs, build_bento
    from sluicegate.settings import load_settings
    from sluicegate.tracking import ModelRecord

    model, schema, X, task = fit(model_kind)
    export = export_onnx(model, X.head(8), task)
    parity = check_parity(model, export, X.tail(2000), task)
    assert parity.passed, parity.to_dict()
    export.save(workdir / "onnx")
    joblib.dump(model, workdir / "model.pkl")
    (workdir / "schema.json").write_text(json.dumps(schema.to_dict()))
    status = OnnxStatus("ok", None, str(workdir / "onnx"), parity.to_dict())
    record = ModelRecord(PROJECT, "1", "bench-run", f"models:/{PROJECT}/1", {}, {})
    bentos, homes = {}, {}
    for name in SERVERS:
        homes[name] = load_settings({"SLUICE_HOME": str(workdir / name), "BENTOML_HOME": str(workdir / "bentoml")})
    for runtime in ("onnx", "native", "onnx-nolog"):
        # packaging defaults (adaptive batching for native, prediction log on) but the runtime
        packaging = PackagingConfig(runtime=runtime.split("-")[0], log_predictions=not runtime.endswith("nolog"))
        bentos[runtime] = build_bento(PackageInputs(record, model, None, schema, X.tail(5).reset_index(drop=True),
                                                    "2026-01-01T00:00:00+00:00", onnx=status),
                                      packaging, DeployConfig(canary_rows=5), task, homes[f"bento-{runtime}"])
    rows = json.loads(X.head(100).to_json(orient="records"))
    return {"model": model, "task": task, "X": X, "bentos": bentos, "homes": homes, "rows": rows,
            "parity": parity}


def _logged_live_rows(settings, since: float) -> int:
    from sluicegate.serving.predlog import connect_log, log_path

    path = log_path(settings.home, PROJECT)
    if not path.exists():
        return 0
    conn = connect_log(path)
    try:
        return conn.execute("SELECT count(*) FROM predictions WHERE traffic = 'live' AND ts >= ?", (since,)).fetchone()[0]
    finally:
        conn.close()


class Served:
    """One server under test: started, its port, how many live records it answered, stopped."""

    def __init__(self, name: str, workdir: Path, prep: dict):
        self.name, self.workdir, self.prep = name, workdir, prep
        self.proc: subprocess.Popen | None = None
        self.port = _free_port()
        self.answered_rows = 0
        self.started_at = time.time()
        self.settings = prep["homes"][name]
        self.baseline: subprocess.Popen | None = None  # --front-baseline: the other checkout's front
        self.baseline_port: int | None = None
        self.extra: list[subprocess.Popen] = []  # fastapi-*-workers: its processes

    def __enter__(self) -> "Served":
        from sluicegate.deploy.processes import serve_env

        kind, _, runtime = self.name.partition("-")  # runtime: onnx, native or onnx-nolog
        me = str(Path(__file__).resolve())
        log = self.workdir / f"{self.name}.log"
        if kind == "echo":
            self.proc = _start([sys.executable, me, "--role", "echo", "--port", str(self.port)], log=log)
            _wait(self.port, None)
        elif kind == "fastapi" and runtime.endswith("-workers"):
            from sluicegate.serving.service import server_workers

            cmd = [sys.executable, me, "--role", "fastapi", "--runtime", runtime.split("-")[0], "--workdir",
                   str(self.workdir), "--port", str(self.port), "--reuse-port"]
            self.extra = [_start(cmd, log=log) for _ in range(server_workers("auto"))]
            time.sleep(0.5)
            _wait(self.port, None)
            time.sleep(5)  # each process binds on its own: give the slower ones time to join
        elif kind == "fastapi":
            self.proc = _start([sys.executable, me, "--role", "fastapi", "--runtime", runtime, "--workdir",
                                str(self.workdir), "--port", str(self.port)], log=log)
            _wait(self.port, None)
        elif kind == "bento":
            bento = self.prep["bentos"][runtime]
            self.proc = _start([sys.executable, "-m", "bentoml", "serve", bento.bento_tag, "--host", "127.0.0.1",
                                "--port", str(self.port)], env=serve_env(self.settings), log=log)
            _wait(self.port, "/readyz")
        else:  # the deployed service, as `sluice deploy` leaves it: front process + canaried Bento
            from sluicegate.config import DeployConfig, PackagingConfig
            from sluicegate.deploy import deploy_local

            spec = DeployConfig(port=self.port, canary_rows=5, readiness_timeout_s=180)
            deploy_local(self.prep["bentos"][runtime], spec, PackagingConfig(runtime=runtime), self.settings)
            if self.prep.get("front_baseline"):
                self.start_baseline(Path(self.prep["front_baseline"]).resolve())
        self.started_at = time.time()
        return self

    def start_baseline(self, src: Path) -> None:
        """The front of another checkout, forwarding to the same model server (same backend file)."""
        import secrets

        from sluicegate.deploy.processes import BACKEND_FILE, state_dir
        from sluicegate.deploy.proxy import is_our_front

        self.baseline_port = _free_port()
        token = secrets.token_hex(8)
        env = {**os.environ, "PYTHONPATH": str(src), "SLUICE_FRONT_TOKEN": token}
        self.baseline = _start([sys.executable, "-m", "sluicegate.deploy.proxy", "127.0.0.1", str(self.baseline_port),
                                str(state_dir(self.settings, PROJECT) / BACKEND_FILE), "5"], env=env,
                               log=self.workdir / f"{self.name}-baseline-front.log")
        end = time.monotonic() + 20
        while not is_our_front("127.0.0.1", self.baseline_port, self.baseline.pid, token):
            if time.monotonic() > end:
                raise RuntimeError(f"the baseline front from {src} did not start")
            time.sleep(0.1)

    def cpu_pids(self) -> dict[str, list[int]]:
        """The processes whose CPU time is split out: the front, the model server (all its processes)."""
        if not self.name.startswith("front"):
            return {}
        from sluicegate.deploy.processes import process_tree, read_state

        state = read_state(self.settings, PROJECT)
        if state is None:
            return {}
        out = {"front": [state.front_pid], "server": [state.backend_pid, *process_tree(state.backend_pid)]}
        if self.baseline is not None:
            out["baseline front"] = [self.baseline.pid]
        return out

    def __exit__(self, *exc) -> None:
        for proc in self.extra:
            _stop(proc)
        if self.baseline is not None:
            _stop(self.baseline)
        if self.proc is not None:
            _stop(self.proc)
        elif self.name.startswith("front"):
            from sluicegate.deploy import stop_local

            stop_local(self.settings, PROJECT)

    def run(self, body: bytes, rows: int, conc: int, seconds: float, max_requests: int,
            port: int | None = None) -> dict:
        pids = self.cpu_pids()
        before = {k: _cpu_seconds(v) for k, v in pids.items()}
        me = time.process_time()
        r = load(port or self.port, body, conc, seconds, max_requests)
        n = max(1, r["requests"])
        r["cpu_us"] = {k: 1e6 * (_cpu_seconds(v) - before[k]) / n for k, v in pids.items()}
        if pids:
            r["cpu_us"]["load generator"] = 1e6 * (time.process_time() - me) / n
        self.answered_rows += r["requests"] * rows
        return r

    def log_complete(self) -> tuple[int, int, float] | None:
        """(answered live records, records in the prediction log, seconds the log took to catch up after the
        load ended) once it caught up, or once it stopped growing for 10 s (120 s at most)."""
        if not self.name.startswith(("bento", "front")) or self.name.endswith("nolog"):
            return None
        start = time.monotonic()
        last, last_change = -1, start
        while True:
            logged = _logged_live_rows(self.settings, self.started_at - 1)
            now = time.monotonic()
            if logged != last:
                last, last_change = logged, now
            if logged >= self.answered_rows or now - last_change > 10 or now - start > 120:
                return self.answered_rows, logged, now - start
            time.sleep(0.2)


def _cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of these processes so far (ones that exited count as 0)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
        except (OSError, IndexError, ValueError):
            pass
    return total / os.sysconf("SC_CLK_TCK")


def _summary(runs: list[dict]) -> dict:
    """The median p50 (with that run's p99) and the median throughput of the runs, and the best of each."""
    ranked = sorted(runs, key=lambda r: r["p50_ms"])
    out = dict(ranked[len(ranked) // 2])
    out["best_p50_ms"] = ranked[0]["p50_ms"]
    out["best_rps"] = max(r["rps"] for r in runs)
    out["runs"] = len(runs)
    rpss = sorted(r["rps"] for r in runs)
    out["rps"] = rpss[len(rpss) // 2]
    return out


def _line(label: str, conc: int, batch: int, r: dict) -> str:
    cpu = r.get("cpu_us") or {}
    split = ("  cpu/request " + ", ".join(f"{k} {v:.0f} us" for k, v in cpu.items())) if cpu else ""
    return (f"{label:21s} c={conc:<3d} rows={batch:<4d} p50 {r['p50_ms']:7.3f} ms (best {r['best_p50_ms']:.3f})  "
            f"p99 {r['p99_ms']:7.2f} ms  {r['rps']:8.1f} req/s (best {r['best_rps']:.1f})  "
            f"({r['requests']} ok, {r['shed']} shed)  load {os.getloadavg()[0]:.2f}{split}")


def batch_scoring(prep: dict, rows: int = 200_000) -> dict[str, float]:
    """rows/s of `score_frame` (what `sluice predict` and each partition run) through the graph and natively."""
    import pandas as pd

    from sluicegate.onnx_runtime import OnnxExport, OnnxPredictor
    from sluicegate.scoring import score_frame

    X = prep["X"]
    frame = pd.concat([X] * (rows // len(X) + 1), ignore_index=True).head(rows)
    out = {}
    for name, predictor in (("onnx", OnnxPredictor(OnnxExport.load(Path(prep["workdir"]) / "onnx"),
                                                   threads=os.cpu_count() or 1)), ("native", None)):
        start = time.perf_counter()
        score_frame(prep["model"], frame, "1", "fp", prep["task"], predictor)
        out[name] = rows / (time.perf_counter() - start)
    return out


# ---------------------------------------------------------------- shadow mirroring through the front
def shadow_overhead(seconds: float = 4.0, rounds: int = 3, max_requests: int = 5000,
                    model_kind: str = "logistic", prep: dict | None = None) -> dict:
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

    if prep is None:
        workdir = Path(tempfile.mkdtemp(prefix="sluice-bench-shadow-"))
        print(f"workdir {workdir}", flush=True)
        prep = prepare(workdir, model_kind)
    else:
        workdir = Path(prep["workdir"])
    bento, settings, rows = prep["bentos"]["onnx"], prep["homes"]["bento-onnx"], prep["rows"]  # log on
    env = {**os.environ, **bentoml_env(settings), "SLUICE_HOME": str(settings.home)}
    ports = {side: _free_port() for side in ("champion", "candidate", "front")}
    folder = workdir / "shadow-front"
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
        # "copied": the front copying and framing each piped request and answer with nothing mirrored
        # (share 0), to tell its own cost from the candidate's (which shares the CPUs with the champion)
        p50: dict[str, list[float]] = {"direct": [], "copied": [], "shadow": []}
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
    copied = sorted(p50["copied"])[rounds // 2]
    ratio = shadow / direct
    cand = stats.get("candidate", {})
    print(f"shadow copies answered: {cand.get('requests', 0)} (dropped {cand.get('dropped', 0)}, errors "
          f"{cand.get('errors', 0)}, statuses {cand.get('statuses')}), candidate p50 "
          f"{cand.get('p50_ms') or float('nan'):.2f} ms")
    print(f"the front's copying alone (nothing mirrored): median p50 {copied:.2f} ms = {copied / direct:.2f}x direct")
    print(f"goal shadow mirroring of 100% adds <= 10% to the champion's p50 at c=1: median p50 direct {direct:.2f} ms,"
          f" shadow {shadow:.2f} ms = {ratio:.2f}x -> {'met' if ratio <= 1.10 else 'NOT met'}")
    return {"direct_p50_ms": direct, "copied_p50_ms": copied, "shadow_p50_ms": shadow, "ratio": ratio, "rounds": p50}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="time per scenario")
    parser.add_argument("--max-requests", type=int, default=40000, help="request cap per scenario")
    parser.add_argument("--servers", default=",".join(SERVERS), help="comma-separated, of: " + ", ".join(SERVERS))
    parser.add_argument("--model", choices=["logistic", "ridge", "xgboost"], default="logistic")
    parser.add_argument("--no-batch", action="store_true", help="skip the batch scoring figures")
    parser.add_argument("--role", choices=["fastapi", "echo"], help=argparse.SUPPRESS)
    parser.add_argument("--runtime", choices=["onnx", "native"], help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--shadow-overhead", action="store_true",
                        help="only measure shadow mirroring through the front (see shadow_overhead)")
    parser.add_argument("--no-shadow", action="store_true", help="skip the shadow mirroring comparison")
    parser.add_argument("--repeats", type=int, default=3, help="runs per scenario (median reported)")
    parser.add_argument("--ports", help="listen only on ports from this range, e.g. 3400-3499")
    parser.add_argument("--front-baseline", type=Path,
                        help="also run the front of another checkout's src (A/B of the front on one model server)")
    args = parser.parse_args(argv)
    if args.ports:
        _use_ports(args.ports)
    if args.shadow_overhead:
        shadow_overhead(args.seconds, model_kind=args.model)
        return 0
    if args.role == "fastapi":
        run_fastapi(args.workdir, args.port, args.runtime, args.reuse_port)
        return 0
    if args.role == "echo":
        run_echo(args.port)
        return 0

    servers = [s for s in args.servers.split(",") if s]
    unknown = set(servers) - set(SERVERS)
    if unknown:
        parser.error(f"unknown servers: {', '.join(sorted(unknown))}")
    workdir = Path(tempfile.mkdtemp(prefix="sluice-bench-serving-"))
    os.environ["BENTOML_DO_NOT_TRACK"] = "true"
    print(f"workdir {workdir}; model {args.model}; load average at start {os.getloadavg()}", flush=True)
    prep = prepare(workdir, args.model)
    prep["workdir"] = str(workdir)
    prep["front_baseline"] = args.front_baseline
    print(f"parity on 2,000 rows: max difference {prep['parity'].max_abs_diff:.2g} (limit {prep['parity'].limit:.2g})",
          flush=True)
    results: dict[tuple[str, int, int], dict] = {}
    logs: dict[str, tuple[int, int] | None] = {}
    for name in servers:
        with Served(name, workdir, prep) as served:
            ports = {name: served.port}
            if served.baseline_port is not None:
                ports[f"{name} (baseline front)"] = served.baseline_port
            for conc, batch in SCENARIOS:
                body = json.dumps(prep["rows"][:batch]).encode()
                runs: dict[str, list[dict]] = {label: [] for label in ports}
                for port in ports.values():
                    served.run(body, batch, conc, 1.0, 2000, port)  # warm-up (bounded)
                for _ in range(max(1, args.repeats)):
                    for label, port in ports.items():  # alternated: the machine's other load falls on each alike
                        runs[label].append(served.run(body, batch, conc, args.seconds, args.max_requests, port))
                for label, got in runs.items():
                    results[(label, conc, batch)] = r = _summary(got)
                    print(_line(label, conc, batch, r), flush=True)
            logs[name] = served.log_complete()
            if logs[name] is not None:
                answered, logged, lag = logs[name]
                print(f"{name:15s} prediction log: {logged} of {answered} answered live records "
                      f"({lag:.1f} s after the load ended)", flush=True)
    print(f"\nbaseline: FastAPI {__import__('fastapi').__version__} + uvicorn {__import__('uvicorn').__version__} "
          f"(http=httptools, loop={_uvicorn_loop()}), 1 worker (fastapi-*-workers: {_auto_workers()}); "
          f"floor: asyncio HTTP/1.1 echo server; model server workers (packaging.workers auto): {_auto_workers()}")
    print(f"load average now {os.getloadavg()} on {os.cpu_count()} cores")
    report_goals(results, logs)
    if args.front_baseline:
        for conc, batch in SCENARIOS:
            for runtime in ("onnx", "native"):
                new, old = results.get((f"front-{runtime}", conc, batch)), \
                    results.get((f"front-{runtime} (baseline front)", conc, batch))
                if new and old:
                    print(f"  front-{runtime} this checkout / baseline front c={conc:<3d} rows={batch:<4d} "
                          f"p50 {new['p50_ms'] / old['p50_ms']:.2f}x  throughput {new['rps'] / old['rps']:.2f}x")
    if not args.no_shadow:
        print("\nshadow mirroring through the front (bento-onnx, prediction log on):", flush=True)
        shadow_overhead(min(args.seconds, 3.0), model_kind=args.model, prep=prep)
    if not args.no_batch:
        rates = batch_scoring(prep)
        print(f"batch scoring (score_frame, 200,000 rows): onnx {rates['onnx']:,.0f} rows/s, native "
              f"{rates['native']:,.0f} rows/s ({rates['onnx'] / rates['native']:.1f}x)")
    return 0


def _auto_workers() -> int:
    from sluicegate.serving.service import server_workers

    return server_workers("auto")


def report_goals(results: dict, logs: dict) -> None:
    def get(name, conc, batch):
        return results.get((name, conc, batch))

    for runtime in ("onnx", "native"):
        for via in ("bento", "front"):
            name = f"{via}-{runtime}"
            for conc, batch in SCENARIOS:
                mine, theirs = get(name, conc, batch), get(f"fastapi-{runtime}", conc, batch)
                if mine and theirs:
                    print(f"  {name:13s} / fastapi-{runtime:6s} c={conc:<3d} rows={batch:<4d} "
                          f"p50 {mine['p50_ms'] / theirs['p50_ms']:.2f}x  throughput {mine['rps'] / theirs['rps']:.2f}x")
    for conc, batch in SCENARIOS:
        mine, theirs = get("front-onnx", conc, batch), get("fastapi-onnx-workers", conc, batch)
        if mine and theirs:
            print(f"  front-onnx    / fastapi-onnx-workers (same process count) c={conc:<3d} rows={batch:<4d} "
                  f"p50 {mine['p50_ms'] / theirs['p50_ms']:.2f}x  throughput {mine['rps'] / theirs['rps']:.2f}x")
    front = get("front-onnx", 1, 1)
    if front:
        print(f"goal one-row p50 through the front <= {GOAL_P50_MS} ms: {front['p50_ms']:.2f} ms -> "
              f"{'met' if front['p50_ms'] <= GOAL_P50_MS else 'NOT met'}")
    front32 = get("front-onnx", 32, 1)
    if front32:
        answered, logged, _ = logs.get("front-onnx") or (0, 0, 0.0)
        ok = front32["rps"] >= GOAL_RPS and logged >= answered
        print(f"goal >= {GOAL_RPS:.0f} req/s at c=32 through the front, every answer logged: {front32['rps']:.0f} "
              f"req/s, {logged}/{answered} logged -> {'met' if ok else 'NOT met'}")
    fast = get("fastapi-onnx", 1, 1)
    if front and fast:
        ratio = front["p50_ms"] / fast["p50_ms"]
        print(f"goal front p50 <= {GOAL_RATIO}x minimal FastAPI on the same runtime (c=1, 1 row): {ratio:.2f}x -> "
              f"{'met' if ratio <= GOAL_RATIO else 'NOT met'}")
    fast32 = get("fastapi-onnx", 32, 1)
    if front32 and fast32:
        ratio = fast32["rps"] / front32["rps"]
        print(f"goal front throughput within {GOAL_RATIO}x of minimal FastAPI (c=32, 1 row): FastAPI/front "
              f"{ratio:.2f}x -> {'met' if ratio <= GOAL_RATIO else 'NOT met'}")
        ratio = front32["rps"] / fast32["rps"]  # the goal read the other way: at least 1.5x FastAPI's throughput
        print(f"goal front throughput >= {GOAL_RATIO}x minimal FastAPI's (c=32, 1 row): front/FastAPI "
              f"{ratio:.2f}x -> {'met' if ratio >= GOAL_RATIO else 'NOT met'}")


if __name__ == "__main__":
    sys.exit(main())
