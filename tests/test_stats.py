"""Bootstrap intervals, McNemar and percentiles against hand-computed values and numpy."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentark.evaluate.stats import bootstrap_ci, mcnemar, paired_bootstrap_diff, percentiles, relative_ratio_ci


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(0, 1e4, allow_nan=False), min_size=1, max_size=60))
def test_percentiles_match_numpy_linear(values):
    got = percentiles(values, (0, 50, 95, 99, 100))
    expected = np.percentile(values, [0, 50, 95, 99, 100])
    assert list(got) == [0, 50, 95, 99, 100]
    np.testing.assert_allclose(list(got.values()), expected)


def test_percentiles_interpolate_between_order_statistics():
    # rank = q/100 * (n-1): p50 of 1..4 sits halfway between 2 and 3; p95 of 0..10 is 9.5.
    assert percentiles([4, 1, 3, 2], (50,)) == {50: 2.5}
    assert percentiles(list(range(11)), (95,)) == {95: 9.5}
    with pytest.raises(ValueError):
        percentiles([])


def test_bootstrap_ci_is_deterministic_and_contains_the_mean():
    values = [1, 0, 1, 1, 0, 1, 1, 1, 0, 1] * 5
    mean, lo, hi = bootstrap_ci(values, seed=3)
    assert mean == pytest.approx(0.7)
    assert lo < mean < hi and 0.5 < lo and hi < 0.85
    assert bootstrap_ci(values, seed=3) == (mean, lo, hi)
    assert bootstrap_ci(values, seed=4) != (mean, lo, hi)
    assert bootstrap_ci([1, 1, 1]) == (1.0, 1.0, 1.0)


def test_paired_diff_uses_the_same_resamples_for_both_systems():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 2, 40)
    # b is a shifted copy: every resample's difference is exactly 1, so the interval collapses.
    assert paired_bootstrap_diff(a + 1, a) == pytest.approx((1.0, 1.0, 1.0))
    diff, lo, hi = paired_bootstrap_diff(a, np.zeros(40))
    assert diff == pytest.approx(a.mean()) and lo <= diff <= hi
    with pytest.raises(ValueError, match="differ in length"):
        paired_bootstrap_diff([1, 0], [1])


def test_mcnemar_exact_on_a_known_table():
    # 1 item only b right, 9 only a right: p = 2 * (C(10,0) + C(10,1)) / 2**10 = 22/1024.
    a = [1] * 9 + [0] + [1] * 5 + [0] * 5
    b = [0] * 9 + [1] + [1] * 5 + [0] * 5
    assert mcnemar(a, b) == {"b01": 1, "b10": 9, "p_value": pytest.approx(22 / 1024)}
    assert mcnemar([1, 0, 1], [1, 0, 1])["p_value"] == 1.0  # no discordant pairs
    assert mcnemar([1, 0], [0, 1])["p_value"] == 1.0
    # Large counts stay exact and finite (2**n far beyond float range).
    big = mcnemar([1] * 1500 + [0] * 1500, [0] * 1500 + [1] * 1500)
    assert big["p_value"] == 1.0


def test_relative_ratio_ci():
    a = np.array([1, 0, 1, 1, 0, 1, 0, 1] * 4)
    # Against an always-right reference the ratio is the accuracy itself, resample for resample.
    assert relative_ratio_ci(a, np.ones_like(a), seed=2) == pytest.approx(bootstrap_ci(a, seed=2))
    ratio, lo, hi = relative_ratio_ci(a, a)
    assert (ratio, lo, hi) == (1.0, 1.0, 1.0)
    ratio, lo, hi = relative_ratio_ci(a * 0, a)
    assert ratio == 0.0 and hi < 1
    # Both systems always wrong: equal, ratio 1 (0/0 is not a failure of the student).
    assert relative_ratio_ci([0, 0], [0, 0]) == (1.0, 1.0, 1.0)
