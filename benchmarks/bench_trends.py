"""Trends at survey scale: read time of a synthetic catalog of many visits x 189 detectors.

Writes a catalog in the writer's layout (``pedestals/visit=N/part-0.parquet``, one file
per visit, 16 amps x 189 LSSTCam science detectors per visit) with synthetic pedestals,
then times what ``ampoffset-dask trends`` reads: the whole pedestal series, and one
detector's series; then the trends analysis of one detector. Prints the file count and
the times.

Run: ``python benchmarks/bench_trends.py [--visits 10000] [--dir /tmp/trends-bench]
[--keep]``
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ampoffset_dask import get_camera
from ampoffset_dask.catalog import SCHEMAS
from ampoffset_dask.simulate import select_detectors
from ampoffset_dask.trends import find_trends, read_series


def write_catalog(root: Path, n_visits: int) -> int:
    camera = get_camera("lsstcam")
    names = select_detectors(camera)
    amps = list(camera[names[0]].amp_names)
    schema = SCHEMAS["pedestals"]
    n = len(names) * len(amps)
    det = np.repeat(np.array(names, dtype=object), len(amps))
    amp = np.tile(np.array(amps, dtype=object), len(names))
    det_id = np.repeat(np.array([camera[d].id for d in names], dtype=np.int32), len(amps))
    amp_index = np.tile(np.arange(len(amps), dtype=np.int32), len(names))
    rng = np.random.default_rng(0)
    base = {
        "detector": pa.array(det, pa.string()), "detector_id": pa.array(det_id),
        "amp": pa.array(amp, pa.string()), "amp_index": pa.array(amp_index),
        "applied": pa.array(np.zeros(n, dtype=bool)), "run_id": pa.array(["bench"] * n),
    }
    files = 0
    for visit in range(1, n_visits + 1):
        cols = dict(base)
        for name in schema.names:
            if name not in cols:
                cols[name] = pa.array(rng.normal(0.0, 1.0, n))
        table = pa.table({name: cols[name] for name in schema.names}, schema=schema)
        folder = root / "pedestals" / f"visit={visit}"
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, folder / "part-0.parquet")
        files += 1
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--visits", type=int, default=10_000)
    parser.add_argument("--dir", type=Path, default=None, help="catalog folder (temporary)")
    parser.add_argument("--keep", action="store_true", help="keep the catalog")
    args = parser.parse_args()
    root = args.dir or Path(tempfile.mkdtemp(prefix="trends-bench-"))
    t0 = time.perf_counter()
    files = write_catalog(root, args.visits)
    print(f"wrote {files} pedestal files ({args.visits} visits x 189 detectors x 16 amps) "
          f"in {time.perf_counter() - t0:.0f} s to {root}")
    try:
        t0 = time.perf_counter()
        every = read_series(root)
        t_all = time.perf_counter() - t0
        t0 = time.perf_counter()
        one = read_series(root, detector="R22_S11")
        t_one = time.perf_counter() - t0
        t0 = time.perf_counter()
        find_trends(one)
        t_fit = time.perf_counter() - t0
        print(f"read all pedestals ({len(every)} rows): {t_all:.1f} s; one detector "
              f"({len(one)} rows): {t_one:.1f} s; trends of that detector: {t_fit:.1f} s; "
              f"{files} files")
    finally:
        if not args.keep and args.dir is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
