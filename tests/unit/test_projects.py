"""One project resolver: by YAML path or by the `project:` name declared under configs/."""

from __future__ import annotations

import pytest
import yaml

from sluicegate.cli import main
from sluicegate.errors import ConfigError
from sluicegate.projects import project_configs, resolve_project


def _config(root, file, project):
    (root / "configs").mkdir(exist_ok=True)
    path = root / "configs" / file
    path.write_text(yaml.safe_dump({"extends": "base.yaml", "project": project} if project else {"seed": 1}))
    return path


def test_a_name_finds_the_yaml_that_declares_it_not_the_file_name(tmp_path):
    path = _config(tmp_path, "customer_churn.yaml", "churn")
    _config(tmp_path, "base.yaml", None)
    assert resolve_project("churn", tmp_path) == ("churn", path)
    assert resolve_project(str(path), tmp_path) == ("churn", path)
    assert project_configs(tmp_path) == {"churn": path}


def test_unknown_name_has_a_did_you_mean(tmp_path):
    _config(tmp_path, "customer_churn.yaml", "churn")
    with pytest.raises(ConfigError, match="unknown project 'chrun'.*did you mean 'churn'"):
        resolve_project("chrun", tmp_path)


def test_a_name_only_the_registry_knows_has_no_yaml(tmp_path):
    _config(tmp_path, "a.yaml", "alpha")
    assert resolve_project("legacy", tmp_path, lambda: ["legacy"]) == ("legacy", None)
    with pytest.raises(ConfigError, match="no model is registered under that name; did you mean 'legacy'"):
        resolve_project("legacyy", tmp_path, lambda: ["legacy"])


def test_two_yaml_files_declaring_one_project_are_refused_naming_both(tmp_path):
    _config(tmp_path, "a.yaml", "churn")
    _config(tmp_path, "b.yaml", "churn")
    _config(tmp_path, "c.yaml", "other")
    with pytest.raises(ConfigError, match=r"'churn' is declared by .*a\.yaml and .*b\.yaml"):
        resolve_project("churn", tmp_path)
    with pytest.raises(ConfigError, match="'churn' is declared by"):
        project_configs(tmp_path)
    assert resolve_project("other", tmp_path)[0] == "other"  # an unrelated name still resolves


def test_cli_status_of_an_unknown_project_exits_2_with_a_did_you_mean(tmp_path, monkeypatch, capsys):
    _config(tmp_path, "customer_churn.yaml", "churn")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SLUICE_HOME", str(tmp_path / "home"))
    assert main(["status", "chrun"]) == 2
    assert "did you mean 'churn'" in capsys.readouterr().err


def test_deployments_accept_names_and_refuse_duplicate_projects(repo_root, tmp_path, monkeypatch, capsys):
    import deployments.build as build

    monkeypatch.chdir(repo_root)
    assert main(["deployments", "show", "diabetes"]) == 0
    assert "diabetes-training" in capsys.readouterr().out
    # a project folder (and a checkout) whose configs/ holds two YAMLs of one project; sluice run there
    monkeypatch.setattr(build, "ROOT", tmp_path)
    monkeypatch.chdir(tmp_path)
    _config(tmp_path, "a.yaml", "churn")
    _config(tmp_path, "b.yaml", "churn")
    for cmd in (["deployments", "show"], ["deployments", "apply"], ["deployments", "show", "churn"]):
        assert main(cmd) == 2
        err = capsys.readouterr().err
        assert "'churn' is declared by" in err and "a.yaml and" in err and "b.yaml" in err, err


def test_deployments_from_a_project_folder_of_its_own(tmp_path, monkeypatch, capsys):
    """A folder with only configs/ and data/ (no checkout): its projects, by default and by name; the
    deployment code comes from this install."""
    import json

    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "tips.yaml").write_text(yaml.safe_dump({
        "project": "tips", "task": "regression", "data": {"source": {"kind": "bundled", "name": "sklearn.diabetes"},
                                                         "target": "target"},
        "model": {"kind": "sklearn", "estimator": "ridge"}, "gates": {"primary_metric": "r2"}}))
    monkeypatch.chdir(tmp_path)
    for cmd in (["deployments", "show"], ["deployments", "show", "tips"]):
        assert main(cmd) == 0
        shown = json.loads(capsys.readouterr().out)
        assert sorted(d["name"] for d in shown) == ["tips-drift-check", "tips-retraining", "tips-training"]
        assert all(d["parameters"].get("project", d["parameters"].get("config_path")).endswith("tips.yaml")
                   for d in shown)
