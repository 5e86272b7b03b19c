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


def test_bonferroni_level_shares_the_error_out():
    assert stats.bonferroni_level(1) == pytest.approx(0.95)
    assert stats.bonferroni_level(16) == pytest.approx(1 - 0.05 / 16)
    assert stats.bonferroni_level(10, family_level=0.9) == pytest.approx(0.99)
    for bad in (0, -3):
        with pytest.raises(ValueError, match="at least one"):
            stats.bonferroni_level(bad)
    with pytest.raises(ValueError, match="between 0 and 1"):
        stats.bonferroni_level(4, family_level=95)


def test_resamples_grow_with_the_level_so_the_tails_are_populated():
    assert stats.resamples(0.95) == stats.N_BOOT
    n = stats.resamples(stats.bonferroni_level(48))
    assert n * (1 - stats.bonferroni_level(48)) / 2 >= stats.TAIL_DRAWS and n > 100_000
    with pytest.raises(ValueError, match="between 0 and 1"):
        stats.resamples(1.0)


def test_multinomial_bootstrap_matches_resampling_prompts():
    """Drawing the counts of (+1, -1, 0) prompts is the same distribution as resampling prompt indices."""
    rng = np.random.default_rng(4)
    a = rng.random(289) < 0.5
    b = a.copy()
    b[np.flatnonzero(~a)[:30]] = True
    b[np.flatnonzero(a)[:12]] = False
    idx = rng.integers(0, a.size, size=(20_000, a.size))
    by_index = np.quantile((b[idx].astype(float) - a[idx]).mean(axis=1), [0.025, 0.975])
    out = stats.paired_difference(a, b)
    assert out["low"] == pytest.approx(by_index[0], abs=0.004) and out["high"] == pytest.approx(by_index[1], abs=0.004)
    assert out["level"] == 0.95 and "p_value" not in out   # one statistic: the interval


def test_a_higher_level_widens_the_interval_and_can_undo_a_verdict():
    rng = np.random.default_rng(5)
    a = rng.random(289) < 0.5
    b = a.copy()
    b[np.flatnonzero(~a)[:20]] = True
    b[np.flatnonzero(a)[:6]] = False    # +20 / -6 prompts: clear at 95%, not at 99.9%
    at95, strict = stats.paired_difference(a, b), stats.paired_difference(a, b, level=stats.bonferroni_level(48))
    assert at95["clear"] and not strict["clear"]
    assert strict["low"] < at95["low"] and strict["high"] > at95["high"] and strict["level"] > 0.998
    sums, counts = stats.blocks(rng.gamma(2.0, 1.5, size=4096))
    other = stats.blocks(rng.gamma(2.0, 1.5, size=4096) + 0.05)[0]
    r95, r999 = stats.perplexity_ratio(sums, other, counts), stats.perplexity_ratio(sums, other, counts, level=0.999)
    assert r999["low"] < r95["low"] and r999["high"] > r95["high"] and r999["ratio"] == r95["ratio"]


def test_paired_difference_interval_is_centred_and_clears_only_real_differences():
    rng = np.random.default_rng(1)
    a = rng.random(289) < 0.5
    same = stats.paired_difference(a, a)
    assert same["difference"] == 0 and same["low"] == 0 and same["high"] == 0 and not same["clear"]
    b = a.copy()
    b[np.flatnonzero(~a)[:40]] = True  # b gets 40 more prompts right
    better = stats.paired_difference(a, b)
    assert better["difference"] == pytest.approx(40 / 289) and better["clear"] and better["b_only"] == 40
    assert better["low"] < better["difference"] < better["high"] and better["low"] > 0.08
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
