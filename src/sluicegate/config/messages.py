"""Pydantic errors turned into `yaml.path: problem (got X)` lines: union tags stripped, did-you-mean hints."""

from __future__ import annotations

import re
import types
import typing
from typing import Annotated, Any, Union

from pydantic import BaseModel, ValidationError

from sluicegate.config.crosscheck import CrossCheckError
from sluicegate.config.schema import ProjectConfig
from sluicegate.schema_base import did_you_mean, unknown_choice
from sluicegate.settings import redact


def format_errors(exc: ValidationError, raw: dict) -> list[str]:
    """Turn pydantic errors into `yaml.path: problem (got X)` lines, union tags stripped."""
    lines: list[str] = []
    for err in exc.errors(include_url=False):
        ctx = err.get("ctx") or {}
        inner = ctx.get("error")
        if isinstance(inner, CrossCheckError):
            lines += [f"{'.'.join(map(str, loc))}: {msg}" for loc, msg in inner.problems]
            continue
        loc = _yaml_loc(err["loc"], raw)
        if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
            loc = (*loc, "kind")
        lines.append(f"{'.'.join(map(str, loc)) or '<top level>'}: {_message(err, loc, raw)}")
    return list(dict.fromkeys(lines))


def _yaml_loc(loc: tuple, raw: Any) -> tuple:
    """Drop the discriminator tags and type names pydantic inserts into error locations."""
    out: list = []
    node = raw
    for part in loc:
        if isinstance(node, dict) and part in node:
            out.append(part)
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            out.append(part)
            node = node[part]
        elif isinstance(node, dict) and isinstance(part, str) and node.get("kind") == part:
            continue  # the union tag
        elif isinstance(node, (str, int, float, bool)) or node is None:
            continue  # e.g. 'str' / 'SecretRef' branch names of a plain union
        elif isinstance(part, str) and (part[:1].isupper() or part in ("str", "int", "float", "list[str]", "literal['auto']")):
            continue
        else:
            out.append(part)
            node = None
    return tuple(out)


def _message(err: dict, loc: tuple, raw: dict) -> str:
    kind = err["type"]
    got = err.get("input")
    if kind == "missing":
        return "required key is missing"
    if kind == "extra_forbidden":
        allowed = _allowed_keys(loc[:-1], raw)
        hint = did_you_mean(loc[-1], allowed) if allowed else None
        msg = "unknown key"
        if hint:
            msg += f"; did you mean {hint!r}?"
        if allowed:
            msg += f" (allowed: {', '.join(allowed)})"
        return msg
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        expected = [t.strip(" '\"") for t in str(err.get("ctx", {}).get("expected_tags", "")).split(",")]
        tag = (got or {}).get("kind") if isinstance(got, dict) else None
        if kind == "union_tag_not_found":
            return f"required key is missing (expected one of: {', '.join(expected)})"
        return unknown_choice(tag, expected, "kind").replace("unknown kind", "unknown value")
    if kind == "literal_error":
        expected = err.get("ctx", {}).get("expected", "")
        choices = [c.strip(" '\"") for c in re.split(r",| or ", expected) if c.strip(" '\"")]
        hint = did_you_mean(got, choices)
        msg = f"must be one of {expected}"
        if hint:
            msg += f"; did you mean {hint!r}?"
        return f"{msg} (got {got!r})"
    msg = err["msg"]
    msg = re.sub(r"^(Value error|Assertion failed), ", "", msg)
    msg = msg[0].lower() + msg[1:] if msg else msg
    if not isinstance(got, (dict, list)) and "(got" not in msg:
        msg += f" (got {redact(repr(got))})"  # a refused URL may hold the very password it is refused for
    return msg


def _allowed_keys(loc: tuple, raw: dict) -> list[str]:
    model: Any = ProjectConfig
    node: Any = raw
    for part in loc:
        model = _unwrap(model, node)
        if isinstance(model, type) and issubclass(model, BaseModel):
            field = model.model_fields.get(part)
            if field is None:
                return []
            model = field.annotation
        else:
            origin = typing.get_origin(model)
            args = typing.get_args(model)
            if origin in (dict, list) and args:
                model = args[-1]
            else:
                return []
        node = node.get(part) if isinstance(node, dict) else (node[part] if isinstance(node, list) and isinstance(part, int) and part < len(node) else None)
    model = _unwrap(model, node)
    if isinstance(model, type) and issubclass(model, BaseModel):
        return list(model.model_fields)
    return []


def _unwrap(tp: Any, node: Any) -> Any:
    while True:
        origin = typing.get_origin(tp)
        if origin is Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (Union, types.UnionType):
            members = [a for a in typing.get_args(tp) if a is not type(None)]
            models = [m for m in members if isinstance(m, type) and issubclass(m, BaseModel)]
            if isinstance(node, dict) and "kind" in node:
                for m in models:
                    kf = m.model_fields.get("kind")
                    if kf is not None and node["kind"] in typing.get_args(kf.annotation):
                        return m
            if len(models) >= 1 and isinstance(node, dict):
                return models[0]
            return members[0] if members else tp
        else:
            return tp
