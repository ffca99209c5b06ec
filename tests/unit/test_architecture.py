"""Imports flow one way (flows -> tasks -> sluicegate) and each fast-moving library has one home."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PKG = ROOT / "src" / "sluicegate"
# library -> the modules allowed to import it
OWNERS = {
    "great_expectations": {"validation.py"},
    "mlflow": {"tracking.py"},
    "optuna": {"tuning.py"},
    "optuna_integration": {"tuning.py"},
    "evidently": {"drift.py"},
    "bentoml": {"packaging.py", "serving/service.py"},
    "onnx": {"onnx_export.py"},
    "skl2onnx": {"onnx_export.py"},
    "onnxmltools": {"onnx_export.py"},
    "onnxruntime": {"onnx_runtime.py"},
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module.split(".")[0])
    return out


def test_library_never_imports_prefect_tasks_or_flows():
    # no exemption, not even the CLI: it reaches Prefect only through the flows it loads by path
    offenders = {}
    for path in PKG.rglob("*.py"):
        bad = _imports(path) & {"prefect", "prefect_dask", "tasks", "flows"}
        if bad:
            offenders[str(path.relative_to(ROOT))] = bad
    assert not offenders, offenders


def test_each_fast_moving_library_has_one_owner_module():
    users = defaultdict(set)
    for path in PKG.rglob("*.py"):
        for lib in _imports(path) & set(OWNERS):
            users[lib].add(path.relative_to(PKG).as_posix())
    for lib, modules in users.items():
        assert modules <= OWNERS[lib], f"{lib} imported from {sorted(modules)}"


def test_tasks_do_not_import_flows_and_no_file_shadows_a_library():
    libs = {"mlflow", "optuna", "prefect", "bentoml", "evidently", "torch", "xgboost", "sklearn", "pandas", "great_expectations"}
    for folder in ("tasks", "flows"):
        for path in (ROOT / folder).glob("*.py"):
            assert path.stem not in libs, f"{path} shadows a library on sys.path"
            if folder == "tasks":
                assert "flows" not in _imports(path), path


def test_every_module_has_a_docstring():
    missing = [str(p.relative_to(ROOT)) for d in (PKG, ROOT / "tasks", ROOT / "flows") for p in d.rglob("*.py")
               if not ast.get_docstring(ast.parse(p.read_text()))]
    assert not missing, missing


# ---------------------------------------------------------------- the package's own import graph
def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _sluicegate_imports(path: Path, modules: set[str]) -> set[str]:
    """The sluicegate modules `path` imports, with the packages whose `__init__` that runs.

    Imports inside functions count too: the circle config -> trainers.registry -> trainers.sk
    -> config was made only of such lazy imports, and it still decided what a half-imported
    module looked like. (`trainers/__init__.py` imports its modules through `pkgutil`, which
    the walk cannot see; they are below it, so that adds no edge that could close a circle.)
    """
    me = _module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            targets.add(base)
            targets |= {f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in modules}
    out = set()
    for target in targets:
        parts = target.split(".")
        for i in range(1, len(parts) + 1):
            name = ".".join(parts[:i])
            # importing a.b.c first runs a and a.b, unless this module is inside them (already running)
            if name in modules and name != me and not me.startswith(name + "."):
                out.add(name)
    return out


def test_the_package_has_no_import_cycle():
    files = {_module_name(p): p for p in PKG.rglob("*.py")}
    graph = {name: _sluicegate_imports(path, set(files)) for name, path in files.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(name: str, path: list[str]) -> list[str] | None:
        state[name] = 1
        for nxt in sorted(graph[name]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt] if nxt in path else [*path, nxt]
            if nxt not in state and (cycle := visit(nxt, [*path, nxt])):
                return cycle
        state[name] = 2
        return None

    for name in sorted(graph):
        if name not in state and (cycle := visit(name, [name])):
            raise AssertionError("import cycle: " + " -> ".join(cycle))
    # the walk sees the edges that matter: the schema is built from the trainer registry
    assert "sluicegate.trainers.registry" in graph["sluicegate.config.crosscheck"]
    assert "sluicegate.trainers" in graph["sluicegate.config.schema"]


def test_torch_and_xgboost_each_have_exactly_one_owner_module():
    """Lazy imports inside functions count too: one file to change when their API moves."""
    owners = {"torch": {"trainers/torch_mlp.py"}, "xgboost": {"trainers/xgb.py"}}
    users = defaultdict(set)
    for path in PKG.rglob("*.py"):
        for lib in _imports(path) & set(owners):
            users[lib].add(path.relative_to(PKG).as_posix())
    assert dict(users) == owners
