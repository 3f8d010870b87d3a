"""Time of a Butler query for a full LSSTCam focal plane (189 science detectors, one visit).

Builds a temporary repository with lsst-daf-butler (SQLite registry, file datastore; the
records tests/butler_repo.py makes; one tiny FITS file per dataset, since a query never reads
them) and times `ampoffset_dask.io.butler.find_inputs` for the visit: the first call (opening
the repository included) and the median of repeated calls, in a repository with
``visit_detector_region`` rows and in one without (the query does not join them, so both
find every dataset; the detector names are looked up separately).

Usage::

    python benchmarks/bench_butler_query.py [--repeat 5] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from astropy.io import fits

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from butler_repo import RUN, make_repo

from ampoffset_dask import get_camera
from ampoffset_dask.io.butler import find_inputs

VISIT = 2025060100042


def build(root: Path, files_dir: Path, regions: bool) -> None:
    cam = get_camera("lsstcam")
    science = [d for d in cam if len(d) == 16][:189]  # science CCDs have 16 amps
    files_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for det in science:
        path = files_dir / f"{det.name}.fits"
        fits.PrimaryHDU(np.zeros((2, 2), np.float32)).writeto(path, overwrite=True)
        rows.append((path, VISIT, det.id, det.name))
    make_repo(root, rows, regions=regions, transfer="symlink")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--dir", type=Path, default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for regions in (True, False):
            root = Path(tmp) / f"repo-{regions}"
            t = time.perf_counter()
            build(root, Path(tmp) / "files", regions)
            built = time.perf_counter() - t
            t = time.perf_counter()
            table = find_inputs(str(root), RUN, where=f"visit = {VISIT}", instrument="LSSTCam")
            first = time.perf_counter() - t
            times = []
            for _ in range(args.repeat):
                t = time.perf_counter()
                find_inputs(str(root), RUN, where=f"visit = {VISIT}", instrument="LSSTCam")
                times.append(time.perf_counter() - t)
            path = ("with visit_detector_region rows" if regions
                    else "without visit_detector_region rows")
            print(f"{path}: {len(table)} detectors; first query {first:.2f} s, then median "
                  f"{statistics.median(times):.2f} s over {args.repeat} "
                  f"(repository built in {built:.1f} s)")


if __name__ == "__main__":
    main()
