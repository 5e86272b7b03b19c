"""How sure a comparison is: intervals for accuracies, for differences of accuracies on the same prompts, and
for perplexity ratios on the same text. One method per question, and one verdict rule:

- one accuracy: the Wilson score interval;
- two variants on the same prompts: the difference and its paired bootstrap interval (the prompts are resampled,
  each keeping both variants' outcomes);
- perplexity: the text's tokens are cut into blocks; resampling blocks (paired across variants) gives an interval for
  a perplexity and for the ratio of two.

A difference is called *clear* only when its interval excludes zero (for a ratio: one). Intervals are 95% by
default; a notebook that states many verdicts at once asks for a higher level per interval
(:func:`bonferroni_level`), so that all of them hold together with 95% confidence.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np

Z95 = 1.959963984540054
N_BOOT = 10_000
TAIL_DRAWS = 100   # resamples beyond each end of an interval, at least: enough for a stable quantile at any level
BLOCK_TOKENS = 128  # perplexity blocks: long enough to keep local context correlated, short enough to have many


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """95% Wilson score interval of a proportion ``successes / n``."""
    if n <= 0:
        raise ValueError("wilson_interval needs at least one trial.")
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def bonferroni_level(n_intervals: int, family_level: float = 0.95) -> float:
    """The level of each of ``n_intervals`` intervals such that all of them hold together with probability at least
    ``family_level`` (Bonferroni: the error ``1 - family_level`` is shared out equally)."""
    if n_intervals < 1:
        raise ValueError(f"bonferroni_level needs at least one interval, got {n_intervals}.")
    if not 0 < family_level < 1:
        raise ValueError(f"The family level is a probability between 0 and 1, got {family_level}.")
    return 1 - (1 - family_level) / n_intervals


def resamples(level: float, n_boot: int = N_BOOT) -> int:
    """Bootstrap resamples for a ``level`` interval: at least ``n_boot``, and enough that :data:`TAIL_DRAWS`
    resamples lie beyond each end (a 99.9% interval needs far more than a 95% one)."""
    if not 0 < level < 1:
        raise ValueError(f"An interval's level is a probability between 0 and 1, got {level}.")
    return max(n_boot, math.ceil(TAIL_DRAWS / ((1 - level) / 2)))


def _outcomes(values: Sequence) -> np.ndarray:
    array = np.asarray([bool(v) for v in values], dtype=float)
    if array.size == 0:
        raise ValueError("No outcomes to compare.")
    return array


def paired_difference(a: Sequence[bool], b: Sequence[bool], level: float = 0.95, n_boot: int = N_BOOT,
                      seed: int = 0) -> dict:
    """Accuracy of ``b`` minus accuracy of ``a`` on the same prompts (``a[i]``, ``b[i]``: prompt ``i`` right or
    wrong), with its paired-bootstrap interval at ``level``.

    A paired resample of the prompts only changes how many of them fall in each of three kinds: ``b`` right and ``a``
    wrong (+1), ``a`` right and ``b`` wrong (-1), both the same (0); so the resamples are drawn as multinomial counts
    of those kinds, which is the same distribution as resampling indices, and cheap at any level.

    Returns ``difference``, ``low``, ``high``, ``level``, ``n``, ``a_only`` / ``b_only`` (prompts only one of them got
    right) and ``clear`` (the interval excludes 0)."""
    a, b = _outcomes(a), _outcomes(b)
    if a.shape != b.shape:
        raise ValueError(f"Paired outcomes need the same prompts: got {a.size} and {b.size}.")
    n = a.size
    a_only, b_only = int(((a == 1) & (b == 0)).sum()), int(((a == 0) & (b == 1)).sum())
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n, [b_only / n, a_only / n, 1 - (a_only + b_only) / n], size=resamples(level, n_boot))
    diffs = (counts[:, 0] - counts[:, 1]) / n
    low, high = np.quantile(diffs, [(1 - level) / 2, (1 + level) / 2])
    return {"difference": float(b.mean() - a.mean()), "low": float(low), "high": float(high), "level": level,
            "n": int(n), "a_only": a_only, "b_only": b_only, "clear": bool(low > 0 or high < 0)}


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


def perplexity_ratio(a_sums: Sequence[float], b_sums: Sequence[float], counts: Sequence[float], level: float = 0.95,
                     n_boot: int = N_BOOT, seed: int = 0) -> dict:
    """Perplexity of ``b`` divided by that of ``a`` on the same tokens (block sums from :func:`blocks`), with a paired
    block-bootstrap interval at ``level`` (the same blocks are drawn for both). ``clear``: the interval excludes 1."""
    sa, sb, counts = (np.asarray(v, dtype=float) for v in (a_sums, b_sums, counts))
    if not sa.shape == sb.shape == counts.shape:
        raise ValueError("A perplexity ratio needs losses on the same tokens (the same blocks).")
    rng = np.random.default_rng(seed)
    diff = sb - sa
    boot = np.empty(resamples(level, n_boot))
    for start in range(0, boot.size, 50_000):   # in chunks: a 99.9% interval draws hundreds of thousands
        idx = rng.integers(0, sa.size, size=(min(50_000, boot.size - start), sa.size))
        boot[start:start + idx.shape[0]] = np.exp(diff[idx].sum(axis=1) / counts[idx].sum(axis=1))
    low, high = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2])
    ratio = float(math.exp((sb.sum() - sa.sum()) / counts.sum()))
    return {"ratio": ratio, "low": float(low), "high": float(high), "level": level, "blocks": int(sa.size),
            "clear": bool(low > 1 or high < 1)}


def accuracy_intervals(outcomes: Mapping[str, Mapping], key: str = "correct") -> dict[str, list[float]]:
    """The 95% Wilson interval of each variant's skill accuracy (``key="correct"``) or preference accuracy
    (``key="preferred"``), from its recorded per-prompt outcomes."""
    out = {}
    for name, o in outcomes.items():
        if o.get(key):
            out[name] = list(wilson_interval(o[key].count("1"), len(o[key])))
    return out
