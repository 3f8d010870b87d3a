"""The background as AmpOffsetTask fits it (ALGORITHM.md section 3)."""

from __future__ import annotations

import numpy as np
import pytest

from ampoffset_dask.algorithm import background as bg
from ampoffset_dask.algorithm.background import (
    TooManyMaskedPixelsError,
    background_bins,
    background_model,
    background_stats,
    interp_style,
    subtract_background,
)
from ampoffset_dask.algorithm.stats import clipped_stats
from ampoffset_dask.errors import ConfigError


def test_bins_x_of_lsst_fixture():
    origins, sizes, centres = background_bins(200, 4)
    np.testing.assert_array_equal(origins, [0, 50, 100, 150])
    np.testing.assert_array_equal(sizes, [50, 50, 50, 50])
    np.testing.assert_array_equal(centres, [24.5, 74.5, 124.5, 174.5])


def test_bins_y_of_lsst_fixture():
    # end_i = ((i+1)*204 + 2) // 5 = 41, 82, 122, 163, 204
    origins, sizes, centres = background_bins(204, 5)
    np.testing.assert_array_equal(origins, [0, 41, 82, 122, 163])
    np.testing.assert_array_equal(sizes, [41, 41, 40, 41, 41])
    np.testing.assert_array_equal(centres, [20, 61, 101.5, 142, 183])


@pytest.mark.parametrize("length", [9, 100, 509, 4000, 4176])
@pytest.mark.parametrize("n", [1, 2, 3, 5, 9])
def test_bins_tile_the_axis(length, n):
    origins, sizes, centres = background_bins(length, n)
    assert origins[0] == 0
    assert int(origins[-1] + sizes[-1]) == length
    np.testing.assert_array_equal(origins[1:], origins[:-1] + sizes[:-1])
    assert sizes.max() - sizes.min() <= 1
    np.testing.assert_array_equal(centres, origins + 0.5 * sizes - 0.5)


def test_interp_style_reduction():
    assert interp_style("AKIMA_SPLINE", "REDUCE_INTERP_ORDER", 4, 5) == "CUBIC_SPLINE"
    assert interp_style("AKIMA_SPLINE", "REDUCE_INTERP_ORDER", 5, 4) == "CUBIC_SPLINE"
    assert interp_style("AKIMA_SPLINE", "REDUCE_INTERP_ORDER", 9, 8) == "AKIMA_SPLINE"
    assert interp_style("AKIMA_SPLINE", "REDUCE_INTERP_ORDER", 2, 9) == "LINEAR"
    assert interp_style("AKIMA_SPLINE", "REDUCE_INTERP_ORDER", 9, 1) == "CONSTANT"
    # nx < ny picks maxStyle(nx); otherwise maxStyle(ny) (equal -> ny)
    assert interp_style("AKIMA_SPLINE", "REDUCE_INTERP_ORDER", 3, 2) == "LINEAR"
    assert interp_style("CUBIC_SPLINE", "REDUCE_INTERP_ORDER", 3, 3) == "CUBIC_SPLINE"
    assert interp_style("LINEAR", "THROW_EXCEPTION", 2, 2) == "LINEAR"
    with pytest.raises(ConfigError, match="THROW_EXCEPTION"):
        interp_style("AKIMA_SPLINE", "THROW_EXCEPTION", 4, 5)


@pytest.mark.parametrize(
    ("shape", "amp", "expected"),
    [
        ((4000, 4072), (509, 2000), (9, 8)),  # LSSTCam ITL
        ((4004, 4096), (512, 2002), (9, 8)),  # LSSTCam e2v
        ((4176, 2048), (512, 4176), (5, 9)),  # HSC
        ((204, 200), (100, 51), (4, 5)),  # LSST test fixture
    ],
)
def test_bin_counts_of_ampoffset_formula(monkeypatch, shape, amp, expected):
    """``subtract_background`` derives nx, ny with AmpOffsetTask's formula."""
    seen = []
    real = bg.background_stats

    def spy(image, bad, nx, ny):
        seen.append((nx, ny))
        return real(image, bad, nx, ny)

    monkeypatch.setattr(bg, "background_stats", spy)
    image = np.zeros(shape, dtype=np.float32)
    bad = np.ones(shape, dtype=bool)  # all masked: cheap, and the bins are still chosen
    status = subtract_background(image, bad, min(amp), 1.0)
    assert seen == [expected]
    assert status.startswith("skipped")


def test_all_masked_is_skipped_and_image_untouched():
    rng = np.random.default_rng(0)
    image = rng.normal(100, 1, (60, 80)).astype(np.float32)
    before = image.copy()
    status = subtract_background(image, np.ones(image.shape, bool), 20, 1.0)
    assert status == "skipped: All pixels masked. Cannot estimate background."
    np.testing.assert_array_equal(image, before)
    with pytest.raises(TooManyMaskedPixelsError):
        background_stats(image, np.ones(image.shape, bool), 3, 4)
    # non-finite pixels count as masked as well
    with pytest.raises(TooManyMaskedPixelsError):
        background_stats(np.full((10, 10), np.nan, np.float32), None, 2, 2)


@pytest.mark.parametrize("value", [0.0, 100.0, -3.25, 1234.5678])
@pytest.mark.parametrize("style", ["AKIMA_SPLINE", "CUBIC_SPLINE", "LINEAR", "CONSTANT"])
def test_constant_image_gives_constant_model(value, style):
    image = np.full((204, 200), value, dtype=np.float32)
    stats = background_stats(image, None, 6, 7)
    np.testing.assert_array_equal(stats, np.float32(value))
    model = background_model(stats, image.shape, style)
    assert model.dtype == np.float32
    np.testing.assert_allclose(model, np.float32(value), rtol=1e-6, atol=1e-5)
    work = image.copy()
    assert subtract_background(work, None, 51, 1.0, style) == "ok"
    np.testing.assert_allclose(work, 0.0, atol=1e-4)


def test_constant_model_exact_for_lsst_fixture_binning():
    image = np.full((204, 200), 100.0, dtype=np.float32)
    work = image.copy()
    assert subtract_background(work, None, 51, 1.0) == "ok"
    np.testing.assert_array_equal(work, 0.0)


def test_stats_are_float32_clipped_means_of_usable_pixels():
    rng = np.random.default_rng(2)
    image = rng.normal(10, 2, (41, 50)).astype(np.float32)
    image[3, 4] = 1e4  # an outlier that MEANCLIP removes
    bad = np.zeros(image.shape, bool)
    bad[:, :10] = True
    stats = background_stats(image, bad, 2, 1)
    left = image[:, :25][~bad[:, :25]]
    right = image[:, 25:]
    assert stats.dtype == np.float32
    assert stats[0, 0] == np.float32(clipped_stats(left)[0])
    assert stats[0, 1] == np.float32(clipped_stats(right)[0])


def test_masked_bin_is_nan_and_model_falls_back():
    image = np.full((100, 100), 7.0, dtype=np.float32)
    bad = np.zeros(image.shape, bool)
    bad[:20, :20] = True  # exactly bin (0, 0) of a 5x5 binning
    stats = background_stats(image, bad, 5, 5)
    assert np.isnan(stats[0, 0])
    assert np.isfinite(stats.ravel()[1:]).all()
    model = background_model(stats, image.shape, "AKIMA_SPLINE")
    np.testing.assert_allclose(model, 7.0, atol=1e-5)


def test_separable_model_matches_scipy_natural_spline():
    """With 4x5 bins both directions are natural splines: columns first, then rows."""
    from scipy.interpolate import CubicSpline  # the product does not import scipy
    rng = np.random.default_rng(4)
    stats = rng.normal(100, 2, (5, 4)).astype(np.float32)
    shape = (204, 200)
    model = background_model(stats, shape, "AKIMA_SPLINE")
    _, _, xc = background_bins(200, 4)
    _, _, yc = background_bins(204, 5)
    ys = np.arange(204.0)
    xs = np.arange(200.0)
    columns = np.empty((204, 4))
    for i in range(4):
        cs = CubicSpline(yc, stats[:, i].astype(np.float64), bc_type="natural")
        inside = (ys >= yc[0]) & (ys <= yc[-1])
        columns[inside, i] = cs(ys[inside])
        lo, hi = ys < yc[0], ys > yc[-1]
        columns[lo, i] = stats[0, i] + (ys[lo] - yc[0]) * cs(yc[0], 1)
        columns[hi, i] = stats[-1, i] + (ys[hi] - yc[-1]) * cs(yc[-1], 1)
    expected = np.empty(shape)
    for r in range(204):
        cs = CubicSpline(xc, columns[r], bc_type="natural")
        inside = (xs >= xc[0]) & (xs <= xc[-1])
        expected[r, inside] = cs(xs[inside])
        lo, hi = xs < xc[0], xs > xc[-1]
        expected[r, lo] = columns[r, 0] + (xs[lo] - xc[0]) * cs(xc[0], 1)
        expected[r, hi] = columns[r, -1] + (xs[hi] - xc[-1]) * cs(xc[-1], 1)
    # float32 rounding of the model is the only difference
    np.testing.assert_allclose(model, expected, rtol=2e-7, atol=0)
    assert np.abs(model - expected.astype(np.float32)).max() <= np.spacing(np.float32(110))


def test_linear_gradient_is_reproduced():
    yy, xx = np.mgrid[0:120, 0:150]
    image = (50 + 0.1 * xx + 0.05 * yy).astype(np.float32)
    work = image.copy()
    assert subtract_background(work, None, 30, 1.0) == "ok"  # 6 x 5 bins: Akima both ways
    np.testing.assert_allclose(work, 0.0, atol=2e-4)


@pytest.mark.parametrize("style,nx", [("AKIMA_SPLINE", 9), ("AKIMA_SPLINE", 5),
                                      ("CUBIC_SPLINE", 4), ("CUBIC_SPLINE", 3), ("LINEAR", 2),
                                      ("CONSTANT", 3)])
@pytest.mark.parametrize("shape", [(300, 203), (7, 11), (70, 2100)])
@pytest.mark.parametrize("nan_knots", [False, True])
def test_numpy_subtraction_is_the_float32_model_subtracted(style, nx, shape, nan_knots):
    # The fused evaluate-and-subtract of the numpy kernels equals subtracting the float32
    # model that interp.interpolate_rows defines, bit for bit (blocks of rows included;
    # 2100 columns: intervals longer than the short ufunc buffer the evaluation runs with).
    from ampoffset_dask.algorithm.interp import interpolate_rows
    from ampoffset_dask.algorithm.kernels import get_kernels

    rng = np.random.default_rng(nx)
    h, w = shape
    image = rng.normal(1000.0, 20.0, shape).astype(np.float32)
    _, _, xc = background_bins(w, nx)
    values = rng.normal(1000.0, 5.0, (h, nx))
    if nan_knots:  # rows that fall back to a poorer style, or to NaN without knots
        values[1, 0] = values[3, -1] = np.nan
        values[5] = np.nan
    want = image - interpolate_rows(style, xc, values, w, np.float32)
    bufsize = np.getbufsize()
    for row_block in (64, 5):
        got = image.copy()
        get_kernels("numpy").subtract_model_rows(got, style, xc, values, row_block=row_block)
        np.testing.assert_array_equal(got.view(np.int32), want.view(np.int32))
        into = np.full_like(image, np.nan)
        get_kernels("numpy").subtract_model_rows(image, style, xc, values, out=into,
                                                 row_block=row_block)
        np.testing.assert_array_equal(into.view(np.int32), want.view(np.int32))
        # float32 pixels held in a float64 array: the same float32 result
        into[...] = np.nan
        get_kernels("numpy").subtract_model_rows(image.astype(np.float64), style, xc, values,
                                                 out=into, row_block=row_block)
        np.testing.assert_array_equal(into.view(np.int32), want.view(np.int32))
    assert np.getbufsize() == bufsize  # restored after the evaluation
