"""Bytes and requests of an edges-only run on a full-size LSSTCam detector in an object store.

Writes one full-size LSSTCam detector file (IMAGE and a noisy VARIANCE, float32; MASK int32,
zeros) in each layout asked for:
uncompressed, RICE or GZIP tile-compressed in the writer's 128 x 128 tiles, or in row tiles
(one image row per tile, astropy's default); serves it from fsspec's in-memory filesystem or
a local S3 server (moto, 127.0.0.1), and runs the per-detector task on it with background
and detection off, once per merge gap (dask config ``ampoffset.remote.merge-gap``). Prints,
per layout and gap, the fraction of the object's bytes fetched, the number of requests, and
the task's time against the same task on the local file; the pedestals must be identical.

Usage::

    python benchmarks/bench_remote.py [--detector R22_S11] [--edge-width 20]
        [--layouts plain,rice,gzip,rice-rows,gzip-rows] [--gaps 0,2MiB]
        [--store memory|moto]

Requests counted by the reader (`ampoffset_dask.io.remote.requests_made`): merged byte
ranges and downloads; header reads are one request per 32 KiB read-ahead block on S3, one
per read on the in-memory store (which has no block cache). moto answers requests one at a
time (tens per second), so gap 0 on an uncompressed detector (~10^5 requests) takes very long
there; a real object store serves them concurrently.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import dask
import numpy as np
from astropy.io import fits
from io_helpers import write_stepped_lsstcam

from ampoffset_dask import AmpOffsetConfig
from ampoffset_dask.io import remote
from ampoffset_dask.io.fits import read_exposure, write_exposure
from ampoffset_dask.io.sections import parse_bytes
from ampoffset_dask.pipeline.detector_job import process_file

_ALGORITHMS = {"rice": "RICE_1", "gzip": "GZIP_1"}


def write_layout(plain: Path, layout: str, detector: str) -> Path:
    """The detector of ``plain`` in ``layout`` (plain, rice, gzip, rice-rows, gzip-rows)."""
    if layout == "plain":
        return plain
    kind, _, rows = layout.partition("-")
    exp = read_exposure(plain)
    path = write_exposure(plain.with_name(f"{kind}.fits"), exp.image, exp.mask, exp.variance,
                          header={"CAMERA": "lsstcam", "DETNAME": detector, "VISIT": 7},
                          compress=kind, overwrite=True)
    if not rows:
        return path
    out = plain.with_name(f"{layout}.fits")
    with fits.open(path) as hdul:
        hdus = [fits.PrimaryHDU(header=hdul[0].header)]
        for h in hdul[1:]:
            header = h.header.copy()
            for key in ("ZQUANTIZ", "ZDITHER0"):
                header.remove(key, ignore_missing=True)
            lossless = {"quantize_level": 0.0} if kind == "gzip" else {}  # as the writer
            hdus.append(fits.CompImageHDU(h.data, header=header, name=h.name,
                                          compression_type=_ALGORITHMS[kind],
                                          tile_shape=(1, h.data.shape[1]), **lossless))
        fits.HDUList(hdus).writeto(out, overwrite=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--detector", default="R22_S11")
    ap.add_argument("--edge-width", type=int, default=None,
                    help="ampEdgeWidth (default: LSST's)")
    ap.add_argument("--layouts", default="plain,rice,gzip,rice-rows,gzip-rows")
    ap.add_argument("--gaps", default="0,2MiB",
                    help="merge gaps to try (ampoffset.remote.merge-gap)")
    ap.add_argument("--store", choices=("moto", "memory"), default="memory")
    args = ap.parse_args()
    config = AmpOffsetConfig(do_background=False, do_detection=False)
    if args.edge_width:
        config.amp_edge_width = args.edge_width
    gaps = [g.strip() for g in args.gaps.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        plain, image, _ = write_stepped_lsstcam(Path(tmp) / "plain.fits", args.detector, 7,
                                                0.5, noise=3.0)
        # a noisy variance plane, as real ones are (it compresses like the image)
        variance = image + np.random.default_rng(1).normal(0.0, 30.0, image.shape)
        write_exposure(plain, image, None, variance.astype(np.float32), overwrite=True,
                       header={"CAMERA": "lsstcam", "DETNAME": args.detector, "VISIT": 7})
        server = None
        if args.store == "moto":
            from s3_server import KEYS, moto_server, s3_client

            server = moto_server()
            endpoint = server.__enter__()
            os.environ.update(KEYS, AWS_ENDPOINT_URL=endpoint)
            client = s3_client(endpoint)
            client.create_bucket(Bucket="bench")
        try:
            for layout in args.layouts.split(","):
                path = write_layout(plain, layout.strip(), args.detector)
                size = path.stat().st_size
                t = time.perf_counter()
                local = process_file(str(path), None, config)
                t_local = time.perf_counter() - t
                for gap in gaps:
                    name = f"{layout}-{gap}.fits"
                    if server is None:
                        import fsspec

                        url = f"memory://bench/{name}"
                        fsspec.filesystem("memory").pipe_file(url, path.read_bytes())
                    else:
                        client.upload_file(str(path), "bench", name)
                        url = f"s3://bench/{name}"
                    remote.clear_caches()
                    b0, q0 = remote.bytes_fetched(url), remote.requests_made(url)
                    t = time.perf_counter()
                    with dask.config.set({"ampoffset.remote.merge-gap": parse_bytes(gap)}):
                        result = process_file(url, None, config)
                    t_remote = time.perf_counter() - t
                    assert result.status == "ok", result.error
                    assert list(result.pedestals) == list(local.pedestals)
                    fetched = remote.bytes_fetched(url) - b0
                    print(f"{args.detector} {layout:10s} {size / 2**20:6.1f} MiB, merge gap "
                          f"{gap:>6s}: fetched {100 * fetched / size:5.1f}% of the object "
                          f"({fetched / 2**20:.1f} MiB) in {remote.requests_made(url) - q0} "
                          f"requests; {t_remote:.1f} s from {args.store} vs {t_local:.2f} s "
                          "from the local file; pedestals identical", flush=True)
                    if server is None:
                        fsspec.filesystem("memory").rm(url)
        finally:
            if server is not None:
                server.__exit__(None, None, None)


if __name__ == "__main__":
    main()
