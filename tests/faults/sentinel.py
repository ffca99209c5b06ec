"""A pipeline step that fails on one sentinel value: a model version that raises on a certain input."""

from __future__ import annotations

from sklearn.base import BaseEstimator, TransformerMixin

SENTINEL = 77.777  # monthly_charges in the test data have two decimals, so only a test sends this


class FailOnSentinel(BaseEstimator, TransformerMixin):
    """Passes records through unchanged; raises on any record whose `column` equals `value`."""

    def __init__(self, column: str = "monthly_charges", value: float = SENTINEL):
        self.column = column
        self.value = value

    def fit(self, X, y=None):
        return self

    def transform(self, X):
        if (X[self.column] == self.value).any():
            raise ValueError(f"{self.column}={self.value}: this model version cannot score it")
        return X
