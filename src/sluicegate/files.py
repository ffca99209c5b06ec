"""Files that other processes read while they change: JSON written through a temporary file and replaced."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def write_json_atomic(path: Path, obj: Any, indent: int | None = None) -> None:
    """Write `obj` as JSON to `path` so that a reader sees the old file or the new one, never half of one.

    The temporary file beside it is named for this process, so two writers never write the same one;
    the folder is made if missing.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=indent))
    os.replace(tmp, path)
