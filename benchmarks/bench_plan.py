"""Planning cost: milliseconds per file to read what a run needs from the headers.

`process` plans every input on the client before the first task starts, and every task
starts by inspecting its file again (`~ampoffset_dask.io.fits.inspect_file`). Both hold the
GIL, so on a large cluster the client's planning bounds a visit's wall time (189 detectors
per LSSTCam visit). Prints, per kind of file:

- ``inspect_file`` as it runs (plain local files: the walked headers,
  `ampoffset_dask.io.header_walk`), and through astropy's ``HDUList`` (what it costs
  without the walk, and what compressed files still cost);
- ``plan_tasks`` of many copies (distinct identities), which plans files on a local file
  system in the calling thread, and the same files planned in 8 threads (as URLs and files
  on network file systems are): the threads only hand the GIL to each other at every read.

The files: the real LSSTCam raws of ``../shared/realdata`` (17 HDUs, ~2,000 header cards;
decompressed into the work folder) and a full-size simulated exposure as ``process``
writes them (primary, IMAGE, MASK, VARIANCE).

Run: ``python benchmarks/bench_plan.py [--copies 64] [--repeat 20] [--workdir DIR]``
"""

from __future__ import annotations

import argparse
import gzip
import os
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ampoffset_dask import get_camera
from ampoffset_dask.io import fits as fits_io
from ampoffset_dask.io.writer import write_exposure
from ampoffset_dask.pipeline.inputs import InputItem, _plan_one, plan_tasks
from ampoffset_dask.simulate import simulate_detector

SHARED = Path(os.environ.get("AMPOFFSET_SHARED", Path(__file__).resolve().parents[2] / "shared"))
RAW = SHARED / "realdata" / "lsstcam_bot_spots" / "itl_spot.fits.gz"


def _ms(fn, repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def _in_threads(items: list[InputItem], threads: int) -> list:
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(lambda i: _plan_one(i, None), items))


def _files(workdir: Path) -> dict[str, Path]:
    out = {}
    raw = workdir / "itl_raw.fits"
    if not raw.exists():
        with gzip.open(RAW) as fin, open(raw, "wb") as fout:
            shutil.copyfileobj(fin, fout)
    out["LSSTCam raw (ITL, 17 HDUs)"] = raw
    exposure = workdir / "exposure.fits"
    if not exposure.exists():
        det = get_camera("lsstcam")["R02_S02"]
        sim = simulate_detector(det, seed=1, n_stars=0)
        write_exposure(exposure, sim.image, mask=sim.mask, variance=sim.image,
                       header={"VISIT": 1, "DETNAME": "R02_S02", "INSTRUME": "LSSTCam"})
    out["simulated exposure (4 HDUs)"] = exposure
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--copies", type=int, default=64, help="files planned at once")
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--workdir", type=Path, default=None,
                    help="keep the files here (default: a temporary folder)")
    args = ap.parse_args(argv)
    if not RAW.exists():
        print(f"no real raw at {RAW} (set AMPOFFSET_SHARED)", file=sys.stderr)
        return 1
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench_plan_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        for label, path in _files(work).items():
            walked = _ms(lambda p=path: fits_io.inspect_file(p), args.repeat)
            opened = _ms(lambda p=path: fits_io._opened(p, None), args.repeat)
            print(f"{label}: inspect_file {walked:.2f} ms per file "
                  f"(through astropy's HDUList: {opened:.2f} ms, {opened / walked:.1f}x)")
            items = [InputItem(str(path), visit=v, detector="R02_S02")
                     for v in range(1, args.copies + 1)]
            repeat = max(3, args.repeat // 5)
            ms = _ms(lambda i=items: plan_tasks(i), repeat)
            print(f"    plan_tasks of {args.copies} files: {ms / args.copies:.2f} ms per file "
                  "(planned in the calling thread: a local file system)")
            ms = _ms(lambda i=items: _in_threads(i, 8), repeat)
            print(f"    the same in 8 threads, as for URLs: {ms / args.copies:.2f} ms per file")
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
