"""Run keys: an unchanged run is recognised only when data, config and code are all the champion's."""

from __future__ import annotations

from pathlib import Path

from sluicegate.config import load_config
from sluicegate.runkey import RUN_KEY_TAG, load_config_for_key, run_key, unchanged_outcome


def _project(tmp_path: Path, extra: str = "") -> Path:
    (tmp_path / "configs").mkdir(exist_ok=True)
    (tmp_path / "data").mkdir(exist_ok=True)
    (tmp_path / "data" / "x.csv").write_text("age,plan,label\n30,a,0\n41,b,1\n")
    path = tmp_path / "configs" / "p.yaml"
    path.write_text("project: p\ntask: classification\ndata: {source: {kind: csv, path: data/x.csv}, target: label}\n"
                    "model: {kind: sklearn, estimator: logistic_regression, params: {C: 2.0}}\n"
                    f"gates: {{primary_metric: f1}}\n{extra}")
    return path


def _champion(key: str | None, version: int = 3) -> dict:
    return {"version": version, "metrics": {"test_f1": 0.9, "valid_f1": 0.8},
            "tags": {RUN_KEY_TAG: key, "sluice.data_fingerprint": "abc"} if key else {}}


def test_the_same_inputs_give_the_same_key_and_an_unchanged_outcome(tmp_path):
    path = _project(tmp_path)
    key = run_key(load_config(path), [tmp_path / "configs"])
    assert key == run_key(load_config_for_key(path), [tmp_path / "configs"])  # the checks change no value
    out = unchanged_outcome(load_config(path), key, _champion(key))
    assert out.outcome == "unchanged" and out.version == out.champion == 3
    assert out.metrics == {"f1": 0.9} and out.data_fingerprint == "abc"
    assert "reject" not in out.summary.lower()


def test_any_changed_input_changes_the_key(tmp_path):
    path = _project(tmp_path)
    key = run_key(load_config(path))
    assert run_key(load_config(path, ["gates.min_improvement=0.01"])) != key  # config, overrides included
    (tmp_path / "data" / "x.csv").write_text("age,plan,label\n30,a,0\n41,b,0\n")  # one byte of data
    assert run_key(load_config(path)) != key
    code = tmp_path / "flows"
    code.mkdir()
    (code / "f.py").write_text("x = 1\n")
    with_code = run_key(load_config(path), [code])
    (code / "f.py").write_text("x = 2\n")
    from sluicegate.runkey import code_fingerprint

    code_fingerprint.cache_clear()
    assert run_key(load_config(path), [code]) != with_code


def test_no_key_no_unchanged(tmp_path):
    cfg = load_config(_project(tmp_path))
    production = cfg.data.production.model_copy(update={"enabled": True})
    assert run_key(cfg.model_copy(update={"data": cfg.data.model_copy(update={"production": production})})) is None
    key = run_key(load_config(_project(tmp_path)))
    assert unchanged_outcome(load_config(_project(tmp_path)), key, None) is None  # no champion
    assert unchanged_outcome(load_config(_project(tmp_path)), key, _champion("other")) is None
    assert unchanged_outcome(load_config(_project(tmp_path)), None, _champion(None)) is None


def test_loading_for_the_key_skips_only_the_estimator_checks(tmp_path):
    import pytest

    from sluicegate.errors import ConfigError

    path = _project(tmp_path)
    path.write_text(path.read_text().replace("C: 2.0", "C: -1"))
    with pytest.raises(ConfigError, match="model.params.C"):
        load_config(path)
    assert load_config_for_key(path).model.params == {"C": -1}  # a key that equals the champion's vouches for it
    path.write_text(path.read_text().replace("primary_metric: f1", "primary_metric: nope"))
    with pytest.raises(ConfigError, match="gates.primary_metric"):
        load_config_for_key(path)  # everything else is still checked
