"""A gzip-wrapped detector (``.fits.gz``) is decompressed once per detector job.

The bytes coming out of the gzip decompressor are counted while the per-file job runs (as a
worker runs it, caches emptied as for a file a worker has not read yet): at most the size of
the FITS content, whatever the config, even when the content is larger than the per-process
cache of decompressed files. The results are those of the uncompressed file.
"""

from __future__ import annotations

import gzip
import shutil

import numpy as np
import pytest

from ampoffset_dask import AmpOffsetConfig
from ampoffset_dask.io import sections
from ampoffset_dask.io.fits import inspect_file, open_lazy, read_exposure
from ampoffset_dask.pipeline.detector_job import process_file
from ampoffset_dask.simulate import simulate_focal_plane


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A small simulated LSSTCam exposure (with afw-style archive tables after its planes
    would be skipped, so plain planes only) and its gzip-wrapped copy."""
    out = tmp_path_factory.mktemp("gz")
    sim = simulate_focal_plane(out / "sim", "lsstcam", detectors=["R22_S11"], visits=[5],
                               scale=0.05, seed=3)
    plain = shutil.copy(sim.paths[0], out / "det.fits")
    wrapped = out / "det.fits.gz"
    wrapped.write_bytes(gzip.compress(open(plain, "rb").read()))
    return plain, wrapped


@pytest.fixture
def inflated(monkeypatch):
    """Bytes decompressed by gzip (every reader here goes through `gzip`'s reader) since the
    test started, with the per-process caches of decompressed files emptied first."""
    sections._BUFFERS.clear()
    sections.close_cached_files()
    count = [0]
    real = gzip._GzipReader.read

    def counting(reader, *args):
        out = real(reader, *args)
        count[0] += len(out)
        return out

    monkeypatch.setattr(gzip._GzipReader, "read", counting)
    yield count
    sections._BUFFERS.clear()
    sections.close_cached_files()


CONFIGS = {"default": AmpOffsetConfig(),
           "edges-only": AmpOffsetConfig(do_background=False, do_detection=False)}


@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("cache", ["cached", "too-big-to-cache"])
def test_job_decompresses_once(files, inflated, monkeypatch, name, cache):
    plain, wrapped = files
    size = len(open(plain, "rb").read())
    if cache == "too-big-to-cache":
        monkeypatch.setattr(sections._BUFFERS, "max_bytes", size // 2)
    config = CONFIGS[name]
    want = process_file(plain, None, config)
    inflated[0] = 0
    got = process_file(wrapped, None, config)
    # one pass over the content (the archive-free file is all image HDUs)
    assert 0 < inflated[0] <= size, (inflated[0], size)
    assert got.status == want.status == "ok", (got.error, want.error)
    assert (got.visit, got.detector) == (want.visit, want.detector) == (5, "R22_S11")
    assert got.amp_names == want.amp_names
    np.testing.assert_array_equal(got.pedestals, want.pedestals)
    assert got.interfaces == want.interfaces


def test_readers_decompress_once(files, inflated, monkeypatch):
    plain, wrapped = files
    size = len(open(plain, "rb").read())
    monkeypatch.setattr(sections._BUFFERS, "max_bytes", size // 2)  # nothing cached
    got = read_exposure(wrapped)
    assert 0 < inflated[0] <= size
    want = read_exposure(plain)
    for plane in ("image", "mask", "variance"):
        np.testing.assert_array_equal(getattr(got, plane), getattr(want, plane))
    sections.close_cached_files()
    inflated[0] = 0
    lazy = open_lazy(wrapped)
    np.testing.assert_array_equal(lazy.image[:, :], want.image)
    np.testing.assert_array_equal(lazy.mask[:, :], want.mask)
    assert 0 < inflated[0] <= size


def test_headers_alone_keep_nothing(files, inflated):
    """Outside a reader (the client planning a run) the headers are streamed: nothing of the
    decompressed file is kept, and the same description comes out."""
    plain, wrapped = files
    info = inspect_file(wrapped)
    assert len(sections._BUFFERS) == 0
    ref = inspect_file(plain)
    assert (info.kind, info.visit, info.detector, info.shape, info.image_hdu, info.mask_hdu,
            info.variance_hdu, info.mask_planes) == (
        ref.kind, ref.visit, ref.detector, ref.shape, ref.image_hdu, ref.mask_hdu,
        ref.variance_hdu, ref.mask_planes)
