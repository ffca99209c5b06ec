"""Loading a project YAML: `extends`, deep merge, `--set` overrides, secret and path checks, one validation."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from sluicegate.config.messages import format_errors
from sluicegate.config.schema import SECRET_KEY, ProjectConfig
from sluicegate.errors import ConfigError


def project_root_for(config_path: Path) -> Path:
    """The folder relative paths resolve against: `SLUICE_ROOT`, or the parent of `configs/`."""
    env = os.environ.get("SLUICE_ROOT")
    if env:
        return Path(env).resolve()
    parent = config_path.resolve().parent
    return parent.parent if parent.name == "configs" else parent


def load_config(path: str | Path, overrides: typing.Sequence[str] = ()) -> ProjectConfig:
    """Load a project YAML: resolve `extends`, merge, apply `a.b=c` overrides, validate once.

    Args:
        path: the project YAML file.
        overrides: `dotted.key=value` strings; values are parsed as YAML.

    Returns:
        The validated, frozen `ProjectConfig`.

    Raises:
        ConfigError: with one `file: yaml.path: problem` line per problem.
    """
    path = Path(path)
    label = _label(path)
    raw = _load_with_extends(path, seen=())
    for item in overrides:
        _apply_override(raw, item, label)
    root = project_root_for(path)
    problems = _secret_problems(raw, ())
    problems += _path_problems(raw, root)
    if problems:
        raise ConfigError([f"{label}: {p}" for p in problems])
    try:
        cfg = ProjectConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError([f"{label}: {line}" for line in format_errors(exc, raw)]) from None
    cfg._root = root
    cfg._source = path.resolve()
    return cfg


def resolve_path(cfg: ProjectConfig, value: str) -> Path:
    """A config path made absolute against the project root."""
    p = Path(value)
    return p if p.is_absolute() else (cfg.root / p).resolve()


def config_hash(cfg: ProjectConfig, *sections: str) -> str:
    """A short stable hash of the whole config, or of the named sections only."""
    data = cfg.model_dump(mode="json")
    if sections:
        data = {k: data[k] for k in sections}
    blob = json.dumps(data, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _label(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _read_yaml(path: Path) -> dict:
    label = _label(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError([f"{label}: file not found"]) from None
    except OSError as exc:
        raise ConfigError([f"{label}: cannot read ({exc.strerror})"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([f"{label}{where}: invalid YAML: {problem}"]) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([f"{label}: the top level must be a mapping (got {type(data).__name__})"])
    return data


def _load_with_extends(path: Path, seen: tuple[Path, ...]) -> dict:
    path = path.resolve() if path.exists() else path
    if path in seen:
        chain = " -> ".join(p.name for p in (*seen, path))
        raise ConfigError([f"{_label(seen[0])}: extends: cycle ({chain})"])
    data = _read_yaml(path)
    parent = data.pop("extends", None)
    if parent is None:
        return data
    if not isinstance(parent, str):
        raise ConfigError([f"{_label(path)}: extends: must be a file name (got {parent!r})"])
    parent_path = (path.parent / parent)
    if not parent_path.exists():
        raise ConfigError([f"{_label(path)}: extends: file not found (got {parent!r})"])
    base = _load_with_extends(parent_path, (*seen, path))
    return deep_merge(base, data)


def deep_merge(base: dict, override: dict) -> dict:
    """Merge mappings recursively; lists and scalars are replaced, and so is a section whose `kind` changes."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        old = out.get(key)
        if (
            isinstance(old, dict)
            and isinstance(value, dict)
            and not ("kind" in value and "kind" in old and value["kind"] != old["kind"])
        ):
            out[key] = deep_merge(old, value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _apply_override(raw: dict, item: str, label: str) -> None:
    if "=" not in item:
        raise ConfigError([f"--set {item}: expected dotted.key=value"])
    key, _, text = item.partition("=")
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise ConfigError([f"--set {item}: empty key"])
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = text
    node = raw
    for part in parts[:-1]:
        nxt = node.get(part)
        if nxt is None:
            nxt = node[part] = {}
        if not isinstance(nxt, dict):
            raise ConfigError([f"{label}: {key}: cannot set inside {part!r}, which is not a mapping"])
        node = nxt
    node[parts[-1]] = value


def _secret_problems(node: Any, loc: tuple) -> list[str]:
    problems: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            here = (*loc, key)
            if isinstance(key, str) and SECRET_KEY.search(key) and isinstance(value, (str, int, float)):
                problems.append(
                    f"{'.'.join(map(str, here))}: looks like a secret written in the file; "
                    f"reference it as {{env: VAR_NAME}} or {{prefect_secret: BLOCK_NAME}} instead"
                )
            else:
                problems += _secret_problems(value, here)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            problems += _secret_problems(value, (*loc, i))
    return problems


# YAML paths that name a file or folder; each must resolve inside the project root
CONTAINED_PATHS = (("data", "source", "path"), ("deploy", "output_dir"))


def _path_problems(raw: dict, root: Path) -> list[str]:
    problems = []
    for keys in CONTAINED_PATHS:
        value: Any = raw
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        if not isinstance(value, str):
            continue
        p = Path(value)
        resolved = (p if p.is_absolute() else root / p).resolve()
        if not resolved.is_relative_to(root.resolve()):
            problems.append(
                f"{'.'.join(keys)}: must stay inside the project root {root} "
                f"(got {value!r}, which resolves to {resolved})"
            )
    return problems
