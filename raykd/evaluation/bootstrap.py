"""95% bootstrap intervals of test scores over test examples (pure: numpy only).

A score is the mean of per-example hits (1 = the example is right). Resampling the test examples
with replacement ``resamples`` times gives the percentile interval of that mean; a difference of two
models' scores is resampled *paired* (the same examples for both), which is what makes a small gain
on a shared test set measurable.
"""

from __future__ import annotations

import numpy as np

RESAMPLES = 2000
LEVEL = 0.95


def _interval(means: np.ndarray) -> list[float]:
    tail = (1 - LEVEL) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return [float(low), float(high)]


def _resampled_rows(n: int, resamples: int, seed: int) -> np.ndarray:
    """``(resamples, n)`` row indices drawn with replacement."""
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def score_interval(hits: list[int], resamples: int = RESAMPLES, seed: int = 0) -> list[float]:
    """``[low, high]`` of the mean of ``hits`` (one value in [0, 1] per test example)."""
    values = np.asarray(hits, dtype=np.float64)
    return _interval(values[_resampled_rows(len(values), resamples, seed)].mean(axis=1))


def _paired_means(hits_a: list[int], hits_b: list[int], resamples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(resamples,)`` means of ``a`` and of ``b``, each resample drawing the same test examples for both."""
    a, b = np.asarray(hits_a, dtype=np.float64), np.asarray(hits_b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired hits must cover the same examples: {a.shape} vs {b.shape}")
    rows = _resampled_rows(len(a), resamples, seed)
    return a[rows].mean(axis=1), b[rows].mean(axis=1)


def difference_interval(hits_a: list[int], hits_b: list[int], resamples: int = RESAMPLES, seed: int = 0
                        ) -> list[float]:
    """``[low, high]`` of ``mean(a) - mean(b)``, both resampled on the same test examples."""
    a, b = _paired_means(hits_a, hits_b, resamples, seed)
    return _interval(a - b)


def ratio_interval(hits_a: list[int], hits_b: list[int], resamples: int = RESAMPLES, seed: int = 0
                   ) -> list[float] | None:
    """``[low, high]`` of ``mean(a) / mean(b)`` (a student's retention of its teacher's score), paired
    like ``difference_interval``; resamples where ``b`` scores 0 have no ratio and are left out
    (``None`` when every one does)."""
    num, den = _paired_means(hits_a, hits_b, resamples, seed)
    ratios = num[den > 0] / den[den > 0]
    return _interval(ratios) if len(ratios) else None


def weighted_interval(values: list[float], weights: list[float], resamples: int = RESAMPLES, seed: int = 0
                      ) -> list[float]:
    """``[low, high]`` of ``sum(w v) / sum(w)`` over resampled rows: a per-token mean from per-row means
    ``values`` over ``weights`` tokens each (tokens of a row are resampled together)."""
    v, w = np.asarray(values, dtype=np.float64), np.asarray(weights, dtype=np.float64)
    rows = _resampled_rows(len(v), resamples, seed)
    return _interval((v[rows] * w[rows]).sum(axis=1) / w[rows].sum(axis=1))


def weighted_difference_interval(values_a: list[float], values_b: list[float], weights: list[float],
                                 resamples: int = RESAMPLES, seed: int = 0) -> list[float]:
    """``[low, high]`` of the difference of two per-token means over the same rows (``weighted_interval``),
    both resampled on the same rows."""
    difference = np.asarray(values_a, dtype=np.float64) - np.asarray(values_b, dtype=np.float64)
    return weighted_interval(difference.tolist(), weights, resamples, seed)
