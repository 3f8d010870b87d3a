"""Region reads and lazy planes."""

from __future__ import annotations

import gzip
import pickle

import numpy as np
import pytest
from astropy.io import fits

from ampoffset_dask import InputError
from ampoffset_dask.io.sections import AmpSource, LazyPlane, close_cached_files, read_section


@pytest.fixture
def image():
    return np.arange(20 * 30, dtype=np.float32).reshape(20, 30)


@pytest.mark.parametrize("form", ["plain", "gzip-wrapped", "rice", "gzip-tiles", "uint16"])
def test_read_section_all_storage_forms(tmp_path, image, form):
    path = tmp_path / "x.fits"
    expected = image
    if form == "plain":
        fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(image)]).writeto(path)
    elif form == "gzip-wrapped":
        plain = tmp_path / "p.fits"
        fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(image)]).writeto(plain)
        path = tmp_path / "x.fits.gz"
        path.write_bytes(gzip.compress(plain.read_bytes()))
    elif form == "rice":
        ints = image.astype(np.int32)
        fits.HDUList([fits.PrimaryHDU(),
                      fits.CompImageHDU(ints, compression_type="RICE_1",
                                        tile_shape=(4, 30))]).writeto(path)
        expected = ints
    elif form == "gzip-tiles":
        fits.HDUList([fits.PrimaryHDU(),
                      fits.CompImageHDU(image, compression_type="GZIP_2", quantize_level=0.0,
                                        tile_shape=(1, 30))]).writeto(path)
    else:
        expected = (image.astype(np.int64) * 100).astype(np.uint16)
        fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(expected)]).writeto(path)
    for rows, cols in ((slice(0, 20), slice(0, 30)), (slice(3, 7), slice(25, 30)),
                       (slice(0, 20), slice(10, 12)), (slice(19, 20), slice(0, 1))):
        out = read_section(path, 1, (rows, cols))
        assert out.dtype.isnative
        np.testing.assert_array_equal(out, expected[rows, cols])
    close_cached_files()


def test_read_section_errors(tmp_path, image):
    path = tmp_path / "x.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(image)]).writeto(path)
    with pytest.raises(InputError, match=r"x.fits: cannot read HDU 5"):
        read_section(path, 5, (slice(0, 2), slice(0, 2)))


def test_lazy_plane_flips_fill_and_pickle(tmp_path, image):
    path = tmp_path / "x.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(image)]).writeto(path)
    # one amp: rows 0-9, cols 0-14 of the HDU, flipped both ways into the left half
    src = AmpSource("A", dest=(0, 10, 0, 15), hdu=1, src=(0, 10, 0, 15), flip_x=True,
                    flip_y=True)
    plane = LazyPlane(path, (10, 20), np.float32, (src,), fill=-1)
    full = plane[:, :]
    np.testing.assert_array_equal(full[:, :15], image[:10, :15][::-1, ::-1])
    assert (full[:, 15:] == -1).all()
    np.testing.assert_array_equal(plane[2:5, 3:8], full[2:5, 3:8])
    assert plane[4, 6] == full[4, 6] and plane[:, 2].shape == (10,)
    back = pickle.loads(pickle.dumps(plane))
    np.testing.assert_array_equal(back[:, :], full)
    assert np.asarray(plane).shape == (10, 20)
    with pytest.raises(IndexError):
        plane[::2, :]


@pytest.mark.parametrize("dtype", [">f4", ">f8", ">i2", ">i4", ">i8", "u1"])
def test_full_reads_move_every_bit(tmp_path, dtype):
    """Whole-plane reads swap each pixel's bytes into native order unchanged (NaN payloads,
    signed zeros, subnormals, extremes), across many read blocks and a partial last one."""
    from pathlib import Path

    from ampoffset_dask.io.sections import _BLOCK, _read_full

    rng = np.random.default_rng(7)
    size = np.dtype(dtype).itemsize
    n = 3 * _BLOCK // size + 37
    bits = rng.integers(0, 256, n * size, dtype=np.uint8)
    data = bits.view(np.dtype(dtype)).reshape(1, n)
    if data.dtype.kind == "f":
        word = np.dtype(f">u{size}")
        specials = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 5e-324 if size == 8 else 1e-45,
                             np.finfo(data.dtype).max], dtype=data.dtype)
        data[0, :specials.size] = specials
        data.view(word)[0, -1] = 0x7FF0000000000123 if size == 8 else 0x7F800123  # a NaN payload
    fits.PrimaryHDU(data).writeto(tmp_path / "plane.fits")
    got, finite = _read_full(Path(tmp_path / "plane.fits"), 0, data.dtype.newbyteorder("="),
                             check_finite=True)
    assert got.dtype.isnative and got.shape == data.shape
    assert got.tobytes() == data.astype(data.dtype.newbyteorder("=")).tobytes()
    assert finite is (data.dtype.kind != "f")  # integers are finite; the floats hold NaN


def test_threads_reading_more_compressed_files_than_are_kept_open(tmp_path):
    # a file evicted from the open-file cache between a reader finding it and taking its
    # lock was closed under it: "HDU not found ... the file was closed" for valid files
    from concurrent.futures import ThreadPoolExecutor

    from ampoffset_dask import AmpOffsetConfig, measure_detector
    from ampoffset_dask.geometry import detector_from_boxes
    from ampoffset_dask.io.fits import open_lazy, read_exposure, write_exposure

    det = detector_from_boxes("D", 200, 100, [(f"A{j}{i}", i * 50, j * 50, 50, 50)
                                              for j in range(2) for i in range(4)])
    rng = np.random.default_rng(0)
    files = []
    for k in range(12):
        image = rng.normal(1000, 5, det.shape).astype(np.float32)
        files.append(write_exposure(tmp_path / f"f{k}.fits", image, detector=det,
                                    header={"DETNAME": "D", "VISIT": k}, compress="gzip"))
    config = AmpOffsetConfig(do_background=False, do_detection=False, amp_edge_width=9)
    want = {p: measure_detector(read_exposure(p), config=config).pedestals for p in files}

    def one(path):
        return np.array_equal(measure_detector(open_lazy(path), config=config).pedestals,
                              want[path])

    with ThreadPoolExecutor(8) as pool:
        assert all(pool.map(one, files * 2))
