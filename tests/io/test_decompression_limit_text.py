"""The decompression-limit refusal states small limits in bytes, not as "0.0 MiB"."""

from __future__ import annotations

import gzip
import shutil

import dask

from ampoffset_dask.pipeline import _config
from ampoffset_dask.pipeline.detector_job import process_file
from ampoffset_dask.simulate import simulate_focal_plane


def test_a_tiny_limit_is_stated_in_bytes(tmp_path):
    plain = simulate_focal_plane(tmp_path / "sim", "lsstcam", detectors=["R22_S11"],
                                 scale=0.05, seed=1).paths[0]
    wrapped = tmp_path / "d.fits.gz"
    with open(plain, "rb") as src, gzip.open(wrapped, "wb") as dst:
        shutil.copyfileobj(src, dst)
    _config.load_defaults()
    with dask.config.set({"ampoffset.max-decompressed-bytes": 1}):
        result = process_file(str(wrapped), None)
    assert result.status == "failed"
    assert "more than the limit of 1 byte (dask config" in result.error, result.error
    assert "0.0 MiB" not in result.error
