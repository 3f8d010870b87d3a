"""Edge strips, float32 medians and interface offsets (ALGORITHM.md sections 1.4-1.6)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from golden import noise_free_three_amps

from ampoffset_dask import AmpOffsetConfig, Detector, measure_detector
from ampoffset_dask.algorithm.edges import (
    edge_profile,
    nanmedian_float32,
    nanmedian_lines,
    strip_slices,
)
from ampoffset_dask.algorithm.offsets import (
    interface_offset,
    measure_interface,
    window_counts,
    window_length,
    window_sums,
)
from ampoffset_dask.algorithm.solve import right_hand_side, solve_pedestals
from ampoffset_dask.algorithm.stats import clipped_stats
from ampoffset_dask.geometry import Amplifier

AMP = Amplifier("C:1,1", 100, 51, 100, 51)
FRAC = 512 / 4176


def contract_strip(a: np.ndarray, side: int, inset: int, width: int) -> np.ndarray:
    """The Python slices of section 1.4 on the amp array."""
    outer = inset + width
    if side == 0:
        return a[-outer:-inset, :]
    if side == 1:
        return a[:, -outer:-inset]
    if side == 2:
        return a[inset:outer, :]
    return a[:, inset:outer]


@pytest.mark.parametrize("side", [0, 1, 2, 3])
@pytest.mark.parametrize(("inset", "width"), [(5, 12), (5, 64), (1, 1), (0, 12), (3, 40)])
def test_strip_slices_equal_contract_slices(side, inset, width):
    image = np.arange(204 * 200, dtype=np.float32).reshape(204, 200)
    a = image[AMP.slices]
    got = image[strip_slices(AMP, side, inset, width)]
    np.testing.assert_array_equal(got, contract_strip(a, side, inset, width))


def test_strip_slices_absolute_positions():
    # amp rows 51..101, columns 100..199; inset 5, width 12 -> outer 17
    assert strip_slices(AMP, 0, 5, 12) == (slice(85, 97), slice(100, 200))
    assert strip_slices(AMP, 1, 5, 12) == (slice(51, 102), slice(183, 195))
    assert strip_slices(AMP, 2, 5, 12) == (slice(56, 68), slice(100, 200))
    assert strip_slices(AMP, 3, 5, 12) == (slice(51, 102), slice(105, 117))
    with pytest.raises(ValueError, match="side"):
        strip_slices(AMP, 4, 5, 12)


def test_inset_zero_empties_sides_0_and_1():
    image = np.ones((204, 200), np.float32)
    for side in (0, 1):
        strip = image[strip_slices(AMP, side, 0, 12)]
        assert strip.size == 0
        profile = edge_profile(strip, side)
        length = AMP.width if side == 0 else AMP.height
        assert profile.shape == (length,)
        assert profile.dtype == np.float32
        assert np.isnan(profile).all()
    for side in (2, 3):
        assert image[strip_slices(AMP, side, 0, 12)].size == 12 * (100 if side == 2 else 51)


def _nanmedian(a, axis):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmedian(a, axis=axis)


@pytest.mark.parametrize("axis", [0, 1])
@pytest.mark.parametrize("n", [1, 2, 7, 12, 64])
def test_nanmedian_float32_equals_numpy(axis, n):
    rng = np.random.default_rng(n)
    shape = (n, 37) if axis == 0 else (37, n)
    a = rng.normal(100, 30, shape).astype(np.float32)
    a[rng.random(shape) < 0.3] = np.nan
    # one all-NaN line and one line with an even number of finite values
    if axis == 0:
        a[:, 3] = np.nan
        a[:, 5] = np.nan
        a[: min(2, n), 5] = [1.5, 2.25][: min(2, n)]
    else:
        a[3, :] = np.nan
        a[5, :] = np.nan
        a[5, : min(2, n)] = [1.5, 2.25][: min(2, n)]
    got = nanmedian_float32(a, axis)
    ref = _nanmedian(a, axis)
    assert got.dtype == np.float32
    assert ref.dtype == np.float32
    np.testing.assert_array_equal(got, ref)  # exact, NaN positions included
    assert np.isnan(got[3])
    # no NaN at all: the partition path
    b = np.nan_to_num(a, nan=7.0)
    np.testing.assert_array_equal(nanmedian_float32(b, axis), _nanmedian(b, axis))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("axis", [0, 1])
def test_nanmedian_lines_equals_numpy_in_its_dtype(dtype, axis):
    rng = np.random.default_rng(3)
    for trial in range(60):
        a = rng.normal(1000, 40, (int(rng.integers(1, 30)), int(rng.integers(1, 50))))
        a = a.astype(dtype)
        a[rng.random(a.shape) < rng.random() * 0.7] = np.nan
        if trial % 5 == 0:
            a[:, 0] = np.nan
        got = nanmedian_lines(a, axis)
        assert got.dtype == dtype
        np.testing.assert_array_equal(got, _nanmedian(a, axis))


def test_nanmedian_even_count_averaged_in_float32():
    # 16777217 is not a float32: the float32 mean of the two middle values rounds to even
    a = np.array([[16777216.0], [16777218.0], [np.nan]], dtype=np.float32)
    got = nanmedian_float32(a, 0)[0]
    assert got == (np.float32(16777216.0) + np.float32(16777218.0)) / np.float32(2)
    assert got == _nanmedian(a, 0)[0]
    odd = np.array([[0.4, 0.1, np.nan, 0.2]], dtype=np.float32)
    assert nanmedian_float32(odd, 1)[0] == np.float32(0.2)
    even = np.array([[0.1, 0.3, np.nan, 0.2, 0.4]], dtype=np.float32)
    expected = (np.float32(0.2) + np.float32(0.3)) / np.float32(2)
    assert expected.dtype == np.float32
    assert nanmedian_float32(even, 1)[0] == expected
    assert nanmedian_float32(even, 1)[0] == _nanmedian(even, 1)[0]


def test_edge_profile_axis_by_side():
    strip = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.testing.assert_array_equal(edge_profile(strip, 0), [4, 5, 6, 7])
    np.testing.assert_array_equal(edge_profile(strip, 2), [4, 5, 6, 7])
    np.testing.assert_array_equal(edge_profile(strip, 1), [1.5, 5.5, 9.5])
    np.testing.assert_array_equal(edge_profile(strip, 3), [1.5, 5.5, 9.5])


@pytest.mark.parametrize(
    ("length", "win"), [(100, 12), (51, 6), (509, 62), (512, 62), (2000, 245), (2002, 245),
                        (4176, 512), (8, 0)]
)
def test_window_lengths(length, win):
    assert window_length(FRAC, length) == win


def contract_offset(edge_a, edge_b, frac, min_frac, max_offset):
    """Section 1.5 written out with numpy, for comparison."""
    edge_a = np.asarray(edge_a, np.float32)
    edge_b = np.asarray(edge_b, np.float32)
    diff = edge_a - edge_b
    if frac is not None:
        win = int(frac * len(diff))
        s = np.convolve(np.nan_to_num(diff), np.ones(win), "same")
        c = np.convolve(~np.isnan(diff), np.ones(win), "same")
        avg = s / np.clip(c, 1, None)
    else:
        avg = diff.copy()
    avg[np.isnan(diff)] = np.nan
    offset = clipped_stats(avg)[0]
    good = 1 - np.sum(np.isnan(avg)) / len(avg)
    original = offset
    if good < min_frac or abs(offset) > max_offset:
        offset = 0.0
    return offset, original, good, avg


@pytest.mark.parametrize("length", [51, 100, 509])
@pytest.mark.parametrize("frac", [FRAC, None, 0.3])
def test_interface_offset_matches_contract(length, frac):
    rng = np.random.default_rng(length)
    edge_a = rng.normal(3.0, 0.5, length).astype(np.float32)
    edge_b = rng.normal(1.0, 0.5, length).astype(np.float32)
    edge_a[rng.random(length) < 0.1] = np.nan
    edge_b[: length // 7] = np.nan
    edge_a[length // 2] = 40.0  # an outlier the clipping handles
    res = interface_offset("A-B", edge_a, edge_b, window_frac=frac, min_frac=0.5, max_offset=5.0)
    offset, original, good, _ = contract_offset(edge_a, edge_b, frac, 0.5, 5.0)
    assert res.interface_id == "A-B"
    assert res.offset == pytest.approx(offset, rel=1e-13)
    assert res.offset_raw == pytest.approx(original, rel=1e-13)
    assert res.good_frac == good
    assert not res.min_frac_fail and not res.max_offset_fail
    assert res.offset > 1.5  # A brighter than B: positive


def test_nan_positions_stay_nan_after_smoothing():
    # 30 NaN samples in a block: smoothing would fill them from neighbours, but they must stay
    # NaN, so goodFrac is exactly 0.7 and the offset ignores those positions.
    length = 100
    edge_a = np.full(length, 2.0, np.float32)
    edge_b = np.zeros(length, np.float32)
    edge_a[40:70] = np.nan
    edge_a[:40] = 5.0  # different values on both sides of the gap
    res = interface_offset("A-B", edge_a, edge_b, window_frac=FRAC, min_frac=0.5,
                           max_offset=50.0)
    _, original, good, avg = contract_offset(edge_a, edge_b, FRAC, 0.5, 50.0)
    assert res.good_frac == good == 0.7
    assert np.isnan(avg[40:70]).all()
    assert res.offset_raw == original


def test_moving_average_truncated_at_ends():
    # A linear ramp diff: centred windows keep the ramp inside, end windows are shorter
    diff = np.arange(20, dtype=np.float32)
    res = interface_offset("A-B", diff, np.zeros(20, np.float32), window_frac=0.2, min_frac=0,
                           max_offset=100)
    win = 4  # output k covers k-2 .. k+1
    avg = np.array([diff[max(k - 2, 0):k + 2].mean() for k in range(20)])
    assert window_length(0.2, 20) == win
    assert res.offset_raw == pytest.approx(clipped_stats(avg)[0], rel=1e-14)


def _diff_cases():
    rng = np.random.default_rng(21)
    a = rng.normal(1000.0, 2.0, 509).astype(np.float32)
    yield a - rng.normal(1000.0, 2.0, 509).astype(np.float32)  # profile differences
    yield rng.normal(0.0, 1.0, 2000).astype(np.float32)
    wide = rng.normal(0.0, 1.0, 300).astype(np.float32)
    wide[::3] *= np.float32(1e-25)  # values spanning more than 52 bits: numpy's convolution
    yield wide
    zeros = rng.normal(0.0, 3.0, 100).astype(np.float32)
    zeros[::4] = 0.0
    zeros[1:30:4] = -0.0  # negative zeros: numpy's convolution decides the zero signs
    yield zeros
    yield np.zeros(50, np.float32)


@pytest.mark.parametrize("case", range(5))
@pytest.mark.parametrize("win", [1, 2, 7, 62, 245])
def test_window_sums_equal_numpy_convolution_bit_for_bit(case, win):
    v = list(_diff_cases())[case]
    win = min(win, v.shape[0])
    ref = np.convolve(v, np.ones(win), "same")
    got = window_sums(v, win)
    np.testing.assert_array_equal(got, ref)
    np.testing.assert_array_equal(np.signbit(got), np.signbit(ref))
    valid = np.random.default_rng(win).uniform(size=v.shape[0]) < 0.8
    np.testing.assert_array_equal(window_counts(valid, win),
                                  np.convolve(valid, np.ones(win), "same"))


@pytest.mark.parametrize("length", [51, 509, 2000])
def test_smoothed_difference_equals_contract_bit_for_bit(length):
    rng = np.random.default_rng(length)
    edge_a = rng.normal(1003.0, 1.5, length).astype(np.float32)
    edge_b = rng.normal(1000.0, 1.5, length).astype(np.float32)
    edge_a[rng.random(length) < 0.1] = np.nan
    res, smoothed = measure_interface("A-B", edge_a, edge_b, window_frac=FRAC, min_frac=0.5,
                                      max_offset=5.0)
    _, original, _, avg = contract_offset(edge_a, edge_b, FRAC, 0.5, 5.0)
    np.testing.assert_array_equal(smoothed.avg, avg)
    assert res.offset_raw == original


def test_min_frac_fail_zeroes_offset():
    edge_a = np.full(100, 1.0, np.float32)
    edge_a[:60] = np.nan
    res = interface_offset("A-B", edge_a, np.zeros(100, np.float32), window_frac=FRAC,
                           min_frac=0.5, max_offset=5.0)
    assert res.good_frac == pytest.approx(0.4)
    assert res.min_frac_fail and not res.max_offset_fail
    assert res.offset == 0.0
    assert res.offset_raw == 1.0


@pytest.mark.parametrize(("value", "fail"), [(5.5, True), (-5.5, True), (5.0, False)])
def test_max_offset_fail_is_strict(value, fail):
    edge_a = np.full(51, value, np.float32)
    res = interface_offset("A-B", edge_a, np.zeros(51, np.float32), window_frac=FRAC,
                           min_frac=0.5, max_offset=5.0)
    assert res.offset_raw == value
    assert res.max_offset_fail is fail
    assert not res.min_frac_fail
    assert res.offset == (0.0 if fail else value)


@pytest.mark.parametrize("which", ["a", "b", "both"])
def test_fully_masked_edge(which):
    good = np.ones(100, np.float32)
    nan = np.full(100, np.nan, np.float32)
    a = nan if which in ("a", "both") else good
    b = nan if which in ("b", "both") else good
    res = interface_offset("X-Y", a, b, window_frac=FRAC, min_frac=0.5, max_offset=5.0)
    assert tuple(res) == ("X-Y", 0.0, 0.0, 0.0, True, False)


def test_disjoint_nan_patterns_give_nan_original():
    # each edge has data, but never at the same position: every diff is NaN
    a = np.full(20, np.nan, np.float32)
    b = np.full(20, np.nan, np.float32)
    a[:10] = 1.0
    b[10:] = 1.0
    res = interface_offset("A-B", a, b, window_frac=0.5, min_frac=0.5, max_offset=5.0)
    assert math.isnan(res.offset_raw)
    assert res.offset == 0.0
    assert res.good_frac == 0.0
    assert res.min_frac_fail and not res.max_offset_fail


def test_empty_window_raises():
    with pytest.raises(ValueError, match="window"):
        interface_offset("A-B", np.ones(8, np.float32), np.zeros(8, np.float32),
                         window_frac=FRAC, min_frac=0.5, max_offset=5.0)


def _grid_detector() -> Detector:
    amps = [Amplifier(f"A{r}{c}", c * 40, r * 30, 40, 30) for r in range(2) for c in range(3)]
    return Detector("g", 120, 60, amps)


def test_rhs_and_solve_recover_exact_differences():
    det = _grid_detector()
    grid = det.grid(True)
    truth = np.array([0.5, -1.0, 2.0, 0.25, -0.75, 3.0])
    offsets = {(i.a, i.b): truth[i.a] - truth[i.b] for i in grid.interfaces}
    b = right_hand_side(grid, offsets)
    assert abs(b.sum()) < 1e-12
    ped = solve_pedestals(grid.associations, b)
    np.testing.assert_allclose(ped, truth - truth.mean(), atol=1e-12)
    # b[i] = sum_j w_ij (p_i - p_j)
    np.testing.assert_allclose(b, grid.associations @ truth, atol=1e-12)


@pytest.mark.parametrize("name", ["R02_S02", "R22_S11", "R00_SG0"])
@pytest.mark.parametrize("weighted", [False, True])
def test_right_hand_side_accumulates_as_the_plain_loop_bit_for_bit(name, weighted):
    # LSST's loop over the Laplacian's rows, accumulated in numpy as written; the package
    # accumulates the same products in Python floats from cached neighbour lists.
    from ampoffset_dask import get_camera

    grid = get_camera("lsstcam")[name].grid(weighted)
    rng = np.random.default_rng(4)
    for k in range(20):
        values = rng.normal(0.0, 5.0, len(grid.interfaces)) * 10.0 ** rng.normal(0, 3)
        if k % 4 == 1:
            values[k % values.size] = (np.nan, -0.0, np.inf)[k % 3]
        offsets = {(i.a, i.b): (np.float32(v) if k % 4 == 3 else float(v))
                   for i, v in zip(grid.interfaces, values, strict=True)}
        want = np.zeros(grid.associations.shape[0])
        for i in range(want.size):
            for j in np.flatnonzero(grid.associations[i] < 0):
                o = offsets[(i, j)] if i < j else -offsets[(j, i)]
                want[i] += -grid.associations[i, j] * o
        got = right_hand_side(grid, offsets)
        assert got.dtype == np.float64 and got.tobytes() == want.tobytes()


def test_measure_with_inset_zero_zeroes_everything():
    """Section 1.4 pitfall end to end: every interface has an empty side-0/1 strip."""
    det = _grid_detector()
    image = np.zeros(det.shape, np.float32)
    for amp, v in zip(det.amplifiers, [0.5, -1.0, 2.0, 0.25, -0.75, 3.0], strict=True):
        image[amp.slices] = v
    cfg = AmpOffsetConfig(do_background=False, do_detection=False, amp_edge_width=4,
                          amp_edge_inset=0)
    res = measure_detector(image, None, det, cfg)
    assert all(i.min_frac_fail and i.good_frac == 0.0 and i.offset == 0.0
               for i in res.interfaces)
    np.testing.assert_array_equal(res.pedestals, 0.0)
    cfg.amp_edge_inset = 1
    res = measure_detector(image, None, det, cfg)
    truth = np.array([0.5, -1.0, 2.0, 0.25, -0.75, 3.0])
    np.testing.assert_allclose(res.pedestals, truth - truth.mean(), atol=1e-6)


def test_an_interface_without_a_clipped_mean_gets_offset_zero_not_zeroing_every_pedestal():
    # LSST keeps the NaN clipped mean and its solve zeroes every pedestal, the 3 ADU step of
    # B-C included, with no warning; the offset is set to 0 instead, as do-no-harm sets one.
    det, image = noise_free_three_amps()
    config = AmpOffsetConfig(amp_edge_inset=2, amp_edge_width=8, do_background=False,
                             do_detection=False)
    m = measure_detector(image, None, det, config)
    ab, bc = m.interfaces
    assert np.isnan(ab.offset_raw) and ab.offset == 0.0 and ab.good_frac == 1.0
    assert not (ab.min_frac_fail or ab.max_offset_fail)
    assert bc.offset == pytest.approx(-2.99, abs=0.05)
    assert m.pedestals[2] - m.pedestals[1] == pytest.approx(2.99, abs=0.05)
    # the zero still ties A to B (no step put in at A-B), as the warning says
    assert m.pedestals[0] == pytest.approx(m.pedestals[1], abs=1e-12)
    assert ("interface A-B: its edge differences have no clipped mean (every one clipped: "
            "edges without noise?), offset set to 0 (do-no-harm)") in m.warnings
    assert np.isnan(m.pedestal_errors[0])  # only that interface connects amp A

    from ampoffset_dask.algorithm.quality import harm_check

    assert harm_check(m.interfaces, 5.0, 0.5) == (
        "1 of 2 interfaces have edge differences without a clipped mean (every one clipped): "
        "edges without noise, a synthetic or constant image?")
    assert harm_check(m.interfaces, 5.0, 0.5, threshold=0.6) is None


def test_edges_with_no_shared_position_are_named_as_such_and_set_to_zero():
    # ampEdgeMinFrac=0 lets through an interface whose two edges hold data on opposite
    # halves: no difference at all. Its cause is the mask, not clipping, and its offset 0
    # ties the two amps together in the solve.
    w, h = 20, 40
    det = Detector("D", 3 * w, h, [Amplifier(f"A{i}", i * w, 0, w, h) for i in range(3)])
    image = np.random.default_rng(0).normal(0, 0.1, (h, 3 * w)).astype(np.float32)
    image[:, 2 * w:] -= 1.0
    mask = np.zeros(image.shape, np.int32)
    mask[:h // 2, :w] = 1  # BAD
    mask[h // 2:, w:2 * w] = 1
    config = AmpOffsetConfig(do_background=False, do_detection=False, amp_edge_width=8,
                             amp_edge_inset=2, amp_edge_min_frac=0.0)
    m = measure_detector(image, mask, det, config)
    a01, a12 = m.interfaces
    assert np.isnan(a01.offset_raw) and a01.good_frac == 0.0 and a01.offset == 0.0
    assert not a01.min_frac_fail
    assert m.warnings == ("interface A0-A1: its edges have no position where both hold data "
                          "(ampEdgeMinFrac 0 let it through), offset set to 0 (do-no-harm)",)
    step = a12.offset
    assert step == pytest.approx(1.0, abs=0.05)
    np.testing.assert_allclose(m.pedestals, [step / 3, step / 3, -2 * step / 3], atol=1e-12)

    from ampoffset_dask.algorithm.quality import harm_check

    assert harm_check(m.interfaces, 5.0, 0.0) == (
        "1 of 2 interfaces have no position where both edges hold data (ampEdgeMinFrac=0 let "
        "them through): image mostly masked?")
