"""Run the test suite as a few pytest processes at once (what `make test` runs).

Most slow tests wait on other processes (a Prefect server, `bentoml serve`, a container), so
independent groups in parallel finish well before the same tests in one process. Each group is
its own pytest session (its own Prefect harness, temp folders and free ports); the output of each
goes to build/test-logs/<group>.log and is printed when the group ends. Exit status: the first
failing group's, never pytest's 5 (no tests collected).

    python tests/run_groups.py [--only NAME ...] [extra pytest args]

The containers group starts when `infra/podman/setup.sh` has finished, if .ci/run started it in
the background (it writes build/podman-setup.rc when done); elsewhere it starts at once and skips
with one line when podman or the images are missing.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOGS = ROOT / "build" / "test-logs"
INTEGRATION = "tests/integration"
GROUPS: dict[str, list[str]] = {
    # quick and CPU-bound, then the fault injections (groups balanced by measured time: ~10-15 min each on 2 cores)
    "unit-faults": ["tests/unit", "tests/faults", "tests/integration/test_deploy_faults.py",
                    "tests/integration/test_traffic_front.py"],
    # flows under one in-process Prefect harness
    "flows": [f"{INTEGRATION}/{m}" for m in (
        "test_training_flow.py", "test_tuning_flow.py", "test_release_flow.py", "test_monitoring_flow.py",
        "test_learning_retrain.py", "test_cli_failures.py", "test_registry_reader_http.py", "test_local_server.py",
        "test_serving.py", "test_onnx_serving.py", "test_rollout_flow.py")],
    # real servers and long journeys
    "journeys": ["tests/acceptance", *(f"{INTEGRATION}/{m}" for m in (
        "test_closed_loop.py", "test_approval_flow.py", "test_postgres.py", "test_prediction_log_store.py",
        "test_dask.py"))],
    "containers": [f"{INTEGRATION}/test_containers.py", f"{INTEGRATION}/test_container_target.py"],
}


def _covered() -> None:
    """Every test module belongs to exactly one group (a new module must be placed)."""
    listed = {p for paths in GROUPS.values() for p in paths}
    folders = [p for p in listed if (ROOT / p).is_dir()]
    modules = {str(p.relative_to(ROOT)) for p in (ROOT / "tests").rglob("test_*.py")}
    missing = sorted(m for m in modules if m not in listed and not any(m.startswith(f + "/") for f in folders))
    if missing:
        raise SystemExit(f"tests/run_groups.py: put these modules in a group: {', '.join(missing)}")


SETUP_DEADLINE_S = 2400  # the podman setup from scratch takes about 8 minutes on 2 cores


def _ready(name: str, rc_file: str | None, since: float) -> bool:
    """Whether a group may start: the containers group waits for the podman setup (bounded)."""
    if name != "containers" or not rc_file:
        return True
    if Path(rc_file).exists():
        print(f"[containers] infra/podman/setup.sh finished (exit {Path(rc_file).read_text().strip()})", flush=True)
        return True
    if time.monotonic() - since > SETUP_DEADLINE_S:
        print(f"[containers] {rc_file} did not appear within {SETUP_DEADLINE_S} s; starting anyway", flush=True)
        return True
    return False


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", default=None, help="run only these groups")
    args, extra = ap.parse_known_args(argv)
    _covered()
    LOGS.mkdir(parents=True, exist_ok=True)
    names = args.only or list(GROUPS)
    unknown = [n for n in names if n not in GROUPS]
    if unknown:
        raise SystemExit(f"unknown group(s) {', '.join(unknown)}; groups: {', '.join(GROUPS)}")
    procs: dict[str, subprocess.Popen] = {}
    started: dict[str, float] = {}
    rc_file = os.environ.get("SLUICE_PODMAN_SETUP_RC")
    pending = list(names)
    results: dict[str, int] = {}
    begun = time.monotonic()
    while pending or procs:
        for name in list(pending):
            if not _ready(name, rc_file, begun):
                continue
            cmd = [sys.executable, "-m", "pytest", "-q", "--durations=10", *extra, *GROUPS[name]]
            log = open(LOGS / f"{name}.log", "w")
            procs[name] = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
            started[name] = time.monotonic()
            pending.remove(name)
            print(f"[{name}] started: {' '.join(GROUPS[name])}", flush=True)
        for name, proc in list(procs.items()):
            if proc.poll() is None:
                continue
            del procs[name]
            results[name] = proc.returncode
            text = (LOGS / f"{name}.log").read_text(errors="replace")
            print(f"\n===== [{name}] exit {proc.returncode} after {time.monotonic() - started[name]:.0f} s =====", flush=True)
            print(text if proc.returncode not in (0,) else text[-4000:], flush=True)
        time.sleep(2)
    print("\n" + "  ".join(f"{n}: {'ok' if rc == 0 else f'FAILED ({rc})'}" for n, rc in results.items()), flush=True)
    failed = [rc for rc in results.values() if rc != 0]
    if any(rc == 5 for rc in failed):
        print("a group collected no tests: that is a failure here, not a pass", flush=True)
    return (1 if failed[0] == 5 else failed[0]) if failed else 0


if __name__ == "__main__":
    sys.exit(main())
