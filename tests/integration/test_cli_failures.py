"""A validation failure through the real CLI process: one line and the report path, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.helpers import churn_config, churn_frame, write_project

ROOT = Path(__file__).resolve().parents[2]


def test_validation_failure_is_one_line_without_tracebacks(tmp_path):
    frame = churn_frame(200)
    frame.loc[:11, "tenure"] = 900
    config = write_project(tmp_path, frame, churn_config(tmp_path))
    env = {**os.environ, "SLUICE_HOME": str(tmp_path / "home"), "PREFECT_HOME": str(tmp_path / "prefect"),
           "SLUICE_PREFECT_SERVER": "off", "PREFECT_LOGGING_LEVEL": "INFO",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    env.pop("PREFECT_API_URL", None)
    done = subprocess.run([sys.executable, "-m", "sluicegate.cli", "run", str(config)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=400)
    assert done.returncode == 4, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr[-3000:]
    assert "tenure: 12 values above max 120, e.g. 900" in errors[0] and "validation.json" in errors[0]
    assert "DataValidationError" not in done.stderr  # Prefect's Failed-state lines are off the console too
