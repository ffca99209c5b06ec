"""What the config schema and the trainers' settings share: the strict base model and did-you-mean messages.

A leaf module (no `sluicegate` imports), so a trainer module can define its settings model
without importing `sluicegate.config`, whose schema is built from the trainer registry.
"""

from __future__ import annotations

import difflib
from typing import Iterable

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """Base of every config section: unknown keys are errors and values never change."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def did_you_mean(got: object, choices: Iterable[str]) -> str | None:
    """The closest choice to `got` (a case-only difference first), or None when nothing is close."""
    choices = [str(c) for c in choices]
    folded = {c.lower(): c for c in choices}
    if str(got).lower() in folded and str(got) not in choices:
        return folded[str(got).lower()]
    hint = difflib.get_close_matches(str(got), choices, n=1)
    return hint[0] if hint else None


def unknown_choice(got: object, choices: Iterable[str], what: str) -> str:
    """`unknown <what> 'x'; did you mean 'y'? (expected one of: a, b)`."""
    choices = list(choices)
    hint = did_you_mean(got, choices)
    msg = f"unknown {what} {got!r}"
    if hint:
        msg += f"; did you mean {hint!r}?"
    return msg + f" (expected one of: {', '.join(choices)})"
