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
    offenders = {}
    for path in PKG.rglob("*.py"):
        bad = _imports(path) & {"prefect", "tasks", "flows"}
        # a Prefect Secret reference (data.py) and the CLI edge may import prefect lazily
        if bad - {"prefect"} or ("prefect" in bad and path.name not in ("data.py", "cli.py")):
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
