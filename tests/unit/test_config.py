"""Config loading: valid files load; each invalid file names its YAML path and exits non-zero."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sluicegate.cli import main
from sluicegate.config import ProjectConfig, config_hash, deep_merge, load_config
from sluicegate.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
VALID = sorted((ROOT / "tests" / "configs" / "valid").glob("*.yaml"))
INVALID = sorted((ROOT / "tests" / "configs" / "invalid").glob("*.yaml"))
PROJECTS = sorted(p for p in (ROOT / "configs").glob("*.yaml") if p.name != "base.yaml")


def _expectation(path: Path) -> tuple[str, int]:
    lines = path.read_text().splitlines()
    expect = lines[0].removeprefix("# expect:").strip()
    code = int(lines[1].removeprefix("# exit:").strip())
    return expect, code


@pytest.mark.parametrize("path", PROJECTS + VALID, ids=lambda p: p.name)
def test_valid_configs_load(path):
    cfg = load_config(path)
    assert isinstance(cfg, ProjectConfig)
    assert cfg.gates.primary_metric in cfg.metrics


def test_there_are_invalid_examples():
    assert len(INVALID) >= 10


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.name)
def test_invalid_config_names_the_yaml_path(path):
    expect, _ = _expectation(path)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert expect in message, message
    assert "Traceback" not in message


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.name)
def test_invalid_config_cli_exit_code_and_one_line(path, capsys):
    expect, code = _expectation(path)
    assert main(["config", "check", str(path)]) == code
    err = capsys.readouterr().err
    assert expect in err
    assert "Traceback" not in err


def test_every_error_line_starts_with_the_file(tmp_path):
    bad = tmp_path / "two.yaml"
    bad.write_text(
        "project: two\ntask: regression\ndata: {source: {kind: bundled, name: sklearn.diabetes}, target: t, extra: 1}\n"
        "model: {kind: sklearn, estimator: ridge, params: {alpah: 1}}\ngates: {primary_metric: r2}\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    problems = info.value.problems
    assert any("data.extra: unknown key" in p for p in problems), problems
    assert all(p.startswith(str(bad)) or p.startswith("two.yaml") or "two.yaml" in p.split(":")[0] for p in problems)


def test_extends_merges_and_overrides(tmp_path):
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "base.yaml").write_text("seed: 1\nsplit: {test_size: 0.3}\ngates: {min_improvement: 0.01}\n")
    (tmp_path / "configs" / "p.yaml").write_text(
        "extends: base.yaml\nproject: p\ntask: regression\n"
        "data: {source: {kind: bundled, name: sklearn.diabetes}, target: t}\n"
        "model: {kind: sklearn, estimator: ridge}\ngates: {primary_metric: r2}\n"
    )
    cfg = load_config(tmp_path / "configs" / "p.yaml", ["model.params.alpha=0.5", "seed=9"])
    assert cfg.seed == 9
    assert cfg.split.test_size == 0.3
    assert cfg.gates.min_improvement == 0.01
    assert cfg.model.params == {"alpha": 0.5}
    assert cfg.root == tmp_path.resolve()


def test_extends_cycle_is_an_error(tmp_path):
    (tmp_path / "a.yaml").write_text("extends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(ConfigError, match="extends: cycle"):
        load_config(tmp_path / "a.yaml")


def test_kind_change_replaces_model_section():
    merged = deep_merge({"model": {"kind": "xgboost", "params": {"max_depth": 3}}},
                       {"model": {"kind": "sklearn", "estimator": "ridge"}})
    assert merged["model"] == {"kind": "sklearn", "estimator": "ridge"}


def test_bad_override_value_names_key(tmp_path):
    path = PROJECTS[0]
    with pytest.raises(ConfigError) as info:
        load_config(path, ["split.test_size=lots"])
    assert "split.test_size" in str(info.value)


def test_config_hash_changes_with_content():
    a = load_config(PROJECTS[0])
    b = load_config(PROJECTS[0], ["seed=123"])
    assert config_hash(a) != config_hash(b)
    assert config_hash(a, "gates") == config_hash(b, "gates")


def test_config_is_frozen():
    cfg = load_config(PROJECTS[0])
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        cfg.seed = 3  # type: ignore[misc]


def test_schema_command_prints_json_schema(capsys):
    assert main(["config", "schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert "gates" in schema["properties"]
    assert schema["additionalProperties"] is False


def test_missing_file_exit_code(capsys, tmp_path):
    assert main(["config", "check", str(tmp_path / "nope.yaml")]) == 2
    assert "file not found" in capsys.readouterr().err


def test_debug_shows_traceback(capsys, tmp_path):
    # an unknown command-line error is still one line without --debug
    assert main(["status"]) == 2


def test_unknown_gx_expectation_is_refused_by_config_check(tmp_path, capsys):
    path = tmp_path / "gx.yaml"
    path.write_text(
        "project: gx\ntask: regression\ndata: {source: {kind: bundled, name: sklearn.diabetes}, target: t}\n"
        "validation: {expectations: [{type: expect_column_values_to_be_purple, kwargs: {column: bmi}}]}\n"
        "model: {kind: sklearn, estimator: ridge}\ngates: {primary_metric: r2}\n"
    )
    assert main(["config", "check", str(path)]) == 2
    assert "validation.expectations.0" in capsys.readouterr().err


# ---------------------------------------------------------------- exposure and paths
_PROJECT = ("project: p\ntask: regression\ndata: {source: {kind: bundled, name: sklearn.diabetes}, target: t}\n"
            "model: {kind: sklearn, estimator: ridge}\ngates: {primary_metric: r2}\n")


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "localhost", "::1"])
def test_loopback_hosts_need_no_token(tmp_path, host):
    (tmp_path / "p.yaml").write_text(_PROJECT)
    assert load_config(tmp_path / "p.yaml", [f"deploy.host={host}"]).deploy.host == host


def test_a_non_loopback_host_is_allowed_with_a_token(tmp_path):
    (tmp_path / "p.yaml").write_text(_PROJECT)
    cfg = load_config(tmp_path / "p.yaml", ["deploy.host=0.0.0.0", "packaging.auth_token={env: P_TOKEN}"])
    assert cfg.deploy.host == "0.0.0.0"


def test_a_host_name_without_a_token_is_refused_with_both_fixes_named(tmp_path):
    (tmp_path / "p.yaml").write_text(_PROJECT)
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "p.yaml", ["deploy.host=serving.internal"])
    assert "deploy.host: 'serving.internal' is not a loopback address" in str(info.value)
    assert "set packaging.auth_token" in str(info.value) and "bind to 127.0.0.1" in str(info.value)


def test_output_dir_inside_the_project_root_is_accepted(tmp_path):
    (tmp_path / "p.yaml").write_text(_PROJECT + "deploy: {output_dir: deploy/manifests}\n")
    assert load_config(tmp_path / "p.yaml").deploy.output_dir == "deploy/manifests"


def test_absolute_output_dir_outside_the_root_is_refused(tmp_path):
    (tmp_path / "p.yaml").write_text(_PROJECT + "deploy: {output_dir: /tmp/elsewhere}\n")
    with pytest.raises(ConfigError, match="deploy.output_dir: must stay inside the project root"):
        load_config(tmp_path / "p.yaml")


# ---------------------------------------------------------------- config check against the source header
def _csv_project(tmp_path, extra: str = "", target: str = "label", source: str | None = None) -> Path:
    (tmp_path / "configs").mkdir(exist_ok=True)
    (tmp_path / "data").mkdir(exist_ok=True)
    (tmp_path / "data" / "x.csv").write_text("id,when,age,plan,label\n1,2024-01-01,30,a,0\n")
    path = tmp_path / "configs" / "p.yaml"
    path.write_text(
        f"project: p\ntask: classification\n"
        f"data: {{source: {source or '{kind: csv, path: data/x.csv}'}, target: {target}}}\n"
        f"model: {{kind: sklearn, estimator: logistic_regression}}\ngates: {{primary_metric: f1}}\n{extra}"
    )
    return path


def test_check_sources_accepts_columns_that_are_in_the_header(tmp_path):
    from sluicegate.config import check_sources

    path = _csv_project(tmp_path, "features: {numeric: {columns: [age]}, categorical: {columns: [plan]}, drop: [id]}\n"
                                  "validation: {columns: {age: {min: 0}}}\nevaluation: {slices: [plan]}\n"
                                  "split: {method: time, time_column: when}\nmonitoring: {columns: [age, plan]}\n")
    assert check_sources(load_config(path)) == []


def test_check_sources_names_a_missing_file(tmp_path):
    from sluicegate.config import check_sources

    path = _csv_project(tmp_path, source="{kind: csv, path: data/nope.csv}")
    [problem] = check_sources(load_config(path))
    assert problem.startswith("data.source.path: file not found: data/nope.csv")


def test_check_sources_suggests_the_column_for_a_wrong_target(tmp_path):
    from sluicegate.config import check_sources

    path = _csv_project(tmp_path, target="Label")
    assert check_sources(load_config(path)) == [
        "data.target: column 'Label' not in data/x.csv; did you mean 'label'?"]


@pytest.mark.parametrize("override, where", [
    ("data.id_column=idd", "data.id_column"),
    ("data.time_column=whn", "data.time_column"),
    ("split.time_column=whn", "split.time_column"),
    ("validation.columns={agee: {min: 0}}", "validation.columns.agee"),
    ("features.numeric.columns=[age, agee]", "features.numeric.columns.1"),
    ("features.categorical.columns=[plann]", "features.categorical.columns.0"),
    ("features.datetime.columns=[whn]", "features.datetime.columns.0"),
    ("features.drop=[idd]", "features.drop.0"),
    ("evaluation.slices=[plann]", "evaluation.slices.0"),
    ("monitoring.columns=[agee]", "monitoring.columns.0"),
])
def test_check_sources_names_each_listed_column_by_its_yaml_path(tmp_path, override, where):
    from sluicegate.config import check_sources

    [problem] = check_sources(load_config(_csv_project(tmp_path), [override]))
    assert problem.startswith(f"{where}: column ") and "not in data/x.csv; did you mean" in problem, problem


def test_check_sources_reads_a_parquet_schema(tmp_path):
    import pandas as pd

    from sluicegate.config import check_sources

    path = _csv_project(tmp_path, target="labl", source="{kind: parquet, path: data/x.parquet}")
    pd.read_csv(tmp_path / "data" / "x.csv").to_parquet(tmp_path / "data" / "x.parquet", index=False)
    assert check_sources(load_config(path)) == [
        "data.target: column 'labl' not in data/x.parquet; did you mean 'label'?"]


def test_check_sources_leaves_sql_and_bundled_sources_alone(tmp_path):
    from sluicegate.config import check_sources

    sql = _csv_project(tmp_path, source="{kind: sql, url: {env: NOT_SET_ANYWHERE}, query: select 1}")
    assert check_sources(load_config(sql)) == []
    assert check_sources(load_config(PROJECTS[0])) == []


def test_config_check_command_reports_source_problems_with_exit_code_2(tmp_path, capsys):
    path = _csv_project(tmp_path, target="Label", extra="evaluation: {slices: [plann]}\n")
    assert main(["config", "check", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}: data.target: column 'Label' not in data/x.csv; did you mean 'label'?" in err
    assert f"{path}: evaluation.slices.0: column 'plann' not in data/x.csv; did you mean 'plan'?" in err


def _imported_by_config_check(path: Path, repo_root: Path, libraries: list[str], home: Path | None = None) -> list[str]:
    """Which of `libraries` a `sluice config check` process has imported when it ends (exit 0 asserted)."""
    import os
    import subprocess
    import sys

    code = ("import sys; from sluicegate.cli import main; "
            f"code = main(['config', 'check', {str(path)!r}]); "
            f"loaded = [m for m in {libraries!r} if m in sys.modules]; "
            "print('imported:' + ','.join(loaded)); sys.exit(code)")
    env = {**os.environ, **({"SLUICE_HOME": str(home)} if home is not None else {})}
    done = subprocess.run([sys.executable, "-c", code], cwd=repo_root, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    line = done.stdout.strip().splitlines()[-1]
    assert line.startswith("imported:"), done.stdout
    return [m for m in line.removeprefix("imported:").split(",") if m]


HEAVY = ["sklearn", "mlflow", "bentoml", "torch", "xgboost", "prefect", "evidently", "great_expectations", "optuna"]


def test_config_check_imports_no_heavy_library(tmp_path, repo_root):
    """`sluice config check` stays cheap: no estimator, tracking, serving, orchestration or deep-learning
    imports (the schema's model kinds are registered without their libraries)."""
    assert _imported_by_config_check(_csv_project(tmp_path), repo_root, HEAVY) == []


def test_config_check_imports_only_the_estimator_library_it_checks_params_with(tmp_path, repo_root):
    """`model.params` are checked by the estimator's own rules: that library, and nothing heavier."""
    sk = _csv_project(tmp_path, target="label").with_name("sk.yaml")
    sk.write_text(_csv_project(tmp_path).read_text().replace("estimator: logistic_regression",
                                                               "estimator: logistic_regression, params: {C: 2.0}"))
    home = tmp_path / "fresh-home"  # nothing remembered yet
    assert _imported_by_config_check(sk, repo_root, HEAVY, home) == ["sklearn"]
    # the section passed: the same section is not checked again (nor sklearn imported) until it,
    # the task, the libraries or the trainers' code change
    assert _imported_by_config_check(sk, repo_root, HEAVY, home) == []
    sk.write_text(sk.read_text().replace("C: 2.0", "C: 3.0"))
    assert _imported_by_config_check(sk, repo_root, HEAVY, home) == ["sklearn"]
    sk.write_text(sk.read_text().replace("C: 3.0", "C: -1.0"))  # a problem is never remembered
    import os
    import subprocess
    import sys

    for _ in range(2):
        bad = subprocess.run([sys.executable, "-m", "sluicegate.cli", "config", "check", str(sk)], cwd=repo_root,
                             capture_output=True, text=True, timeout=120, env={**os.environ, "SLUICE_HOME": str(home)})
        assert bad.returncode == 2 and "model.params.C" in bad.stderr, bad.stderr[-1000:]


def _sqlite_project(tmp_path, monkeypatch, target: str, query: str = "SELECT * FROM customers;") -> Path:
    import sqlite3

    db = tmp_path / "shop.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS customers (id INTEGER, plan TEXT, churned INTEGER)")
        conn.execute("INSERT INTO customers VALUES (1, 'a', 0)")
    monkeypatch.setenv("SHOP_DB_URL", f"sqlite:///{db}")
    return _csv_project(tmp_path, target=target, source=f"{{kind: sql, url: {{env: SHOP_DB_URL}}, query: {query!r}}}")


def test_connect_checks_the_columns_of_a_sql_query(tmp_path, monkeypatch):
    from sluicegate.config import check_sources

    cfg = load_config(_sqlite_project(tmp_path, monkeypatch, target="churnd"))
    assert check_sources(cfg) == []  # not contacted unless asked
    assert check_sources(cfg, connect=True) == [
        "data.target: column 'churnd' not in the result of data.source.query; did you mean 'churned'?"]
    assert check_sources(load_config(_sqlite_project(tmp_path, monkeypatch, "churned")), connect=True) == []


def test_connect_names_an_unset_variable_and_a_failing_query(tmp_path, monkeypatch):
    from sluicegate.config import check_sources

    cfg = load_config(_sqlite_project(tmp_path, monkeypatch, "churned", query="SELECT * FROM nope"))
    [problem] = check_sources(cfg, connect=True)
    assert problem.startswith("data.source.query: cannot run it:") and "nope" in problem
    monkeypatch.delenv("SHOP_DB_URL")
    assert check_sources(cfg, connect=True) == ["data.source.url: environment variable SHOP_DB_URL is not set"]


def test_config_check_connect_flag_reaches_the_sql_check(tmp_path, monkeypatch, capsys):
    path = _sqlite_project(tmp_path, monkeypatch, target="churnd")
    assert main(["config", "check", str(path)]) == 0
    assert main(["config", "check", "--connect", str(path)]) == 2
    assert "data.target: column 'churnd' not in the result of data.source.query" in capsys.readouterr().err
