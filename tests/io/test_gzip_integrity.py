"""A damaged ``.fits.gz`` is an error, never garbage pixels: the stream is read to its end,
where gzip checks the content's CRC and length."""

from __future__ import annotations

import gzip
import io

import numpy as np
import pytest
from astropy.io import fits

from ampoffset_dask import InputError
from ampoffset_dask.geometry import Detector
from ampoffset_dask.io.fits import inspect_file, read_exposure


def _detector() -> Detector:
    return Detector.from_dict({
        "name": "D", "width": 64, "height": 48,
        "amplifiers": [{"name": f"A{i}", "x0": 32 * i, "y0": 0, "width": 32, "height": 48}
                       for i in range(2)],
    })


def _fits_bytes(trailing: bytes = b"") -> tuple[bytes, np.ndarray]:
    image = np.random.default_rng(3).normal(100, 5, (48, 64)).astype(np.float32)
    buf = io.BytesIO()
    fits.PrimaryHDU(image).writeto(buf)
    return buf.getvalue() + trailing, image


def test_trailing_bytes_after_the_last_hdu_are_tolerated(tmp_path):
    content, image = _fits_bytes(b"\0" * 2880 * 3)
    path = tmp_path / "padded.fits.gz"
    path.write_bytes(gzip.compress(content))
    np.testing.assert_array_equal(read_exposure(path, detector=_detector()).image, image)


@pytest.mark.parametrize("damage", ["crc", "length"])
def test_a_wrong_checksum_after_the_last_hdu_is_an_error(tmp_path, damage):
    """The CRC (or length) of the whole content sits in the gzip trailer, after bytes that
    follow the last HDU: before, the walk stopped at those and the damage went unseen."""
    content, _ = _fits_bytes(b"\0" * 2880 * 3)
    gz = bytearray(gzip.compress(content))
    gz[-8 if damage == "crc" else -4] ^= 0xFF
    path = tmp_path / "damaged.fits.gz"
    path.write_bytes(bytes(gz))
    with pytest.raises(InputError, match=r"damaged.fits.gz: cannot decompress .*CRC|"
                                         r"damaged.fits.gz: cannot decompress .*length"):
        inspect_file(path)
    with pytest.raises(InputError, match=r"damaged.fits.gz: cannot decompress"):
        read_exposure(path, detector=_detector())


def test_a_damaged_deflate_stream_is_an_error(tmp_path):
    content, _ = _fits_bytes()
    gz = bytearray(gzip.compress(content))
    middle = len(gz) // 2
    gz[middle:middle + 50] = b"\0" * 50
    path = tmp_path / "zeroed.fits.gz"
    path.write_bytes(bytes(gz))
    with pytest.raises(InputError, match=r"zeroed.fits.gz: "):
        read_exposure(path, detector=_detector())


def test_a_stream_ending_inside_an_extension_header_is_truncated(tmp_path):
    """A ``.fits.gz`` cut inside its MASK header read as a plain image before: measured
    without its mask."""
    buf = io.BytesIO()
    image = np.ones((48, 64), np.float32)
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(image, name="IMAGE"),
                  fits.ImageHDU(np.zeros((48, 64), np.int32), name="MASK")]).writeto(buf)
    content = buf.getvalue()
    with fits.open(io.BytesIO(content)) as hdul:
        mask_header_at = hdul[2].fileinfo()["hdrLoc"]
    path = tmp_path / "cut.fits.gz"
    path.write_bytes(gzip.compress(content[:mask_header_at + 1000]))
    with pytest.raises(InputError, match=r"cut.fits.gz: truncated FITS file \(HDU 2 header\)"):
        inspect_file(path)
