"""Region reads inside `map_once` (each HDU mapped once per block), reads straight into the
plane, and the file identity that keys the per-process caches."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest
from astropy.io import fits
from io_helpers import write_stepped_lsstcam

import ampoffset_dask.io.sections as sections
from ampoffset_dask.io.sections import AmpSource, LazyPlane, map_once, read_section

SHAPE = (24, 40)  # (height, width) of the plane: 2 x 2 amps of 12 x 20


def _special_floats(rng, dtype):
    """Random bits (NaN payloads, subnormals, extremes included) as pixels of ``dtype``."""
    dtype = np.dtype(dtype)
    bits = rng.integers(0, 256, 12 * 20 * dtype.itemsize, dtype=np.uint8)
    return bits.view(dtype).reshape(12, 20)


def _file(tmp_path, rng):
    """One HDU per amp in several storage forms, and the values each amp must read as."""
    hdus = [fits.PrimaryHDU()]
    expected = []
    # 1: float32 with random bits (bit-for-bit copies); 2: float64 (rounded to float32);
    # 3: uint16 stored as int16 + BZERO; 4: int16 with BSCALE/BZERO.
    a = _special_floats(rng, ">f4")
    hdus.append(fits.ImageHDU(a))
    expected.append(a.astype(np.float32))
    b = rng.normal(0.0, 1e3, (12, 20))
    hdus.append(fits.ImageHDU(b))
    expected.append(b.astype(np.float32))
    c = rng.integers(0, 65536, (12, 20)).astype(np.uint16)
    hdus.append(fits.ImageHDU(c))
    expected.append(c.astype(np.float32))
    d = fits.ImageHDU(rng.integers(-3000, 3000, (12, 20)).astype(np.int16))
    d.header["BSCALE"], d.header["BZERO"] = 0.5, 100.0
    hdus.append(d)
    expected.append(None)
    path = tmp_path / "amps.fits"
    fits.HDUList(hdus).writeto(path)
    with fits.open(path) as hdul:  # astropy's scaled values, as a reader must give them
        expected[3] = hdul[4].data.astype(np.float32)
    return path, expected


def _plane(path, dtype=np.float32, fill=-7):
    flips = [(False, False), (True, False), (False, True), (True, True)]
    sources = []
    for k, (fx, fy) in enumerate(flips):
        y0, x0 = (k // 2) * 12, (k % 2) * 20
        sources.append(AmpSource(f"A{k}", dest=(y0, y0 + 12, x0, x0 + 20), hdu=k + 1,
                                 src=(0, 12, 0, 20), flip_x=fx, flip_y=fy))
    return LazyPlane(path, SHAPE, dtype, tuple(sources), fill=fill)


def _assembled(expected):
    full = np.empty(SHAPE, np.float32)
    for k, amp in enumerate(expected):
        fx, fy = k % 2 == 1, k >= 2
        y0, x0 = (k // 2) * 12, (k % 2) * 20
        full[y0:y0 + 12, x0:x0 + 20] = amp[::-1 if fy else 1, ::-1 if fx else 1]
    return full


REQUESTS = [
    (slice(0, 24), slice(0, 40)),    # every amp
    (slice(2, 10), slice(3, 9)),     # inside one amp (no fill)
    (slice(0, 12), slice(20, 40)),   # exactly one amp
    (slice(5, 20), slice(15, 25)),   # across four amps
    (slice(13, 14), slice(0, 40)),   # one row of two amps
    (slice(11, 13), slice(38, 40)),  # a corner of two amps
]


def test_reads_are_bit_for_bit_in_and_out_of_a_block(tmp_path):
    """Every request, inside a block or not, gives the bits of the stored pixels (float32
    NaN payloads and subnormals untouched), float64 rounded, scaled HDUs as astropy scales
    them, flips applied."""
    path, expected = _file(tmp_path, np.random.default_rng(3))
    full = _assembled(expected)
    plane = _plane(path)
    for rows, cols in REQUESTS:
        outside = plane[rows, cols]
        with map_once():
            inside = plane[rows, cols]
        assert outside.dtype == inside.dtype == np.float32
        assert outside.tobytes() == full[rows, cols].tobytes()
        assert inside.tobytes() == outside.tobytes()


def test_regions_outside_every_amp_keep_the_fill(tmp_path):
    path, expected = _file(tmp_path, np.random.default_rng(4))
    src = AmpSource("A", dest=(0, 12, 0, 20), hdu=2, src=(0, 12, 0, 20))
    plane = LazyPlane(path, SHAPE, np.float32, (src,), fill=-7)
    with map_once():
        got = plane[6:18, 10:30]
    np.testing.assert_array_equal(got[:6, :10], expected[1][6:12, 10:20])
    assert (got[6:, :] == -7).all() and (got[:, 10:] == -7).all()


def test_read_section_into_out(tmp_path):
    """``out`` receives the region, cast as assignment casts (into float64 or int32), for
    unscaled, scaled and tile-compressed HDUs alike, and is returned."""
    path, _ = _file(tmp_path, np.random.default_rng(5))
    rice = tmp_path / "rice.fits"
    ints = np.random.default_rng(8).integers(-500, 500, (12, 20)).astype(np.int32)
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(ints, compression_type="RICE_1",
                                                       tile_shape=(4, 8))]).writeto(rice)
    region = (slice(2, 7), slice(4, 11))
    for p, hdu in ((path, 2), (path, 3), (path, 4), (rice, 1)):
        for dtype in (np.float64, np.int32):
            out = np.zeros((5, 7), dtype)
            got = read_section(p, hdu, region, out=out)
            assert got is out
            np.testing.assert_array_equal(out, read_section(p, hdu, region).astype(dtype))
    sections.close_cached_files()


def test_one_mapping_per_hdu_per_block(tmp_path, monkeypatch):
    """Inside a block each HDU is mapped once whatever the number of reads (outside, every
    read maps); nested blocks share the outer one's mappings, which end with it; another
    thread has its own."""
    path, _ = _file(tmp_path, np.random.default_rng(6))
    maps = []
    original = sections._map

    def spy(p, layout):
        maps.append((threading.get_ident(), layout.offset))
        return original(p, layout)

    monkeypatch.setattr(sections, "_map", spy)
    plane = _plane(path)
    for rows, cols in REQUESTS:
        plane[rows, cols]
    outside = len(maps)
    assert outside >= 2 * len(REQUESTS)
    maps.clear()
    with map_once():
        for rows, cols in REQUESTS * 3:
            plane[rows, cols]
        with map_once():
            plane[:, :]
        plane[:, :]  # the inner block's end kept the outer mappings
        assert len(maps) == 4  # one per HDU
        other = []
        worker = threading.Thread(target=lambda: other.append(plane[:, :]))
        worker.start()
        worker.join()
        assert len(maps) == 8 and len({t for t, _ in maps}) == 2
    assert sections._MAPPED.kept is None
    maps.clear()
    plane[:, :]
    assert len(maps) == 4  # after the block: mapped anew


def test_a_file_replaced_between_blocks_is_read_afresh(tmp_path):
    path = tmp_path / "x.fits"
    src = AmpSource("A", dest=(0, 4, 0, 5), hdu=0, src=(0, 4, 0, 5))
    plane = LazyPlane(path, (4, 5), np.float32, (src,))
    fits.PrimaryHDU(np.full((4, 5), 1.0, np.float32)).writeto(path)
    with map_once():
        assert (plane[:, :] == 1).all()
    new = tmp_path / "new.fits"
    fits.PrimaryHDU(np.full((4, 5), 2.0, np.float32)).writeto(new)
    os.replace(new, path)
    with map_once():
        assert (plane[:, :] == 2).all()
    assert (plane[1:3, 1:3] == 2).all()


def test_file_key_is_the_file_not_the_path(tmp_path, monkeypatch):
    """A symlink and a relative path share the target's cache entries; a replaced file gets
    a new one."""
    path = tmp_path / "x.fits"
    fits.PrimaryHDU(np.zeros((4, 5), np.float32)).writeto(path)
    link = tmp_path / "link.fits"
    link.symlink_to(path)
    monkeypatch.chdir(tmp_path)
    key = sections._file_key(os.stat(path))
    assert sections._file_key(os.stat(link)) == key
    assert sections._file_key(os.stat("x.fits")) == key
    new = tmp_path / "new.fits"
    fits.PrimaryHDU(np.ones((4, 5), np.float32)).writeto(new)
    os.replace(new, path)
    assert sections._file_key(os.stat(path)) != key


@pytest.mark.parametrize("edges_only", [True, False])
def test_detector_job_maps_each_plane_once(tmp_path, monkeypatch, edges_only):
    """An edges-only detector job maps image and mask once each (~90 strip reads); the
    default job reads whole planes and maps nothing. Same pedestals either way as from the
    pixels in memory."""
    from ampoffset_dask import AmpOffsetConfig, measure_detector
    from ampoffset_dask.pipeline.detector_job import process_file

    path, image, det = write_stepped_lsstcam(tmp_path / "itl.fits", "R02_S02", visit=9,
                                             step=0.1)
    config = (AmpOffsetConfig(do_background=False, do_detection=False) if edges_only
              else AmpOffsetConfig())
    maps = []
    original = sections._map
    monkeypatch.setattr(sections, "_map", lambda p, layout: maps.append(layout.offset)
                        or original(p, layout))
    res = process_file(path, det, config)
    assert res.status == "ok", res.error
    assert len(maps) == (2 if edges_only else 0)
    expected = measure_detector(image, None, det, config)
    np.testing.assert_array_equal(res.pedestals, expected.pedestals)
