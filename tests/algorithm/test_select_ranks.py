"""Exact order statistics from a few percent of the values (`stats._select_ranks`) and the
reused grow buffers: the same numbers as a selection among all the values, the same masks
as fresh arrays."""

from __future__ import annotations

import numpy as np
import pytest

from ampoffset_dask.algorithm.kernels import _numpy as K
from ampoffset_dask.algorithm.stats import _order_statistics, _quantile_ranks, _select_ranks


def _values(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    if kind == "normal":
        return rng.normal(0.0, 1.0, n)
    if kind == "ties":
        return rng.integers(-3, 4, n).astype(float)
    if kind == "cauchy":
        return rng.standard_cauchy(n)
    if kind == "constant":
        return np.full(n, 5.0)
    if kind == "infinities":
        a = rng.normal(1200.0, 30.0, n)
        a[rng.random(n) < 0.01] = np.inf
        a[rng.random(n) < 0.01] = -np.inf
        return a
    if kind == "sorted":
        return np.sort(rng.normal(0.0, 1.0, n))
    a = rng.normal(0.0, 1.0, n)  # signed zeros: never answered from the subsample
    a[rng.random(n) < 0.3] = 0.0
    a[rng.random(n) < 0.1] = -0.0
    return a


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", ["normal", "ties", "cauchy", "constant", "infinities",
                                  "sorted", "zeros"])
def test_select_ranks_equals_a_selection_among_all_values(kind, dtype):
    rng = np.random.default_rng([len(kind), ord(kind[0]), np.dtype(dtype).itemsize])
    answered = 0
    for _ in range(40):
        n = int(rng.integers(2, 60_000))
        a = _values(kind, n, rng).astype(dtype)
        before = a.copy()
        r = rng.random()
        if r < 0.4:
            ks = _quantile_ranks(n)
        elif r < 0.7:
            k = int(rng.integers(0, n - 1))
            ks = [k, k + 1]
        else:
            ks = sorted({int(x) for x in rng.integers(0, n, int(rng.integers(1, 8)))})
        got = _select_ranks(a, ks)
        assert a.tobytes() == before.tobytes()  # not modified
        if got is None:
            continue
        answered += 1
        want = _order_statistics(a.copy(), ks)
        assert list(got) == ks
        for k in ks:  # the same bits (a zero is never answered: its sign is the selection's)
            assert np.array(got[k], dtype).tobytes() == np.array(want[k], dtype).tobytes()
            assert got[k] != 0.0
    if kind not in ("constant", "zeros"):
        assert answered > 0


def test_select_ranks_declines_what_it_cannot_answer():
    a = np.random.default_rng(1).normal(size=5000).astype(np.float32)
    assert _select_ranks(a[:100], [50]) is None  # small: one selection costs less
    assert _select_ranks(a.astype(np.int32), [10]) is None  # not a float dtype
    assert _select_ranks(a, [-1]) is None and _select_ranks(a, [5000]) is None  # out of range


@pytest.mark.parametrize("isotropic", [True, False])
def test_grow_with_reused_buffers_matches_fresh_arrays_across_shapes(isotropic):
    rng = np.random.default_rng(5)
    for shape, radius in [((300, 150), 5), ((40, 700), 3), ((300, 150), 5), ((7, 9), 2),
                          ((500, 260), 4)]:
        for density in (0.0005, 0.01, 0.2):
            seeds = rng.random(shape) < density
            got = K.grow(seeds, radius, isotropic)
            # The reference: every seed's footprint painted on its own.
            halves = K.footprint_halves(radius, isotropic)
            want = np.zeros(shape, dtype=bool)
            for y, x in zip(*np.nonzero(seeds), strict=True):
                for dy in range(-radius, radius + 1):
                    yy = y + dy
                    if 0 <= yy < shape[0]:
                        k = int(halves[dy + radius])
                        want[yy, max(x - k, 0):x + k + 1] = True
            assert np.array_equal(got, want), (shape, radius, density)
