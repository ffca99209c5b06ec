"""The seeded train/validation/test split."""

from __future__ import annotations

import pandas as pd
import pytest

from sluicegate.config import SplitConfig
from sluicegate.split import split_frame
from tests.helpers import churn_frame


@pytest.mark.parametrize("method", ["random", "stratified", "time"])
def test_split_is_seeded_and_disjoint(method):
    frame = churn_frame(500)
    spec = SplitConfig(method=method, time_column="signup_date" if method == "time" else None)
    a = split_frame(frame, spec, method, "churned", seed=3, time_column="signup_date")
    b = split_frame(frame, spec, method, "churned", seed=3, time_column="signup_date")
    ids = [set(p.customer_id) for p in a]
    assert sum(len(i) for i in ids) == 500 and not (ids[0] & ids[1]) and not (ids[1] & ids[2])
    for x, y in zip(a, b):
        pd.testing.assert_frame_equal(x, y)
    if method == "time":
        assert a[0].signup_date.max() <= a[2].signup_date.min()
    if method == "stratified":
        rates = [p.churned.mean() for p in a]
        assert max(rates) - min(rates) < 0.05
