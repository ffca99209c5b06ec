"""Find a project's YAML: by path, or by the `project:` name declared in a file under configs/."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Callable, Iterable

import yaml

from sluicegate.errors import ConfigError

CONFIG_DIR = "configs"


def is_config_path(arg: str) -> bool:
    """Whether a CLI or flow argument names a YAML file rather than a project."""
    return arg.endswith((".yaml", ".yml"))


def declared_project(path: Path) -> str | None:
    """The `project:` key of a YAML file (without validating the rest), or None when it has none."""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None
    name = data.get("project") if isinstance(data, dict) else None
    return str(name) if name else None


def project_configs(root: Path) -> dict[str, Path]:
    """Every project declared under `root/configs/`, name -> YAML file.

    Files without a `project:` key (`base.yaml`) are skipped.

    Raises:
        ConfigError: two files declare the same project (they would share runs, models and
            deployment names); the message names both files.
    """
    return unique_projects(_config_files(root))


def unique_projects(paths: Iterable[Path]) -> dict[str, Path]:
    """Project name -> YAML for these files (those without `project:` skipped).

    Raises:
        ConfigError: two files declare the same project; the message names both.
    """
    found = _declared(paths)
    _refuse_duplicates(found, set(found))
    return {n: ps[0] for n, ps in found.items()}


def _config_files(root: Path) -> list[Path]:
    folder = root / CONFIG_DIR
    return sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")])


def _declared(paths: Iterable[Path]) -> dict[str, list[Path]]:
    found: dict[str, list[Path]] = {}
    for path in paths:
        name = declared_project(path)
        if name and all(path.resolve() != p.resolve() for p in found.get(name, [])):
            found.setdefault(name, []).append(path)
    return found


def _refuse_duplicates(found: dict[str, list[Path]], names: set[str]) -> None:
    problems = [f"project {n!r} is declared by {' and '.join(_show(p) for p in found[n])}: "
                f"each project needs its own name (change `project:` in one of them)"
                for n in sorted(names) if len(found.get(n, [])) > 1]
    if problems:
        raise ConfigError(problems)


def resolve_project(arg: str, root: Path, registered: Callable[[], Iterable[str]] | None = None) -> tuple[str, Path | None]:
    """The project a CLI or flow argument means, and its YAML.

    Args:
        arg: a YAML path (read for its `project:` key) or a project name.
        root: the checkout whose `configs/` declares the projects.
        registered: returns the project names the model registry knows; a name with no YAML
            under configs/ is accepted when the registry has it (the config is then None).
            Called only when no YAML matches.

    Returns:
        (project name, YAML path or None).

    Raises:
        ConfigError: the YAML does not exist or declares no project; no YAML under configs/
            (nor the registry) has that project, with a did-you-mean; or two YAML files
            declare it.
    """
    if is_config_path(arg):
        path = Path(arg)
        if not path.exists():
            raise ConfigError([f"{arg}: file not found"])
        name = declared_project(path)
        if name is None:
            raise ConfigError([f"{arg}: project: missing (every project YAML declares its name)"])
        return name, path
    found = _declared(_config_files(root))
    if arg in found:
        _refuse_duplicates(found, {arg})
        return arg, found[arg][0]
    known = set(found)
    if registered is not None:
        names = set(registered())
        if arg in names:
            return arg, None
        known |= names
    close = difflib.get_close_matches(arg, sorted(known), n=1, cutoff=0.5) or [n for n in sorted(known) if n.startswith(arg)]
    hint = f"; did you mean {close[0]!r}?" if close else (f"; known projects: {', '.join(sorted(known))}" if known else "")
    registry = " and no model is registered under that name" if registered is not None else ""
    raise ConfigError([f"unknown project {arg!r}: no YAML under {_show(root / CONFIG_DIR)}/ declares "
                       f"`project: {arg}`{registry}{hint}"])


def _show(path: Path) -> str:
    """A path relative to the current folder when it lies under it (as the user typed it)."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)
