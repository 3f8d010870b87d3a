"""The clip's kept run on sorted data (`stats._kept_range`) against the element-wise
predicate ``abs(float(v) - center) <= half`` of the contract."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ampoffset_dask.algorithm.stats import _kept_range


def _brute(s: np.ndarray, center: float, half: float) -> tuple[int, int]:
    with np.errstate(over="ignore"):
        kept = np.flatnonzero(np.abs(s.astype(np.float64) - center) <= half)
    return (int(kept[0]), int(kept[-1]) + 1) if kept.size else (0, 0)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_kept_range_equals_elementwise_clip(dtype):
    rng = np.random.default_rng(int(np.dtype(dtype).itemsize))
    big = float(np.finfo(dtype).max)
    checked = 0
    for trial in range(1500):
        n = int(rng.integers(1, 50))
        kind = trial % 4
        if kind == 0:
            v = rng.normal(0.0, 1.0, n)
        elif kind == 1:  # integers: long runs of equal values at the bounds
            v = np.round(rng.normal(0.0, 2.0, n))
        elif kind == 2:  # both zeros, the smallest subnormal, the extremes
            v = rng.choice([0.0, -0.0, 1.0, 2.0, 1e-45, 0.5 * big, -0.5 * big], n)
        else:  # magnitudes where the rounded bounds are far from the exact ones
            v = rng.normal(0.0, 1.0, n) * 10.0 ** float(rng.integers(-30, 30))
        with np.errstate(over="ignore"):
            s = np.sort(v.astype(dtype))
        s = s[np.isfinite(s)]
        if s.size == 0:
            continue
        center = float(rng.choice(s)) * (1.0 + float(rng.choice([0.0, 1e-7, -1e-3])))
        half = abs(float(rng.choice([0.0, 1e-8, 0.3, 1.0, 3.0, math.inf])))
        if trial % 3 == 0:  # a bound exactly on a value (and its rounding in the dtype)
            half = abs(float(rng.choice(s)) - center)
        if trial % 17 == 0:  # a centre beyond every value (and beyond the dtype)
            center = float(s[-1]) + (3.0 if trial % 2 else 1e300)
        with np.errstate(over="ignore"):
            got = _kept_range(s, center, half)
        assert got == _brute(s, center, half), (s, center, half)
        checked += 1
    assert checked > 1200
