"""What every deploy target returns: a staged candidate (checked, not yet live) and the result once it is."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class DeployResult:
    """What a deploy did: the target, the version now serving (or packaged), where, and what to run next."""

    target: str
    project: str
    version: str
    bento_tag: str
    url: str | None = None
    files: tuple[str, ...] = ()
    message: str = ""
    was: str | None = None  # the version that served before (local target), if any


@dataclass(frozen=True)
class Staged:
    """A candidate that passed every check of its target and is not live yet.

    `commit()` makes it live (switches traffic, writes manifests) and returns the result;
    on failure it leaves what was live as it was and raises. `abort()` throws the candidate
    away (stops its process). Exactly one of them is called.
    """

    target: str
    commit: Callable[[], DeployResult]
    abort: Callable[[], None]
    candidate: Any = None  # the local target's running candidate (a shadow or canary rollout starts from it)
