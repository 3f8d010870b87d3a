"""The compiled kernels return the numpy reference's bits; the kernel choice is honoured.

Both implementations run here (numba is in the test extra). The smoothed image, the
detection masks and the background-subtracted image must be bit-identical between them,
on small random cases, on the golden cases and on one full-size ITL and e2v detector;
pedestals agree to 1e-12 relative (only the clipped sums are summed in another order).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from golden import full_size_simulation, lsst_config, lsst_detector, lsst_image, mini_itl
from test_strips_numba import NUMBA, _assert_same_measurement

from ampoffset_dask import AmpOffsetConfig, get_camera, measure_detector
from ampoffset_dask.algorithm import kernels
from ampoffset_dask.algorithm.background import background_bins, subtract_background
from ampoffset_dask.algorithm.detection import (
    detection_threshold,
    gaussian_kernel,
    grow,
    smooth,
)
from ampoffset_dask.algorithm.kernels import get_kernels, set_kernels, use_kernels
from ampoffset_dask.algorithm.stats import quantiles_selected, quantiles_sorted

NUMPY = get_kernels("numpy")


# ------------------------------------------------------------------------------------------
# Choosing the kernels
# ------------------------------------------------------------------------------------------
def test_choice_from_env_setter_and_context(monkeypatch):
    monkeypatch.delenv(kernels.ENV_VAR, raising=False)
    assert kernels.requested() == "auto"
    assert kernels.backend_name() == "numba"  # numba is installed with the test extra
    monkeypatch.setenv(kernels.ENV_VAR, "numpy")
    assert kernels.active() is NUMPY
    with use_kernels("numba") as module:
        assert module is get_kernels("numba") and kernels.backend_name() == "numba"
    assert kernels.backend_name() == "numpy"
    try:
        set_kernels("NUMBA")
        assert kernels.active() is get_kernels("numba")
    finally:
        set_kernels(None)
    assert kernels.active() is NUMPY


def test_kernels_without_a_writable_cache_folder_compile_uncached(tmp_path):
    # numba refuses cache=True where it finds no writable cache folder (a read-only
    # container image, an unwritable home): the import failed with its RuntimeError, and
    # every detector with it, under the default "auto" too
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    import ampoffset_dask

    copy = tmp_path / "pkg"
    shutil.copytree(Path(ampoffset_dask.__file__).parent, copy / "ampoffset_dask",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "ampoffset_dask" / "algorithm" / "kernels" / "__pycache__").write_text("")
    env = {k: v for k, v in __import__("os").environ.items()
           if k not in ("NUMBA_CACHE_DIR", kernels.ENV_VAR)}
    env.update(PYTHONPATH=str(copy), XDG_CACHE_HOME="/dev/null/none", HOME="/dev/null/none")
    code = ("import ampoffset_dask.algorithm.kernels as k; m = k.get_kernels('numba'); "
            "print(m.__file__, m._JIT['cache'], k.numba_available())")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [str(copy / "ampoffset_dask" / "algorithm" / "kernels"
                                       / "_numba.py"), "False", "True"]
    assert "cannot be cached on disk" in proc.stderr and "NUMBA_CACHE_DIR" in proc.stderr


def test_bad_choices_are_named(monkeypatch):
    with pytest.raises(ValueError, match="auto, numpy, numba"):
        set_kernels("fortran")
    monkeypatch.setenv(kernels.ENV_VAR, "cuda")
    with pytest.raises(ValueError, match=r"\$AMPOFFSET_KERNELS"):
        kernels.active()


def test_numba_missing_names_the_extra(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_numba(name, *args, **kwargs):
        if name == "numba" or name.startswith("numba."):
            raise ImportError("No module named 'numba'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(kernels, "_cache", {})
    monkeypatch.delitem(__import__("sys").modules, kernels.__name__ + "._numba")
    monkeypatch.setattr(builtins, "__import__", no_numba)
    with pytest.raises(ImportError, match=r"ampoffset-dask\[fast\]"):
        get_kernels("numba")
    assert get_kernels("auto").NAME == "numpy"
    assert not kernels.numba_available()


# ------------------------------------------------------------------------------------------
# Kernel by kernel on small data
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(15, 15), (16, 40), (33, 21), (64, 97)])
def test_smooth_bit_identical(shape):
    rng = np.random.default_rng(shape[0] * 100 + shape[1])
    image = (1000 + 30 * rng.standard_normal(shape)).astype(np.float32)
    image[rng.random(shape) < 0.01] = 5e4  # hot pixels
    for sigma in (1.0, 2.0, 3.0):  # 7, 15 and 21 terms: every sweep width of _taps
        k = gaussian_kernel(sigma, 7.0)
        if min(shape) >= k.shape[0]:
            np.testing.assert_array_equal(NUMBA.smooth(image, k), NUMPY.smooth(image, k))
    assert NUMBA.smooth(np.ones((10, 30), np.float32), gaussian_kernel(2.0)).shape == (0, 16)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6, 7, 8, 9, 16, 17, 18, 100, 1001, 65536 + 3])
@pytest.mark.parametrize("kind", ["normal", "sorted", "reversed", "few-values", "constant"])
def test_quartiles_by_selection_are_exact(n, kind):
    rng = np.random.default_rng(n)
    v = rng.normal(0, 1, n).astype(np.float32)
    if kind == "sorted":
        v.sort()
    elif kind == "reversed":
        v = np.sort(v)[::-1].copy()
    elif kind == "few-values":
        v = rng.integers(0, 3, n).astype(np.float32)
    elif kind == "constant":
        v[:] = 7.5
    buf = v.copy()
    assert quantiles_selected(buf) == quantiles_sorted(np.sort(v))
    np.testing.assert_array_equal(np.sort(buf), np.sort(v))  # a permutation, nothing lost


@pytest.mark.parametrize("n", [0, 1, 2, 3, 5, 17, 300, 5000, 200_000])
def test_clipped_statistics_agree(n):
    rng = np.random.default_rng(n + 1)
    v = rng.normal(100, 3, n).astype(np.float32)
    v[::11] = 180.0  # outliers to clip
    if n > 3:
        v[1] = np.nan
        v[2] = np.inf
    bad = rng.random(n) < 0.2
    for b in (None, bad):
        m1, v1, n1 = NUMBA.usable_clipped_mean_var(v, b)
        m2, v2, n2 = NUMPY.usable_clipped_mean_var(v, b)
        assert n1 == n2
        for a, e in ((m1, m2), (v1, v2)):
            assert (math.isnan(a) and math.isnan(e)) or abs(a - e) <= 1e-12 * abs(e)


def _awkward_values(kind, rng, shape):
    """Large arrays (the compiled histogram path) that stress the exact selection."""
    v = rng.normal(1000, 30, shape).astype(np.float32)
    if kind == "integers":  # few distinct values: whole histogram bins of ties
        v = np.round(v / 10).astype(np.float32)
    elif kind == "zeros":  # -0.0 and +0.0 around the quartiles; tiny values elsewhere
        v = rng.choice(np.array([-0.0, 0.0, -1.0, 1.0, -3.0, 3.0], np.float32), shape)
        v[rng.random(shape) < 0.2] = 1e-42
    elif kind == "outliers":  # a third of huge values: the sampled range is far off
        v[rng.random(shape) < 0.35] = 3e38
        v[rng.random(shape) < 0.05] = -3e38
    elif kind == "constant":
        v[:] = 7.5
    elif kind == "float64":
        v = rng.normal(-5, 2, shape)
    v[rng.random(shape) < 0.01] = np.nan
    return v


@pytest.mark.parametrize("kind", ["normal", "integers", "zeros", "outliers", "constant",
                                  "float64"])
def test_quartiles_from_histogram_are_exact(kind):
    """The compiled path's quartiles equal those of a sort, on views and with masks."""
    rng = np.random.default_rng(len(kind))
    full = _awkward_values(kind, rng, (300, 400))
    bad = rng.random(full.shape) < 0.1
    for values, flags in ((full, None), (full, bad), (full[20:250, 33:371], bad[20:250, 33:371]),
                          (full[:1, :].ravel(), None)):
        keep = np.isfinite(values) if flags is None else np.isfinite(values) & ~flags
        expected = quantiles_sorted(np.sort(values[keep]))
        if values.size < 1 << 15:
            continue  # copied and selected: covered by the quantiles_selected tests
        m1, v1, n1 = NUMBA.usable_clipped_mean_var(values, flags)
        m2, var2, n2 = NUMPY.usable_clipped_mean_var(values, flags)
        if values.dtype != np.float32:  # compiled for float32 only: the reference's numbers
            assert (m1, v1, n1) == pytest.approx((m2, var2, n2), rel=0, abs=0, nan_ok=True)
            with pytest.raises(TypeError, match="float32"):
                NUMBA._quartiles(values.reshape(values.shape[0], -1), None)
            continue
        v2 = values.reshape(values.shape[0], -1)
        n, *got = NUMBA._quartiles(v2, None if flags is None else flags.reshape(v2.shape))
        assert n == int(np.count_nonzero(keep))
        assert tuple(got) == expected
        assert n1 == n2 == n
        # The means of symmetric data cancel: compare them on the scale of the spread.
        for a, e, scale in ((m1, m2, abs(m2) + math.sqrt(var2)), (v1, var2, abs(var2))):
            assert (math.isnan(a) and math.isnan(e)) or abs(a - e) <= 1e-12 * scale


def _assert_close(got, expected, scale):
    """Element-wise: both NaN, or within 1e-12 of ``scale``."""
    both_nan = np.isnan(got) & np.isnan(expected)
    ok = both_nan | (np.abs(got - expected) <= 1e-12 * scale)
    assert ok.all(), (got[~ok], expected[~ok])


@pytest.mark.parametrize("zone", [32, 0])
@pytest.mark.parametrize("kind", ["normal", "integers", "zeros", "outliers", "constant",
                                  "float64", "bimodal"])
def test_binned_statistics_agree(kind, zone):
    """Every bin of a grid in one compiled call: the same counts as the reference, means
    and variances to 1e-12 (only the sums' order differs), with awkward bins (fully
    masked, one column wide, an empty band) and a view of a larger array.

    With the default zones the clip iterations come from the copied values near the
    predicted bounds and the sums between them; with no zone the predictions miss and
    iterations fall back to passes over the pixels. Both give the contract's kept sets.
    """
    rng = np.random.default_rng(10 + len(kind))
    if kind == "bimodal":  # the clip bounds move far between iterations
        values = np.where(rng.random((270, 340)) < 0.6, rng.normal(0, 1, (270, 340)),
                          rng.normal(6, 1, (270, 340))).astype(np.float32)
    else:
        values = _awkward_values(kind, rng, (270, 340))
    view = values[5:265, 3:333]
    bad = rng.random(view.shape) < 0.1
    bad[:60, :70] = True  # a fully masked bin
    xe = [0, 70, 71, 200, 330]  # a one-column bin
    ye = [0, 60, 60, 180, 260]  # an empty band
    passes = 0
    for flags in (None, bad):
        m1, v1, n1, p1 = NUMBA._binned(view, flags, xe, ye, zone=zone)
        m2, v2, n2 = NUMPY.binned_clipped_mean_var(view, flags, xe, ye)
        if view.dtype != np.float32:  # compiled for float32 only: the reference itself
            for got, want in ((m1, m2), (v1, v2), (n1, n2)):
                np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(n1, n2)
        assert (n1[1] == 0).all() and (flags is None or n1[0, 0] == 0)
        spread = np.sqrt(np.abs(v2))
        _assert_close(m1, m2, np.abs(m2) + np.where(np.isfinite(spread), spread, 0))
        _assert_close(v1, v2, np.abs(v2))
        passes += int(p1.sum())
        if zone:
            one = NUMBA.usable_clipped_mean_var(view, flags)
            ref = NUMPY.usable_clipped_mean_var(view, flags)
            assert one[2] == ref[2]
            _assert_close(np.array(one[:2]), np.array(ref[:2]),
                          np.array([abs(ref[0]) + math.sqrt(abs(ref[1])), abs(ref[1])]))
    if kind in ("normal", "bimodal"):  # both routes really ran
        assert passes == 0 if zone else kind != "normal" or passes > 0


@pytest.mark.parametrize("style", ["AKIMA_SPLINE", "CUBIC_SPLINE", "LINEAR", "CONSTANT"])
def test_background_model_subtraction_bit_identical(style):
    rng = np.random.default_rng(3)
    image = rng.normal(1000, 20, (120, 203)).astype(np.float32)
    nx = {"AKIMA_SPLINE": 7, "CUBIC_SPLINE": 4, "LINEAR": 2, "CONSTANT": 3}[style]
    _, _, xc = background_bins(203, nx)
    values = rng.normal(1000, 5, (120, nx))
    for nan_rows in (False, True):
        if nan_rows:
            values[5, 1] = np.nan  # one knot missing: that row falls back to a lower style
            values[9, :] = np.nan  # no knots: a NaN row
        a, b = image.copy(), image.copy()
        NUMBA.subtract_model_rows(a, style, xc, values)
        NUMPY.subtract_model_rows(b, style, xc, values)
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(a, image)
        for module in (NUMPY, NUMBA):  # into another array: the same bits, the source kept
            src, out = image.copy(), np.full(image.shape, np.nan, np.float32)
            module.subtract_model_rows(src, style, xc, values, out=out)
            np.testing.assert_array_equal(out, a)
            np.testing.assert_array_equal(src, image)


def test_read_only_and_writable_inputs_share_one_compiled_specialization():
    """A read-only image (a FITS memory map, a cached array) and a writable one run the
    same compiled code: numba would otherwise compile the statistics again (~10 s)."""
    rng = np.random.default_rng(3)
    image = rng.normal(100, 3, (300, 200)).astype(np.float32)
    mask = (rng.random(image.shape) < 0.05).astype(np.int32)
    frozen = image.copy()
    frozen.flags.writeable = False
    results = []
    for a in (image, frozen):
        results.append((NUMBA.usable_clipped_mean_var(a, None),
                        NUMBA.usable_clipped_mean_var(a, mask != 0),
                        NUMBA.prepare_pixels(a, mask, 1, 2, 1)[1],
                        NUMBA.bad_pixels(a, mask, 1), NUMBA.smooth(a, gaussian_kernel(2.0, 4.0))))
    for x, y in zip(*results, strict=True):
        np.testing.assert_array_equal(x, y)
    for kernel in (NUMBA._band_stats, NUMBA._prepare, NUMBA._bad_pixels):
        assert kernel.signatures and not any(sig[0].mutable for sig in kernel.signatures)
    assert all(sig[0].mutable for sig in NUMBA._smooth.signatures)


def test_mask_passes_agree():
    rng = np.random.default_rng(4)
    image = rng.normal(0, 1, (70, 90)).astype(np.float32)
    image[3, 4] = np.nan
    image[5, 6] = -np.inf
    mask = rng.integers(0, 1 << 11, image.shape).astype(np.int32) & ~0x1FF
    mask[10, 10] |= 1 << 5
    big_endian = mask.astype(">i4")
    for img in (image, image.astype(">f4")):  # a big-endian image read as native bytes
        for m in (None, mask, big_endian):
            for bits in (0, 1 << 5, 0x1FF):
                np.testing.assert_array_equal(NUMBA.bad_pixels(img, m, bits),
                                              NUMPY.bad_pixels(img, m, bits))
    a = rng.random(image.shape) < 0.5
    for b in (~a, ~a & (rng.random(image.shape) < 0.999)):
        assert NUMBA.all_covered(a, b) == NUMPY.all_covered(a, b) == bool((a | b).all())


def _prepare_expected(image, mask, bits, det_bits, stats_bits):
    """The definition of `prepare_pixels`, element by element."""
    img = np.asarray(image).astype(np.float32)
    bad = ~np.isfinite(img)
    if mask is None:
        return img, bad, False, None
    m = np.asarray(mask).astype(np.int64)
    stats = (m & stats_bits) != 0
    return (img, bad | ((m & bits) != 0), bool(np.any(m & det_bits)),
            stats if stats.any() else None)


@pytest.mark.parametrize("dtype", [np.float32, ">f4", np.float64, np.int16])
def test_prepare_pixels_agree(dtype):
    rng = np.random.default_rng(8)
    base = rng.normal(0, 1, (70, 90)) * 100
    if np.dtype(dtype).kind == "f":
        base[3, 4] = np.nan
        base[5, 6] = -np.inf
        base[7, 8] = np.inf
        base[9, 1] = 1e300  # finite in float64, inf in float32: bad
    image = base.astype(dtype)
    mask = rng.integers(0, 1 << 11, image.shape).astype(np.int32) & ~0x1FF
    mask[10, 10] |= 1 << 5
    mask[11, 12] |= 1 << 0
    cases = [(None, 0x1FF, 0x60, 0x113), (mask, 0x1FF, 0x60, 0x113),
             (mask.astype(">i4"), 0x1FF, 0x60, 0x113), (mask.astype(np.uint16), 0x1FF, 0, 0),
             (mask, 0, 0, 0), (mask, 0x1FF, 1 << 6, 1 << 4),  # no det bits, no stats hits
             (np.full(image.shape, 0x1FF, np.int32), 0x1FF, 0x60, 0x113),  # all masked
             (mask[:, ::-1], 0x1FF, 0x60, 0x113)]  # a strided view
    for m, bits, det_bits, stats_bits in cases:
        expected = _prepare_expected(image, m, bits, det_bits, stats_bits)
        for module, copy in itertools.product((NUMPY, NUMBA), (True, False)):
            before = image.copy()
            img, bad, any_det, stats = module.prepare_pixels(image, m, bits, det_bits,
                                                            stats_bits, copy=copy)
            np.testing.assert_array_equal(image, before)  # the input is not modified
            # Without a copy, float32 pixels are the input itself; others are converted.
            assert img.dtype == np.float32
            assert np.shares_memory(img, image) == (not copy and image.dtype == np.float32)
            np.testing.assert_array_equal(img, expected[0])
            np.testing.assert_array_equal(bad, expected[1])
            np.testing.assert_array_equal(bad, NUMPY.bad_pixels(img, m, bits))
            assert any_det == expected[2]
            if expected[3] is None:
                assert stats is None
            else:
                np.testing.assert_array_equal(stats, expected[3])
    empty = np.zeros((0, 5), dtype=np.float32)
    for module in (NUMPY, NUMBA):
        img, bad, any_det, stats = module.prepare_pixels(empty, np.zeros((0, 5), np.int32),
                                                        1, 1, 1)
        assert img.shape == bad.shape == (0, 5) and not any_det and stats is None


# ------------------------------------------------------------------------------------------
# Whole detectors: intermediate images and pedestals on both paths
# ------------------------------------------------------------------------------------------
def _pipeline_pieces(image, mask, detector, config, planes=None):
    """Background-subtracted image, smoothed image, DETECTED mask and pedestals."""
    amp = detector.amplifiers[0]
    bits = 0x1FF
    img = np.array(image, dtype=np.float32, copy=True)
    bad = kernels.active().bad_pixels(img, mask, bits)
    if config.do_background:
        subtract_background(img, bad, min(amp.width, amp.height),
                            config.background_fraction_sample)
    k = gaussian_kernel(config.detection.sigma, config.detection.n_sigma_for_kernel)
    smoothed = smooth(img, k)
    stats_bad = None if mask is None else (mask & 0x111) != 0  # BAD, EDGE, NO_DATA
    threshold = detection_threshold(smoothed, stats_bad, config.detection.threshold_value,
                                    "stdev")
    r = k.shape[0] // 2
    seeds = np.zeros(img.shape, dtype=bool)
    seeds[r:-r, r:-r] = smoothed >= threshold
    detected = grow(seeds, 5)
    before = np.array(image, copy=True)
    result = measure_detector(image, mask, detector, config, planes)
    np.testing.assert_array_equal(image, before)  # float32 pixels are read in place only
    return img, smoothed, detected, threshold, result


def _compare_paths(image, mask, detector, config, planes=None):
    with use_kernels("numpy"):
        ref = _pipeline_pieces(image, mask, detector, config, planes)
    with use_kernels("numba"):
        new = _pipeline_pieces(image, mask, detector, config, planes)
    for a, b in zip(ref[:3], new[:3], strict=True):
        np.testing.assert_array_equal(a, b)
    assert new[3] == pytest.approx(ref[3], rel=1e-12, abs=0)
    np.testing.assert_allclose(new[4].pedestals, ref[4].pedestals, rtol=1e-12, atol=1e-15)
    assert new[4].n_detected == ref[4].n_detected
    # Every field of the measurement is equal but the detection threshold (the compiled
    # image statistics sum in another order; it moves no mask above).
    _assert_same_measurement(ref[4], new[4], skip=("threshold",))
    assert new[4].threshold == pytest.approx(ref[4].threshold, rel=1e-12)
    return ref


@pytest.mark.parametrize("kind", ["symmetric", "random", "artificial"])
@pytest.mark.parametrize("background", ["constant", "ramp"])
def test_golden_lsst_cases_identical(kind, background):
    config = lsst_config(kind, background=True, weighted=True)
    ref = _compare_paths(lsst_image(kind, background), None, lsst_detector(), config)
    assert ref[2].any() == (kind == "random" and background == "constant")


def test_golden_mini_itl_identical():
    image, mask, planes, detector, _ = mini_itl()
    _compare_paths(image, mask, detector, AmpOffsetConfig(), planes)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["R02_S02", "R22_S11"])  # ITL 4072x4000, e2v 4096x4004
def test_full_size_detectors_identical(name):
    detector = get_camera("lsstcam")[name]
    sim = full_size_simulation(name)
    ref = _compare_paths(sim.image, sim.mask, detector, AmpOffsetConfig())
    assert ref[2].any()  # stars were detected: the masks compared are not empty


@pytest.mark.parametrize("shape", [(40, 50), (15, 15), (16, 60), (90, 33)])
def test_box_dilation_and_stats_mask_agree(shape):
    rng = np.random.default_rng(shape[0])
    mask = np.zeros(shape, np.int32)
    mask[rng.random(shape) < 0.01] = 1 << 4
    mask[rng.random(shape) < 0.01] |= 1 << 2
    for bits in (1 << 4, (1 << 4) | (1 << 2), 1 << 8):
        hits = (mask & bits) != 0
        for backend in (NUMPY, NUMBA):
            stats = backend.prepare_pixels(np.zeros(shape, np.float32), mask, 0, 0, bits)[3]
            if hits.any():
                np.testing.assert_array_equal(stats, hits)
            else:
                assert stats is None
        for r in (1, 7):
            got = NUMBA.dilate_box(hits, r)
            np.testing.assert_array_equal(got, NUMPY.dilate_box(hits, r))
            size = 2 * r + 1
            brute = np.array([[hits[y:y + size, x:x + size].any()
                               for x in range(shape[1] - size + 1)]
                              for y in range(shape[0] - size + 1)], dtype=bool)
            np.testing.assert_array_equal(got, brute.reshape(got.shape))


def _grow_brute_force(seeds, radius, isotropic):
    """Paint the footprint's row spans around every seed (the definition, pixel by pixel)."""
    out = seeds.copy()
    h = seeds.shape[0]
    for y, x in zip(*np.nonzero(seeds), strict=True):
        for dy in range(-radius, radius + 1):
            half = int(np.sqrt(radius * radius - dy * dy)) if isotropic else radius - abs(dy)
            if 0 <= y + dy < h:
                out[y + dy, max(x - half, 0):x + half + 1] = True
    return out


@pytest.mark.parametrize("isotropic", [True, False])
def test_grow_agrees_with_the_footprint_definition(isotropic):
    rng = np.random.default_rng(5)
    for shape, density, radius in [((60, 45), 0.01, 5), ((30, 200), 0.05, 3), ((3, 9), 0.3, 6),
                                   ((80, 80), 0.4, 2), ((20, 20), 0.0, 4), ((25, 30), 0.1, 0)]:
        seeds = rng.random(shape) < density
        seeds[:, 7:12] |= rng.random((shape[0], 1)) < 0.2  # runs of seeds along rows
        expected = _grow_brute_force(seeds, radius, isotropic)
        np.testing.assert_array_equal(NUMPY.grow(seeds, radius, isotropic), expected)
        np.testing.assert_array_equal(NUMBA.grow(seeds, radius, isotropic), expected)


@pytest.mark.parametrize("radius", [1, 3, 5])
@pytest.mark.parametrize("width", [37, 300])
def test_grow_of_sparse_rows_agrees_with_the_footprint_definition(radius, width):
    # Seed rows separated by gaps around 2 * radius (where the numpy kernel's bands of rows
    # merge or split, and split bands are grown stacked), at the first and last rows, and
    # one band of adjacent rows; narrow and wide rows (two ways of finding the seed rows).
    seeds = np.zeros((120, width), dtype=bool)
    y = 0
    for gap in (2 * radius - 1, 2 * radius, 2 * radius + 1, 2 * radius + 2, 1, 1, 3 * radius):
        seeds[y, (7 * y) % width] = True
        y += gap
    seeds[y:y + 3, width - 1] = True
    seeds[-1, 0] = True
    for isotropic in (True, False):
        expected = _grow_brute_force(seeds, radius, isotropic)
        np.testing.assert_array_equal(NUMPY.grow(seeds, radius, isotropic), expected)
        np.testing.assert_array_equal(NUMBA.grow(seeds, radius, isotropic), expected)
        assert not NUMPY.grow(np.zeros((9, 4), bool), radius, isotropic).any()


def test_threshold_seeds_agree():
    rng = np.random.default_rng(6)
    smoothed = rng.normal(0.0, 1.0, (50, 70)).astype(np.float32)
    smoothed[3, 4] = np.nan
    smoothed[7, 8] = np.float32(2.5)  # exactly at the threshold
    smoothed[9, 9] = np.float32(-2.5)
    shape, r = (56, 76), 3
    for threshold in (2.5, 2.5000000001, 1.0):  # the second rounds to 2.5 in float32
        for flags in [(True, False, True, False), (True, True, True, True),
                      (False, True, False, True), (True, True, True, False),
                      (True, True, False, False)]:
            seeds, n, any_seed = NUMPY.threshold_seeds(smoothed, threshold, shape, r, *flags)
            got = NUMBA.threshold_seeds(smoothed, threshold, shape, r, *flags)
            np.testing.assert_array_equal(got[0], seeds)
            assert got[1:] == (n, any_seed)
            pos, neg = smoothed >= np.float32(threshold), smoothed <= np.float32(-threshold)
            assert n == flags[0] * pos.sum() + flags[1] * neg.sum()
            marked = (pos & flags[0] & flags[2]) | (neg & flags[1] & flags[3])
            np.testing.assert_array_equal(seeds[r:-r, r:-r], marked)
            assert not seeds[:r].any() and any_seed == marked.any()
    assert NUMBA.threshold_seeds(smoothed, 2.5000000001, shape, r, True, False, True,
                                 False)[0][7 + r, 8 + r]


def test_detection_count_agrees_with_the_seeds():
    rng = np.random.default_rng(7)
    smoothed = rng.normal(0.0, 1.0, (40, 300)).astype(np.float32)
    smoothed[5, 6] = np.nan
    smoothed[8, 9] = np.float32(2.5)  # exactly at the threshold
    for threshold in (2.5, 2.5000000001, 1.0, 10.0):
        for flags in [(True, False, True, False), (True, True, True, True),
                      (False, True, False, True), (True, True, False, False),
                      (True, True, False, True)]:
            _, n, any_seed = NUMPY.threshold_seeds(smoothed, threshold, (46, 306), 3, *flags)
            assert NUMPY.count_detected(smoothed, threshold, *flags) == (n, any_seed)
            for k in (NUMPY, NUMBA):  # no region: only the count
                out = np.zeros((46, 306), dtype=bool)
                assert k.grow_detections(smoothed, threshold, 3, *flags, 2, True, [],
                                         out) == (n, any_seed)
                assert not out.any()
    # Blocks of rows: a count over several blocks.
    assert NUMPY.count_detected(smoothed, 1.0, True, False, True, False, row_block=7) == \
        NUMPY.threshold_seeds(smoothed, 1.0, (46, 306), 3, True, False, True, False)[1:]


@pytest.mark.parametrize("isotropic", [True, False])
def test_grown_detections_in_regions_agree_with_the_definition(isotropic):
    """`grow_detections` sets ``grow(threshold_seeds(...))[rows, cols]`` (ORed into what
    is there) from the smoothed pixels within reach: regions at the image's corners and
    border, inside the border that the smoothing leaves out, thinner than the footprint,
    empty, several at once; runs of seeds across the compiled path's 64-column chunks and
    at row ends; seeds of one polarity detected but not marked."""
    rng = np.random.default_rng(8)
    r = 3
    smoothed = rng.normal(0.0, 1.0, (60, 290)).astype(np.float32)
    smoothed[rng.random(smoothed.shape) < 0.02] = np.float32(3.0)
    smoothed[10, 55:75] = np.float32(3.0)  # across the chunk boundary at 64
    smoothed[20, 120:140] = np.float32(-3.0)
    smoothed[30, 250:] = np.float32(3.0)  # up to the row's end
    smoothed[0, :5] = smoothed[-1, -5:] = np.float32(3.0)  # the good box's corners
    smoothed[40, 100] = np.nan
    smoothed[41, 100] = np.float32(2.5)  # exactly at the threshold
    shape = (smoothed.shape[0] + 2 * r, smoothed.shape[1] + 2 * r)
    h, w = shape
    regions = [(slice(0, h), slice(0, w)), (slice(0, 9), slice(0, 40)),
               (slice(h - 5, h), slice(w - 70, w)), (slice(0, 2), slice(100, 200)),
               (slice(8, 50), slice(60, 62)), (slice(20, 20), slice(5, 50)),
               (slice(5, 45), slice(110, 230)), (slice(30, 36), slice(240, w))]
    for radius in (0, 2, 5):
        for flags in [(True, False, True, False), (False, True, False, True),
                      (True, True, True, True), (True, True, True, False)]:
            seeds, n, _ = NUMPY.threshold_seeds(smoothed, 2.5, shape, r, *flags)
            full = _grow_brute_force(seeds, radius, isotropic)
            for group in [[region] for region in regions] + [regions]:
                start = rng.random(shape) < 0.05
                expected = start.copy()
                for rows, cols in group:
                    expected[rows, cols] |= full[rows, cols]
                for k in (NUMPY, NUMBA):
                    out = start.copy()
                    assert k.grow_detections(smoothed, 2.5, r, *flags, radius, isotropic, group,
                                             out) == (n, True)
                    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("density", [0.0, 0.05, 0.5, 0.97])
def test_box_dilation_of_dense_masks_agrees(density):
    rng = np.random.default_rng(int(density * 100))
    bad = rng.random((41, 57)) < density
    bad[:, 20] = True  # a bad column
    for r in (0, 2, 6):
        np.testing.assert_array_equal(NUMBA.dilate_box(bad, r), NUMPY.dilate_box(bad, r))


# ------------------------------------------------------------------------------------------
# The numpy reference's fast paths (same bits as its general code)
# ------------------------------------------------------------------------------------------
def _dilate_by_painting(bad, r):
    """`dilate_box` by definition: every set pixel paints the outputs whose square holds it."""
    size = 2 * r + 1
    out = np.zeros((bad.shape[0] - size + 1, bad.shape[1] - size + 1), dtype=bool)
    for y, x in zip(*np.nonzero(bad), strict=True):
        out[max(y - size + 1, 0):y + 1, max(x - size + 1, 0):x + 1] = True
    return out


@pytest.mark.parametrize("r", [0, 1, 7])
def test_box_dilation_of_sparse_masks_agrees_with_the_definition(r):
    # 300x257 (over 2**16 pixels) with at most 18 pixels in at most 75 rows: the numpy
    # kernel paints squares; the pixels sit on every border, in squares of one row one
    # column apart, touching and overlapping, and in rows the output does not reach.
    rng = np.random.default_rng(r)
    cases = [[], [(0, 0)], [(299, 256)], [(0, 256), (299, 0)],
             [(100, 3), (100, 3 + 2 * r + 2), (100, 3 + 2 * r + 3), (100, 200), (101, 200),
              (150, 10), (150, 10 + 2 * r + 1)],
             list(zip(rng.integers(0, 300, 18).tolist(), rng.integers(0, 257, 18).tolist(),
                      strict=True))]
    for pixels in cases:
        bad = np.zeros((300, 257), dtype=bool)
        for y, x in pixels:
            bad[y, x] = True
        expected = _dilate_by_painting(bad, r)
        np.testing.assert_array_equal(NUMPY.dilate_box(bad, r), expected)
        np.testing.assert_array_equal(NUMBA.dilate_box(bad, r), expected)


def test_prepare_pixels_in_one_pass_finds_hits_in_any_block():
    # Blocks of 8 rows: the only detected pixel and the only statistics hit are in the last
    # (partial) block, an image with bad pixels everywhere else.
    rng = np.random.default_rng(3)
    image = rng.normal(0, 1, (61, 17)).astype(np.float32)
    image[::9, ::5] = np.nan
    mask = np.zeros(image.shape, np.int32)
    mask[::7, ::3] = 1 << 1
    mask[60, 16] |= (1 << 5) | (1 << 9)
    expected_bad = ~np.isfinite(image) | ((mask & 0x3) != 0)
    for det_bits, stats_bits in ((1 << 5, 1 << 9), (1 << 6, 1 << 9), (1 << 5, 1 << 10),
                                 (1 << 5, 0)):
        img, bad, any_det, stats = NUMPY.prepare_pixels(image, mask, 0x3, det_bits,
                                                        stats_bits, copy=False, row_block=8)
        assert img is image
        np.testing.assert_array_equal(bad, expected_bad)
        assert any_det == (det_bits == 1 << 5)
        if stats_bits == 1 << 9:
            np.testing.assert_array_equal(stats, (mask & stats_bits) != 0)
        else:
            assert stats is None


def test_prepare_pixels_sparse_and_dense_blocks():
    # Blocks of 8 rows: one without mask words, sparse ones (the tests run on the set words
    # only) and a dense one (each test on the whole block) give the definition's masks.
    rng = np.random.default_rng(11)
    image = rng.normal(0, 1, (37, 29)).astype(np.float32)
    image[rng.random(image.shape) < 0.05] = np.nan
    image[20, 3] = -np.inf
    mask = np.zeros(image.shape, np.int32)
    mask[8, 4] = 1 << 1
    mask[9, 28] = 1 << 5
    mask[13, 0] = (1 << 9) | 1
    mask[16:24] = rng.integers(0, 1 << 11, (8, 29))  # dense
    mask[36, 7] = 1 << 9  # the partial last block
    for bits, det_bits, stats_bits in ((0x3, 1 << 5, 1 << 9), (0x3, 1 << 6, 1 << 9),
                                       (0, 1 << 5, 1 << 10), (0x3, 0, 1 << 9), (0x3, 1 << 5, 0)):
        expected = _prepare_expected(image, mask, bits, det_bits, stats_bits)
        for m in (mask, mask[16:24].copy()):
            im = image if m is mask else image[16:24]
            exp = expected if m is mask else _prepare_expected(im, m, bits, det_bits,
                                                               stats_bits)
            for module, kw in ((NUMPY, {"row_block": 8}), (NUMPY, {}), (NUMBA, {})):
                _, bad, any_det, stats = module.prepare_pixels(im, m, bits, det_bits,
                                                               stats_bits, copy=False, **kw)
                np.testing.assert_array_equal(bad, exp[1])
                assert any_det == exp[2]
                if exp[3] is None:
                    assert stats is None
                else:
                    np.testing.assert_array_equal(stats, exp[3])


def test_numpy_smooth_into_a_buffer_fills_every_row():
    # Bands of 2 groups of 15 rows: whole bands go straight into the buffer, the last
    # (partial) one through the block; a buffer of NaN shows any row left unwritten.
    rng = np.random.default_rng(4)
    image = rng.normal(0.0, 5.0, (100, 80)).astype(np.float32)
    k = gaussian_kernel(2.0)
    expected = NUMPY.smooth(image, k)
    for groups in (1, 2, 8):
        buf = np.full(expected.shape, np.nan, dtype=np.float32)
        assert NUMPY.smooth(image, k, out=buf, groups=groups) is buf
        np.testing.assert_array_equal(buf.view(np.uint32), expected.view(np.uint32))


@pytest.mark.parametrize("isotropic", [True, False])
def test_grow_of_seeds_at_row_ends_does_not_wrap(isotropic):
    # The numpy kernel lays rows end to end: seeds on the last column only (or the first
    # only), in narrow and wide arrays and radii up to past the width, must not reach the
    # other end of a neighbouring row.
    for shape, radius in (((9, 4), 1), ((9, 4), 2), ((9, 4), 9), ((9, 300), 5), ((1, 7), 2)):
        for col in (0, shape[1] - 1):
            seeds = np.zeros(shape, dtype=bool)
            seeds[::4, col] = True
            expected = _grow_brute_force(seeds, radius, isotropic)
            np.testing.assert_array_equal(NUMPY.grow(seeds, radius, isotropic), expected)
            np.testing.assert_array_equal(NUMBA.grow(seeds, radius, isotropic), expected)


# ------------------------------------------------------------------------------------------
# Full-image passes: buffers reused between detectors
# ------------------------------------------------------------------------------------------
def test_smooth_into_a_given_buffer():
    rng = np.random.default_rng(21)
    image = rng.normal(100.0, 5.0, (40, 57)).astype(np.float32)
    k = gaussian_kernel(2.0)
    expected = NUMPY.smooth(image, k)
    buf = np.full(expected.shape, np.nan, dtype=np.float32)
    assert NUMBA.smooth(image, k, out=buf) is buf
    np.testing.assert_array_equal(buf, expected)
    with use_kernels("numba"):
        assert smooth(image, k, out=buf) is buf
    buf[...] = np.nan
    with use_kernels("numpy"):  # the reference writes into the buffer too
        assert smooth(image, k, out=buf) is buf
    np.testing.assert_array_equal(buf, expected)
    for module in (NUMBA, NUMPY):
        with pytest.raises(ValueError, match="shape"):
            module.smooth(image, k, out=np.empty((expected.shape[0], 1), np.float32))
        with pytest.raises(ValueError, match="float64"):
            module.smooth(image, k, out=np.empty(expected.shape))
        with pytest.raises(ValueError, match="C-contiguous"):  # a view written by rows
            module.smooth(image, k, out=np.empty((expected.shape[1], expected.shape[0]),
                                                 np.float32).T)


def test_scratch_buffers_are_reused_per_thread_and_change_no_result():
    import threading

    from ampoffset_dask.algorithm import measure as measure_module

    image, mask, planes, detector, _ = mini_itl()
    other = image + np.float32(7.0)
    other[50:60, 100:130] += np.float32(5000.0)  # a bright source somewhere else
    config = AmpOffsetConfig()
    scratch = measure_module._SCRATCH
    scratch.buffers.clear()  # this thread's, from earlier tests
    with use_kernels("numba"):
        scratch.busy = True  # as a nested call: fresh arrays only
        try:
            ref = {id(a): measure_detector(a, mask, detector, config, planes)
                   for a in (image, other)}
            assert scratch.buffers == {}
        finally:
            scratch.busy = False
        first = measure_detector(image, mask, detector, config, planes)
        buffers = dict(scratch.buffers)
        # The intermediate images and masks (the statistics masks only where the mask has
        # a statistics plane set; the mask after detection only with earlier detections).
        assert {"subtracted", "smoothed", "bad", "extra"} <= set(buffers) <= {
            "subtracted", "smoothed", "bad", "extra", "stats_bad", "excluded",
            "bad_after_detection"}
        assert buffers["subtracted"].nbytes == image.nbytes  # bytes, viewed as needed
        assert buffers["bad"].nbytes == buffers["extra"].nbytes == image.size
        second = measure_detector(other, mask, detector, config, planes)
        assert all(scratch.buffers[k] is v for k, v in buffers.items())  # reused
        _assert_same_measurement(ref[id(image)], first)
        _assert_same_measurement(ref[id(other)], second)

        # Threads measuring at once each use their own buffers.
        results, errors, seen = {}, [], []

        def work(key, a):
            try:
                for i in range(3):
                    results[key, i] = measure_detector(a, mask, detector, config, planes)
                seen.append(dict(scratch.buffers))
            except Exception as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(key, a))
                   for key, a in enumerate((image, other, image, other))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors
    for (key, _), got in results.items():
        _assert_same_measurement(ref[id((image, other)[key % 2])], got)
    ids = [id(b) for s in seen for b in s.values()] + [id(b) for b in buffers.values()]
    # no thread shared another's buffer (5 threads, each its own set)
    assert len(set(ids)) == len(ids) == 5 * len(buffers)


def test_scratch_buffers_are_released_after_an_error():
    from ampoffset_dask.algorithm import measure as measure_module
    from ampoffset_dask.errors import ConfigError
    from ampoffset_dask.geometry import detector_from_boxes

    detector = detector_from_boxes("D", 200, 100, [("A", 0, 0, 100, 100),
                                                   ("B", 100, 0, 100, 100)])
    image = np.random.default_rng(1).normal(1000.0, 1.0, detector.shape).astype(np.float32)
    image[:, 100:] += np.float32(3.0)
    config = AmpOffsetConfig(amp_edge_width=16)
    config.background.undersample_style = "THROW_EXCEPTION"  # 3x2 bins: too few
    with pytest.raises(ConfigError, match="too few"):
        measure_detector(image, None, detector, config)
    assert not measure_module._SCRATCH.busy  # the next detector reuses the buffers
    config.background.undersample_style = "REDUCE_INTERP_ORDER"
    got = measure_detector(image, None, detector, config)
    assert measure_module._SCRATCH.buffers["subtracted"].nbytes >= 4 * image.size
    measure_module._SCRATCH.busy = True  # fresh arrays only
    try:
        expected = measure_detector(image, None, detector, config)
    finally:
        measure_module._SCRATCH.busy = False
    _assert_same_measurement(expected, got)
    assert got.background == "ok" and got.pedestals[1] > got.pedestals[0] + 1.0


@pytest.mark.parametrize("flags", list(itertools.product([True, False], repeat=4)))
def test_seed_count_and_chunk_map_agree_with_the_seeds(flags):
    from ampoffset_dask.algorithm.kernels._numba import _SEED_CHUNK, _count_seeds

    rng = np.random.default_rng(sum(flags) + 4 * flags[0])
    r = 2
    smoothed = rng.normal(0.0, 1.0, (30, 3 * _SEED_CHUNK + 17)).astype(np.float32)
    smoothed[rng.random(smoothed.shape) < 0.003] = np.float32(4.0)
    smoothed[rng.random(smoothed.shape) < 0.003] = np.float32(-4.0)
    smoothed[3, 0] = smoothed[4, -1] = np.nan  # a chunk's first / the last chunk's last
    smoothed[5, 63:65] = np.float32(2.5), np.float32(-2.5)  # at both thresholds
    smoothed[6, :] = np.nan
    smoothed[7, 70], smoothed[7, 71] = np.inf, -np.inf
    shape = (smoothed.shape[0] + 2 * r, smoothed.shape[1] + 2 * r)
    seeds, n, any_seed = NUMPY.threshold_seeds(smoothed, 2.5, shape, r, *flags)
    chunks = np.empty((smoothed.shape[0], 4), dtype=bool)
    got = _count_seeds(smoothed, np.float32(2.5), np.float32(-2.5), *flags, chunks)
    assert got == (n, any_seed)
    good = seeds[r:-r, r:-r]
    for c in range(4):
        np.testing.assert_array_equal(
            chunks[:, c], good[:, c * _SEED_CHUNK:(c + 1) * _SEED_CHUNK].any(axis=1))
    if flags[0] or flags[1]:
        assert n > 0  # the case counts something


# ------------------------------------------------------------------------------------------
# Edge strips read into lines
# ------------------------------------------------------------------------------------------
def test_put_lines_agree_and_compile_once():
    """The strip reader writes the reference's bits (NaN payloads of unmasked pixels
    kept, masked and non-finite pixels the one NaN) for every combination of inputs, mask
    types and byte orders, strided strips and both orientations; the compiled reads (a
    mask and/or the finiteness test on float32 strips, any integer mask) share one
    compiled specialization, and so do the default configuration's reads (``bad`` and
    ``extra`` together)."""
    rng = np.random.default_rng(8)
    image = rng.normal(0, 1, (60, 50)).astype(np.float32)
    for value in (np.inf, -np.inf, np.nan):
        image[rng.random(image.shape) < 0.02] = value
    image.view(np.uint32)[5, 5] = 0x7FC00001  # a NaN with a payload
    image.view(np.uint32)[6, 7] = 0xFFC00000  # a negative NaN
    mask = rng.integers(0, 1 << 12, image.shape).astype(np.int32)
    bad, extra = rng.random(image.shape) < 0.05, rng.random(image.shape) < 0.05
    masks = (None, mask, mask.astype(">i4"), mask.astype(np.uint16), mask.astype(np.int64))
    strip_slices = (np.s_[10:26, 20:44], np.s_[:, :], np.s_[5:6, 3:40], np.s_[::2, 3:30])
    for sl, flip, m, bits, b, e, finite in itertools.product(
            strip_slices, (False, True), masks, (0, 1 << 3, 0xFF), (None, bad),
            (None, extra), (False, True)):
        strip = image[sl]
        shape = strip.shape[::-1] if flip else strip.shape
        expected, got = np.full(shape, 7, np.float32), np.full(shape, 7, np.float32)
        kw = {"mask": None if m is None else m[sl], "bits": bits,
              "bad": None if b is None else b[sl], "extra": None if e is None else e[sl],
              "finite": finite}
        NUMPY.put_lines(expected, strip, flip, **kw)
        NUMBA.put_lines(got, strip, flip, **kw)
        np.testing.assert_array_equal(got.view(np.uint32), expected.view(np.uint32))
    for src in (image.astype(">f4"), image.astype(np.float64)):  # converted, or the reference
        expected, got = np.empty((50, 60), np.float32), np.empty((50, 60), np.float32)
        NUMPY.put_lines(expected, src, True, mask=mask, bits=0xF, finite=True)
        NUMBA.put_lines(got, src, True, mask=mask, bits=0xF, finite=True)
        np.testing.assert_array_equal(got.view(np.uint32), expected.view(np.uint32))
    assert len(NUMBA._put_lines.signatures) == 1
    assert len(NUMBA._put_masked.signatures) == 1


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_put_strips_reads_each_strip_as_put_lines(backend):
    """`put_strips` writes, for every strip, the bits of the reference's `put_lines` on
    that strip alone: row strips (sides 1/3) and transposed column strips (sides 0/2) at
    the image borders and inside it, masked (any mask type), non-finite and NaN-payload
    pixels, the default configuration's ``bad``/``extra`` read and plain copies; from an
    in-memory image (the compiled reads at the strips' offsets), a big-endian one and a
    dask-backed one (read strip by strip); the inputs are never modified."""
    da = pytest.importorskip("dask.array")
    kern = get_kernels(backend)
    rng = np.random.default_rng(13)
    image = rng.normal(0, 1, (70, 61)).astype(np.float32)
    for value in (np.inf, -np.inf, np.nan):
        image[rng.random(image.shape) < 0.02] = value
    image.view(np.uint32)[0, 3] = 0x7FC00001  # a NaN with a payload
    image.view(np.uint32)[69, 60] = 0xFFC00000  # a negative NaN in the last pixel
    mask = rng.integers(0, 1 << 12, image.shape).astype(np.int32)
    bad, extra = rng.random(image.shape) < 0.05, rng.random(image.shape) < 0.05
    originals = [a.copy() for a in (image, mask, bad, extra)]
    boxes = [np.s_[0:70, 0:9], np.s_[3:67, 52:61],  # sides 3 and 1 at the image borders
             np.s_[0:11, 5:61], np.s_[59:70, 0:40],  # sides 2 and 0 at the image borders
             np.s_[10:60, 20:29], np.s_[20:37, 30:45],  # inside the image
             np.s_[4:4, 0:61],  # an empty strip
             np.s_[::2, 3:30]]  # not unit-stepped: strip by strip
    flips = [False, False, True, True, False, True, True, False]
    sources = (image, image.astype(">f4"), da.from_array(image, chunks=(17, 23)))
    reads = [{"mask": mask, "bits": 1 << 3, "finite": True}, {"mask": mask, "bits": 0xFF},
             {"mask": mask.astype(np.uint16), "bits": 0xF0, "finite": True},
             {"mask": da.from_array(mask, chunks=(30, 30)), "bits": 0x3, "finite": True},
             {"finite": True}, {"bad": bad, "extra": extra}, {}, {"mask": mask, "bits": 0}]
    for source, kw in itertools.product(sources, reads):
        shapes = [np.empty(image[b].shape, np.float32) for b in boxes]
        expected = [np.full(s.shape[::-1] if f else s.shape, 7, np.float32)
                    for s, f in zip(shapes, flips, strict=True)]
        got = [e.copy() for e in expected]
        for e, b, f in zip(expected, boxes, flips, strict=True):
            m = kw.get("mask")
            NUMPY.put_lines(e, image[b], f, mask=None if m is None else np.asarray(m[b]),
                            bits=kw.get("bits", 0), finite=kw.get("finite", False),
                            bad=bad[b] if "bad" in kw else None,
                            extra=extra[b] if "extra" in kw else None)
        kern.put_strips(got, source, boxes, flips, **kw)
        for e, g in zip(expected, got, strict=True):
            np.testing.assert_array_equal(g.view(np.uint32), e.view(np.uint32))
    for a, o in zip((image, mask, bad, extra), originals, strict=True):
        np.testing.assert_array_equal(a.view(np.uint8), o.view(np.uint8))
    if backend == "numba":
        assert len(NUMBA._put_lines.signatures) == 1
        assert len(NUMBA._put_masked.signatures) == 1


# ------------------------------------------------------------------------------------------
# Compiled clipped statistics: internals
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["normal", "integers", "zeros", "outliers", "constant"])
def test_histogram_range_comes_from_the_sorted_samples_values(kind):
    """A bin's histogram range is placed by its sample's 20 and 80 % values, selected in
    place: the same range a sort of the sample gives, for any sample size, ties and
    overflowing widths; the sample is only permuted."""
    rng = np.random.default_rng(20 + len(kind))
    values = _awkward_values(kind, rng, (1, NUMBA._SAMPLE)).ravel()
    values = values[np.isfinite(values)]  # the sample holds usable values only
    biggest = float(np.finfo(np.float32).max)
    for ns in (1, 2, 3, 4, 5, 9, 100, values.size):
        sample = np.zeros(NUMBA._SAMPLE, np.float32)
        sample[:ns] = values[:ns]
        typed = np.empty(3, np.float32)
        NUMBA._bin_range(sample, ns, NUMBA._N_BINS, biggest, typed)
        ordered = np.sort(values[:ns])
        np.testing.assert_array_equal(np.sort(sample[:ns]), ordered)
        q1 = float(ordered[int(0.2 * (ns - 1))])
        q3 = float(ordered[int(0.8 * (ns - 1))])
        lo, span = q1 - 2.0 * (q3 - q1), 5.0 * (q3 - q1)
        scale = NUMBA._N_BINS / span if 0.0 < span < math.inf else 1.0
        if not (abs(lo) < biggest and scale < biggest):
            lo, scale = 0.0, 1.0
        assert (typed[0], typed[1]) == (np.float32(lo), np.float32(scale)), ns
    assert len(NUMBA._bin_range.signatures) == 1  # the types `_band_stats` passes


# ------------------------------------------------------------------------------------------
# Compiled clipped statistics: the passes over a band's pixels
# ------------------------------------------------------------------------------------------
def test_band_histograms_count_every_pixel_of_their_bin():
    """`_count_band` (the first pass) gives each bin of a band the histogram of its own
    usable pixels under the monotone bin rule, unusable ones (NaN, inf, flagged) in the
    last bin, for bins of odd and one-column widths read in place from a strided view."""
    rng = np.random.default_rng(41)
    parent = rng.normal(100, 3, (40, 620)).astype(np.float32)
    parent[7, 50:90] = np.nan
    parent[9, 3] = np.inf
    parent[11, 200:203] = -np.inf
    values = parent[3:37, 5:606]
    bad = rng.random(values.shape) < 0.05
    xo = np.array([0, 7, 8, 520], np.int64)  # a one-column bin, one wider than a chunk
    xe = np.array([7, 8, 520, 601], np.int64)
    ya, yb = 2, 31
    n_bins = 1000
    los = np.array([95, 90, 80, 101], np.float32)
    scales = np.array([n_bins / 10, n_bins / 20, n_bins / 40, n_bins / 3], np.float32)
    top = np.float32(n_bins - 1)
    for flags in (None, bad):
        fv, vstride = NUMBA._flat_rows(values)
        fb, bstride = (NUMBA._NO_BAD, 0) if flags is None else NUMBA._flat_rows(flags)
        hist = np.full((xo.size, n_bins + 1), 7, np.int32)  # cleared by the kernel
        NUMBA._count_band(fv, vstride, fb, bstride, flags is not None, xo, xe, ya, yb, los,
                          scales, top, np.uint32(n_bins), hist, np.empty(NUMBA._CHUNK,
                                                                         np.uint32))
        for i in range(xo.size):
            v = values[ya:yb, xo[i]:xe[i]]
            usable = np.isfinite(v)
            if flags is not None:
                usable &= ~flags[ya:yb, xo[i]:xe[i]]
            t = np.clip((v[usable] - los[i]) * scales[i], np.float32(0), top)
            want = np.bincount(t.astype(np.uint32), minlength=n_bins + 1)
            want[n_bins] = (~usable).sum()
            np.testing.assert_array_equal(hist[i], want)
    assert len(NUMBA._count_band.signatures) == 1  # the types `_band_stats` passes


@pytest.mark.parametrize("density", [0.0001, 0.3])
def test_mask_passes_into_reused_buffers_give_the_same_masks(density):
    """`prepare_pixels`, `bad_pixels` and `dilate_box` write into a caller's buffer (left
    dirty by an earlier detector) exactly what they return without one, on both paths;
    a buffer of another shape or dtype is refused."""
    rng = np.random.default_rng(int(density * 1e4))
    image = rng.normal(0.0, 1.0, (300, 320)).astype(np.float32)
    image[rng.random(image.shape) < density] = np.nan
    mask = np.where(rng.random(image.shape) < density, rng.integers(1, 64, image.shape),
                    0).astype(np.int32)
    for k in (NUMPY, NUMBA):
        want = k.prepare_pixels(image, mask, 0b101, 0b10, 0b11000, copy=False)
        bad_buf = np.ones(image.shape, dtype=bool)
        stats_buf = np.ones(image.shape, dtype=bool)
        got = k.prepare_pixels(image, mask, 0b101, 0b10, 0b11000, copy=False,
                               bad_out=bad_buf, stats_out=stats_buf)
        assert got[1] is bad_buf and got[2] == want[2]
        np.testing.assert_array_equal(got[1], want[1])
        assert (got[3] is None) == (want[3] is None)
        if want[3] is not None:
            assert got[3] is stats_buf
            np.testing.assert_array_equal(got[3], want[3])
        out = np.ones(image.shape, dtype=bool)
        assert k.bad_pixels(image, mask, 0b100, out=out) is out
        np.testing.assert_array_equal(out, NUMPY.bad_pixels(image, mask, 0b100))
        if want[3] is not None:
            dil = np.ones((image.shape[0] - 14, image.shape[1] - 14), dtype=bool)
            assert k.dilate_box(want[3], 7, out=dil) is dil
            np.testing.assert_array_equal(dil, NUMPY.dilate_box(want[3], 7))
        with pytest.raises(ValueError, match="dilate_box"):
            k.dilate_box(want[1], 7, out=np.zeros(image.shape, dtype=bool))
        with pytest.raises(ValueError, match="bool array of shape"):
            k.prepare_pixels(image, mask, 0b101, 0, 0, bad_out=np.zeros(image.shape, np.uint8))


def test_scratch_buffers_of_two_sizes_share_the_larger_ones_bytes():
    """Detectors of two sizes in turn (ITL, e2v) reuse one buffer per name: a smaller
    request is a view of the bytes already there; only a larger one allocates."""
    from ampoffset_dask.algorithm import measure as measure_module

    try:
        with measure_module._scratch() as take:
            big = take("test-buffer", (12, 20))
            small = take("test-buffer", (10, 21), np.bool_)
            assert small.shape == (10, 21) and small.dtype == np.bool_
            assert small.flags.c_contiguous and small.flags.writeable
            assert np.shares_memory(big, small)
            bigger = take("test-buffer", (13, 20))
            assert not np.shares_memory(big, bigger) and bigger.shape == (13, 20)
    finally:
        measure_module._SCRATCH.buffers.pop("test-buffer", None)
