"""How sure a comparison is: 95% intervals for accuracies, for differences of accuracies on the same prompts, and
for perplexity ratios on the same text.

With 289 evaluation prompts an accuracy near 50% has a standard error near 3 points, so two variants must differ
by several points before the difference means anything. Every comparison the notebooks print goes through here:

- one accuracy: the Wilson score interval;
- two variants on the same prompts: the difference, a paired bootstrap interval (the prompts are resampled, each
  keeping both variants' outcomes) and McNemar's exact test on the prompts where they disagree;
- perplexity: the text's tokens are cut into blocks; resampling blocks (paired across variants) gives an interval for
  a perplexity and for the ratio of two.

A difference is called *clear* only when its interval excludes zero (for a ratio: one).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

Z95 = 1.959963984540054
N_BOOT = 10_000
BLOCK_TOKENS = 128  # perplexity blocks: long enough to keep local context correlated, short enough to have many


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """95% Wilson score interval of a proportion ``successes / n``."""
    if n <= 0:
        raise ValueError("wilson_interval needs at least one trial.")
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def mcnemar_p(a_only: int, b_only: int) -> float:
    """Two-sided exact McNemar p-value: under 'no difference' each disagreement is a fair coin flip."""
    n = a_only + b_only
    if n == 0:
        return 1.0
    k = min(a_only, b_only)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def _outcomes(values: Sequence) -> np.ndarray:
    array = np.asarray([bool(v) for v in values], dtype=float)
    if array.size == 0:
        raise ValueError("No outcomes to compare.")
    return array


def paired_difference(a: Sequence[bool], b: Sequence[bool], n_boot: int = N_BOOT, seed: int = 0) -> dict:
    """Accuracy of ``b`` minus accuracy of ``a`` on the same prompts (``a[i]``, ``b[i]``: prompt ``i`` right or
    wrong), with its 95% paired-bootstrap interval and McNemar's exact p-value.

    Returns ``difference``, ``low``, ``high``, ``p_value``, ``n``, ``a_only`` / ``b_only`` (prompts only one of
    them got right) and ``clear`` (the interval excludes 0)."""
    a, b = _outcomes(a), _outcomes(b)
    if a.shape != b.shape:
        raise ValueError(f"Paired outcomes need the same prompts: got {a.size} and {b.size}.")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, a.size, size=(n_boot, a.size))
    diffs = (b[idx] - a[idx]).mean(axis=1)
    low, high = np.quantile(diffs, [0.025, 0.975])
    a_only, b_only = int(((a == 1) & (b == 0)).sum()), int(((a == 0) & (b == 1)).sum())
    return {"difference": float(b.mean() - a.mean()), "low": float(low), "high": float(high),
            "p_value": mcnemar_p(a_only, b_only), "n": int(a.size), "a_only": a_only, "b_only": b_only,
            "clear": bool(low > 0 or high < 0)}


def blocks(token_nll: Sequence[float], block: int = BLOCK_TOKENS) -> tuple[np.ndarray, np.ndarray]:
    """Summed NLL and token count of consecutive blocks of ``block`` tokens: all that the perplexity intervals
    need (results files keep these sums, not every token's loss)."""
    nll = np.asarray(token_nll, dtype=float)
    if nll.size < 2:
        raise ValueError("Perplexity intervals need per-token losses of at least two tokens.")
    starts = np.arange(0, nll.size, block)
    return np.add.reduceat(nll, starts), np.minimum(block, nll.size - starts).astype(float)


def perplexity_interval(sums: Sequence[float], counts: Sequence[float], n_boot: int = N_BOOT, seed: int = 0) -> dict:
    """Perplexity ``exp(total NLL / tokens)`` from block sums (:func:`blocks`) and its 95% block-bootstrap interval."""
    sums, counts = np.asarray(sums, dtype=float), np.asarray(counts, dtype=float)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, sums.size, size=(n_boot, sums.size))
    boot = np.exp(sums[idx].sum(axis=1) / counts[idx].sum(axis=1))
    low, high = np.quantile(boot, [0.025, 0.975])
    return {"perplexity": float(math.exp(sums.sum() / counts.sum())), "low": float(low), "high": float(high),
            "blocks": int(sums.size)}


def perplexity_ratio(a_sums: Sequence[float], b_sums: Sequence[float], counts: Sequence[float], n_boot: int = N_BOOT,
                     seed: int = 0) -> dict:
    """Perplexity of ``b`` divided by that of ``a`` on the same tokens (block sums from :func:`blocks`), with a 95%
    paired block-bootstrap interval (the same blocks are drawn for both). ``clear``: the interval excludes 1."""
    sa, sb, counts = (np.asarray(v, dtype=float) for v in (a_sums, b_sums, counts))
    if not sa.shape == sb.shape == counts.shape:
        raise ValueError("A perplexity ratio needs losses on the same tokens (the same blocks).")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, sa.size, size=(n_boot, sa.size))
    boot = np.exp((sb[idx].sum(axis=1) - sa[idx].sum(axis=1)) / counts[idx].sum(axis=1))
    low, high = np.quantile(boot, [0.025, 0.975])
    ratio = float(math.exp((sb.sum() - sa.sum()) / counts.sum()))
    return {"ratio": ratio, "low": float(low), "high": float(high), "blocks": int(sa.size),
            "clear": bool(low > 1 or high < 1)}
