"""Datasets reordered by xarray (transposed, flipped, sorted, rolled) are measured and
corrected in the detector frame, and measuring leaves a Dataset untouched."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ampoffset_dask import (
    AmpOffsetConfig,
    AmpOffsetTask,
    GeometryError,
    measure_detector,
    open_exposure,
)
from ampoffset_dask.geometry import detector_from_boxes
from ampoffset_dask.io.fits import write_exposure

# A square detector, so that a transposed Dataset has the detector's shape.
DET = detector_from_boxes("SQ", 200, 200, [("A", 0, 0, 100, 100), ("B", 100, 0, 100, 100),
                                           ("C", 0, 100, 100, 100), ("D", 100, 100, 100, 100)])
EDGES = AmpOffsetConfig(amp_edge_width=16, do_background=False, do_detection=False)
REORDERINGS = {
    "transposed": lambda ds: ds.transpose("x", "y"),
    "x flipped": lambda ds: ds.isel(x=slice(None, None, -1)),
    "y flipped": lambda ds: ds.isel(y=slice(None, None, -1)),
    "sorted descending": lambda ds: ds.sortby("y", ascending=False),
    "rolled with coordinates": lambda ds: ds.roll(x=30, y=7, roll_coords=True),
    "all at once": lambda ds: ds.isel(x=slice(None, None, -1)).roll(y=50, roll_coords=True)
    .transpose("x", "y"),
}


@pytest.fixture(scope="module")
def square(tmp_path_factory):
    image = np.random.default_rng(1).normal(1000.0, 1.0, DET.shape).astype(np.float32)
    image[:100, 100:] += 4.0  # amp B is high
    path = write_exposure(tmp_path_factory.mktemp("frame") / "square.fits", image,
                          detector=DET, header={"VISIT": 7})
    return path, image


@pytest.mark.parametrize("how", sorted(REORDERINGS))
def test_a_reordered_dataset_is_measured_and_corrected_in_the_detector_frame(square, how):
    path, image = square
    expected = measure_detector(image, None, DET, EDGES).pedestals
    assert expected[1] - expected[0] > 3.5  # B is the high amp
    reorder = REORDERINGS[how]
    ds = reorder(open_exposure(path))
    np.testing.assert_array_equal(measure_detector(ds, config=EDGES).pedestals, expected)

    # Applying corrects each amp by its own pedestal and keeps the Dataset's order.
    dims, coords = ds["image"].dims, {d: ds[d].values.copy() for d in ("y", "x")}
    config = AmpOffsetConfig(amp_edge_width=16, do_background=False, do_detection=False,
                             do_apply_amp_offset=True)
    result = AmpOffsetTask(config).run(ds)
    np.testing.assert_array_equal(result.pedestals, expected)
    corrected = open_exposure(path)
    corrected["image"] = corrected["image"].copy(
        data=image - np.repeat(np.repeat(expected.reshape(2, 2), 100, 0), 100, 1)
        .astype(np.float32))
    want = reorder(corrected)["image"]
    assert ds["image"].dims == dims
    for d in ("y", "x"):
        np.testing.assert_array_equal(ds[d].values, coords[d])
    np.testing.assert_allclose(ds["image"].values, want.values, rtol=0, atol=1e-3)


def test_coordinates_out_of_the_detector_frame_are_refused(square):
    path, _ = square
    ds = open_exposure(path).assign_coords(x=np.arange(200)[::-1] * 0.5)
    with pytest.raises(GeometryError, match=r"'x' coordinate does not increase"):
        measure_detector(ds, config=EDGES)
    # Increasing labels of any kind leave the pixels in order.
    relabelled = open_exposure(path).assign_coords(x=np.arange(200) * 0.5 + 10)
    np.testing.assert_array_equal(measure_detector(relabelled, config=EDGES).pedestals,
                                  measure_detector(open_exposure(path), config=EDGES).pedestals)


def test_measuring_leaves_the_dataset_untouched_and_applying_keeps_float64(square):
    path, image = square
    ds = open_exposure(path)
    attrs = dict(ds.attrs)
    measure_detector(ds, config=EDGES)
    assert ds.attrs == attrs

    ds["image"] = ds["image"].astype(np.float64)
    config = AmpOffsetConfig(amp_edge_width=16, do_background=False, do_detection=False,
                             do_apply_amp_offset=True)
    result = AmpOffsetTask(config).run(ds)
    assert ds["image"].dtype == np.float64
    meta = json.loads(ds.attrs["ampoffset_metadata"])
    assert meta["LSST ISR AMPOFFSET PEDESTAL SUBTRACTED"] is True
    offsets = np.repeat(np.repeat(result.pedestals.reshape(2, 2), 100, 0), 100, 1)
    np.testing.assert_array_equal(ds["image"].values, image.astype(np.float64) - offsets)
