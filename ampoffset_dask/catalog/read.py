"""Reading a catalog: one table to pandas, astropy, Arrow or dask; the latest rows or all.

A catalog keeps every run's rows (history). By default readers see the latest row of each
(visit, detector) - the row of the run that recorded it last - and the pedestals and
interfaces of that row's run; failures of other inputs claiming the same (visit, detector)
since its last measurement are shown too (one input's failure never hides another's); a
failed row of an input whose identity was unknown is hidden once a later row of the same
input has one. ``all_rows=True`` returns the history.

"Latest" is the order in which the catalog writer, the one process that records results,
recorded them: rows are ordered by the ``started`` time of their run in the ``runs`` table
(the writer's clock, increasing from run to run) and, within a run, by ``recorded_at`` (the
writer's clock when it recorded the row, increasing within the run). ``finished_at``, the
clock of the worker that measured the detector, is never used to order rows of different
runs. Catalogs written before ``recorded_at`` existed read as before within a run (the
column is null there: ``finished_at`` orders the rows of one run), and a row whose run is
missing from the ``runs`` table is placed by its own ``recorded_at`` (else ``finished_at``)
as if its run had started then (see `row_order`).

Rows live in per-visit files (``TABLE/visit=<v>/part-0.parquet``) and, once compacted, in
``TABLE/_compacted/`` files of visit ranges (`~ampoffset_dask.catalog.compact`); readers
read both through one pyarrow dataset per kind, built from a directory listing, with visit
and detector filters pushed down to files and row groups. A compaction going on meanwhile
moves rows between the two; a read it overtakes (a listed file removed before it was
opened) is read again, so a read never misses a row or shows one twice.

A catalog file that cannot be read (cut short, not Parquet) raises
`~ampoffset_dask.catalog.schema.DamagedCatalogError` naming it and how to recover. Results
still only in the journal of a run that was killed are not in the tables: reads say so in a
warning (`pending_journals`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import numbers
import operator
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..errors import ConfigError, InputError
from .journal import PendingJournal, parse_line, pending_journals
from .schema import (
    COMPACTED,
    PART,
    SCHEMAS,
    SORT,
    TABLES,
    UNKNOWN_VISIT,
    VISIT_TABLES,
    DamagedCatalogError,
    sorted_table,
)

logger = logging.getLogger(__name__)

# pyarrow.dataset (and with it pandas, ~0.5 s) is imported by the readers that need it:
# every dask worker imports the writer's module, which only builds and writes records.

__all__ = ["arrow_table", "check_readable", "compacted_files", "compacted_name", "latest_mask",
           "read_catalog", "read_visit_file", "row_order", "runs_started", "visit_dir",
           "visit_files"]

_COMPACTED_NAME = re.compile(r"^v(-?\d+)_(-?\d+)_([0-9a-f]+)\.parquet$")


def visit_dir(root: Path, table: str, visit: int) -> Path:
    """``root/<table>/visit=<visit>``."""
    return root / table / f"visit={int(visit)}"


def read_visit_file(root: Path, table: str, visit: int) -> pa.Table:
    """Every row of one visit's file of ``table`` (empty when there is none).

    Only the per-visit file: rows moved into compacted files are not in it (the writer
    adds a later run's rows beside them, see `~ampoffset_dask.catalog.compact`).
    """
    return _read_file(root, table, visit_dir(root, table, visit) / PART, SCHEMAS[table])


def _read_file(root: Path, table: str, path: Path, schema: pa.Schema) -> pa.Table:
    """Every row of one file of ``table`` (empty when there is none)."""
    try:
        with _naming_damage(root, table, [path]):
            # Not `pq.read_table`, which imports pyarrow.dataset (0.2 s, once per process)
            # for this one file: the first read of every run, before its first task.
            file = pq.ParquetFile(path)
            try:
                return _conformed(file.read(), schema)
            finally:
                file.close()
    except FileNotFoundError:
        return schema.empty_table()


def _conformed(got: pa.Table, schema: pa.Schema) -> pa.Table:
    """``got`` with ``schema``'s columns, as a dataset of that schema reads it: missing
    columns (a file an earlier version wrote) are null, others cast, extra ones dropped."""
    columns = [got.column(f.name).cast(f.type) if f.name in got.column_names
               else pa.nulls(got.num_rows, f.type) for f in schema]
    return pa.Table.from_arrays(columns, schema=schema)


@contextlib.contextmanager
def _naming_damage(root: Path, table: str, paths: Sequence[Path],
                   passes: tuple[type[BaseException], ...] = (FileNotFoundError,
                                                              PermissionError)
                   ) -> Iterator[None]:
    """A read of ``paths`` (files of ``table``) failing in the block raises the
    `DamagedCatalogError` naming the file (`_damaged`). ``passes`` are raised as they are:
    no damage (a missing file is the caller's to handle; a permission error names the file).
    """
    try:
        yield
    except passes:
        raise
    except (pa.ArrowException, OSError) as exc:
        raise _damaged(Path(root), table, paths, exc) from exc


def _parquet_problem(path: Path) -> str | None:
    """Why ``path`` cannot be opened as Parquet (None when its footer reads)."""
    try:
        pq.read_metadata(path)
    except (pa.ArrowException, OSError) as exc:
        return str(exc)
    return None


def _tail_ok(path: Path) -> bool:
    """Whether ``path`` looks like a whole Parquet file: magic bytes at both ends and a
    footer length that fits. Reads 12 bytes: cheap enough to check every file of a catalog
    (a file cut short, by a crash before the data reached the disk, fails it)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
            size = f.seek(0, os.SEEK_END)
            if size < 12:
                return False
            f.seek(size - 8)
            tail = f.read(8)
    except FileNotFoundError:
        return True  # removed meanwhile (a compaction moved it): nothing to read
    except OSError:
        return False
    footer = int.from_bytes(tail[:4], "little")
    return head == b"PAR1" and tail[4:] == b"PAR1" and 0 < footer <= size - 12


def _repair_hint(root: Path, table: str, path: Path) -> str:
    """What to do about an unreadable file ``path`` of ``table``."""
    if table == "runs":
        return ("restore it from a backup, or move it aside and run again: without the runs "
                "table no row counts as done, so every detector is measured again (the rows "
                "already in the catalog stay, as history)")
    name = path.parent.name
    if name.startswith("visit="):
        visit = name[6:]
        # every file holding rows of the visit: a detectors row left without its pedestals
        # would count as done
        files = [str(root / t / name) for t in VISIT_TABLES if (root / t / name).is_dir()]
        files += [str(p) for t in VISIT_TABLES for a, b, p in compacted_files(root, t)
                  if visit.lstrip("-").isdigit() and a <= int(visit) <= b]
        return (f"restore it from a backup, or move what holds rows of visit {visit} aside "
                f"({', '.join(files)}) and run again: a run over the same inputs measures "
                f"visit {visit} again")
    m = _COMPACTED_NAME.match(path.name)
    if m:
        lo, hi = int(m.group(1)), int(m.group(2))
        files = [str(p) for t in VISIT_TABLES for a, b, p in compacted_files(root, t)
                 if a <= hi and b >= lo]
        return (f"restore it from a backup, or move the compacted files holding visits {lo} "
                f"to {hi} aside ({', '.join(files)}) and run again: a run over the same "
                "inputs measures those visits again")
    return "restore it from a backup"


def _damaged(root: Path, table: str, paths: Sequence[Path],
             exc: BaseException) -> DamagedCatalogError:
    """The error of a read of ``paths`` (files of ``table``) that failed with ``exc``: names
    the file that cannot be read and what to do about it."""
    bad, reason = None, None
    for path in paths:
        reason = _parquet_problem(Path(path))
        if reason is not None:
            bad = Path(path)
            break
    if bad is None:  # the footers read: the damage is further in; pyarrow names the file
        m = re.search(r"'([^']+\.parquet)'", str(exc))
        bad = Path(m.group(1)) if m else (Path(paths[0]) if len(paths) == 1 else root / table)
        reason = str(exc)
    reason = reason.replace(f"Could not open Parquet input source '{bad}': ", "")
    return DamagedCatalogError(
        f"{bad}: cannot read this catalog file ({reason}); {_repair_hint(root, table, bad)}",
        bad)


def check_readable(root: Path, tables: Iterable[str] = VISIT_TABLES) -> None:
    """Raise `DamagedCatalogError` if a data file of ``tables`` is not a whole Parquet file.

    What a resumed run checks before it counts rows as done: a row whose pedestals cannot
    be read is not done. Only each file's ends are read (`_tail_ok`).
    """
    for table in tables:
        paths = [p for _, p in visit_files(root, table)] + [
            p for _, _, p in compacted_files(root, table)]
        for path in paths:
            if not _tail_ok(path):
                problem = _parquet_problem(path)
                # (a file gone meanwhile was moved by a compaction: nothing damaged)
                if problem is not None and path.exists():
                    raise _damaged(root, table, [path], OSError(problem))


def visit_files(root: Path, table: str) -> list[tuple[int, Path]]:
    """``(visit, path)`` of the per-visit files of ``table``, by visit."""
    out = []
    try:
        entries = os.scandir(Path(root) / table)
    except (FileNotFoundError, NotADirectoryError):
        return out
    with entries:
        for entry in entries:
            if not entry.name.startswith("visit="):
                continue
            try:
                visit = int(entry.name[6:])
            except ValueError:
                continue
            path = Path(entry.path) / PART
            if path.is_file():
                out.append((visit, path))
    out.sort(key=lambda item: item[0])
    return out


def compacted_name(first: int, last: int, tag: str) -> str:
    """File name of a compacted file holding visits ``first`` to ``last``."""
    return f"v{int(first)}_{int(last)}_{tag}.parquet"


def compacted_files(root: Path, table: str) -> list[tuple[int, int, Path]]:
    """``(first visit, last visit, path)`` of the compacted files of ``table``, oldest first."""
    folder = Path(root) / table / COMPACTED
    out = []
    try:
        names = os.listdir(folder)
    except (FileNotFoundError, NotADirectoryError):
        return out
    for name in names:
        m = _COMPACTED_NAME.match(name)
        if m:
            out.append((int(m.group(1)), int(m.group(2)), folder / name))
    out.sort(key=lambda item: (_COMPACTED_NAME.match(item[2].name).group(3), item[2].name))
    return out


def _visit_schema(table: str) -> pa.Schema:
    return pa.schema([pa.field("visit", pa.int64()), *SCHEMAS[table]])


def _dataset(paths: Sequence[Path], partitions: list[Any], schema: pa.Schema) -> Any:
    import pyarrow.dataset as pads
    import pyarrow.fs as pafs

    # Built from the listing (no discovery); the partition expressions give per-visit files
    # their visit column and let a visit filter skip files of other visits.
    return pads.FileSystemDataset.from_paths(
        [str(p) for p in paths], schema=schema, format=pads.ParquetFileFormat(),
        filesystem=pafs.LocalFileSystem(), partitions=partitions)


def _without_copies(rows: pa.Table, other: pa.Table) -> pa.Table:
    """``rows`` minus those of the (visit, run) pairs that ``other`` also holds.

    A run's rows of a visit are moved into a compacted file as a whole, so a pair held by
    both a compacted file and a per-visit file can only be the two copies of the same rows
    left by a compaction stopped before it removed the per-visit file: one is dropped.
    ``other`` may come from pandas (``large_string`` run ids): it is cast to ``rows``' types.
    """
    if rows.num_rows == 0 or other.num_rows == 0:
        return rows
    keys = rows.select(["visit", "run_id"]).schema
    pairs = other.select(["visit", "run_id"]).cast(keys)
    pairs = pairs.group_by(["visit", "run_id"]).aggregate([])
    candidate = pc.is_in(rows["visit"], value_set=pairs["visit"].combine_chunks())
    hits = np.flatnonzero(candidate.to_numpy(zero_copy_only=False))
    if hits.size == 0:
        return rows
    sub = rows.select(["visit", "run_id"]).take(hits).append_column(
        "_row", pa.array(hits, pa.int64()))
    copies = sub.join(pairs, keys=["visit", "run_id"], join_type="left semi")["_row"]
    if len(copies) == 0:
        return rows
    keep = np.ones(rows.num_rows, dtype=bool)
    keep[copies.to_numpy()] = False
    return rows.filter(pa.array(keep))


def _column_names(columns: Any) -> list[str] | None:
    """``columns`` as a list of names, read once (an iterator is not consumed twice); one
    name for a string, not its letters."""
    if columns is None:
        return None
    if isinstance(columns, str):
        return [columns]
    try:
        names = list(columns)
    except TypeError:
        raise ConfigError(f"columns={columns!r}: give a column name or a list of them") from None
    if isinstance(columns, bytes | bytearray) or not all(isinstance(c, str) for c in names):
        raise ConfigError(f"columns={columns!r}: give a column name or a list of them")
    return names


def arrow_table(root: Path, table: str, columns: Sequence[str] | None = None,
                filter: Any = None) -> pa.Table:
    """Every row of ``table`` (history included) as Arrow; ``visit`` first, as int64.

    Reads the compacted files (visit ranges) and the per-visit files; ``filter`` (a
    `pyarrow.dataset.Expression`) is pushed down, so visit and detector filters skip
    files and row groups. Compacted rows come before per-visit rows; a (visit, run) held
    by both (a compaction stopped half-way) is read once.

    Raises
    ------
    DamagedCatalogError
        When a file cannot be read (the message names it and how to recover).
    """
    if table not in TABLES:
        raise ConfigError(f"unknown catalog table {table!r}; choose from {', '.join(TABLES)}")
    folder = Path(root) / table
    schema = SCHEMAS["runs"] if table == "runs" else _visit_schema(table)
    columns = _column_names(columns)
    want = list(columns) if columns is not None else list(schema.names)
    unknown = [c for c in want if c not in schema.names]
    if unknown:
        raise ConfigError(f"catalog table {table!r} has no column(s) {unknown}; it has "
                          f"{', '.join(schema.names)}")
    if table == "runs":
        tab = _read_file(Path(root), table, folder / PART, SCHEMAS["runs"])
        return tab if columns is None else tab.select(want)
    return _read_snapshot(root, table, want, filter)


def _read_snapshot(root: Path, table: str, want: list[str], filter: Any,
                   compacted: Callable[[list[tuple[int, int, Path]]], list] = list
                   ) -> pa.Table:
    """`_read_listed` of the listed files of ``table`` (``compacted`` picks the compacted
    files to read from their listing), listed again and read again while a compaction moves
    the listed files."""
    schema = _visit_schema(table)
    deadline = time.monotonic() + _RACE_SECONDS
    wait = _SNAPSHOT_WAIT
    previous = None
    while True:
        # Per-visit files are listed before compacted ones: a compaction writes a compacted
        # file before it removes the per-visit files it holds, so a row missing from the
        # first listing is in the second (never a short read), and one in both is read once.
        per_visit = visit_files(root, table)
        comp = compacted(compacted_files(root, table))
        listing = (per_visit, comp)
        try:
            with _naming_damage(root, table, [p for _, _, p in comp]
                                + [p for _, p in per_visit]):
                return _read_listed(per_visit, comp, schema, want, filter)
        except FileNotFoundError:
            # A listed file removed before it was opened: a compaction moved it. Read the
            # new layout, unless nothing moved (then the file is missing for good).
            if listing == previous or time.monotonic() > deadline:
                raise
            previous = listing
            logger.debug("%s: a compaction moved files during the read; reading again", root)
            time.sleep(wait)
            wait = min(2 * wait, 0.5)


def _read_listed(per_visit: list[tuple[int, Path]], comp: list[tuple[int, int, Path]],
                 schema: pa.Schema, want: list[str], filter: Any) -> pa.Table:
    """The rows of the listed files (see `arrow_table`)."""
    import pyarrow.dataset as pads

    read = want + [c for c in ("visit", "run_id") if c not in want] if comp else want
    parts = []
    if comp:
        field = pads.field("visit")
        ds = _dataset([p for _, _, p in comp],
                      [(field >= lo) & (field <= hi) for lo, hi, _ in comp], schema)
        parts.append(ds.to_table(columns=read, filter=filter))
    if per_visit:
        ds = _dataset([p for _, p in per_visit],
                      [pads.field("visit") == v for v, _ in per_visit], schema)
        parts.append(ds.to_table(columns=read, filter=filter))
    if not parts:
        return schema.empty_table().select(want)
    if len(parts) == 2:
        parts[0] = _without_copies(parts[0], parts[1])
    tab = pa.concat_tables(parts) if len(parts) > 1 else parts[0]
    return tab.select(want)


#: How long a read keeps reading again while a compaction moves the files it listed.
_RACE_SECONDS = 600.0


def runs_started(root: Path) -> Any:
    """``started`` of each run of the ``runs`` table (pandas Series indexed by run id): the
    writer's clock, the first key of the latest-row order (`row_order`)."""
    runs = arrow_table(root, "runs", columns=["run_id", "started"]).to_pandas()
    runs = runs[runs["started"].notna()].drop_duplicates("run_id", keep="last")
    return runs.set_index("run_id")["started"]


_NAT = np.iinfo(np.int64).min


def _micros(values: Any) -> np.ndarray:
    """Times (a pandas Series or array of datetimes, NaT or None) as int64 microseconds
    since the epoch, missing ones as `_NAT`."""
    import pandas as pd

    col = pd.Series(values, copy=False)
    if not isinstance(col.dtype, pd.DatetimeTZDtype) and col.dtype.kind != "M":
        col = pd.to_datetime(col, utc=True)  # objects (datetimes, None)
    if isinstance(col.dtype, pd.DatetimeTZDtype):
        col = col.dt.tz_convert("UTC").dt.tz_localize(None)
    out = col.to_numpy().astype("datetime64[us]").view(np.int64)
    return out


def row_order(detectors: Any, started: Any = None) -> np.ndarray:
    """The order in which the catalog writer recorded the rows of a ``detectors`` table:
    an int64 key per row (a later row has a larger key; rows recorded at the same time have
    equal keys).

    Rows are ordered by their run's start (``started`` maps run id to the ``runs`` table's
    ``started``: the writer's clock, increasing from run to run), then by ``recorded_at``
    (the writer's clock when it recorded the row, increasing within a run).

    Fallbacks, for rows without these (documented, not guessed): a row without
    ``recorded_at`` (written before the column existed) uses ``finished_at`` in its place,
    which only orders it among rows of its own run; a row whose run is not in ``started``
    (``started`` not given, or the run missing from the runs table) is placed as if its run
    had started at the row's own ``recorded_at`` (else ``finished_at``).

    Parameters
    ----------
    detectors : pandas.DataFrame
        Rows with ``finished_at`` and, when available, ``run_id`` and ``recorded_at``.
    started : pandas.Series, optional
        `runs_started` of the catalog.
    """
    import pandas as pd

    n = len(detectors)
    own = _micros(detectors["finished_at"])
    if "recorded_at" in detectors.columns:
        recorded = _micros(detectors["recorded_at"])
        own = np.where(recorded != _NAT, recorded, own)
    if n == 0 or started is None or not len(started) or "run_id" not in detectors.columns:
        return _dense_rank(own, own)
    codes, run_ids = pd.factorize(detectors["run_id"])
    run_start = _micros(pd.Series(started).reindex(run_ids))
    if (codes >= 0).all() and (run_start != _NAT).all() and (own != _NAT).all():
        # Every row's run is known (the common case): one int64 key, run rank then time,
        # instead of sorting the rows (a tenth of the time on millions of rows).
        rank_of_run = np.unique(run_start, return_inverse=True)[1].astype(np.int64)
        low = int(own.min())
        span = int(own.max()) - low + 1
        if (int(rank_of_run.max()) + 1) * span < 2**62:
            return rank_of_run[codes] * span + (own - low)
    start = np.append(run_start, _NAT)[codes]  # code -1 (a null run id): none
    return _dense_rank(np.where(start != _NAT, start, own), own)


def _dense_rank(primary: np.ndarray, secondary: np.ndarray) -> np.ndarray:
    """Dense rank of the pairs (``primary``, ``secondary``): equal pairs, equal ranks."""
    n = len(primary)
    idx = np.lexsort((secondary, primary))
    first, second = primary[idx], secondary[idx]
    step = np.ones(n, dtype=bool)
    step[1:] = (first[1:] != first[:-1]) | (second[1:] != second[:-1])
    rank = np.empty(n, dtype=np.int64)
    rank[idx] = np.cumsum(step)
    return rank


def latest_mask(detectors: Any, started: Any = None, *, order: Any = None) -> Any:
    """Boolean mask of the current rows of a ``detectors`` table (pandas DataFrame with the
    columns visit, detector, input, status, finished_at and, to order rows as the writer
    recorded them, run_id and recorded_at).

    Rows are compared in the order the catalog writer recorded them (`row_order`, with
    ``started`` from `runs_started`); the worker's ``finished_at`` decides only for rows
    written before ``recorded_at`` existed, and only among rows of one run. Current:

    - the latest row of each (visit, detector) - for rows without a detector, of each
      (visit, input);
    - and each input's latest failed row of a (visit, detector) that is newer than the
      latest measured (ok or flagged) row of that (visit, detector): inputs failing with
      the same identity (copies of a file without a visit) each keep their row;
    - except failed rows of an input whose identity was unknown: without a detector, when
      the input has a row with one at least as recent; of the unknown visit, when the
      input has a row of that detector and a known visit at least as recent; named after
      their HDU (``HDU 2``: a CCD of a multi-CCD file whose detector was not known), when a
      later run recorded a row of the input (it planned all of the file's CCDs again).

    ``order``: `row_order` of the rows if the caller has it already (``started`` then
    goes unused).
    """
    det = detectors
    if len(det) == 0:
        return np.zeros(0, dtype=bool)
    if order is None:
        order = row_order(det, started)
    named = (det["detector"] != "").to_numpy()
    key = det["detector"].where(named, "input:" + det["input"])
    frame = det[["visit", "input"]].assign(_key=key.to_numpy(), _pos=np.arange(len(det)),
                                           _order=order)
    ordered = frame.sort_values("_order", kind="stable")
    latest = ordered.groupby(["visit", "_key"], sort=False).tail(1)["_pos"].to_numpy()
    keep = np.zeros(len(det), dtype=bool)
    keep[latest] = True
    failed = (det["status"] == "failed").to_numpy()
    if (failed & named & ~keep).any():
        own = np.zeros(len(det), dtype=bool)
        own[ordered.groupby(["visit", "_key", "input"], sort=False).tail(1)["_pos"]] = True
        # (order keys are large int64: joined as Int64, never as floats that round them)
        measured = frame[named & ~failed].groupby(["visit", "_key"])["_order"].max()
        cand = frame[failed & named & own & ~keep].join(
            measured.astype("Int64").rename("_measured"), on=["visit", "_key"])
        last = cand["_measured"].to_numpy(dtype=np.int64, na_value=_NAT)
        newer = (last == _NAT) | (cand["_order"].to_numpy() > last)
        keep[cand["_pos"].to_numpy()[newer]] = True
    if failed.any():
        # a failure of an input whose identity was unknown: hidden by a row of the same input
        # at least as recent that knows more (the detector; for a detector's row of the
        # unknown visit, that detector's row of a known visit)
        visited = named & (det["visit"] != UNKNOWN_VISIT).to_numpy()
        for hidden, by, on in ((failed & ~named, named, ["input"]),
                               (failed & named & ~visited, visited, ["input", "detector"])):
            if not (hidden.any() and by.any()):
                continue
            ranked = det[on].assign(_order=order)
            newest = ranked[by].groupby(on)["_order"].max().astype("Int64").rename("_newest")
            later = det[on].join(newest, on=on)["_newest"].to_numpy(dtype=np.int64,
                                                                    na_value=_NAT)
            keep &= ~(hidden & (later != _NAT) & (later >= order))
        # a CCD of a multi-CCD file failing before its detector was known is named after
        # its HDU (``HDU 2``): once a later run has recorded that file again, the failure is
        # that run's to repeat (it plans every CCD of the file), not a current row
        unresolved = failed & det["detector"].str.fullmatch(r"HDU \d+").to_numpy()
        if unresolved.any() and "run_id" in det:
            by_input = det[["input", "run_id"]].assign(_order=order)
            newest = by_input.sort_values("_order", kind="stable").groupby("input").tail(1)
            newest = newest.set_index("input")
            last_run = det["input"].map(newest["run_id"]).to_numpy()
            last_order = det["input"].map(newest["_order"]).to_numpy(dtype=np.int64)
            keep &= ~(unresolved & (last_run != det["run_id"].to_numpy())
                      & (last_order > order))
    return keep


def _one_or_many(value: Any) -> list[Any]:
    """``value`` as a list of its items; a bare string, number or 0-d array is one item (a
    string is not iterated character by character)."""
    if (isinstance(value, (str, bytes)) or not isinstance(value, Iterable)
            or getattr(value, "ndim", None) == 0):
        return [value]
    return list(value)


def _visit_number(value: Any) -> int:
    """One visit of a ``visits=`` selection as an int: an integer, an integral number
    (``2.0``) or a string of digits; anything else is refused, never truncated (``2.7``)."""
    if isinstance(value, str):
        text = value.strip()
        if _INTEGER.fullmatch(text):
            return int(text)
    elif not isinstance(value, (bool, np.bool_)):
        with contextlib.suppress(TypeError):
            return operator.index(value)  # int, numpy integers
        if (isinstance(value, numbers.Real) and math.isfinite(value)
                and float(value).is_integer()):
            return int(value)
    raise ConfigError(f"visits: {value!r} is not a visit number (an integer, or a string "
                      "of its digits)")


def _visit_numbers(visits: Any) -> list[int] | None:
    """``read_catalog``'s ``visits`` as a list of ints (None: every visit)."""
    return None if visits is None else [_visit_number(v) for v in _one_or_many(visits)]


def _detector_keys(detectors: Any) -> tuple[list[str], list[int]] | None:
    """``read_catalog``'s ``detectors`` as (names, ids) (None: every detector)."""
    if detectors is None:
        return None
    names: list[str] = []
    ids: list[int] = []
    for key in _one_or_many(detectors):
        if isinstance(key, str):
            names.append(key.strip())
            continue
        if not isinstance(key, (bool, np.bool_)):
            with contextlib.suppress(TypeError):
                ids.append(operator.index(key))
                continue
        raise ConfigError(f"detectors: {key!r} is not a detector name or integer id")
    return names, ids


def _detector_names(root: Path, names: Sequence[str], ids: Sequence[int],
                    visits: Sequence[int] | None = None) -> list[str]:
    """The catalog's spelling of the detectors selected by ``names`` and ``ids``.

    Runs record the camera's spelling of a detector however it was asked for, so a name
    matches ignoring case (as `~ampoffset_dask.cameras.Camera.resolve` matches it) and an id
    matches ``detector_id``; a string of digits that is no name is an id, as for the
    camera. Filters then push down the exact names: compacted files are sorted by detector
    name, so a read of one detector reads only its row groups. Looks at the ``detectors``
    table (only ``visits``, when given), which has a row for every detector-visit the other
    tables hold. A name the catalog does not hold is kept as given (it selects no row); a
    name the catalog spells two ways selects both.
    """
    ids = list(ids)
    digits = [n for n in names if _INTEGER.fullmatch(n)]
    cols = ["detector", "detector_id"] if ids or digits else ["detector"]
    known = arrow_table(root, "detectors", columns=cols,
                        filter=_filter(visits, None)).group_by(cols).aggregate([])
    spellings: dict[str, set[str]] = {}
    for name in known["detector"].to_pylist():
        if name is not None:
            spellings.setdefault(name.strip().lower(), set()).add(name)
    out: set[str] = set()
    for name in names:
        found = spellings.get(name.lower())
        if found:
            out |= found
        elif name in digits:
            ids.append(int(name))
        else:
            out.add(name)
    if ids:
        by_id = known.filter(pc.is_in(known["detector_id"], value_set=pa.array(ids, pa.int64())))
        out.update(n for n in by_id["detector"].to_pylist() if n is not None)
    return sorted(out)


_INTEGER = re.compile(r"[+-]?[0-9]+")


def _filter(visits: Iterable[int] | None, detectors: Iterable[str] | None) -> Any:
    """The pushed-down filter of a visit and detector selection (None for everything)."""
    import pyarrow.dataset as pads

    flt = None
    # (typed value sets: an empty selection is an empty set of the column's type)
    if visits is not None:
        flt = pads.field("visit").isin(pa.array([int(v) for v in visits], pa.int64()))
    if detectors is not None:
        by_det = pads.field("detector").isin(pa.array([str(d) for d in detectors],
                                                      pa.string()))
        flt = by_det if flt is None else flt & by_det
    return flt


def _current_runs(root: Path, visits: Iterable[int] | None,
                  detectors: Iterable[str] | None = None, *, stale: bool = False) -> Any:
    """``(visit, detector, run_id)`` of the current ``detectors`` rows (pandas), or with
    ``stale`` of the superseded ones."""
    det = arrow_table(root, "detectors", columns=_ORDER_COLUMNS,
                      filter=_filter(visits, detectors)).to_pandas()
    # the runs after the rows: every run of a row read is in the runs read
    mask = latest_mask(det, runs_started(root))
    import pandas as pd

    cols = ["visit", "detector", "run_id"]
    if not stale:
        return det[mask][cols]
    old = det[~mask][cols]
    if len(old):
        # A failed row superseded in the run that also wrote the current measurement of its
        # (visit, detector) (another input failed planning with that identity): that run's
        # pedestals and interfaces stay current.
        current = pd.MultiIndex.from_frame(det[mask][cols])
        old = old[~pd.MultiIndex.from_frame(old).isin(current)]
    return old


def _codes(column: Any, uniques: Any) -> np.ndarray:
    """Index of each value of an Arrow column in ``uniques`` (-1 when absent)."""
    found = pc.index_in(column, value_set=pa.array(uniques))
    return pc.fill_null(found, -1).to_numpy(zero_copy_only=False).astype(np.int64)


def _in_current(tab: pa.Table, current: Any) -> np.ndarray:
    """Mask of the rows of ``tab`` whose (visit, detector, run_id) is in ``current``.

    Vectorised: each of the three keys is coded against the values of ``current`` and the
    (visit, detector) cell looked up, or, when a cell has several runs in ``current``,
    joined. Only rows of the visits in ``current`` are looked at.
    """
    import pandas as pd

    n = tab.num_rows
    if n == 0 or len(current) == 0:
        return np.zeros(n, dtype=bool)
    visits = pa.array(np.unique(current["visit"].to_numpy(np.int64)), pa.int64())
    rows = np.flatnonzero(pc.is_in(tab["visit"], value_set=visits).to_numpy(
        zero_copy_only=False))
    if rows.size < n:
        keep = np.zeros(n, dtype=bool)
        if rows.size:
            keep[rows] = _in_current(tab.select(["visit", "detector", "run_id"]).take(rows),
                                     current)
        return keep
    cv, uv = pd.factorize(current["visit"].to_numpy(np.int64))
    cd, ud = pd.factorize(current["detector"].to_numpy(object))
    cr, ur = pd.factorize(current["run_id"].to_numpy(object))
    cell = cv.astype(np.int64) * len(ud) + cd
    if len(np.unique(cell)) != len(cell):  # several current rows of a cell: exact join
        keys = pa.table({"visit": pa.array(np.asarray(uv)[cv], pa.int64()),
                         "detector": pa.array(np.asarray(ud, dtype=object)[cd], pa.string()),
                         "run_id": pa.array(np.asarray(ur, dtype=object)[cr], pa.string())})
        keys = keys.group_by(["visit", "detector", "run_id"]).aggregate([])
        rows = tab.select(["visit", "detector", "run_id"]).append_column(
            "_row", pa.array(np.arange(n, dtype=np.int64)))
        hit = rows.join(keys, keys=["visit", "detector", "run_id"],
                        join_type="left semi")["_row"].to_numpy()
        keep = np.zeros(n, dtype=bool)
        keep[hit] = True
        return keep
    vi = _codes(tab["visit"], pa.array(uv, pa.int64()))
    di = _codes(tab["detector"], pa.array(np.asarray(ud, dtype=object), pa.string()))
    ri = _codes(tab["run_id"], pa.array(np.asarray(ur, dtype=object), pa.string()))
    ok = (vi >= 0) & (di >= 0) & (ri >= 0)
    keep = np.zeros(n, dtype=bool)
    if len(uv) * len(ud) <= 50_000_000:
        lut = np.full(len(uv) * len(ud), -1, dtype=np.int64)
        lut[cell] = cr
        keep[ok] = lut[vi[ok] * len(ud) + di[ok]] == ri[ok]
    else:
        run_of_cell = pd.Series(cr.astype(np.int64), index=cell)
        found = run_of_cell.reindex(vi[ok] * len(ud) + di[ok]).to_numpy()
        keep[ok] = found == ri[ok]
    return keep


#: The ``detectors`` columns the latest-row rule needs (`latest_mask`).
_ORDER_COLUMNS = ["visit", "detector", "input", "status", "run_id", "finished_at",
                  "recorded_at"]


def _current(root: Path, table: str, tab: pa.Table, stale: Any) -> pa.Table:
    """The rows of ``tab`` that the latest-row rule shows.

    For pedestals and interfaces: the rows of the current ``detectors`` rows' runs. A run
    writes a detector's pedestals and interfaces together with its ``detectors`` row, so
    these are the rows not of a superseded (visit, detector, run) - ``stale``, from
    `_current_runs`: with no history (the common case) nothing is looked up at all.
    """
    if table == "runs" or tab.num_rows == 0:
        return tab
    if table == "detectors":
        cols = tab.select(_ORDER_COLUMNS).to_pandas()
        return tab.filter(pa.array(latest_mask(cols, runs_started(root))))
    if stale is None or len(stale) == 0:
        return tab
    return tab.filter(pa.array(~_in_current(tab, stale)))


def read_catalog(
    path: str | os.PathLike,
    table: str = "pedestals",
    format: str = "pandas",
    *,
    columns: Sequence[str] | None = None,
    visits: int | str | Iterable[int | str] | None = None,
    detectors: str | int | Iterable[str | int] | None = None,
    all_rows: bool = False,
    sort: bool = True,
):
    """Read one table of a catalog.

    Parameters
    ----------
    path : path-like
        The catalog directory (the ``output`` of `ampoffset_dask.process`).
    table : {"pedestals", "interfaces", "detectors", "runs"}
        Which table.
    format : {"pandas", "astropy", "arrow", "dask"}
        Return type: `pandas.DataFrame`, `astropy.table.Table`, `pyarrow.Table` or
        `dask.dataframe.DataFrame`.
    columns : str or sequence of str, optional
        Only this column, or these.
    visits : int, str or iterable of them, optional
        Only these visits (read only their files). A bare int or string is one visit; a
        string must be the digits of an integer (``"12"`` is visit 12).
    detectors : str, int or iterable of them, optional
        Only these detectors (compacted files are sorted by detector, so only their row
        groups are read). A bare name or id is one detector. A name matches ignoring case
        (as a run matches ``--detector``); an integer, or a string of digits that is no
        detector's name, selects the detector whose ``detector_id`` it is.
    all_rows : bool
        Every run's rows (the history) instead of the current row of each (visit, detector)
        and the pedestals and interfaces of its run.
    sort : bool
        Sort the rows (see Returns); False leaves them in storage order, which saves time
        on large reads (not for ``format="dask"``).

    Returns
    -------
    DataFrame, Table or dask DataFrame
        ``visit`` is int64 and comes first; rows are sorted by visit, detector, then amp
        order (pedestals) or LSST's interface order (interfaces).

    Raises
    ------
    InputError
        If ``path`` is not a catalog directory.
    DamagedCatalogError
        If a file of the catalog cannot be read (an `InputError`; the message names it and
        how to recover).
    ConfigError
        For an unknown table or format, or a visit or detector that is not one (a visit
        ``2.7`` or ``"2-3"``, a detector ``True``); the message names it.

    Warns
    -----
    A logged warning when a run was killed with results only in its journal (not in what
    is read): the next writer - a run, or ``ampoffset-dask catalog compact`` - recovers them.

    Examples
    --------
    >>> from ampoffset_dask import AmpOffsetConfig, read_catalog
    >>> from ampoffset_dask.catalog import CatalogWriter, DetectorResult
    >>> with CatalogWriter(tmp / "cat") as writer:
    ...     run_id = writer.start_run(config=AmpOffsetConfig())
    ...     writer.add(DetectorResult(visit=1, detector="R22_S11", status="ok",
    ...                               amp_names=["C10", "C11"], pedestals=[0.5, -0.5]))
    >>> read_catalog(tmp / "cat", "pedestals")[["visit", "detector", "amp", "pedestal"]]
       visit detector  amp  pedestal
    0      1  R22_S11  C10       0.5
    1      1  R22_S11  C11      -0.5
    >>> read_catalog(tmp / "cat", "detectors")[["visit", "detector", "status", "n_amps"]]
       visit detector status  n_amps
    0      1  R22_S11     ok       2
    """
    root = Path(path)
    if not root.is_dir():
        raise InputError(f"{root}: no catalog here (not a directory)")
    if format not in ("pandas", "astropy", "arrow", "dask"):
        raise ConfigError(f"format={format!r}: use 'pandas', 'astropy', 'arrow' or 'dask'")
    if table not in TABLES:
        raise ConfigError(f"unknown catalog table {table!r}; choose from {', '.join(TABLES)}")
    visits = _visit_numbers(visits)
    keys = _detector_keys(detectors)
    columns = _column_names(columns)
    _warn_pending(root)
    if table == "runs":
        visits = keys = None
    names = None if keys is None else _detector_names(root, *keys, visits)
    return _read(root, table, format, columns, visits, names, all_rows, sort)


def _read(root: Path, table: str, format: str, columns: Sequence[str] | None,
          visits: list[int] | None, detectors: list[str] | None, all_rows: bool,
          sort: bool) -> Any:
    """`read_catalog` once its arguments are checked: ``visits`` as ints, ``detectors`` as
    the catalog's own spelling of the names (`_detector_names`)."""
    if format == "dask":
        return _read_dask(root, table, columns, visits, detectors, all_rows)
    if not all_rows and table in ("pedestals", "interfaces"):
        # The current rows come from `detectors`, read apart from this table: a run writing
        # meanwhile could pair an old `detectors` with a new table (a detector's pedestals
        # twice) or the reverse (none). Read until neither changed during the reads.
        # A compaction moving rows meanwhile changes no row: only a run's writes count.
        for _ in range(_SNAPSHOT_TRIES):
            before = _files_state(root, ("detectors", table), visits)
            stale = _current_runs(root, visits, detectors, stale=True)
            tab = _read_rows(root, table, columns, visits, detectors, all_rows, sort, stale)
            if not _rows_changed(before, _files_state(root, ("detectors", table), visits)):
                break
            time.sleep(_SNAPSHOT_WAIT)
        else:
            logger.warning("%s: the catalog kept changing while it was read (a run is "
                           "writing it); this read may pair rows of two runs", root)
    else:
        tab = _read_rows(root, table, columns, visits, detectors, all_rows, sort, None)
    if format == "arrow":
        return tab
    df = tab.to_pandas(types_mapper=None)
    df = df.reset_index(drop=True)
    if format == "pandas":
        return df
    from astropy.table import Table

    return Table.from_pandas(df)


#: Reads of a catalog that a run is writing, and the pause between them.
_SNAPSHOT_TRIES = 20
_SNAPSHOT_WAIT = 0.05


def _files_state(root: Path, tables: Sequence[str],
                 visits: Sequence[int] | None) -> list[tuple[str, int, int, int]]:
    """The data files of ``tables`` a read of ``visits`` (None: all) uses, with their
    inode, size and modification time: the writer replaces a file by renaming a new one
    over it, so any write changes this."""
    out = []
    tops = [root / t for t in tables] if visits is None else [
        d for t in tables for d in (*(visit_dir(root, t, v) for v in visits),
                                    root / t / COMPACTED)]
    for top in tops:
        for folder, _dirs, files in os.walk(top):
            for name in files:
                try:
                    st = os.stat(os.path.join(folder, name))
                except OSError:  # replaced between the listing and the stat
                    out.append((os.path.join(folder, name), -1, -1, -1))
                    continue
                out.append((os.path.join(folder, name), st.st_ino, st.st_size,
                            st.st_mtime_ns))
    return sorted(out)


def _rows_changed(before: list[tuple[str, int, int, int]],
                  after: list[tuple[str, int, int, int]]) -> bool:
    """Whether a run wrote between two `_files_state` of a read.

    Files a compaction moved do not count: it writes compacted files (new files in
    ``_compacted``) and then removes the per-visit files they hold, changing no row. Runs
    never write compacted files, and a run and a compaction never write at the same time
    (the catalog lock), so without a new compacted file any removal is a run's.
    """
    if before == after:
        return False
    old = {path: stamp for path, *stamp in before}
    new = {path: stamp for path, *stamp in after}
    compacted = os.sep + COMPACTED + os.sep
    if any(stamp != new[path] for path, stamp in old.items() if path in new):
        return True
    added = [path for path in new if path not in old]
    if any(compacted not in path for path in added):
        return True
    moved = any(compacted in path and path.endswith(".parquet") for path in added)
    return not moved and any(path not in new for path in old)


def pending_results(root: str | os.PathLike) -> list[PendingJournal]:
    """The journals of killed runs, each counting only the results not in the tables yet.

    A run writes a visit's rows to the tables once that visit is complete, and empties its
    journal only when every visit begun is written: a killed run's journal also holds
    results already in the tables (`pending_journals` counts every line). A line that
    cannot be read counts as pending (the next writer quarantines it).
    """
    import pyarrow.dataset as ds

    out = []
    for pending in pending_journals(root, live=False):
        if not pending.n_results:
            out.append(pending)
            continue
        keys: list[tuple | None] = []
        try:
            with open(pending.path, "rb") as f:
                for line in f:
                    if not line.strip():
                        continue
                    try:
                        rec = parse_line(line, pending.run_id)
                    except (ValueError, TypeError, UnicodeDecodeError, OverflowError):
                        keys.append(None)
                        continue
                    keys.append((rec.visit, rec.detector or "", rec.input or ""))
        except FileNotFoundError:  # recovered meanwhile
            continue
        visits = sorted({k[0] for k in keys if k is not None and k[0] is not None})
        stored: set[tuple] = set()
        if visits:
            rows = arrow_table(Path(root), "detectors", ["visit", "detector", "input", "run_id"],
                               filter=(ds.field("visit").isin(visits)
                                       & (ds.field("run_id") == pending.run_id)))
            stored = {(v, d or "", i or "") for v, d, i in zip(
                rows.column("visit").to_pylist(), rows.column("detector").to_pylist(),
                rows.column("input").to_pylist(), strict=True)}
        n = len({k for k in keys if k is not None} - stored) + keys.count(None)
        out.append(dataclasses.replace(pending, n_results=n))
    return out


def _warn_pending(root: Path) -> None:
    """Warn (once per catalog and journal state) about results of a killed run that are
    only in its journal, not in the tables."""
    for pending in pending_results(root):
        if not pending.n_results:
            continue
        key = (str(pending.path.resolve()), pending.n_results)
        if key in _WARNED:
            continue
        _WARNED.add(key)
        logger.warning(
            "%s: run %s did not finish (killed?) and %d of its results are only in its "
            "journal %s, not in what is read; any writer recovers them into the tables: "
            "'ampoffset-dask catalog compact %s', or running again (it resumes)", root,
            pending.run_id, pending.n_results, pending.path, root)


#: Journals `_warn_pending` warned about: said once per process, not once per read.
_WARNED: set[tuple[str, int]] = set()


def _read_rows(root: Path, table: str, columns: Sequence[str] | None, visits: Any,
               detectors: Any, all_rows: bool, sort: bool, stale: Any) -> pa.Table:
    """`read_catalog`'s rows as Arrow, the latest-row rule applied unless ``all_rows``
    (``stale``: the superseded runs, for pedestals and interfaces)."""
    read = None
    if columns is not None:
        # The columns asked for, plus what the latest-row rule and the row order need.
        extra = list(SORT[table]) if sort else []
        if stale is not None and len(stale):
            extra += ["visit", "detector", "run_id"]
        if not all_rows and table == "detectors":
            extra += _ORDER_COLUMNS
        read = list(dict.fromkeys([*columns, *extra]))
        if table != "runs" and "visit" in read:
            read = ["visit", *[c for c in read if c != "visit"]]
    tab = arrow_table(root, table, columns=read, filter=_filter(visits, detectors))
    if not all_rows:
        tab = _current(root, table, tab, stale)
        if table == "detectors" and visits is not None and UNKNOWN_VISIT in visits:
            tab = _without_identified_failures(root, tab, detectors)
    # Stable sort: interfaces keep LSST's order within a detector.
    if sort:
        tab = sorted_table(tab, table)
    if columns is not None:
        tab = tab.select(list(columns))
    return tab


def _without_identified_failures(root: Path, tab: pa.Table, detectors: Any) -> pa.Table:
    """``tab`` (current ``detectors`` rows of some visits, the unknown one among them)
    without the failures of the unknown visit that a row of another visit hides: the same
    input measured later under a known visit (`latest_mask`, over every visit)."""
    every = arrow_table(root, "detectors", columns=_ORDER_COLUMNS,
                        filter=_filter(None, detectors)).to_pandas()
    hidden = every[~latest_mask(every, runs_started(root))
                   & (every["visit"] == UNKNOWN_VISIT).to_numpy()]
    if not len(hidden) or tab.num_rows == 0:
        return tab
    key = ["detector", "input", "run_id", "finished_at"]
    gone = set(map(tuple, hidden[key].itertuples(index=False, name=None)))
    rows = tab.select(["visit", *key]).to_pandas()
    keep = [not (v == UNKNOWN_VISIT and tuple(r) in gone)
            for v, r in zip(rows["visit"], rows[key].itertuples(index=False, name=None),
                            strict=True)]
    return tab.filter(pa.array(keep))


def _read_part(source: str, root: Path, table: str, per_visit: Any, flt: Any,
               known: frozenset[str] = frozenset()) -> Any:
    """One partition of the dask reader: one compacted file, or the rest (``source`` "").

    The compacted files are listed when the graph is built (``known``) and each is read by
    its own partition; the rest is listed when the graph is computed: the per-visit files,
    and the compacted files made since, which hold the rows a compaction meanwhile moved out
    of per-visit files (existing compacted files are never changed).
    """
    schema = _visit_schema(table)
    if source == "":
        return _unlisted_rows(root, table, flt, known).to_pandas()
    # (a file missing here, listed when the graph was built, is reported with the damage)
    with _naming_damage(root, table, [Path(source)], passes=(PermissionError,)):
        tab = pq.read_table(source, schema=schema, filters=flt)
    if per_visit is not None and len(per_visit):
        tab = _without_copies(tab, pa.Table.from_pandas(per_visit, preserve_index=False))
    return tab.to_pandas()


def _unlisted_rows(root: Path, table: str, flt: Any, known: frozenset[str] | None,
                   columns: Sequence[str] | None = None) -> pa.Table:
    """The rows of the per-visit files and of the compacted files not in ``known`` (None:
    no compacted file), a (visit, run) held by both read once (`_read_snapshot`, as
    `arrow_table` reads them)."""
    schema = _visit_schema(table)
    want = list(columns) if columns is not None else list(schema.names)
    return _read_snapshot(
        root, table, want, flt,
        lambda comp: [] if known is None else [c for c in comp if str(c[2]) not in known])


def _read_dask(root: Path, table: str, columns: Sequence[str] | None,
               visits: list[int] | None, detectors: list[str] | None, all_rows: bool):
    import dask.dataframe as dd

    if table == "runs":
        return dd.from_pandas(read_catalog(root, "runs", columns=columns), npartitions=1)
    flt = _filter(visits, detectors)
    comp = compacted_files(root, table)
    known = frozenset(str(p) for _, _, p in comp)
    if visits is not None:
        wanted = [int(v) for v in visits]
        comp = [c for c in comp if any(c[0] <= v <= c[1] for v in wanted)]
    per_visit = None
    if comp:
        # (visit, run) pairs of the per-visit files, read once: their copies in compacted
        # files (a compaction stopped half-way) are skipped.
        per_visit = _unlisted_rows(root, table, flt, None, ["visit", "run_id"]).to_pandas(
        ).drop_duplicates()
    meta = _visit_schema(table).empty_table().to_pandas()
    sources = [str(p) for _, _, p in comp] + [""]
    ddf = dd.from_map(_read_part, sources, root=root, table=table, per_visit=per_visit,
                      flt=flt, known=known, meta=meta, enforce_metadata=False)
    if not all_rows:
        if table == "detectors":
            keep = _read(root, "detectors", "pandas", None, visits, detectors, False, True)[
                ["visit", "detector", "input", "run_id"]]
            ddf = ddf.merge(keep, on=["visit", "detector", "input", "run_id"], how="inner")
        else:
            ddf = ddf.merge(_current_runs(root, visits, detectors),
                            on=["visit", "detector", "run_id"], how="inner")
    return ddf[list(columns)] if columns else ddf
