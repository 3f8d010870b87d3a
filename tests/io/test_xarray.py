"""Lazy xarray views: headers-only opening, one chunk per amp, picklable graphs, strip reads."""

from __future__ import annotations

import json
import pickle

import cloudpickle
import dask
import numpy as np
import pytest
import xarray as xr
from io_helpers import REAL, write_stepped_lsstcam

from ampoffset_dask import AmpOffsetConfig, InputError, measure_detector
from ampoffset_dask.cameras import get_camera
from ampoffset_dask.geometry import Detector
from ampoffset_dask.io.fits import read_exposure, write_exposure
from ampoffset_dask.io.xarray import (
    amp_chunks,
    dataset_detector,
    dataset_mask_planes,
    open_exposure,
    open_visit,
)
from ampoffset_dask.masks import DEFAULT_MASK_PLANES


def _small_detector(name="D", det_id=None) -> Detector:
    return Detector.from_dict({
        "name": name, "id": det_id, "width": 40, "height": 30,
        "amplifiers": [{"name": f"A{iy}{ix}", "x0": ix * 10, "y0": iy * 15, "width": 10,
                        "height": 15} for iy in range(2) for ix in range(4)],
    })


def _write_small(path, visit=3, name="D", det_id=None, seed=0):
    det = _small_detector(name, det_id)
    rng = np.random.default_rng(seed)
    image = rng.normal(100, 1, det.shape).astype(np.float32)
    mask = rng.integers(0, 3, det.shape).astype(np.int32)
    variance = rng.uniform(1, 2, det.shape).astype(np.float32)
    write_exposure(path, image, mask, variance, detector=det, header={"VISIT": visit},
                   mask_planes={"BAD": 0, "SAT": 1, "NO_DATA": 6})
    return det, image, mask, variance


def test_open_reads_no_pixels_and_chunks_per_amp(tmp_path, pixel_counter):
    path = tmp_path / "d.fits"
    det, image, mask, variance = _write_small(path)
    ds = open_exposure(path)
    assert pixel_counter["calls"] == 0  # headers only
    assert dataset_detector(ds) == det
    assert dataset_mask_planes(ds) == {"BAD": 0, "SAT": 1, "NO_DATA": 6}
    assert json.loads(ds.attrs["geometry"]) == det.to_dict()
    assert (ds.attrs["visit"], ds.attrs["detector"], ds.attrs["kind"]) == (3, "D", "exposure")
    json.dumps(ds.attrs)  # JSON-safe
    assert ds.image.dims == ("y", "x") and ds.visit.item() == 3 and ds.detector.item() == "D"
    assert ds.image.data.chunks == ((15, 15), (10, 10, 10, 10)) == amp_chunks(det)
    assert ds.image.data.npartitions == len(det)
    assert ds.image.encoding["preferred_chunks"] == {"y": (15, 15), "x": (10, 10, 10, 10)}
    assert pixel_counter["calls"] == 0
    np.testing.assert_array_equal(ds.image.values, image)
    np.testing.assert_array_equal(ds.mask.values, mask)
    np.testing.assert_array_equal(ds.variance.values, variance)
    assert ds.image.dtype == np.float32 and ds.mask.dtype == np.int32


def test_amp_chunks_of_lsstcam_detectors():
    cam = get_camera("lsstcam")
    assert amp_chunks(cam["R22_S11"]) == ((2002, 2002), (512,) * 8)
    assert amp_chunks(cam["R02_S02"]) == ((2000, 2000), (509,) * 8)


def test_graph_pickles_and_computes_in_other_processes(tmp_path, shared_scheduler):
    path = tmp_path / "d.fits"
    _, image, _, _ = _write_small(path)
    ds = open_exposure(path)
    graph = dict(ds.image.data.__dask_graph__())
    blob = pickle.dumps(graph)
    assert len(blob) < 20_000  # paths and boxes, no pixels
    back = pickle.loads(blob)
    assert len(back) == len(graph)
    ds2 = cloudpickle.loads(cloudpickle.dumps(ds))
    np.testing.assert_array_equal(ds2.image.values, image)
    # on the session cluster's worker processes (the graph travels pickled)
    from distributed import Client

    with Client(shared_scheduler) as client:
        strip = ds.image[:, 8:12].compute(scheduler=client)
    np.testing.assert_array_equal(strip.values, image[:, 8:12])


def test_slicing_reads_only_the_slice(tmp_path, pixel_counter):
    path = tmp_path / "d.fits"
    _, image, _, _ = _write_small(path)
    ds = open_exposure(path)
    strip = np.asarray(ds.image[0:30, 9:11])
    np.testing.assert_array_equal(strip, image[:, 9:11])
    assert pixel_counter["pixels"] == 60


def test_edges_only_measurement_reads_a_quarter_of_a_full_size_e2v(tmp_path, pixel_counter):
    """Background and detection off: measuring a lazy full-size LSSTCam detector reads only
    the edge strips of image and mask."""
    path, image, _ = write_stepped_lsstcam(tmp_path / "e2v.fits", "R22_S11", visit=1,
                                           step=0.5, noise=5.0, seed=5)
    config = AmpOffsetConfig(do_background=False, do_detection=False)
    ds = open_exposure(path)
    lazy = measure_detector(ds, None, None, config)
    read = pixel_counter["pixels"]
    total = 2 * image.size  # image and mask planes
    assert 0 < read <= 0.26 * total, read / total
    eager = read_exposure(path)
    ref = measure_detector(eager.image, eager.mask, eager.detector, config)
    np.testing.assert_array_equal(lazy.pedestals, ref.pedestals)


def test_lazy_raw_assembly_matches_eager(tmp_path, tiny_camera, pixel_counter):
    from test_fits import _write_tiny_raw

    path = tmp_path / "tiny_raw.fits"
    truth = _write_tiny_raw(path, tiny_camera)
    ds = open_exposure(path, camera=tiny_camera, overscan=True)
    assert ds.attrs["kind"] == "raw" and ds.attrs["detector_id"] == 7
    np.testing.assert_array_equal(ds.image.values, truth.astype(np.float32))
    assert not ds.mask.values.any()
    np.testing.assert_array_equal(ds.image[2:6, 5:7].values, truth[2:6, 5:7])


def test_real_lsst_raw_lazily():
    ds = open_exposure(REAL / "lsstcam_bot_spots" / "itl_spot.fits.gz", detector="R02_S02")
    from astropy.io import fits

    expected = fits.getdata(REAL / "lsstcam_bot_spots" / "itl_expected_assembled.fits.gz")
    np.testing.assert_array_equal(ds.image[1990:2010, :].values, expected[1990:2010, :])


def test_open_visit_tree(tmp_path):
    _write_small(tmp_path / "a.fits", visit=9, name="D1", det_id=1, seed=1)
    _, image2, _, _ = _write_small(tmp_path / "b.fits", visit=9, name="D2", det_id=2, seed=2)
    tree = open_visit([tmp_path / "a.fits", tmp_path / "b.fits"])
    assert isinstance(tree, xr.DataTree)
    assert set(tree.children) == {"D1", "D2"}
    assert tree.attrs["visit"] == 9 and tree.attrs["detectors"] == ["D1", "D2"]
    np.testing.assert_array_equal(tree["D2"].to_dataset().image.values, image2)
    assert set(open_visit(tmp_path).children) == {"D1", "D2"}  # a folder works too
    _write_small(tmp_path / "c.fits", visit=10, name="D3")
    with pytest.raises(InputError, match="several visits"):
        open_visit(tmp_path)
    with pytest.raises(InputError, match="'D1' is also in"):
        open_visit([tmp_path / "a.fits", tmp_path / "a.fits"])


def test_xarray_backend_entry_point(tmp_path):
    path = tmp_path / "d.fits"
    det, image, _, _ = _write_small(path)
    ds = xr.open_dataset(path, engine="ampoffset")
    assert isinstance(ds.image.data, dask.array.Array)
    assert dataset_detector(ds) == det
    np.testing.assert_array_equal(ds.image.values, image)
    slim = xr.open_dataset(path, engine="ampoffset", drop_variables=["variance"])
    assert "variance" not in slim and "mask" in slim


def test_file_without_mask_gets_zero_mask_and_default_planes(tmp_path):
    path = tmp_path / "img.fits"
    from astropy.io import fits

    fits.PrimaryHDU(np.ones((30, 40), np.float32)).writeto(path)
    ds = open_exposure(path, detector=_small_detector())
    assert ds.attrs["kind"] == "image"
    assert not ds.mask.values.any() and not ds.variance.values.any()
    assert dataset_mask_planes(ds) == DEFAULT_MASK_PLANES


def test_bad_input_is_reported_at_open(tmp_path):
    path = tmp_path / "bad.fits"
    path.write_text("not fits" * 100)
    with pytest.raises(InputError, match=r"bad.fits: not a readable FITS file"):
        open_exposure(path)


@pytest.mark.parametrize("tile", [(1, 40), (8, 8)])
def test_lazy_strips_of_tile_compressed_files(tmp_path, tile):
    """Row tiles (LSST's choice) and square tiles give the same strips as an eager read."""
    from astropy.io import fits

    det = _small_detector()
    rng = np.random.default_rng(3)
    image = rng.normal(0, 1, det.shape).astype(np.float32)
    path = tmp_path / "c.fits"
    fits.HDUList([
        fits.PrimaryHDU(),
        fits.CompImageHDU(image, name="IMAGE", compression_type="GZIP_2", tile_shape=tile,
                          quantize_level=0.0),
    ]).writeto(path)
    ds = open_exposure(path, detector=det)
    for rows, cols in ((slice(0, 15), slice(7, 10)), (slice(12, 15), slice(0, 40)),
                       (slice(0, 30), slice(18, 22)), (slice(3, 9), slice(10, 13))):
        np.testing.assert_array_equal(ds.image[rows, cols].values, image[rows, cols])
    np.testing.assert_array_equal(ds.image.values, image)


def test_datasets_and_visits_write_to_netcdf_with_unknown_identity(tmp_path):
    # A None attribute (an unknown visit or detector id) or a boolean one made to_netcdf fail.
    det = _small_detector("D7")
    image = np.random.default_rng(2).normal(100, 1, det.shape).astype(np.float32)
    path = write_exposure(tmp_path / "d.fits", image, detector=det)  # no VISIT, no id
    ds = open_exposure(path)
    assert not {"visit", "detector_id", "camera"} & set(ds.attrs)
    assert ds.attrs["overscan_subtracted"] == 0
    for key, value in ds.attrs.items():  # what netCDF4 and JSON store
        assert type(value) in (str, int), (key, value)
    ds.to_netcdf(tmp_path / "d.nc", engine="scipy")
    back = xr.open_dataset(tmp_path / "d.nc", engine="scipy")
    np.testing.assert_array_equal(back["image"].values, image)
    assert back.attrs["geometry"] == ds.attrs["geometry"]
    assert measure_detector(back, config=AmpOffsetConfig(
        amp_edge_width=2, amp_edge_inset=1, do_background=False,
        do_detection=False)).pedestals.shape == (len(det),)
    back.close()

    tree = open_visit([path])
    assert tree.attrs == {"detectors": ["D7"]}


def test_a_raw_dataset_records_its_overscan_as_an_integer():
    ds = open_exposure(REAL / "lsstcam_bot_spots" / "itl_spot.fits.gz")
    assert ds.attrs["overscan"] == "per-row" and ds.attrs["overscan_subtracted"] == 1
    assert ds.attrs["detector_id"] == 11
