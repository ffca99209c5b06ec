"""Benchmark: `sluice` commands as whole processes, against `python -c "import pandas"` as the floor.

Each command runs as a fresh process (what a user waits for), several times; min / median / max
are printed with the ratios:

  config check configs/diabetes.yaml            goal <= 2 s
  status diabetes (SQLite registry)             goal <= 3 s
  run, unchanged (local Prefect server up)      re-run of the same data, config and code
  run, first (fresh stores) / plain script      goal <= 1.3x: the same steps in one plain process
  (reference) plain script with sluice's GC settings: `sluice run` freezes the objects its imports made
              out of the collector's sight before the flow and again before exiting; the plain script
              as written does neither. The same script given both shows what orchestration costs apart
              from that (printed, not the goal's baseline)

The local Prefect server runs on a free loopback port under a temporary SLUICE_HOME and is
stopped at the end. First runs use a fresh SLUICE_HOME each (PREFECT_API_URL points them at the
one server), with `deploy.enabled=false`: the comparison is training, not serving. The machine
is shared, so the load average is printed with the numbers.
Usage: python benchmarks/cli_latency.py [runs]   (default 3)
       python benchmarks/cli_latency.py --plain CONFIG HOME   (the plain-script side, one process)
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROJECT = "configs/diabetes.yaml"
NO_DEPLOY = ["--set", "deploy.enabled=false"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {**os.environ, "SLUICE_HOME": str(home), "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
           "PREFECT_LOGGING_LEVEL": "WARNING", "GX_ANALYTICS_ENABLED": "false", **extra}
    for key in ("PREFECT_HOME", "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "SLUICE_PREFECT_SERVER"):
        env.pop(key, None)
    if "PREFECT_API_URL" not in extra:
        env.pop("PREFECT_API_URL", None)
    return env


def _sluice(*args: str) -> list[str]:
    return [sys.executable, "-m", "sluicegate.cli", *args]


def _time(cmd: list[str], env: dict[str, str], expect: tuple[int, ...] = (0,)) -> float:
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    took = time.perf_counter() - start
    if done.returncode not in expect:
        raise SystemExit(f"{' '.join(cmd[2:])} exited {done.returncode}:\n{done.stderr[-3000:]}")
    return took


def _row(label: str, times: list[float], floor: float | None = None) -> float:
    med = statistics.median(times)
    ratio = f"  ({med / floor:.1f}x the pandas import)" if floor else ""
    print(f"  {label:<44} min {min(times):6.2f}  median {med:6.2f}  max {max(times):6.2f} s{ratio}", flush=True)
    return med


def plain(config: str, home: str, freeze: bool = False) -> None:
    """The flow's steps called from one plain process (benchmarks/pipeline_overhead.py's script);
    `freeze`: with the GC settings `sluice run` uses (gc.freeze after the imports and before exiting)."""
    import gc

    sys.argv = sys.argv[:1]
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from pipeline_overhead import plain_script

    if freeze:
        import pandas  # noqa: F401  what the script's own imports pull in, as sluice's imports do for it
        import sklearn  # noqa: F401

        import sluicegate.tracking  # noqa: F401
        gc.freeze()
    print(plain_script(Path(config), Path(home)))
    if freeze:
        gc.freeze()


def _bytecode() -> str:
    """Whether the libraries' compiled bytecode is there: without it every process compiles what it imports."""
    import importlib.util
    import sysconfig

    init = Path(sysconfig.get_paths()["purelib"]) / "pandas" / "__init__.py"
    if Path(importlib.util.cache_from_source(str(init))).exists():
        return "cached (.pyc present)"
    if os.environ.get("PYTHONDONTWRITEBYTECODE"):
        return "NOT cached and never written (PYTHONDONTWRITEBYTECODE set): every process compiles its imports"
    return "not cached yet (written on first import)"


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    base = Path(tempfile.mkdtemp(prefix="sluice-bench-cli-"))
    server_home = base / "server-home"
    port = _free_port()
    print(f"CLI latency benchmark: {runs} runs each, whole processes; load average {os.getloadavg()}")
    print(f"library bytecode: {_bytecode()}")
    floor = _row('python -c "import pandas" (floor)', [_time([sys.executable, "-c", "import pandas"], _env(base))
                                                        for _ in range(runs)])
    check = _row(f"sluice config check {PROJECT}", [_time(_sluice("config", "check", PROJECT), _env(base))
                                                    for _ in range(runs)], floor)
    server_env = _env(server_home, SLUICE_PREFECT_PORT=str(port))
    try:
        print(f"  (starting the local Prefect server on 127.0.0.1:{port}, untimed)", flush=True)
        _time(_sluice("server", "start"), server_env)
        api = json.loads((server_home / "server.json").read_text())["url"] + "/api" \
            if (server_home / "server.json").exists() else f"http://127.0.0.1:{port}/api"
        firsts, plains, frozen = [], [], []
        for i in range(runs):  # alternate the sides: the machine's load drifts
            firsts.append(_time(_sluice("run", PROJECT, *NO_DEPLOY), _env(base / f"run-{i}", PREFECT_API_URL=api)))
            plains.append(_time([sys.executable, __file__, "--plain", PROJECT, str(base / f"plain-{i}")], _env(base)))
            frozen.append(_time([sys.executable, __file__, "--plain-frozen", PROJECT, str(base / f"frozen-{i}")],
                                _env(base)))
        first = _row("sluice run, first (fresh stores)", firsts, floor)
        script = _row("same steps, plain script process", plains, floor)
        script_frozen = _row("(reference) the plain script, sluice's GC settings", frozen, floor)
        last = base / f"run-{runs - 1}"
        unchanged = _row("sluice run, unchanged (server up)",
                         [_time(_sluice("run", PROJECT, *NO_DEPLOY), _env(last, PREFECT_API_URL=api)) for _ in range(runs)],
                         floor)
        status = _row("sluice status diabetes", [_time(_sluice("status", "diabetes"), _env(last)) for _ in range(runs)], floor)
    finally:
        subprocess.run(_sluice("server", "stop"), cwd=ROOT, env=server_env, capture_output=True, timeout=120)
    print(f"load average after: {os.getloadavg()}")
    print(f"config check: median {check:.2f} s (goal <= 2 s): {'MET' if check <= 2 else 'NOT MET'}")
    print(f"status: median {status:.2f} s (goal <= 3 s): {'MET' if status <= 3 else 'NOT MET'}")
    print(f"unchanged run: median {unchanged:.2f} s = {unchanged / script:.2f}x the plain script")
    ratio = first / script
    print(f"RATIO first run / plain script = {ratio:.2f} (goal <= 1.3): {'MET' if ratio <= 1.3 else 'NOT MET'}")
    print(f"(reference) first run / the plain script with sluice's GC settings = {first / script_frozen:.2f}: "
          "what the orchestration costs apart from the GC settings")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] in ("--plain", "--plain-frozen"):
        plain(sys.argv[2], sys.argv[3], freeze=sys.argv[1] == "--plain-frozen")
    else:
        main()
