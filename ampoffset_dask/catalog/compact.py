"""Compaction: many visits per file, so that reading a survey does not open a file per visit.

Runs write one file per visit per table (``TABLE/visit=<v>/part-0.parquet``): 30,000 files
for 10,000 visits, ~10^6 for a survey year, and a reader pays for each. `compact_catalog`
moves the rows of the per-visit files into ``TABLE/_compacted/v<first>_<last>_<tag>.parquet``,
up to ``visits_per_file`` visits per file, rows sorted by detector then visit and written in
row groups, so that a visit filter skips the files of other visit ranges and a detector filter
the row groups of other detectors.

Nothing else changes. Rows are moved, never rewritten: `read_catalog` and ``all_rows=True``
return the same rows, and resume skips what it skipped before. A later run writes per-visit
files again (a visit's file then holds only that run's rows) and the latest-row rule decides
between them and the compacted rows, as between any runs' rows. Compacting again moves the new
per-visit files into new compacted files; existing compacted files are left as they are.

Crash safety. The catalog lock is held throughout (a run started meanwhile gets the usual
"catalog in use" error, and journals of interrupted runs are replayed into the tables first).
For each group of visits the new file is written under a temporary name, synced and renamed into
place, and only then are the per-visit files removed, one by one. A compaction killed at any
point leaves a (visit, run) either in its per-visit file only, in a compacted file only, or in
both with the same rows; readers take the per-visit copy in the last case (see
`~ampoffset_dask.catalog.read.arrow_table`), and the next compaction drops it. No row is ever
lost or shown twice.

Errors. A file that cannot be read raises `~ampoffset_dask.catalog.schema.DamagedCatalogError`
naming it (and how to recover), before anything of its group is moved; a file that cannot be
written (full disk, read-only file system) raises
`~ampoffset_dask.catalog.schema.CatalogWriteError` naming it. Either way the catalog is left
as the crash-safety rules above describe, and compacting again finishes the job.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as pads

from ..errors import ConfigError, InputError
from .read import (
    _dataset,
    _naming_damage,
    _visit_schema,
    _without_copies,
    check_readable,
    compacted_files,
    compacted_name,
    visit_files,
)
from .schema import COMPACTED, VISIT_TABLES, CatalogWriteError
from .writer import CatalogWriter, write_atomic

__all__ = ["CompactionResult", "compact_catalog"]

logger = logging.getLogger(__name__)

#: Default number of visits per compacted file (1.5 million pedestal rows for LSSTCam).
VISITS_PER_FILE = 500
#: Default rows per row group (about 16 LSSTCam detectors of 500 visits of pedestals).
ROW_GROUP_SIZE = 131_072


@dataclasses.dataclass
class CompactionResult:
    """What `compact_catalog` did.

    Attributes
    ----------
    files_before, files_after : dict of str to int
        Data files of each table (per-visit and compacted) before and after.
    rows : dict of str to int
        Rows moved into compacted files, per table.
    seconds : float
        Wall time.
    """

    files_before: dict[str, int]
    files_after: dict[str, int]
    rows: dict[str, int]
    seconds: float

    @property
    def n_before(self) -> int:
        """Data files of the three visit tables before compaction."""
        return sum(self.files_before.values())

    @property
    def n_after(self) -> int:
        """Data files of the three visit tables after compaction."""
        return sum(self.files_after.values())


def _count(root: Path, table: str) -> int:
    return len(visit_files(root, table)) + len(compacted_files(root, table))


def _writing(path: Path) -> contextlib.AbstractContextManager[None]:
    """`CatalogWriteError.raised_for` a file or folder a compaction changes."""
    return CatalogWriteError.raised_for(
        path, "Nothing is lost: every row is in a per-visit or a compacted file")


def _scan(root: Path, table: str, paths: list[Path], partitions: list, schema: pa.Schema,
          **options: Any) -> pa.Table:
    """Rows of ``paths`` (`_dataset`), a file that cannot be read named in the error."""
    with _naming_damage(root, table, paths):
        return _dataset(paths, partitions, schema).to_table(**options)


def _retire(path: Path) -> None:
    """Remove a per-visit file that is now in a compacted file (and its emptied folder)."""
    with _writing(path), contextlib.suppress(FileNotFoundError):
        path.unlink()
    folder = path.parent
    # Temporary files of a killed writer: under the lock nobody else can be writing them.
    for stale in folder.glob(".*.tmp"):
        with contextlib.suppress(OSError):
            stale.unlink()
    with contextlib.suppress(OSError):
        folder.rmdir()


def _sync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _compact_table(root: Path, table: str, visits_per_file: int, row_group_size: int,
                   progress: Callable[[str, int, int], None] | None) -> int:
    files = visit_files(root, table)
    if not files:
        return 0
    folder = root / table / COMPACTED
    with _writing(folder):
        folder.mkdir(exist_ok=True)
        for stale in folder.glob(".*.tmp"):  # a compaction killed while writing
            stale.unlink()
    schema = _visit_schema(table)
    existing = compacted_files(root, table)
    chunks = [files[i:i + visits_per_file] for i in range(0, len(files), visits_per_file)]
    moved = 0
    for number, chunk in enumerate(chunks, 1):
        visits = [v for v, _ in chunk]
        rows = _scan(root, table, [p for _, p in chunk],
                     [pads.field("visit") == v for v in visits], schema)
        if existing:
            # Rows a stopped compaction already moved are in a compacted file: not twice.
            done = _scan(root, table, [p for _, _, p in existing],
                         [(pads.field("visit") >= lo) & (pads.field("visit") <= hi)
                          for lo, hi, _ in existing], schema,
                         columns=["visit", "run_id"], filter=pads.field("visit").isin(visits))
            rows = _without_copies(rows, done)
        if rows.num_rows:
            # Stable sort: rows of a (visit, detector) keep their order (LSST's interface
            # order, runs in the order written).
            rows = rows.sort_by([("detector", "ascending"), ("visit", "ascending")])
            lo, hi = min(visits), max(visits)
            # The tag starts with the time: files read in the order they were written, so
            # the history of a (visit, detector) keeps its order.
            tag = f"{time.time_ns():016x}{uuid.uuid4().hex[:6]}"
            path = folder / compacted_name(lo, hi, tag)
            write_atomic(rows, path, fsync=True, row_group_size=row_group_size)
            _sync_dir(folder)
            moved += rows.num_rows
        for _, path in chunk:
            _retire(path)
        if progress is not None:
            progress(table, number, len(chunks))
    return moved


def compact_catalog(
    path: str | os.PathLike,
    *,
    visits_per_file: int = VISITS_PER_FILE,
    row_group_size: int = ROW_GROUP_SIZE,
    progress: Callable[[str, int, int], None] | None = None,
) -> CompactionResult:
    """Move a catalog's per-visit files into compacted files of many visits each.

    Parameters
    ----------
    path : path-like
        The catalog directory.
    visits_per_file : int
        Visits per compacted file (of each table).
    row_group_size : int
        Rows per Parquet row group of a compacted file (what a detector filter can skip).
    progress : callable, optional
        Called as ``progress(table, done, total)`` after each compacted file.

    Returns
    -------
    CompactionResult

    Raises
    ------
    InputError
        If ``path`` is not a catalog.
    ConfigError
        For a ``visits_per_file`` or ``row_group_size`` below 1.
    CatalogBusyError
        If a run (or another compaction) is writing the catalog.
    DamagedCatalogError
        If a file of the catalog cannot be read (named, with how to recover).
    CatalogWriteError
        If a file cannot be written (named, with the reason), e.g. a read-only catalog.

    Examples
    --------
    >>> from ampoffset_dask import AmpOffsetConfig, read_catalog
    >>> from ampoffset_dask.catalog import CatalogWriter, DetectorResult, compact_catalog
    >>> with CatalogWriter(tmp / "cat") as writer:
    ...     run_id = writer.start_run(config=AmpOffsetConfig())
    ...     for visit in (1, 2, 3):
    ...         writer.add(DetectorResult(visit=visit, detector="R22_S11", status="ok",
    ...                                   amp_names=["C10", "C11"], pedestals=[0.5, -0.5]))
    >>> result = compact_catalog(tmp / "cat")
    >>> result.n_before, result.n_after  # detectors and pedestals (no interfaces here)
    (6, 2)
    >>> len(read_catalog(tmp / "cat", "pedestals"))
    6
    """
    root = Path(path)
    if not root.is_dir():
        raise InputError(f"{root}: no such catalog folder")
    if not (root / "runs").is_dir() and not (root / "detectors").is_dir():
        raise InputError(f"{root}: not an ampoffset-dask catalog (no runs or detectors table)")
    for name, value in (("visits_per_file", visits_per_file),
                        ("row_group_size", row_group_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name}={value!r}: expected a positive integer")
    t0 = time.perf_counter()
    writer = CatalogWriter(root)
    writer.open()  # the lock, and the journals of interrupted runs replayed
    try:
        # A damaged file found half-way would leave the visit's rows of the tables done
        # before it compacted and its own not: refuse before moving anything.
        check_readable(root, VISIT_TABLES)
        before = {t: _count(root, t) for t in VISIT_TABLES}
        rows = {t: _compact_table(root, t, visits_per_file, row_group_size, progress)
                for t in VISIT_TABLES}
        after = {t: _count(root, t) for t in VISIT_TABLES}
    finally:
        writer.close()
    result = CompactionResult(before, after, rows, time.perf_counter() - t0)
    logger.info("compacted %s: %d -> %d files (%d rows moved) in %.1f s", root,
                result.n_before, result.n_after, sum(rows.values()), result.seconds)
    return result
