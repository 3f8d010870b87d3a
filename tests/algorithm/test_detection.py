"""Source detection as AmpOffsetTask runs it (ALGORITHM.md section 4)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ampoffset_dask import AmpOffsetConfig, Detector, measure_detector
from ampoffset_dask.algorithm.detection import (
    detection_threshold,
    gaussian_kernel,
    grow,
    grow_radius,
    kernel_half_width,
    smooth,
)
from ampoffset_dask.algorithm.stats import clipped_stats
from ampoffset_dask.geometry import Amplifier


def test_kernel_width_15_for_sigma_2():
    # (int(2*7 + 0.5)//2)*2 + 1 = 15
    assert kernel_half_width(2.0, 7.0) == 7
    k = gaussian_kernel(2.0, 7.0)
    assert k.shape == (15,)
    assert k.dtype == np.float64
    assert abs(k.sum() - 1.0) < 1e-15
    np.testing.assert_array_equal(k, k[::-1])
    assert k.argmax() == 7
    i = np.arange(15) - 7
    np.testing.assert_allclose(k / k[7], np.exp(-(i * i) / 8.0), rtol=1e-15)


def test_kernel_other_widths():
    # sigma 1: int(7.5)=7 -> 7//2*2+1 = 7 ; sigma 1.5: int(11)=11 -> 11
    assert gaussian_kernel(1.0, 7.0).shape == (7,)
    assert gaussian_kernel(1.5, 7.0).shape == (11,)
    assert gaussian_kernel(3.0, 7.0).shape == (21,)


def test_grow_radius():
    assert grow_radius(2.4, 2.0) == 5  # int(4.8 + 0.5)
    assert grow_radius(2.4, 1.0) == 2
    assert grow_radius(0.0, 2.0) == 0


def _stencil(radius: int, isotropic: bool) -> set[tuple[int, int]]:
    out = set()
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            if isotropic:
                inside = dx * dx + dy * dy <= radius * radius
            else:
                inside = abs(dx) + abs(dy) <= radius
            if inside:
                out.add((dy, dx))
    return out


@pytest.mark.parametrize(("isotropic", "count"), [(True, 81), (False, 61)])
def test_grow_single_seed(isotropic, count):
    seeds = np.zeros((31, 33), bool)
    seeds[15, 16] = True
    grown = grow(seeds, 5, isotropic)
    assert int(grown.sum()) == count
    expected = np.zeros_like(seeds)
    for dy, dx in _stencil(5, isotropic):
        expected[15 + dy, 16 + dx] = True
    np.testing.assert_array_equal(grown, expected)


@pytest.mark.parametrize(("isotropic", "count"), [(True, 26), (False, 21)])
def test_grow_clipped_at_corner(isotropic, count):
    # quarter disk: rows dy=0..5 have 6,5,5,5,4,1 pixels; quarter diamond 6+5+4+3+2+1
    seeds = np.zeros((20, 20), bool)
    seeds[0, 0] = True
    grown = grow(seeds, 5, isotropic)
    assert int(grown.sum()) == count
    grown2 = grow(seeds[::-1, ::-1].copy(), 5, isotropic)
    np.testing.assert_array_equal(grown2, grown[::-1, ::-1])


def test_grow_matches_brute_force_union():
    rng = np.random.default_rng(1)
    seeds = rng.random((40, 50)) < 0.01
    seeds[0, 10] = seeds[39, 49] = True
    for isotropic in (True, False):
        for radius in (1, 3, 5):
            expected = np.zeros_like(seeds)
            for y, x in zip(*np.nonzero(seeds), strict=True):
                for dy, dx in _stencil(radius, isotropic):
                    if 0 <= y + dy < 40 and 0 <= x + dx < 50:
                        expected[y + dy, x + dx] = True
            np.testing.assert_array_equal(grow(seeds, radius, isotropic), expected)
    # radius 0 or no seeds: unchanged copy
    np.testing.assert_array_equal(grow(seeds, 0), seeds)
    empty = np.zeros((5, 5), bool)
    assert not grow(empty, 5).any()


def test_smooth_good_box_matches_direct_sum():
    rng = np.random.default_rng(2)
    image = rng.normal(0, 1, (30, 40)).astype(np.float32)
    k = gaussian_kernel(2.0)
    out = smooth(image, k)
    assert out.shape == (30 - 14, 40 - 14)
    assert out.dtype == np.float32
    k2 = np.outer(k, k)
    for y, x in ((0, 0), (5, 7), (15, 25)):
        direct = float(np.sum(image[y:y + 15, x:x + 15].astype(np.float64) * k2))
        assert out[y, x] == pytest.approx(direct, abs=2e-7)
    # too small for one good pixel
    assert smooth(image[:14], k).shape == (0, 26)


def test_smooth_constant_is_constant():
    image = np.full((25, 25), 42.0, np.float32)
    np.testing.assert_allclose(smooth(image, gaussian_kernel(2.0)), 42.0, rtol=1e-7)


def test_threshold_value_type():
    smoothed = np.arange(100, dtype=np.float32).reshape(10, 10)
    assert detection_threshold(smoothed, None, 3.5, "value") == 3.5


def test_threshold_stdev_type():
    rng = np.random.default_rng(3)
    smoothed = rng.normal(0, 1.5, (50, 60)).astype(np.float32)
    smoothed[0, 0] = np.nan
    expected = 5.0 * clipped_stats(smoothed)[1]
    assert detection_threshold(smoothed, None, 5.0, "stdev") == pytest.approx(expected, rel=1e-14)


def test_threshold_stats_mask_is_dilated_by_kernel():
    rng = np.random.default_rng(4)
    image_shape = (44, 54)
    smoothed = rng.normal(0, 1, (30, 40)).astype(np.float32)  # kernel half width 7
    smoothed[10:15, 10:15] += 100.0  # would dominate the stdev if used
    stats_bad = np.zeros(image_shape, bool)
    stats_bad[7 + 12, 7 + 12] = True  # one bad image pixel covers smoothed[5:20, 5:20]
    got = detection_threshold(smoothed, stats_bad, 5.0, "stdev")
    keep = np.ones(smoothed.shape, bool)
    keep[5:20, 5:20] = False
    assert got == pytest.approx(5.0 * clipped_stats(smoothed[keep])[1], rel=1e-14)


def test_threshold_all_nan_is_nan():
    assert math.isnan(detection_threshold(np.full((4, 4), np.nan, np.float32), None, 5, "stdev"))


def _single_amp_pair() -> Detector:
    amps = (Amplifier("A", 0, 0, 60, 50), Amplifier("B", 60, 0, 60, 50))
    return Detector("pair", 120, 50, amps)


def test_measure_detection_masks_grown_source_and_border():
    """A bright star next to the A/B boundary is masked (disk r=5) before edge medians."""
    det = _single_amp_pair()
    rng = np.random.default_rng(5)
    image = rng.normal(0, 1, det.shape).astype(np.float32)
    image[:, 60:] += 2.0
    yy, xx = np.mgrid[0:50, 0:120]
    image += (500 * np.exp(-((yy - 25) ** 2 + (xx - 52) ** 2) / (2 * 1.5**2))).astype(np.float32)
    cfg = AmpOffsetConfig(do_background=False, do_detection=True, amp_edge_width=10,
                          amp_edge_inset=2)
    res = measure_detector(image, None, det, cfg)
    assert res.detection == "ok"
    assert res.n_detected > 0
    cfg_value = AmpOffsetConfig(do_background=False, do_detection=True, amp_edge_width=10,
                                amp_edge_inset=2)
    cfg_value.detection.threshold_type = "value"
    cfg_value.detection.threshold_value = 1e9
    res_none = measure_detector(image, None, det, cfg_value)
    assert res_none.threshold == 1e9
    assert res_none.n_detected == 0
    # exact mask of the strips: EDGE border (7 px) | disk-grown (smoothed >= threshold)
    smoothed = smooth(image, gaussian_kernel(2.0))
    threshold = 5.0 * clipped_stats(smoothed)[1]
    assert res.threshold == pytest.approx(threshold, rel=1e-12)
    seeds = np.zeros(det.shape, bool)
    seeds[7:-7, 7:-7] = smoothed >= threshold
    assert res.n_detected == int(seeds.sum())
    masked = grow(seeds, 5, True)
    masked[:7] = masked[-7:] = True
    masked[:, :7] = masked[:, -7:] = True
    strips = np.concatenate([masked[:, 48:58].ravel(), masked[:, 62:72].ravel()])
    assert res.masked_fraction == strips.mean()
    assert res_none.masked_fraction == 14 / 50
    assert res.masked_fraction > res_none.masked_fraction


def test_all_masked_with_detection_gives_zero_pedestals():
    """Project decision (ALGORITHM.md): zero pedestals and warnings, no exception."""
    det = _single_amp_pair()
    image = np.ones(det.shape, np.float32)
    mask = np.full(det.shape, 1, np.int32)  # BAD everywhere
    res = measure_detector(image, mask, det, AmpOffsetConfig(amp_edge_width=10))
    assert res.all_masked
    np.testing.assert_array_equal(res.pedestals, 0.0)
    assert res.background.startswith("skipped")
    assert res.detection.startswith("skipped")
    assert any("fully masked" in w for w in res.warnings)


@pytest.mark.parametrize("choice", ["numpy", "numba"])
def test_grown_detections_covering_everything_give_zero_pedestals(choice):
    """Every unmasked pixel under a grown detection (the exact check behind the cheap
    bound on the seeds' reach): all masked, zero pedestals; one dark hole left: not."""
    from ampoffset_dask.algorithm.kernels import use_kernels
    from ampoffset_dask.config import DetectionConfig

    det = _single_amp_pair()
    config = AmpOffsetConfig(amp_edge_width=10, do_background=False,
                             detection=DetectionConfig(threshold_type="value",
                                                       threshold_value=0.5))
    image = np.ones(det.shape, np.float32)
    with use_kernels(choice):
        res = measure_detector(image, None, det, config)
        assert res.all_masked and res.n_detected > 0
        np.testing.assert_array_equal(res.pedestals, 0.0)
        assert any(f"detection marked {res.n_detected} of {image.size} pixels, threshold "
                   "0.5: a blank or constant image?" in w for w in res.warnings)
        # A dark patch wider than the smoothing and growing reach stays unmasked.
        image[10:40, 30:70] = -1.0
        res = measure_detector(image, None, det, config)
        assert not res.all_masked and res.n_detected > 0


@pytest.mark.parametrize("isotropic", [True, False])
def test_grown_detections_of_adjacent_edge_strips(isotropic):
    # Strips laid out as along amp boundaries: pairs touching across a vertical boundary,
    # a row of strips overlapping along x across a horizontal boundary and the ones below
    # it, which the numpy kernel thresholds and grows as shared windows. Each strip gets
    # exactly grow(seeds)[strip], as when every strip is grown on its own.
    from ampoffset_dask.algorithm.kernels import get_kernels

    numpy_k, numba_k = get_kernels("numpy"), get_kernels("numba")
    rng = np.random.default_rng(2)
    r = 3
    smoothed = rng.normal(0.0, 1.0, (74, 94)).astype(np.float32)
    smoothed[rng.random(smoothed.shape) < 0.01] = np.float32(4.0)
    smoothed[30:33, 40:50] = np.float32(-4.0)
    shape = (smoothed.shape[0] + 2 * r, smoothed.shape[1] + 2 * r)
    h, w = shape
    regions = []
    for x in (25, 50, 75):  # vertical boundaries: strips of 8 columns either side
        regions += [(slice(0, 40), slice(x - 9, x - 1)), (slice(0, 40), slice(x + 1, x + 9)),
                    (slice(40, h), slice(x - 9, x - 1)), (slice(40, h), slice(x + 1, x + 9))]
    for x0, x1 in ((0, 25), (25, 50), (50, 75), (75, w)):  # the horizontal boundary
        regions += [(slice(33, 39), slice(x0, x1)), (slice(41, 47), slice(x0, x1))]
    for radius in (1, 4):
        for flags in [(True, False, True, False), (True, True, True, True)]:
            seeds, n, any_seed = numpy_k.threshold_seeds(smoothed, 2.5, shape, r, *flags)
            assert any_seed
            full = grow(seeds, radius, isotropic)
            start = rng.random(shape) < 0.05
            expected = start.copy()
            one_by_one = start.copy()
            for rows, cols in regions:
                expected[rows, cols] |= full[rows, cols]
                numpy_k.grow_detected(smoothed, 2.5, r, flags[0], flags[1], radius,
                                      isotropic, rows, cols, one_by_one)
            np.testing.assert_array_equal(one_by_one, expected)
            for k in (numpy_k, numba_k):
                out = start.copy()
                assert k.grow_detections(smoothed, 2.5, r, *flags, radius, isotropic, regions,
                                         out) == (n, True)
                np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("route", ["edges", "default"])
def test_a_single_amp_detector_is_said_to_have_nothing_to_measure(route):
    """One amp: no interface, pedestal 0, the same flags on every route (edges only once
    called it all masked, the other route nothing)."""
    from ampoffset_dask.geometry import detector_from_boxes

    det = detector_from_boxes("One", 100, 100, [("A", 0, 0, 100, 100)])
    image = np.random.default_rng(0).normal(100.0, 1.0, det.shape).astype(np.float32)
    config = (AmpOffsetConfig(amp_edge_width=16, do_background=False, do_detection=False)
              if route == "edges" else AmpOffsetConfig(amp_edge_width=16))
    res = measure_detector(image, None, det, config)
    assert not res.all_masked and np.isnan(res.masked_fraction)
    np.testing.assert_array_equal(res.pedestals, [0.0])
    assert res.warnings == ("no amp interfaces (a single amp): nothing to measure, "
                            "pedestal 0",)


@pytest.mark.parametrize("frac", [0.75, 0.4, 0.2])
def test_masked_blocks_of_rows_measure_alike_on_both_kernel_paths(frac):
    # Whole blocks of the smoothed image unusable (the bottom rows BAD): the numpy path's
    # threshold statistic counted them below a cut they were never compared with. It
    # raised "kth out of bounds" (0.4, 0.75), or picked the wrong order statistic: a
    # threshold of 18.958 instead of 18.952 (0.2). The compiled path was right.
    from ampoffset_dask import get_camera
    from ampoffset_dask.algorithm.kernels import use_kernels
    from ampoffset_dask.masks import DEFAULT_MASK_PLANES
    from ampoffset_dask.simulate import scale_detector, simulate_detector

    det = scale_detector(get_camera("lsstcam")["R02_S02"], 0.25)
    sim = simulate_detector(det, seed=1)
    mask = sim.mask.copy()
    mask[: int(frac * mask.shape[0])] |= 1 << DEFAULT_MASK_PLANES["BAD"]
    got = {}
    for kernel in ("numpy", "numba"):
        with use_kernels(kernel):
            got[kernel] = measure_detector(sim.image, mask, det)
    a, b = got["numpy"], got["numba"]
    assert a.detection == b.detection == "ok"
    assert a.threshold == pytest.approx(b.threshold, rel=1e-12)
    assert a.n_detected == b.n_detected > 0
    np.testing.assert_array_equal(a.pedestals, b.pedestals)


def test_include_multiplier_keeps_footprints_that_reach_it_whole():
    """afw's FootprintSet: the multiplier decides which footprints are kept, not where
    they end. A kept footprint extends down to the threshold; a dropped one vanishes
    whole; 8-connected pixels are one footprint; each polarity is judged on its own."""
    from ampoffset_dask.algorithm.detection import drop_faint_footprints

    base = np.zeros((12, 16), np.float32)
    base[1, 1:4] = [10, 25, 10]  # bright: peak 25 >= 2 x 10
    base[5, 5] = 12
    base[6, 6] = 19  # diagonal neighbour of (5, 5): one footprint, peak 19 < 20
    base[9, 10:12] = [-10, -21]  # negative, reaches -2 x 10
    base[9, 14] = -15  # negative, does not
    for mult, positive, negative, gone in [
            (1.0, True, True, []), (0.5, True, True, []),
            (2.0, True, False, [(5, 5), (6, 6)]),
            (2.0, True, True, [(5, 5), (6, 6), (9, 14)]),
            (2.0, False, True, [(9, 14)])]:
        smoothed = base.copy()
        dropped = drop_faint_footprints(smoothed, 10.0, mult, positive, negative)
        nan = set(zip(*np.nonzero(np.isnan(smoothed)), strict=True))
        assert nan == set(gone), (mult, positive, negative)
        assert dropped == len({(5, 5), (6, 6)} & set(gone)) // 2 + ((9, 14) in gone)
        keep = ~np.isnan(smoothed)
        np.testing.assert_array_equal(smoothed[keep], base[keep])  # the rest unchanged
    smoothed = base.copy()  # a threshold that is not positive keeps everything
    assert drop_faint_footprints(smoothed, 0.0, 2.0, True, True) == 0
    np.testing.assert_array_equal(smoothed, base)


def test_include_multiplier_in_the_measurement():
    """Through measure_detector: a multiplier <= 1 changes nothing (every footprint pixel
    already reaches the threshold) and leaves the threshold as it is; one above 1 detects
    fewer pixels, no more. Before, the multiplier scaled the threshold itself."""
    from ampoffset_dask import AmpOffsetConfig, get_camera, measure_detector
    from ampoffset_dask.simulate import scale_detector, simulate_detector

    det = scale_detector(get_camera("lsstcam")["R22_S11"], 0.1)
    sim = simulate_detector(det, seed=5)
    image = sim.image - np.median(sim.image)  # the sky off: detection finds the stars

    def run(mult):
        config = AmpOffsetConfig(do_background=False)
        config.detection.include_threshold_multiplier = mult
        return measure_detector(image, sim.mask, det, config)

    one, half, two = run(1.0), run(0.5), run(2.0)
    assert half.threshold == one.threshold == two.threshold
    assert half.n_detected == one.n_detected
    np.testing.assert_array_equal(half.pedestals, one.pedestals)
    assert 0 < two.n_detected < one.n_detected
    assert not np.array_equal(two.pedestals, one.pedestals)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_a_detector_smaller_than_the_kernel_with_masked_pixels_skips_detection(backend):
    # the dilation's half-width came from the empty smoothed box: an internal buffer error
    from ampoffset_dask import AmpOffsetConfig, measure_detector
    from ampoffset_dask.algorithm.kernels import use_kernels
    from ampoffset_dask.geometry import detector_from_boxes

    det = detector_from_boxes("D", 30, 12, [("A", 0, 0, 30, 6), ("B", 0, 6, 30, 6)])
    image = np.random.default_rng(0).normal(1000, 5, det.shape).astype(np.float32)
    mask = np.zeros(det.shape, np.int32)
    mask[3, 3] = 1  # BAD, a statsMask plane
    config = AmpOffsetConfig(amp_edge_width=2, amp_edge_inset=1)
    with use_kernels(backend):
        plain = measure_detector(image, None, det, config)
        masked = measure_detector(image, mask, det, config)
    assert masked.detection == plain.detection == "skipped: no usable pixel for the threshold"
