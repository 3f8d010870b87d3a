"""Damaged files say what is wrong with them: a visit keyword that is not a number, a file cut
inside a header, a data size larger than the file, a tile that does not decompress."""

from __future__ import annotations

import io
import logging
import shutil
import warnings

import numpy as np
import pytest
from astropy.io import fits

from ampoffset_dask import AmpOffsetConfig, InputError
from ampoffset_dask.io.fits import inspect_file
from ampoffset_dask.pipeline.detector_job import process_file
from ampoffset_dask.simulate import simulate_focal_plane

EDGES = AmpOffsetConfig(do_background=False, do_detection=False)


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    """One small simulated LSSTCam exposure file (primary, IMAGE, MASK, VARIANCE)."""
    sim = simulate_focal_plane(tmp_path_factory.mktemp("sim"), "lsstcam",
                               detectors=["R22_S11"], scale=0.05, seed=5)
    return sim.paths[0]


# -- a: a visit keyword that is not an integer ------------------------------------------------
@pytest.mark.parametrize("value", [1.5, "abc"])
def test_a_visit_that_is_not_an_integer_is_named(simulated, tmp_path, value):
    path = shutil.copy(simulated, tmp_path / "v.fits")
    fits.setval(path, "VISIT", value=value)
    res = process_file(path)
    assert res.status == "failed"
    assert f"{path}: header keyword VISIT = {value!r} is not an integer" in res.error
    assert "no visit number" not in res.error
    info = inspect_file(path)
    assert info.visit is None
    assert info.visit_problem == (f"header keyword VISIT = {value!r} is not an integer "
                                  "(a visit number)")


def test_a_header_without_a_visit_says_so(simulated, tmp_path):
    path = shutil.copy(simulated, tmp_path / "v.fits")
    fits.delval(path, "VISIT")
    info = inspect_file(path)
    assert info.visit is None and info.visit_problem == ""
    assert "no visit number in the header" in process_file(path).error


# -- b: a raw cut inside the header of one of its segments -----------------------------------
def _raw(path) -> None:
    """An LSSTCam-style raw: 16 ``SegmentNN`` image HDUs (headers of two blocks), identity in
    the primary header."""
    primary = fits.PrimaryHDU()
    primary.header.update({"INSTRUME": "LSSTCam", "RAFTBAY": "R22", "CCDSLOT": "S11",
                           "DAYOBS": 20240101, "SEQNUM": 7})
    segments = [fits.ImageHDU(np.full((20, 30), 1000 + k, np.int32),
                              name=f"Segment{k // 8}{k % 8}") for k in range(16)]
    for segment in segments:
        segment.header.update({f"KEY{i}": i for i in range(40)})
    fits.HDUList([primary, *segments]).writeto(path)


@pytest.mark.filterwarnings("ignore::astropy.io.fits.verify.VerifyWarning")
@pytest.mark.filterwarnings("ignore::astropy.utils.exceptions.AstropyUserWarning")
@pytest.mark.parametrize("into", [1, 400, 1440, 2880, 5759], ids=lambda n: f"{n}B")
def test_a_raw_cut_inside_a_header_is_truncated(tmp_path, into):
    """Cut ``into`` bytes into the header of HDU 9 (at its second block: astropy raises; one
    byte short of its end: the END card is there, its block is not whole), the raw is
    truncated, not a raw missing segments."""
    good = tmp_path / "raw.fits"
    _raw(good)
    with fits.open(good) as hdul:
        start = hdul.fileinfo(9)["hdrLoc"]
        assert hdul.fileinfo(9)["datLoc"] - start == 5760
    cut = tmp_path / "cut.fits"
    cut.write_bytes(good.read_bytes()[:start + into])
    with pytest.raises(InputError, match=r"cut.fits: truncated FITS file \(HDU 9 header\)$"):
        inspect_file(cut)
    res = process_file(cut, camera="lsstcam")
    assert res.status == "failed" and "truncated FITS file (HDU 9 header)" in res.error


@pytest.mark.filterwarnings("ignore::astropy.io.fits.verify.VerifyWarning")
@pytest.mark.filterwarnings("ignore::astropy.utils.exceptions.AstropyUserWarning")
@pytest.mark.parametrize("tail", [b"\0" * 2880, b"garbage" * 50], ids=["padding", "garbage"])
def test_bytes_after_the_last_hdu_are_still_ignored(tmp_path, tail):
    good = tmp_path / "raw.fits"
    _raw(good)
    longer = tmp_path / "longer.fits"
    longer.write_bytes(good.read_bytes() + tail)
    assert len(inspect_file(longer).segments) == 16


# -- c: a header declaring more data than the file has ---------------------------------------
@pytest.mark.filterwarnings("ignore::astropy.io.fits.verify.VerifyWarning")
def test_a_declared_data_size_larger_than_the_file_is_truncated(simulated, tmp_path):
    """NAXIS1 corrupted to a size astropy gives up on (it silently ends the HDU list before
    that HDU): truncated, not 'no 2-D image HDU'."""
    data = bytearray(simulated.read_bytes())
    with fits.open(simulated) as hdul:
        start = hdul.fileinfo(1)["hdrLoc"]
    at = data.index(b"NAXIS1  =", start)
    data[at:at + 30] = f"NAXIS1  = {2**40:20d}".encode()
    path = tmp_path / "naxis.fits"
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match=r"naxis.fits: truncated FITS file: HDU 1 needs \d+ "
                                         r"data bytes, the file has \d+ after its header"):
        inspect_file(path)


# -- d: a tile that does not decompress ------------------------------------------------------
def _rice_with_a_bad_tile(source, path) -> None:
    with fits.open(source) as h, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        packed = fits.HDUList([fits.PrimaryHDU(header=h[0].header)] + [
            fits.CompImageHDU(x.data, header=x.header, compression_type="RICE_1")
            for x in h[1:]])
        buffer = io.BytesIO()
        packed.writeto(buffer)
    data = bytearray(buffer.getvalue())
    with fits.open(io.BytesIO(bytes(data))) as hdul:
        where = hdul.fileinfo(1)["datLoc"] + hdul.fileinfo(1)["datSpan"] // 2
    data[where:where + 16] = b"\xff" * 16  # inside the IMAGE's compressed tiles
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("config", [None, EDGES], ids=["full", "edges"])
def test_a_tile_that_does_not_decompress_names_the_file_and_hdu(simulated, tmp_path, caplog,
                                                                config):
    path = tmp_path / "rice.fits"
    _rice_with_a_bad_tile(simulated, path)
    with caplog.at_level(logging.WARNING):
        res = process_file(path, config=config)
    assert res.status == "failed"
    assert res.error.startswith(f"InputError: {path}: HDU 1: cannot decompress its tiles (")
    assert "unexpected error" not in caplog.text and "Traceback" not in caplog.text


def test_a_cube_in_the_image_extension_is_named_as_one(tmp_path):
    """An IMAGE extension holding a (2, 200, 640) cube beside a 2-D MASK was reported as a
    MASK of another shape than "the IMAGE shape (2, 200)"."""
    path = tmp_path / "cube.fits"
    fits.HDUList([fits.PrimaryHDU(),
                  fits.ImageHDU(np.zeros((2, 20, 64), np.float32), name="IMAGE"),
                  fits.ImageHDU(np.zeros((20, 64), np.int32), name="MASK")]).writeto(path)
    with pytest.raises(InputError, match=r"cube.fits: the image HDU 1 is 3-D \(shape "
                                         r"\(2, 20, 64\)\); a detector image is 2-D"):
        inspect_file(path)
