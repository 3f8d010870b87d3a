"""Bytes fetched by an edges-only run on a full-size LSSTCam detector in an object store.

Writes one full-size LSSTCam detector file (uncompressed IMAGE, MASK, VARIANCE: what an
edges-only run can read in byte ranges), uploads it to a local S3 server (moto, 127.0.0.1),
and runs the per-detector task on it with background and detection off. Prints the fraction
of the object's bytes fetched (headers + edge strips of image and mask), the number of bytes,
and the task's time against the same task on the local file. With ``--compress`` the file is
RICE tile-compressed (such planes are decoded whole once per task; the fraction shows it).

Usage::

    python benchmarks/bench_remote.py [--detector R22_S11] [--edge-width 20] [--compress]
        [--store moto|memory]

``--store memory`` serves the object from fsspec's in-memory filesystem through the same
code path (byte ranges and counters): the fraction is the same, the time is not an object
store's. moto answers the ~10^5 per-row range requests of a full-size detector one at a time
(minutes); a real object store serves them concurrently.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from io_helpers import write_stepped_lsstcam
from s3_server import KEYS, moto_server, s3_client

from ampoffset_dask import AmpOffsetConfig
from ampoffset_dask.io import remote
from ampoffset_dask.io.fits import read_exposure, write_exposure
from ampoffset_dask.pipeline.detector_job import process_file


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--detector", default="R22_S11")
    ap.add_argument("--edge-width", type=int, default=None,
                    help="ampEdgeWidth (default: LSST's)")
    ap.add_argument("--compress", action="store_true")
    ap.add_argument("--store", choices=("moto", "memory"), default="moto")
    args = ap.parse_args()
    config = AmpOffsetConfig(do_background=False, do_detection=False)
    if args.edge_width:
        config.amp_edge_width = args.edge_width
    with tempfile.TemporaryDirectory() as tmp, moto_server() as endpoint:
        path, _, _ = write_stepped_lsstcam(Path(tmp) / "plain.fits", args.detector, 7, 0.5,
                                           noise=3.0)
        if args.compress:
            exp = read_exposure(path)
            path = write_exposure(Path(tmp) / "rice.fits", exp.image, exp.mask, exp.variance,
                                  header={"CAMERA": "lsstcam", "DETNAME": args.detector,
                                          "VISIT": 7}, compress="rice")
        if args.store == "memory":
            import fsspec

            url = f"memory://bench/{path.name}"
            fsspec.filesystem("memory").pipe_file(url, path.read_bytes())
        else:
            os.environ.update(KEYS, AWS_ENDPOINT_URL=endpoint)
            client = s3_client(endpoint)
            client.create_bucket(Bucket="bench")
            client.upload_file(str(path), "bench", path.name)
            url = f"s3://bench/{path.name}"
        t = time.perf_counter()
        local = process_file(str(path), None, config)
        t_local = time.perf_counter() - t
        before = remote.bytes_fetched(url)
        t = time.perf_counter()
        result = process_file(url, None, config)
        t_remote = time.perf_counter() - t
        assert result.status == "ok", result.error
        assert list(result.pedestals) == list(local.pedestals)
        fetched = remote.bytes_fetched(url) - before
        size = path.stat().st_size
        print(f"{args.detector} ({'RICE' if args.compress else 'uncompressed'}, "
              f"{size / 2**20:.1f} MiB, ampEdgeWidth={config.amp_edge_width}): edges-only "
              f"task fetched {fetched / 2**20:.2f} MiB = {100 * fetched / size:.1f}% of the "
              f"object; {t_remote:.1f} s from {args.store} vs {t_local:.2f} s from the local "
              "file; "
              "pedestals identical")


if __name__ == "__main__":
    main()
