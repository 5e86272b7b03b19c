import math

import numpy as np
import pytest

from helpers import stats


def test_wilson_interval_matches_the_textbook_values():
    # Newcombe (1998), Table I: 81/263 -> 0.2553 to 0.3662; 15/148 -> 0.0624 to 0.1605
    assert stats.wilson_interval(81, 263) == pytest.approx((0.2553, 0.3662), abs=1e-4)
    assert stats.wilson_interval(15, 148) == pytest.approx((0.0624, 0.1605), abs=1e-4)
    low, high = stats.wilson_interval(0, 10)
    assert low == 0 and 0.27 < high < 0.28


def test_mcnemar_exact_p_value():
    assert stats.mcnemar_p(0, 6) == pytest.approx(2 / 64)
    assert stats.mcnemar_p(3, 3) == 1.0 and stats.mcnemar_p(0, 0) == 1.0
    # 2 against 10 disagreements: P(X <= 2 | n=12, p=1/2) * 2
    assert stats.mcnemar_p(2, 10) == pytest.approx(2 * (1 + 12 + 66) / 4096)


def test_paired_difference_interval_is_centred_and_clears_only_real_differences():
    rng = np.random.default_rng(1)
    a = rng.random(289) < 0.5
    same = stats.paired_difference(a, a)
    assert same["difference"] == 0 and same["low"] == 0 and same["high"] == 0 and not same["clear"]
    b = a.copy()
    b[np.flatnonzero(~a)[:40]] = True  # b gets 40 more prompts right
    better = stats.paired_difference(a, b)
    assert better["difference"] == pytest.approx(40 / 289) and better["clear"] and better["b_only"] == 40
    assert better["low"] < better["difference"] < better["high"] and better["p_value"] < 1e-6
    c = a.copy()
    flip = np.flatnonzero(~a)[:3]
    c[flip] = True
    c[np.flatnonzero(a)[:2]] = False  # +3 / -2: noise
    assert not stats.paired_difference(a, c)["clear"]


def test_paired_interval_is_narrower_than_the_unpaired_one_for_correlated_outcomes():
    rng = np.random.default_rng(2)
    a = rng.random(289) < 0.5
    b = a.copy()
    b[np.flatnonzero(~a)[:12]] = True
    paired = stats.paired_difference(a, b)
    se_unpaired = math.sqrt(a.mean() * (1 - a.mean()) / a.size + b.mean() * (1 - b.mean()) / b.size)
    assert paired["high"] - paired["low"] < 2 * 1.96 * se_unpaired / 2


def test_paired_difference_refuses_unpaired_inputs():
    with pytest.raises(ValueError, match="same prompts"):
        stats.paired_difference([True, False], [True])


def test_perplexity_interval_and_ratio():
    rng = np.random.default_rng(3)
    nll = rng.gamma(2.0, 1.5, size=4096)
    sums, counts = stats.blocks(nll)
    assert sums.size == 32 and counts.sum() == 4096 and sums.sum() == pytest.approx(nll.sum())
    out = stats.perplexity_interval(sums, counts)
    assert out["perplexity"] == pytest.approx(math.exp(nll.mean()))
    assert out["low"] < out["perplexity"] < out["high"]
    same = stats.perplexity_ratio(sums, sums, counts)
    assert same["ratio"] == 1 and not same["clear"]
    worse = stats.perplexity_ratio(sums, stats.blocks(nll + 0.2)[0], counts)
    assert worse["ratio"] == pytest.approx(math.exp(0.2)) and worse["clear"]
    assert worse["low"] == pytest.approx(math.exp(0.2)) and worse["high"] == pytest.approx(math.exp(0.2))
    noisy = stats.perplexity_ratio(sums, stats.blocks(nll + rng.normal(0, 1.0, size=nll.size))[0], counts)
    assert noisy["low"] < noisy["ratio"] < noisy["high"]
    short = stats.blocks(nll[:100])
    assert short[0].size == 1 and short[1][0] == 100
    with pytest.raises(ValueError, match="same tokens"):
        stats.perplexity_ratio(sums, sums[:-2], counts)
