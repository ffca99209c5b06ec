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
    with pytest.raises(Exception):
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
