"""MLflow registry behaviour on real SQLite stores: isolation, aliases, compare-and-set, status."""

from __future__ import annotations

import numpy as np
import pytest

from sluicegate.errors import PromotionConflictError
from sluicegate.settings import load_settings
from sluicegate.tracking import Tracker
from tests.helpers import tiny_regressor


def test_trackers_for_two_homes_stay_apart(tmp_path, monkeypatch):
    model, X = tiny_regressor()
    monkeypatch.setenv("SLUICE_HOME", str(tmp_path / "one"))
    one = Tracker(load_settings())
    monkeypatch.setenv("SLUICE_HOME", str(tmp_path / "two"))
    two = Tracker(load_settings())
    assert one.register_candidate("p", model, X.head(2), {}, {"test_r2": 1.0}, {}).version == "1"
    assert two.register_candidate("p", model, X.head(2), {}, {"test_r2": 1.0}, {}).version == "1"
    assert one.register_candidate("p", model, X.head(2), {}, {"test_r2": 1.0}, {}).version == "2"
    assert len(two.versions("p")) == 1 and len(one.versions("p")) == 2


def test_aliases_compare_and_set_and_status(tmp_path, monkeypatch):
    monkeypatch.setenv("SLUICE_HOME", str(tmp_path))
    tr = Tracker(load_settings())
    assert tr.status("p")["champion"] is None and tr.champion("p") is None
    model, X = tiny_regressor()
    v1 = tr.register_candidate("p", model, X.head(2), {"alpha": 1}, {"test_r2": 0.9}, {"sluice.data_fingerprint": "abc"})
    assert tr.alias("p", "challenger").version == "1"
    tr.promote("p", v1.version, expected_champion=None)
    v2 = tr.register_candidate("p", model, X.head(2), {}, {"test_r2": 0.95}, {})
    with pytest.raises(PromotionConflictError):
        tr.promote("p", v2.version, expected_champion=None)  # someone promoted v1 meanwhile
    tr.promote("p", v2.version, expected_champion="1")
    assert tr.champion("p").version == "2" and tr.alias("p", "previous-champion").version == "1"
    loaded = tr.load_model("models:/p@champion")
    np.testing.assert_allclose(loaded.predict(X), model.predict(X))
    status = tr.status("p")
    assert status["champion"] == 2 and status["versions"] == 2 and status["metrics"] == {"test_r2": 0.95}
