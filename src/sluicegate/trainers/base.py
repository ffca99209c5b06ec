"""Pieces shared by trainers: label encoding for families that need integer classes."""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.preprocessing import LabelEncoder


class EncodedLabelClassifier(ClassifierMixin, BaseEstimator):
    """Wraps a classifier that needs labels 0..k-1 so callers can use any labels."""

    def __init__(self, estimator=None):
        self.estimator = estimator

    def fit(self, X, y, **fit_params):
        self.encoder_ = LabelEncoder().fit(y)
        self.classes_ = self.encoder_.classes_
        self.estimator_ = clone(self.estimator).fit(X, self.encoder_.transform(y), **fit_params)
        return self

    def predict(self, X):
        return self.encoder_.inverse_transform(np.asarray(self.estimator_.predict(X)).astype(int))

    def predict_proba(self, X):
        return self.estimator_.predict_proba(X)


def check_range(name: str, value, low=None, high=None, low_open=False, high_open=False, integer=False):
    """A scikit-learn style message when `value` is outside the range, else None."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok and integer and not float(value).is_integer():
        ok = False
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if ok:
        return None
    lo = "(" if (low_open or low is None) else "["
    hi = ")" if (high_open or high is None) else "]"
    kind = "an int" if integer else "a number"
    return (
        f"must be {kind} in the range {lo}{low if low is not None else '-inf'}, "
        f"{high if high is not None else 'inf'}{hi} (got {value!r})"
    )
