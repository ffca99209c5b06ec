"""The release's failure paths on a real SQLite registry: any exception is a DeployError, aliases stay put."""

from __future__ import annotations

import pytest

from sluicegate import events
from sluicegate.config import DeployConfig, PackagingConfig
from sluicegate.deploy.release import Promotion, release_version, restore_champion
from sluicegate.errors import DeployError, RegistryError
from sluicegate.settings import load_settings
from sluicegate.tracking import Tracker
from tests.helpers import register_tiny


def _register(tr: Tracker, snapshot: str = "") -> str:
    return register_tiny(tr, {"sluice.data_snapshot": snapshot})


def test_any_exception_in_a_release_is_a_deploy_error_and_moves_nothing(tracker, tmp_path):
    v1 = _register(tracker)
    tracker.promote("p", v1, None)
    garbage = tmp_path / "snapshot.parquet"
    garbage.write_bytes(b"not a parquet file")  # reading it raises pyarrow's error, not a DeployError
    v2 = _register(tracker, str(garbage))
    sent = []
    emitter = events.Emitter(lambda name, resource, payload: sent.append((name, payload)))
    with pytest.raises(DeployError, match=f"p v{v2}: deploy failed: Arrow"):
        release_version(tracker, "p", v2, PackagingConfig(), DeployConfig(target="kubernetes"), "regression",
                        load_settings(), tmp_path / "k8s", promotion=Promotion(v1), events=emitter)
    assert tracker.champion("p").version == v1
    assert tracker.alias("p", "previous-champion") is None
    assert not (tmp_path / "k8s").exists()
    assert [name for name, _ in sent] == [events.DEPLOY_FAILED] and sent[0][1]["version"] == v2


def test_release_without_a_champion_is_a_registry_error(tracker):
    with pytest.raises(RegistryError, match="no champion"):
        release_version(tracker, "p", None, PackagingConfig(), DeployConfig(), "regression", load_settings())


def test_restored_champion_is_never_its_own_previous_champion(tracker):
    v1, v2, v3 = _register(tracker), _register(tracker), _register(tracker)
    tracker.promote("p", v1, None)
    tracker.promote("p", v2, v1)
    tracker.promote("p", v3, v2)  # previous-champion v2; then v3's deploy fails while v2 serves
    assert restore_champion(tracker, "p", v2) == v3
    assert tracker.champion("p").version == v2
    assert tracker.alias("p", "previous-champion").version == v1  # what v2 had replaced
    tracker.promote("p", v3, v2)
    assert restore_champion(tracker, "p", v1) == v3  # v1 replaced nothing: no previous champion is left
    assert tracker.champion("p").version == v1 and tracker.alias("p", "previous-champion") is None
    assert restore_champion(tracker, "p", v1) is None  # already champion: nothing moves
