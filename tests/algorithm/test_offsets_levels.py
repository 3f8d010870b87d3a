"""Interface offsets with infinite profile values, and amp levels from float32 line levels,
against direct transcriptions of their definitions (bit for bit)."""

from __future__ import annotations

import numpy as np
import pytest

from ampoffset_dask.algorithm.gain import amp_levels
from ampoffset_dask.algorithm.offsets import measure_interface, window_length
from ampoffset_dask.algorithm.stats import clipped_stats

FRAC = 512 / 4176


def _contract_avg(edge_a: np.ndarray, edge_b: np.ndarray, frac: float) -> np.ndarray:
    """LSST's NaN-aware moving average of ``edge_a - edge_b`` (ALGORITHM.md 1.6)."""
    diff = edge_a - edge_b
    nan = np.isnan(diff)
    win = window_length(frac, diff.shape[0])
    total = np.convolve(np.nan_to_num(diff), np.ones(win), "same")
    count = np.convolve(~nan, np.ones(win), "same")
    avg = total / np.maximum(count, 1.0)
    avg[nan] = np.nan
    return avg


@pytest.mark.parametrize("infinite", [False, True])
def test_moving_average_and_offset_with_infinite_profiles(infinite):
    rng = np.random.default_rng(3)
    a = rng.normal(100.0, 2.0, 2000).astype(np.float32)
    b = (rng.normal(97.0, 2.0, 2000)).astype(np.float32)
    a[50:60] = np.nan
    b[300] = np.nan
    if infinite:  # lines of infinite pixels: the difference is +-inf (or NaN: inf - inf)
        a[700:705] = np.inf
        b[703:709] = -np.inf
        b[900] = np.inf
        a[900] = np.inf
    with np.errstate(invalid="ignore", over="ignore"):
        res, smoothed = measure_interface("A-B", a, b, window_frac=FRAC, min_frac=0.5,
                                          max_offset=50.0)
        avg = _contract_avg(a, b, FRAC)
    np.testing.assert_array_equal(smoothed.avg, avg)
    # Infinities enter the sums as the largest float32 (numpy's nan_to_num).
    assert (np.abs(avg) > 1e30).any() == infinite
    offset, clip_std = clipped_stats(avg)
    assert res.offset_raw == offset and smoothed.clip_std == clip_std
    assert 2.0 < res.offset_raw < 4.0


def test_amp_levels_of_float32_levels_are_exact_medians():
    rng = np.random.default_rng(4)
    levels = {}
    for amp in range(3):
        for side, n in ((1, 2000), (3, 509 + amp)):  # odd and even totals
            v = rng.normal(1000.0 + amp, 5.0, n).astype(np.float32)
            v[::97] = np.nan
            levels[(amp, side)] = v
    levels[(3, 1)] = np.full(10, np.nan, dtype=np.float32)
    got = amp_levels(levels, 5)
    for amp in range(3):
        v = np.concatenate([levels[(amp, s)] for s in (1, 3)]).astype(np.float64)
        assert got[amp] == np.median(v[np.isfinite(v)])
    assert np.isnan(got[3]) and np.isnan(got[4])


def test_amp_levels_of_finite_levels_leave_them_unpermuted():
    # Fully finite levels are not copied before the concatenation (which copies them);
    # the selection permutes only that copy. One strip per amp, and two.
    rng = np.random.default_rng(9)
    levels = {(0, 1): rng.normal(50.0, 3.0, 301), (1, 3): rng.normal(7.0, 1.0, 40),
              (1, 0): rng.normal(9.0, 1.0, 41).astype(np.float32)}
    before = {k: v.copy() for k, v in levels.items()}
    got = amp_levels(levels, 2)
    assert all(np.array_equal(levels[k], before[k]) for k in levels)
    assert got[0] == np.median(before[(0, 1)])
    assert got[1] == np.median(np.concatenate([before[(1, 3)],
                                               before[(1, 0)].astype(np.float64)]))


def _same_offset(got, want) -> bool:
    """Two `measure_interface` results equal bit for bit (NaN equal to NaN)."""
    (ra, sa), (rb, sb) = got, want
    if repr(tuple(ra)) != repr(tuple(rb)):
        return False
    if sa is None or sb is None:
        return sa is None and sb is None
    return (np.array_equal(sa.avg, sb.avg, equal_nan=True) and sa.avg.dtype == sb.avg.dtype
            and repr(sa.clip_std) == repr(sb.clip_std) and sa.window == sb.window
            and (sa.values is None) == (sb.values is None)
            and (sa.values is None or np.array_equal(sa.values, sb.values)))


@pytest.mark.parametrize("window_frac", [FRAC, None])
def test_measure_interfaces_equal_measure_interface_bit_for_bit(window_frac, monkeypatch):
    # Stacked equally long interfaces (one moving average and sort for all) and the
    # per-interface path for the awkward ones give the same results, in order.
    from ampoffset_dask.algorithm.offsets import measure_interfaces

    rng = np.random.default_rng(11)
    cases = []
    for n in (2000, 509, 2000, 2000, 509, 2000, 2000, 2000, 2000, 300, 2000, 2000, 509, 2000):
        a = rng.normal(100.0, 2.0, n).astype(np.float32)
        b = rng.normal(97.0, 2.0, n).astype(np.float32)
        cases.append((a, b))
    cases[2][0][rng.choice(2000, 30, replace=False)] += np.float32(40.0)  # clipped outliers
    cases[3][0][100:140] = np.nan  # NaN lines
    cases[5][1][7] = np.inf
    cases[6][0][:] = cases[6][1]  # all-zero differences, a negative zero among them
    cases[6][0][3], cases[6][1][3] = np.float32(-0.0), np.float32(0.0)
    cases[7][0][5] = np.float32(3.0e30)  # magnitudes too far apart for exact window sums
    cases[8][1][:] = np.nan  # fully masked
    cases[9] = (cases[9][0].astype(np.float64), cases[9][1])  # not float32
    # NaN lines only at the ends (the detector's masked border): cut to the finite run,
    # fitted with the others; a run shorter than the window goes alone.
    cases[10][0][:7] = np.nan
    cases[11][1][-9:] = np.nan
    cases[12][0][:3] = np.nan
    cases[12][1][-5:] = np.nan
    cases[13][0][:1960] = np.nan
    ids = [f"I{k}" for k in range(len(cases))]
    import ampoffset_dask.algorithm.offsets as offsets

    alone = []
    single = offsets.measure_interface
    monkeypatch.setattr(offsets, "measure_interface",
                        lambda i, *a, **k: alone.append(i) or single(i, *a, **k))
    with np.errstate(invalid="ignore", over="ignore"):
        got = measure_interfaces(ids, [a for a, _ in cases], [b for _, b in cases],
                                 window_frac=window_frac, min_frac=0.5, max_offset=50.0)
        for i, (a, b) in enumerate(cases):
            want = measure_interface(ids[i], a, b, window_frac=window_frac, min_frac=0.5,
                                     max_offset=50.0)
            assert _same_offset(got[i], want), i
    assert got[8][1] is None and got[8][0].min_frac_fail
    assert all(2.0 < got[i][0].offset_raw < 4.0 for i in (0, 1, 4))
    # Only the awkward ones (NaN, infinity, negative zero, inexact sums, float64, no
    # smoothing) went one by one.
    assert sorted(alone) == (sorted(ids) if window_frac is None
                             else ["I13", "I3", "I5", "I6", "I7", "I8", "I9"])
    if window_frac is not None:
        assert got[10][0].good_frac == 1.0 - 7 / 2000 and np.isnan(got[12][1].avg[-5:]).all()
