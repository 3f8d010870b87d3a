"""CPU time of the per-detector job on a gzip-wrapped (``.fits.gz``) full-size detector.

Simulates one full-size LSSTCam detector, writes it as a plain and a ``.fits.gz`` exposure and
times `process_file` on each (CPU seconds of this process, median of ``--repeat``), emptying
the per-process caches of decompressed files before every job, as in a real run where a worker
reads each file once. Also prints the bytes inflated per job and the client-side
`inspect_file` (planning) CPU time.

Usage::

    python benchmarks/bench_gzip_job.py              # default config (background + detection)
    python benchmarks/bench_gzip_job.py --fast       # edges only
"""

from __future__ import annotations

import argparse
import gzip
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from ampoffset_dask import AmpOffsetConfig
from ampoffset_dask.cameras import get_camera
from ampoffset_dask.io import sections
from ampoffset_dask.io.fits import inspect_file, read_exposure, write_exposure
from ampoffset_dask.pipeline.detector_job import process_file
from ampoffset_dask.simulate import select_detectors, simulate_focal_plane

MiB = 2**20


def _cold() -> None:
    sections._BUFFERS.clear()
    sections.close_cached_files()


class _Inflated:
    """Counts the bytes that come out of gzip decompression while active."""

    def __enter__(self):
        self.n = 0
        self._read = gzip._GzipReader.read

        def read(reader, *args):
            out = self._read(reader, *args)
            self.n += len(out)
            return out

        gzip._GzipReader.read = read
        return self

    def __exit__(self, *exc):
        gzip._GzipReader.read = self._read


def cpu_median(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        _cold()
        c0 = time.process_time()
        fn()
        times.append(time.process_time() - c0)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--fast", action="store_true", help="edges only")
    args = parser.parse_args(argv)
    config = (AmpOffsetConfig(do_background=False, do_detection=False) if args.fast
              else AmpOffsetConfig())
    work = Path(tempfile.mkdtemp(prefix="ampoffset-gzbench-"))
    try:
        cam = get_camera("lsstcam")
        sim = simulate_focal_plane(work / "sim", cam, detectors=select_detectors(cam)[:1],
                                   visits=1, scale=1.0, seed=0, overwrite=True)
        exp = read_exposure(sim.paths[0])
        header = {k: v for k, v in exp.info.header.items()
                  if k in ("INSTRUME", "CAMERA", "DETNAME", "DETECTOR", "VISIT")}
        plain, wrapped = work / "plain.fits", work / "det.fits.gz"
        write_exposure(plain, exp.image, exp.mask, exp.variance, mask_planes=exp.mask_planes,
                       header=header, detector=exp.detector)
        with open(plain, "rb") as src, gzip.open(wrapped, "wb", compresslevel=6) as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        size = plain.stat().st_size
        print(f"one full-size detector: {size / MiB:.0f} MiB, {wrapped.stat().st_size / MiB:.0f}"
              f" MiB gzipped; config {'edges only' if args.fast else 'LSST defaults'}; "
              f"CPU s, median of {args.repeat}, caches emptied before each job")
        ref = process_file(plain, exp.detector, config, visit=1)
        _cold()
        with _Inflated() as count:
            got = process_file(wrapped, exp.detector, config, visit=1)
        assert got.status == ref.status == "ok", (got.error, ref.error)
        assert list(got.pedestals) == list(ref.pedestals), "pedestals differ"
        t_plain = cpu_median(lambda: process_file(plain, exp.detector, config, visit=1),
                             args.repeat)
        t_gz = cpu_median(lambda: process_file(wrapped, exp.detector, config, visit=1),
                          args.repeat)
        t_plan = cpu_median(lambda: inspect_file(wrapped), args.repeat)
        with _Inflated() as plan_count:
            _cold()
            inspect_file(wrapped)
        print(f"  job, uncompressed: {t_plain:.2f} CPU s")
        print(f"  job, .fits.gz:     {t_gz:.2f} CPU s; inflated {count.n / size:.2f}x the file "
              f"({count.n / MiB:.0f} MiB)")
        print(f"  planning (inspect_file) of the .fits.gz: {t_plan:.2f} CPU s; inflated "
              f"{plan_count.n / size:.2f}x the file")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
