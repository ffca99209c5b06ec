"""Whether a process that tagged a run or a version (pid and host) is gone: checked from this host only."""

from __future__ import annotations

import os
import socket
from pathlib import Path


def process_gone(pid: str | int | None, host: str | None) -> str | None:
    """Why process `pid` of `host` is known to be gone, else None.

    A process of another host, this very process, or a missing pid is never declared gone:
    only what can be checked from here is.
    """
    pid = str(pid or "")
    if not pid.isdigit() or host != socket.gethostname() or int(pid) == os.getpid():
        return None
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return f"process {pid} on {host} is gone"
    except PermissionError:  # alive, another user's
        return None
    try:  # killed but not yet reaped by its parent: as dead as it gets
        if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return f"process {pid} on {host} was killed"
    except (OSError, IndexError):
        pass
    return None
