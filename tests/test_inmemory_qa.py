"""In-memory inputs measured in the detector frame: numpy views with rows running backwards,
Datasets whose planes are stored in different dimension orders, labelled xarray DataArrays;
a Dataset stays writable with ``to_netcdf`` after `AmpOffsetTask.run`; boolean masks need a
``BAD`` plane."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr
from afw_fakes import FakeExposure

from ampoffset_dask import (
    AmpOffsetConfig,
    AmpOffsetTask,
    Exposure,
    InputError,
    measure_detector,
    open_exposure,
)
from ampoffset_dask.algorithm import kernels
from ampoffset_dask.geometry import detector_from_boxes
from ampoffset_dask.io.writer import write_exposure

SQUARE = detector_from_boxes("SQ", 200, 200, [("A", 0, 0, 100, 100), ("B", 100, 0, 100, 100),
                                              ("C", 0, 100, 100, 100), ("D", 100, 100, 100, 100)])
WIDE = detector_from_boxes("W", 200, 100, [("A", 0, 0, 100, 100), ("B", 100, 0, 100, 100)])
EDGES = AmpOffsetConfig(amp_edge_width=12, do_background=False, do_detection=False)
APPLY_EDGES = AmpOffsetConfig(amp_edge_width=12, do_background=False, do_detection=False,
                              do_apply_amp_offset=True)
SUBTRACTED = "LSST ISR AMPOFFSET PEDESTAL SUBTRACTED"


def _image(det, pedestals, seed=0):
    image = np.random.default_rng(seed).normal(0.0, 0.01, det.shape).astype(np.float32)
    for amp, p in zip(det.amplifiers, pedestals, strict=True):
        image[amp.slices] += p
    return image


@pytest.fixture(scope="module")
def square_image():
    return _image(SQUARE, [1.0, -1.0, 0.5, -0.5])


needs_numba = pytest.mark.skipif(not kernels.numba_available(), reason="numba is not installed")


# -- 1. numpy views with a negative row stride ----------------------------------------------
@needs_numba
@pytest.mark.parametrize("config", [EDGES, AmpOffsetConfig(amp_edge_width=12)],
                         ids=["edges", "defaults"])
def test_flipped_views_measure_as_contiguous_copies_with_numba(square_image, config):
    stored = square_image[::-1].copy()  # e.g. a file read upside down...
    view = stored[::-1]                  # ...put back with a view: rows run backwards
    assert view.strides[0] < 0 and np.array_equal(view, square_image)
    mask = np.zeros(SQUARE.shape, np.int32)
    mask[20:60, 85:97] = 1  # BAD, in A's edge strip
    flipped_mask = mask[::-1].copy()[::-1]
    cases = ((None, view), (mask, view), (flipped_mask, view), (flipped_mask, square_image),
             (np.flipud(mask[::-1].copy()), np.flipud(stored)))
    for m, image in cases:
        with kernels.use_kernels("numpy"):
            expected = measure_detector(square_image, m, SQUARE, config).pedestals
            np.testing.assert_array_equal(
                measure_detector(image, m, SQUARE, config).pedestals, expected)
        with kernels.use_kernels("numba"):  # bit-identical with the numpy kernels
            np.testing.assert_array_equal(
                measure_detector(image, m, SQUARE, config).pedestals, expected)
        assert expected[0] - expected[1] > 1.0  # amp A is the bright one


@needs_numba
def test_numba_statistics_read_flipped_views():
    from ampoffset_dask.algorithm.kernels import _numba

    values = np.random.default_rng(3).normal(5.0, 1.0, (64, 48)).astype(np.float32)
    bad = np.random.default_rng(4).random((64, 48)) < 0.1
    edges = ((0, 16, 48), (0, 30, 64))
    expected = _numba.binned_clipped_mean_var(values, bad, *edges)
    got = _numba.binned_clipped_mean_var(values[::-1].copy()[::-1], bad[::-1].copy()[::-1],
                                         *edges)
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_array_equal(a, b)


@needs_numba
def test_task_corrects_an_afw_like_exposure_holding_a_flipped_view_with_numba(square_image):
    stored = square_image[::-1].copy()
    exposure = FakeExposure(square_image.copy(), SQUARE)
    exposure.image.array = stored[::-1]
    expected = measure_detector(square_image, None, SQUARE, EDGES).pedestals
    with kernels.use_kernels("numba"):
        result = AmpOffsetTask(APPLY_EDGES).run(exposure)
    np.testing.assert_array_equal(result.pedestals, expected)
    # corrected in the caller's memory, through the view
    amp = SQUARE.amplifiers[1]
    np.testing.assert_array_equal(
        stored[::-1][amp.slices],
        (square_image[amp.slices].astype(np.float64) - expected[1]).astype(np.float32))


# -- 2. a Dataset's mask stored (x, y) beside a (y, x) image --------------------------------
def _junk_in_a_edge(image):
    image = image.copy()
    image[0:100, 80:96] += 1000.0  # junk in A's right edge strip, masked BAD
    mask = np.zeros(image.shape, np.int32)
    mask[0:100, 80:96] = 1
    return image, mask


def test_dataset_mask_in_x_y_order_is_used_in_the_image_frame(square_image):
    image, mask = _junk_in_a_edge(square_image)
    config = AmpOffsetConfig(amp_edge_width=12, do_background=False, do_detection=False,
                             amp_edge_max_offset=1e6)
    expected = measure_detector(image, mask, SQUARE, config)
    # the mask matters: transposed, it leaves the junk in
    wrong = measure_detector(image, mask.T.copy(), SQUARE, config).pedestals
    assert np.abs(wrong - expected.pedestals).max() > 1.0
    ds = xr.Dataset({"image": (("y", "x"), image), "mask": (("x", "y"), mask.T.copy())},
                    coords={"y": np.arange(200), "x": np.arange(200)},
                    attrs={"geometry": json.dumps(SQUARE.to_dict())})
    got = measure_detector(ds, config=config)
    np.testing.assert_array_equal(got.pedestals, expected.pedestals)
    assert got.masked_fraction == expected.masked_fraction


def test_dataset_mask_in_x_y_order_on_a_wide_detector():
    image = _image(WIDE, [0.0, 2.0])
    image[10:50, 90:98] += 1000.0
    mask = np.zeros(WIDE.shape, np.int32)
    mask[10:50, 90:98] = 1
    ds = xr.Dataset({"image": (("y", "x"), image), "mask": (("x", "y"), mask.T.copy())},
                    attrs={"geometry": json.dumps(WIDE.to_dict())})
    config = AmpOffsetConfig(amp_edge_width=12, do_background=False, do_detection=False,
                             amp_edge_max_offset=1e6)
    np.testing.assert_array_equal(measure_detector(ds, config=config).pedestals,
                                  measure_detector(image, mask, WIDE, config).pedestals)


# -- 3. xarray DataArrays ---------------------------------------------------------------------
def test_reversed_dataarrays_from_open_exposure_are_put_in_the_frame(tmp_path):
    pedestals = np.linspace(-2.0, 2.0, 4)
    image = _image(SQUARE, pedestals)
    image[0:100, 80:96] += 1000.0
    mask = np.zeros(SQUARE.shape, np.int32)
    mask[0:100, 80:96] = 1
    config = AmpOffsetConfig(amp_edge_width=12, do_background=False, do_detection=False,
                             amp_edge_max_offset=1e6)
    path = write_exposure(tmp_path / "frame.fits", image, mask, detector=SQUARE)
    flipped = open_exposure(path).isel(y=slice(None, None, -1))
    expected = measure_detector(image, mask, SQUARE, config).pedestals
    # taken by position, the reversed arrays give other amps' pedestals
    wrong = measure_detector(image[::-1], mask[::-1], SQUARE, config).pedestals
    assert np.abs(wrong - expected).max() > 1.0
    got = measure_detector(flipped["image"], flipped["mask"], SQUARE, config).pedestals
    np.testing.assert_array_equal(got, expected)
    # the same through the task's tuple face
    got = AmpOffsetTask(config).run((flipped["image"], flipped["mask"], SQUARE)).pedestals
    np.testing.assert_array_equal(got, expected)


def test_reordered_dataarray_beside_a_plain_array_is_warned(tmp_path, caplog):
    """A labelled image sorted back into the frame beside a plain mask taken by position
    puts a mask taken from the same view on mirrored pixels: each follows its rule, and the
    pair is warned about; in the frame already, or both labelled, it is not."""
    image = _image(SQUARE, np.linspace(-2.0, 2.0, 4))
    mask = np.zeros(SQUARE.shape, np.int32)
    mask[0:100, 80:96] = 1
    path = write_exposure(tmp_path / "pair.fits", image, mask, detector=SQUARE)
    ds = open_exposure(path)
    flipped = ds.isel(x=slice(None, None, -1))
    for pair, which in (((flipped["image"], flipped["mask"].values), "the image"),
                        ((flipped["image"].values, flipped["mask"]), "the mask")):
        for run in (lambda p: measure_detector(*p, SQUARE, EDGES),
                    lambda p: AmpOffsetTask(EDGES).run((*p, SQUARE))):
            caplog.clear()
            run(pair)
            said = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
            assert any(f"{which} is a DataArray put in the detector frame" in m
                       and "taken by position" in m for m in said), said
    caplog.clear()
    expected = measure_detector(image, mask, SQUARE, EDGES).pedestals
    np.testing.assert_array_equal(
        measure_detector(ds["image"], ds["mask"].values, SQUARE, EDGES).pedestals, expected)
    np.testing.assert_array_equal(
        measure_detector(flipped["image"], flipped["mask"], SQUARE, EDGES).pedestals, expected)
    assert not [r for r in caplog.records if "taken by position" in r.getMessage()]


def test_transposed_dataarray_is_put_in_the_frame(square_image):
    da = xr.DataArray(square_image, dims=("y", "x"),
                      coords={"y": np.arange(200), "x": np.arange(200)})
    expected = measure_detector(square_image, None, SQUARE, EDGES).pedestals
    for image in (da, da.T, da.isel(x=slice(None, None, -1)).T):
        np.testing.assert_array_equal(measure_detector(image, None, SQUARE, EDGES).pedestals,
                                      expected)
    # a (x, y) mask DataArray beside a numpy image
    image, mask = _junk_in_a_edge(square_image)
    config = AmpOffsetConfig(amp_edge_width=12, do_background=False, do_detection=False,
                             amp_edge_max_offset=1e6)
    mask_xy = xr.DataArray(mask.T.copy(), dims=("x", "y"))
    np.testing.assert_array_equal(measure_detector(image, mask_xy, SQUARE, config).pedestals,
                                  measure_detector(image, mask, SQUARE, config).pedestals)


def test_wide_transposed_dataarray_and_unlabelled_dims_by_position():
    image = _image(WIDE, [0.0, 2.0])
    expected = measure_detector(image, None, WIDE, EDGES).pedestals
    da = xr.DataArray(image.T.copy(), dims=("x", "y"))  # (200, 100): the detector's (x, y)
    np.testing.assert_array_equal(measure_detector(da, None, WIDE, EDGES).pedestals, expected)
    # without y/x labels, a DataArray is taken as numpy takes its values
    unlabelled = xr.DataArray(image[::-1].copy())
    assert unlabelled.dims == ("dim_0", "dim_1")
    np.testing.assert_array_equal(
        measure_detector(unlabelled, None, WIDE, EDGES).pedestals,
        measure_detector(image[::-1].copy(), None, WIDE, EDGES).pedestals)


# -- 4. to_netcdf after AmpOffsetTask.run -------------------------------------------------------
@pytest.mark.parametrize("config", [EDGES, APPLY_EDGES], ids=["measure", "apply"])
def test_dataset_is_written_to_netcdf_after_the_task(tmp_path, config):
    image = np.random.default_rng(0).normal(1000.0, 1.0, WIDE.shape).astype(np.float32)
    image[:, 100:] += 2.0
    path = write_exposure(tmp_path / "in.fits", image, detector=WIDE, header={"VISIT": 4})
    ds = open_exposure(path)
    result = AmpOffsetTask(config).run(ds)
    ds.to_netcdf(tmp_path / "out.nc")
    with xr.open_dataset(tmp_path / "out.nc") as back:
        meta = json.loads(back.attrs["ampoffset_metadata"])
        if config.do_apply_amp_offset:
            np.testing.assert_array_equal(back["image"].values, ds["image"].values)
    assert meta[SUBTRACTED] is bool(config.do_apply_amp_offset)
    assert meta["LSST ISR AMPOFFSET PEDESTAL B"] == result.pedestals[1]
    assert abs(result.pedestals[1] - result.pedestals[0] - 2.0) < 0.05
    # a second run reads the keys back and replaces them
    AmpOffsetTask(EDGES).run(ds)
    assert json.loads(ds.attrs["ampoffset_metadata"])[SUBTRACTED] is False


# -- 5. boolean masks need a BAD plane ----------------------------------------------------------
def test_boolean_mask_without_a_bad_plane_is_refused():
    image = _image(WIDE, [0.0, 1.0])
    image[:40, 80:96] += 1000.0
    bad = np.zeros(WIDE.shape, bool)
    bad[:40, 80:96] = True
    planes = {"VIGNETTED": 0, "SAT": 1, "CR": 2}
    with pytest.raises(InputError, match=r"detector 'W'.*boolean.*no BAD plane"):
        measure_detector(image, bad, WIDE, EDGES, planes)
    with pytest.raises(InputError, match=r"detector 'W'.*no BAD plane"):
        Exposure(image, bad, None, WIDE, planes)
    with pytest.raises(InputError, match=r"no BAD plane"):
        AmpOffsetTask(EDGES).run((image, bad, WIDE, planes))
    # with a BAD plane the same mask is used (the junk is ignored)
    m = measure_detector(image, bad, WIDE, EDGES, {**planes, "BAD": 5})
    assert abs(m.pedestals[1] - m.pedestals[0] - 1.0) < 0.01
    # nothing masked: nothing to mark, measured as without a mask
    np.testing.assert_array_equal(
        measure_detector(image, np.zeros(WIDE.shape, bool), WIDE, EDGES, planes).pedestals,
        measure_detector(image, None, WIDE, EDGES, planes).pedestals)


def test_opening_an_already_corrected_file_says_so(tmp_path, caplog):
    """measure_visit and the task measured a file corrected in place as any other: a second
    correction was one call away, without a word."""
    import logging
    import shutil

    from ampoffset_dask.io.sections import file_stamp
    from ampoffset_dask.pipeline.detector_job import process_file
    from ampoffset_dask.simulate import simulate_focal_plane

    sim = simulate_focal_plane(tmp_path / "sim", "lsstcam", detectors=["R22_S11"], scale=0.05,
                               seed=2)
    path = str(shutil.copy(sim.paths[0], tmp_path / "c.fits"))
    assert "ampoffset_subtracted" not in open_exposure(path).attrs
    done = process_file(path, None, EDGES, output=path, in_place=True,
                        planned_stamp=file_stamp(path))
    assert done.status == "ok" and done.applied
    with caplog.at_level(logging.WARNING, logger="ampoffset_dask"):
        ds = open_exposure(path)
    assert ds.attrs["ampoffset_subtracted"] == 1
    assert any("already subtracted" in r.getMessage() and path in r.getMessage()
               for r in caplog.records)
    ds.to_netcdf(tmp_path / "c.nc")  # the attribute is netCDF-safe
