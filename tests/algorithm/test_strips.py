"""Per-strip statistics shared by the diagnostics (algorithm/strips.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ampoffset_dask.algorithm.edges import edge_profile
from ampoffset_dask.algorithm.strips import (
    CLIP_SIGMA,
    MAD_TO_SIGMA,
    StripStats,
    exact_median,
    line_medians,
    lines_stats,
    strip_blocks,
    strip_lines,
    strip_stats,
)


def _strip(rng, side: int, width: int = 24, length: int = 300) -> np.ndarray:
    shape = (width, length) if side in (0, 2) else (length, width)
    a = rng.normal(500.0, 9.0, shape).astype(np.float32)
    a[rng.uniform(size=shape) < 0.05] = np.nan  # scattered masked pixels
    lines = a.T if side in (0, 2) else a
    lines[7] = np.nan  # a fully masked line
    lines[11, :-1] = np.nan  # a line with one valid pixel
    lines[20, 3] += 400.0  # a cosmic-ray-like outlier, clipped
    return a


@pytest.mark.parametrize("n", [1, 2, 7, 64, 1001])
def test_exact_median_equals_numpy(n):
    v = np.random.default_rng(n).normal(size=n)
    assert exact_median(v.copy()) == np.median(v)
    assert math.isnan(exact_median(np.array([])))


@pytest.mark.parametrize("width", [1, 2, 5, 64])
def test_line_medians_equal_nanmedian_in_the_array_dtype(width):
    rng = np.random.default_rng(width)
    a = rng.normal(0.0, 1.0, (200, width))
    a[rng.uniform(size=a.shape) < 0.2] = np.nan
    a[3] = np.nan
    with np.errstate(all="ignore"), pytest.warns(RuntimeWarning):
        expected = np.nanmedian(a, axis=1)
    np.testing.assert_array_equal(line_medians(a), expected)
    f32 = line_medians(a.astype(np.float32))
    assert f32.dtype == np.float32


@pytest.mark.parametrize("side", [0, 1, 2, 3])
def test_strip_stats_against_pixel_by_pixel_reference(side):
    rng = np.random.default_rng(side)
    strip = _strip(rng, side)
    raw = strip + np.float32(1000.0)
    raw[np.isnan(strip)] = 77.0  # masked by the strip's NaNs
    st = strip_stats(strip, side, inset=5, raw=raw)
    # LSST's edge profile, bit for bit.
    np.testing.assert_array_equal(st.profile, edge_profile(strip, side))
    lines = (strip.T if side in (0, 2) else strip).astype(np.float64)
    np.testing.assert_array_equal(st.count, np.sum(np.isfinite(lines), axis=1))
    resid = lines - st.profile[:, None].astype(np.float64)
    sigma = MAD_TO_SIGMA * np.median(np.abs(resid[np.isfinite(resid)]))
    assert st.sigma == pytest.approx(sigma, rel=1e-6)
    width = lines.shape[1]
    idx = np.arange(width) + 0.5
    dist = (width - idx + 5) if side in (0, 1) else (idx + 5)
    for j in range(lines.shape[0]):
        keep = np.isfinite(resid[j]) & (np.abs(resid[j]) <= CLIP_SIGMA * sigma)
        assert st.clip_count[j] == keep.sum()
        if not keep.any():
            assert math.isnan(st.clip_mean[j]) and math.isnan(st.dist_mean[j])
            continue
        v, d = lines[j, keep], dist[keep]
        assert st.clip_mean[j] == pytest.approx(v.mean(), rel=1e-9, abs=1e-9)
        assert st.dist_mean[j] == d.mean()  # exact: distances are multiples of 1/2
        assert st.dist_sxx[j] == pytest.approx(np.sum((d - d.mean()) ** 2), abs=1e-9)
        sxy = np.sum((d - d.mean()) * (v - v.mean()))
        assert st.dist_sxy[j] == pytest.approx(sxy, rel=1e-5, abs=1e-3)
    assert st.clip_count[20] <= st.count[20] - 1  # the outlier is clipped
    # Raw line levels: the raw pixels' medians under the strip's mask (77 never enters).
    expected = edge_profile(np.where(np.isnan(strip), np.nan, raw), side)
    np.testing.assert_array_equal(st.level, expected)
    assert math.isnan(st.level[7]) and math.isnan(st.profile_variance()[7])


def test_strip_stats_of_an_almost_empty_strip_are_nan():
    strip = np.full((10, 4), np.nan, dtype=np.float32)
    strip[2, 1] = 5.0
    st = strip_stats(strip, 1)
    assert math.isnan(st.sigma)
    assert st.clip_count.sum() == 0 and np.isnan(st.clip_mean).all()
    assert st.profile[2] == 5.0 and np.isnan(st.profile_variance()).all()


def test_raw_strip_is_not_modified():
    rng = np.random.default_rng(9)
    strip = _strip(rng, 1)
    raw = np.ascontiguousarray(strip + np.float32(3.0))
    raw[np.isnan(strip)] = 1.0
    before = raw.copy()
    strip_stats(strip, 1, raw=raw)
    np.testing.assert_array_equal(raw, before)


def test_scatter_ignores_a_line_of_infinities():
    rng = np.random.default_rng(4)
    strip = rng.normal(0.0, 2.0, (50, 9)).astype(np.float32)
    strip[3, :6] = np.inf  # the line's median is inf: none of its residuals is finite
    st = strip_stats(strip, 1)
    assert np.isinf(st.profile[3])
    resid = np.delete(strip, 3, axis=0) - np.delete(st.profile, 3)[:, None]
    assert st.sigma == pytest.approx(MAD_TO_SIGMA * np.median(np.abs(resid)), rel=1e-6)


def test_stacked_strips_give_each_strip_its_own_stats():
    rng = np.random.default_rng(12)
    sides = {("a", 0): (0, (24, 300)), ("b", 1): (1, (120, 24)), ("c", 0): (0, (24, 50)),
             ("d", 2): (2, (24, 80)), ("e", 3): (3, (90, 24)), ("f", 1): (1, (10, 7))}
    strips, raws = {}, {}
    for key, (_side, shape) in sides.items():
        a = rng.normal(100.0 * len(strips), 3.0, shape).astype(np.float32)
        a[rng.uniform(size=shape) < 0.03] = np.nan
        strips[key] = a
        raws[key] = a + np.float32(50.0)
    strips[("b", 1)][4, :5] = np.inf  # a line holding infinities
    strips[("e", 3)][:, :] = np.nan  # a fully masked strip
    blocks = strip_blocks(sides, max_pixels=8000)
    assert sorted(k for b in blocks for k in b.keys) == sorted(sides)
    assert len(blocks) > 3  # the 8000-pixel limit splits the sides-0/1 strips
    for b in blocks:
        raw = np.empty_like(b.lines)
        for key, lo, hi in zip(b.keys, b.bounds, b.bounds[1:], strict=False):
            b.lines[lo:hi] = strip_lines(strips[key], key[1])
            raw[lo:hi] = strip_lines(raws[key], key[1])
        before = b.lines.copy(), raw.copy()
        for key, st in zip(b.keys, lines_stats(b.lines, b.bounds, b.sides, inset=3, raw=raw),
                           strict=True):
            one = strip_stats(strips[key], key[1], inset=3, raw=raws[key])
            for name in StripStats._fields:
                np.testing.assert_array_equal(getattr(st, name), getattr(one, name),
                                              err_msg=f"{key} {name}")
        np.testing.assert_array_equal(b.lines, before[0])  # inputs not modified
        np.testing.assert_array_equal(raw, before[1])
    with pytest.raises(ValueError, match="mix"):
        lines_stats(np.zeros((4, 3), np.float32), [0, 2, 4], [0, 2])


@pytest.mark.parametrize("layout", ["sampled-high", "sampled-low", "ties"])
def test_median_of_absolute_residuals_when_the_sample_misleads(layout):
    """A large strip's median is bracketed from every 16th value; where that sample
    misplaces the bracket (the sampled values unlike the others, or ties), the selection
    among all values gives the same exact median."""
    from ampoffset_dask.algorithm.kernels import _numpy as npk

    n = 40_001
    rng = np.random.default_rng(3)
    a = np.abs(rng.normal(0.0, 1.0, n)).astype(np.float32)
    if layout == "sampled-high":
        a[::16] = np.float32(1e3) + np.arange(a[::16].shape[0], dtype=np.float32)
    elif layout == "sampled-low":
        a[::16] = np.float32(0.0)
    else:
        a[:] = np.float32(2.0)
        a[1::3] = np.float32(5.0)
    a[7::101] = np.nan
    valid = a[~np.isnan(a)]
    expected = np.median(valid)
    got = npk._bracketed_ranks(a, valid.shape[0], (valid.shape[0] // 2,))
    if layout == "sampled-high":
        assert got is None  # the bracket misses: the fallback selects among all values
    kept = a.copy()
    assert npk._median_ignoring_nan(a, valid.shape[0]) == expected
    np.testing.assert_array_equal(a, kept)  # the fallback selects in a copy
    for size in (valid.shape[0] - 1, valid.shape[0]):  # odd and even counts
        b = valid[:size].copy()
        assert npk._median_ignoring_nan(b, size) == np.median(valid[:size])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [2, 3, 64, 1001, 40000])
def test_median_of_absolute_residuals_equals_numpy(dtype, n):
    from ampoffset_dask.algorithm.kernels._numpy import _median_ignoring_nan

    rng = np.random.default_rng(n)
    r = rng.normal(0.0, 5.0, n).astype(dtype)
    r[::3] = -0.0
    r[1::17] = np.inf
    with np.errstate(invalid="ignore"):
        r[2::11] = np.resize(r[1::17], r[2::11].shape[0]) - np.inf  # inf - inf: NaN
    a = np.abs(r)
    valid = a[~np.isnan(a)]
    expected = np.median(valid)
    before = a.copy()
    assert _median_ignoring_nan(a, valid.shape[0]) == expected
    # ``a`` is not modified (the caller keeps using the residuals), strided or not.
    np.testing.assert_array_equal(a, before)
    wide = np.stack([before, before], axis=1)
    assert _median_ignoring_nan(wide[:, 0], valid.shape[0]) == expected
    np.testing.assert_array_equal(wide[:, 0], before)
    np.testing.assert_array_equal(wide[:, 1], before)


def _stats_arrays(stats: list[StripStats]) -> list[tuple]:
    return [tuple(np.array(getattr(st, name), copy=True) for name in StripStats._fields)
            for st in stats]


def test_stats_survive_later_calls_and_other_threads():
    # The per-line work reuses per-thread buffers between calls: nothing returned may
    # live in them, and threads must not share them.
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(21)
    stacks = []
    for n_lines, width in ((300, 64), (900, 64), (40, 64), (500, 17)):
        lines = rng.normal(10.0 * n_lines, 4.0, (n_lines, width)).astype(np.float32)
        lines[rng.uniform(size=lines.shape) < 0.02] = np.nan
        raw = lines + np.float32(5.0)
        raw[np.isnan(lines)] = 0.0
        stacks.append((lines, raw, [0, n_lines // 3, n_lines]))
    first = lines_stats(stacks[0][0], stacks[0][2], [1, 1], raw=stacks[0][1])
    expected = _stats_arrays(first)
    serial = [_stats_arrays(lines_stats(li, bo, [1, 1], raw=ra)) for li, ra, bo in stacks]
    for got, want in zip(_stats_arrays(first), expected, strict=True):  # untouched
        for g, w in zip(got, want, strict=True):
            np.testing.assert_array_equal(g, w)

    def run(i: int) -> list[tuple]:
        li, ra, bo = stacks[i % len(stacks)]
        return _stats_arrays(lines_stats(li, bo, [1, 1], raw=ra))

    with ThreadPoolExecutor(4) as pool:
        threaded = list(pool.map(run, range(24)))
    for i, got in enumerate(threaded):
        for g_st, w_st in zip(got, serial[i % len(stacks)], strict=True):
            for g, w in zip(g_st, w_st, strict=True):
                np.testing.assert_array_equal(g, w)


def test_sorted_rows_are_numpys_float_sort():
    from ampoffset_dask.algorithm.kernels._numpy import _sorted_rows

    rng = np.random.default_rng(5)
    for dtype in (np.float32, np.float64):
        a = np.abs(rng.normal(0.0, 3.0, (40, 64))).astype(dtype)
        a[rng.uniform(size=a.shape) < 0.1] = np.nan
        a[2] = np.nan
        a[3, 5::2] = -0.0  # zeros of both signs after a positive first value
        a[3, 4::2] = 0.0
        a[4, 7] = -np.inf
        a[5, 9] = -1.5
        a[6, 1::2] = np.inf
        for lines in (a, a - dtype(1.0), a[:, :0]):  # unsigned first values, signed, empty
            out = np.empty_like(lines)
            assert _sorted_rows(lines, out) is out
            assert out.tobytes() == np.sort(lines, axis=1).tobytes()


def test_all_rows_of_an_eight_byte_mask():
    from ampoffset_dask.algorithm.kernels._numpy import _all_rows

    rng = np.random.default_rng(6)
    for width in (8, 64, 136, 512):
        mask = rng.uniform(size=(50, width)) < 0.995
        mask[:10] = True
        mask[3, -1] = False
        np.testing.assert_array_equal(_all_rows(mask), mask.all(axis=1))
