"""Unit tests of the strategies' logic run with no fitted greedy margins (every margin 0 unless a
test sets one): the margins shipped in search/greedy_margins.json are measurements that a refit
changes, not part of the logic under test."""

import pytest

from search import params


@pytest.fixture(autouse=True)
def no_fitted_margins(monkeypatch):
    monkeypatch.setattr(params, "fitted_margins", lambda: {"fitted_by": "nothing (unit tests)", "margins": {}})
