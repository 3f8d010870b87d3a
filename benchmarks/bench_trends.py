"""Trends at survey scale: query times and file counts of a synthetic catalog, before and after
compaction.

Writes a catalog as runs write it - one ``detectors`` and one ``pedestals`` file per visit
(``TABLE/visit=N/part-0.parquet``, the real schemas, 189 LSSTCam science detectors x 16 amps
per visit, one run) - directly as Parquet, with synthetic pedestals. Then times what
``ampoffset-dask trends`` does - the read of the pedestal series (all amps, one detector, one
amp) and the trends analysis of one detector and of one amp - on the per-visit layout,
compacts the catalog (`~ampoffset_dask.catalog.compact_catalog`) and times the same again.
Prints the file counts, the times and the 1-minute load average (times are only comparable
on an idle machine). The interfaces table, which trends does not read, is not written.

Run: ``python benchmarks/bench_trends.py [--visits 10000] [--dir /tmp/trends-bench] [--keep]
[--full]`` (``--full`` also times the analysis of every amp of the catalog).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ampoffset_dask import AmpOffsetConfig, get_camera
from ampoffset_dask.catalog import SCHEMAS, CatalogWriter, compact_catalog
from ampoffset_dask.catalog.read import compacted_files, visit_files
from ampoffset_dask.simulate import select_detectors
from ampoffset_dask.trends import find_trends, read_series

DETECTOR = "R22_S11"
AMP = "C10"


def _templates(run_id: str) -> tuple[pa.Table, pa.Table]:
    """One visit's ``detectors`` and ``pedestals`` rows (the columns that do not vary)."""
    camera = get_camera("lsstcam")
    names = select_detectors(camera)
    amps = list(camera[names[0]].amp_names)
    n_det, n_amp = len(names), len(amps)
    ids = np.array([camera[d].id for d in names], dtype=np.int64)
    det_cols = {f.name: pa.nulls(n_det, f.type) for f in SCHEMAS["detectors"]}
    det_cols.update({
        "detector": pa.array(names, pa.string()), "detector_id": pa.array(ids),
        "status": pa.array(["ok"] * n_det), "error": pa.array([""] * n_det),
        "n_amps": pa.array(np.full(n_det, n_amp, np.int32)),
        "n_interfaces": pa.array(np.full(n_det, 22, np.int32)),
        "run_id": pa.array([run_id] * n_det),
        "input": pa.array([f"/data/{d}.fits" for d in names]),
    })
    ped_cols = {
        "detector": pa.array(np.repeat(names, n_amp), pa.string()),
        "detector_id": pa.array(np.repeat(ids, n_amp)),
        "amp": pa.array(np.tile(amps, n_det), pa.string()),
        "amp_index": pa.array(np.tile(np.arange(n_amp, dtype=np.int32), n_det)),
        "applied": pa.array(np.zeros(n_det * n_amp, dtype=bool)),
        "run_id": pa.array([run_id] * (n_det * n_amp)),
    }
    for name in ("pedestal", "pedestal_err", "level"):
        ped_cols[name] = pa.nulls(n_det * n_amp, pa.float64())
    return (pa.table(det_cols, schema=SCHEMAS["detectors"]),
            pa.table(ped_cols, schema=SCHEMAS["pedestals"]))


def write_catalog(root: Path, n_visits: int) -> int:
    """A one-run catalog of ``n_visits`` visits; returns the number of data files."""
    with CatalogWriter(root) as writer:  # the runs table, as a real run writes it
        run_id = writer.start_run(config=AmpOffsetConfig())
        writer.finish_run({"n_ok": n_visits * 189})
    det0, ped0 = _templates(run_id)
    n = ped0.num_rows
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)

    def one(visit: int) -> None:
        rng = np.random.default_rng(visit)
        sky = rng.uniform(300, 2000)
        det = det0.set_column(det0.schema.get_field_index("finished_at"), "finished_at",
                              pa.array([start + dt.timedelta(seconds=visit)] * det0.num_rows,
                                       SCHEMAS["detectors"].field("finished_at").type))
        ped = ped0
        for name, values in (("pedestal", rng.normal(0.0, 0.3, n)),
                             ("pedestal_err", np.full(n, 0.05)),
                             ("level", sky * rng.normal(1.0, 0.01, n))):
            ped = ped.set_column(ped.schema.get_field_index(name), name, pa.array(values))
        for table, rows in (("detectors", det), ("pedestals", ped)):
            folder = root / table / f"visit={visit}"
            folder.mkdir(parents=True, exist_ok=True)
            pq.write_table(rows, folder / "part-0.parquet", compression="zstd")

    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        list(pool.map(one, range(1, n_visits + 1)))
    return 2 * n_visits


def _files(root: Path) -> int:
    return sum(len(visit_files(root, t)) + len(compacted_files(root, t))
               for t in ("detectors", "pedestals", "interfaces"))


def _timed(func, *args, **kwargs):
    """``func``'s result and its (wall, CPU) seconds; CPU counts all of this process's
    threads, so it is the figure that other load on the machine does not inflate."""
    t0, c0 = time.perf_counter(), time.process_time()
    out = func(*args, **kwargs)
    return out, (time.perf_counter() - t0, time.process_time() - c0)


def queries(root: Path, full: bool) -> dict[str, tuple[float, float]]:
    """(wall, CPU) seconds of the trends reads and analyses; also checks their sizes."""
    times = {}
    every, times["read all amps"] = _timed(read_series, root)
    one, times[f"read {DETECTOR}"] = _timed(read_series, root, detector=DETECTOR)
    amp, times[f"read {DETECTOR} {AMP}"] = _timed(read_series, root, detector=DETECTOR,
                                                  amp=AMP)
    _, times[f"trends of {DETECTOR} (16 amps)"] = _timed(find_trends, one)
    _, times[f"trends of {DETECTOR} {AMP}"] = _timed(find_trends, amp)
    if full:
        _, times["trends of every amp"] = _timed(find_trends, every)
    n_visits = one["visit"].nunique()
    assert len(one) == 16 * n_visits and len(amp) == n_visits
    assert len(every) == 189 * 16 * n_visits
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--visits", type=int, default=10_000)
    parser.add_argument("--dir", type=Path, default=None, help="catalog folder (temporary)")
    parser.add_argument("--keep", action="store_true", help="keep the catalog")
    parser.add_argument("--full", action="store_true",
                        help="also time the trends analysis of every amp")
    args = parser.parse_args()
    root = args.dir or Path(tempfile.mkdtemp(prefix="trends-bench-"))
    print(f"load average (1 min) at start: {os.getloadavg()[0]:.2f} on "
          f"{os.cpu_count()} cores")
    try:
        files, (t_write, _) = _timed(write_catalog, root, args.visits)
        print(f"wrote {files} files ({args.visits} visits x 189 detectors x 16 amps; "
              f"detectors + pedestals) in {t_write:.0f} s to {root}")
        before = queries(root, args.full)
        result, (t_compact, c_compact) = _timed(compact_catalog, root)
        print(f"compacted: {result.n_before} -> {result.n_after} files in {t_compact:.1f} s "
              f"({c_compact:.1f} CPU s)")
        after = queries(root, args.full)
        print(f"\n{'seconds: wall (CPU)':<34} {'per-visit files':>18} {'compacted':>18}")
        print(f"{'data files':<34} {files:>18} {_files(root):>18}")
        for name in before:
            (wb, cb), (wa, ca) = before[name], after[name]
            print(f"{name:<34} {wb:>8.2f} ({cb:>7.2f}) {wa:>8.2f} ({ca:>7.2f})")
        print(f"load average (1 min) at end: {os.getloadavg()[0]:.2f}")
    finally:
        if not args.keep and args.dir is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
