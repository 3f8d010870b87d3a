"""`CatalogWriter`: results into the Parquet tables, incrementally, atomically, resumably.

Every write goes to a hidden temporary file in the same folder and is moved into place with
`os.replace`, so readers never see a partial file; there is at most one file per visit per
table. Each result is appended to the run's journal (`~ampoffset_dask.catalog.journal`) as it
arrives; visit files are rewritten when a visit is complete and periodically while it is in
progress. A run that is killed loses at most the detectors that were in flight: the next
writer replays the journal into the tables before doing anything else.

Rows are history: a new result replaces only a row of the same (visit, detector) written by
the same run (for a failure, of the same (visit, detector) and input: each failed input keeps
its row); rows of earlier runs stay, and readers show the latest (see
`~ampoffset_dask.catalog.read`).

The writer is the one process that records results, so the order of results is its own: each
run's ``started`` is later than every earlier run's (by the writer's clock, moved on by a
microsecond if that clock went back), and each result is stamped ``recorded_at`` when `add`
records it, increasing within the run. The journal keeps the stamp, so replayed results keep
their place. The workers' clocks (``finished_at``) decide nothing.

Errors. A file that cannot be written (full disk, file-size limit, read-only file system)
raises `~ampoffset_dask.catalog.schema.CatalogWriteError` naming it; what was recorded
before stays in the tables or the journal, and the next writer recovers it. A run stopped by
any error still releases the lock; a second write error while closing is logged, not raised
over the first.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import hashlib
import json
import logging
import os
import re
import socket
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import ConfigError, InputError
from .journal import Journal, replay
from .lock import CatalogLock
from .provenance import config_digest, input_records, package_versions
from .read import (
    arrow_table,
    check_readable,
    latest_mask,
    read_visit_file,
    row_order,
    visit_dir,
)
from .schema import (
    DONE,
    PART,
    SCHEMAS,
    VISIT_TABLES,
    CatalogWriteError,
    DetectorResult,
    check_record,
    records_to_tables,
    row_key,
    sorted_table,
    storable,
)

__all__ = ["CatalogWriter", "CurrentRow", "recorded_input_stamps", "recorded_nothing",
           "rows_recorded", "write_atomic"]

logger = logging.getLogger(__name__)

#: The runs table's counts a killed run's record gets from its rows (`CatalogWriter._recount`).
_RECOUNTED = ("n_submitted", "n_ok", "n_flagged", "n_failed")


def write_atomic(table: pa.Table, path: Path, *, fsync: bool = False,
                 **options: Any) -> None:
    """Write ``table`` to ``path`` (Parquet, zstd) through a temporary file and a rename.

    ``fsync`` makes the file durable before it appears (for a file whose sources are
    deleted next); ``options`` go to `pyarrow.parquet.write_table`.

    Raises
    ------
    CatalogWriteError
        When the file cannot be written (the message names ``path`` and the reason); the
        file is then as it was.
    """
    tmp = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        with CatalogWriteError.raised_for(path):
            path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(table, tmp, compression="zstd", **options)
            if fsync:
                fd = os.open(tmp, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.UTC)


_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)
_MICROSECOND = _dt.timedelta(microseconds=1)


def _micros(when: _dt.datetime) -> int:
    """``when`` in microseconds since the epoch (exact: no float on the way)."""
    return (when - _EPOCH) // _MICROSECOND


def _dask_config(key: str, default: Any) -> Any:
    # The catalog does not import dask (layers); when the pipeline loaded it, its config
    # holds the package defaults and the user's settings.
    config = sys.modules.get("dask.config")
    return default if config is None else config.get(key, default)


_ESCAPED_BYTE = re.compile(rb"\\x([0-9a-f]{2})")


def _on_disk(name: str) -> str:
    """The local file a recorded input name stands for.

    The catalog holds a file name whose bytes are not UTF-8 escaped
    (`~ampoffset_dask.io.remote.printable`: ``junk\\xfe.fits``); its size and time are
    those of the file with the bytes themselves. A name that exists as written (or holds
    no escape, or is a URL) is that file.
    """
    if "\\x" not in name or "://" in name or os.path.lexists(name):
        return name
    raw = _ESCAPED_BYTE.sub(lambda m: bytes([int(m.group(1), 16)]),
                            name.encode("utf-8", "surrogateescape"))
    return os.fsdecode(raw)


def _stamp(size: Any, mtime: Any, etag: Any = None) -> tuple[Any, ...] | None:
    """An input's stamp as recorded (`~ampoffset_dask.catalog.provenance.input_records`),
    in the form `~ampoffset_dask.io.remote.url_stamp` and `os.stat` give it: with the
    store's version tag when there was one (an object of the same size and time whose
    bytes changed has another), whose time may then be unknown (None)."""
    if size is None or int(size) < 0:
        return None
    if etag:
        return int(size), float(mtime) if mtime is not None else None, str(etag)
    return int(size), float(mtime) if mtime is not None else float("nan")


def recorded_input_stamps(inputs: str | None) -> dict[str, tuple[Any, ...] | None]:
    """A ``runs`` row's ``inputs`` (JSON, `~ampoffset_dask.catalog.provenance.input_records`)
    as ``{path: stamp}`` (`_stamp`; None for an input recorded without one); empty when the
    text cannot be read as such records."""
    try:
        return {r["path"]: _stamp(r.get("size"), r.get("mtime"), r.get("etag"))
                for r in json.loads(inputs or "[]")}
    except (ValueError, TypeError, KeyError, AttributeError):
        return {}


def rows_recorded(run: Mapping[str, Any]) -> int:
    """The rows a ``runs`` row counts (ok, flagged and failed)."""
    return sum(run.get(k) or 0 for k in ("n_ok", "n_flagged", "n_failed"))


@dataclasses.dataclass
class _VisitState:
    visit: int
    existing: dict[str, pa.Table]
    #: this run's records of the visit, by `DetectorResult.run_key`
    records: dict[str, DetectorResult] = dataclasses.field(default_factory=dict)
    #: each record's rows (`check_record`), converted once when the record was added
    rows: dict[str, dict[str, pa.Table]] = dataclasses.field(default_factory=dict)
    #: results expected and arrived per `DetectorResult.key` (several inputs may fail with
    #: one key), and how many expected ones have not arrived
    expected: Counter[str] = dataclasses.field(default_factory=Counter)
    arrived: Counter[str] = dataclasses.field(default_factory=Counter)
    missing: int = 0
    dirty: bool = False

    def expect(self, key: str) -> None:
        self.expected[key] += 1
        if self.arrived[key] < self.expected[key]:
            self.missing += 1

    def arrive(self, key: str) -> None:
        self.arrived[key] += 1
        if self.arrived[key] <= self.expected[key]:
            self.missing -= 1

    @property
    def complete(self) -> bool:
        return bool(self.expected) and self.missing == 0


@dataclasses.dataclass(frozen=True)
class CurrentRow:
    """What resuming needs of the current ``detectors`` row of a (visit, detector).

    Attributes
    ----------
    status, input, output, applied, run_id
        The row's columns.
    config_digest : str or None
        The config digest of the run that wrote it (None when that run is not recorded).
    stamp : (int, float) or None
        Size and modification time of ``input`` when that run started (None when not
        recorded); see `CatalogWriter.input_unchanged`.
    geometry : str
        The row's ``geometry`` digest (empty when not recorded).
    """

    status: str
    input: str
    output: str
    applied: bool
    run_id: str
    config_digest: str | None
    stamp: tuple[int, float] | None
    geometry: str = ""


def recorded_nothing(run: Mapping[str, Any]) -> bool:
    """Whether a ``runs`` row is a run that failed without recording a row (refused before
    measuring: a damaged catalog file, a config changed after prepare): it holds no results
    of its config or options, and renewed nothing."""
    return run.get("status") == "failed" and not rows_recorded(run)


class CatalogWriter:
    """Writes detector results into a catalog directory, incrementally and atomically.

    Use as a context manager, or call `start_run` ... `finish_run`::

        with CatalogWriter(out) as writer:
            writer.start_run(config=cfg, inputs=paths)
            done = writer.finished()            # resume: (visit, detector) already measured
            writer.expect(visit, detectors)     # what this run will add to each visit
            writer.add(result)                  # journal now, visit file when complete
            writer.finish_run(counts)

    Parameters
    ----------
    path : path-like
        Catalog directory (created).
    flush_interval : float, optional
        Seconds between rewrites of in-progress visit files (default from dask config
        ``ampoffset.catalog.flush-interval``, else 30). Results are journaled immediately
        whatever this is.
    """

    def __init__(self, path: str | os.PathLike, *, flush_interval: float | None = None) -> None:
        self.path = Path(path)
        if flush_interval is None:
            flush_interval = _dask_config("ampoffset.catalog.flush-interval", 30.0)
        self.flush_interval = float(flush_interval)
        self.run_id: str | None = None
        self._visits: dict[int, _VisitState] = {}
        self._journal: Journal | None = None
        self._lock = CatalogLock(self.path)
        self._last_flush = time.monotonic()
        self._run_row: dict[str, Any] = {}
        self._inputs: dict[str, tuple[int, float] | None] = {}
        self._t0 = 0.0
        self._tally: dict[str, int] = {}  # results added by this run, by status
        self._last_stamp = 0  # recorded_at of the last result added (microseconds)
        self._readable = False  # check_readable passed while this writer held the lock

    # -- life cycle ---------------------------------------------------------------------------
    def __enter__(self) -> CatalogWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        failing = exc_type is not None
        try:
            if self.run_id is not None and self._journal is not None:
                status = "interrupted" if exc_type is KeyboardInterrupt else "failed"
                if exc_type is None:
                    status = "finished"
                try:
                    self.finish_run(status=status)
                except CatalogWriteError as err:
                    if not failing:
                        failing = True  # this error is reported, not one from closing
                        raise
                    # e.g. the disk that stopped the run is still full: the run's error is
                    # the one to report; its journal stays for the next writer
                    logger.warning("%s: could not record the end of run %s: %s", self.path,
                                   self.run_id, err)
        finally:
            try:
                self.close()
            except CatalogWriteError as err:
                if not failing:
                    raise
                logger.warning("%s: could not write the last results at close (they are in "
                               "the run's journal): %s", self.path, err)

    def open(self) -> None:
        """Create the directory, take the lock and replay journals of interrupted runs.

        Raises
        ------
        CatalogBusyError
            When another live process writes the catalog ("catalog in use by
            <host>:<pid> since <time>"); a `ConfigError`.
        """
        if self._lock.held:
            return
        if self.path.exists() and not self.path.is_dir():
            raise InputError(f"{self.path}: catalog output exists and is not a directory")
        # a read-only file system, no permission: nothing written
        with CatalogWriteError.raised_for(self._lock.path, "Nothing was written"):
            self.path.mkdir(parents=True, exist_ok=True)
            self._lock.acquire()
        try:
            self._recover()
        except BaseException:
            self._lock.release()
            raise

    def close(self) -> None:
        """Flush everything and release the lock (the journal is kept if not finished).

        Raises
        ------
        CatalogWriteError
            When the last results cannot be written (they stay in the journal; the lock is
            released all the same).
        """
        try:
            if self._visits:
                self.flush(force=True)
        finally:
            self._release()

    def _release(self) -> None:
        """Close the journal (kept on disk) and release the lock."""
        if self._journal is not None:
            self._journal.close()
            self._journal = None
        self._readable = False
        self._lock.release()

    def _recover(self) -> None:
        """Replay the journals of killed runs into the tables and close their run records.

        Holding the lock, no other writer is alive: a run still ``running`` in the runs
        table was killed. It becomes ``interrupted``, with its counts taken from the rows it
        left (`_recount`): it never reported them itself.
        """
        found = replay(self.path)
        by_visit: dict[int, dict[tuple[str, str], DetectorResult]] = {}
        for rec in found.records:
            by_visit.setdefault(rec.visit, {})[(rec.run_key[1], rec.run_id)] = rec
        for visit, records in by_visit.items():
            existing = {t: read_visit_file(self.path, t, visit) for t in VISIT_TABLES}
            self._write_visit(visit, existing, list(records.values()))
        runs = self._read_runs()
        killed = {row["run_id"] for row in runs if row["status"] == "running"}
        if killed:
            counts = self._recount(killed)
            for row in runs:
                if row["run_id"] in killed:
                    row["status"] = "interrupted"
                    row.update(counts.get(row["run_id"], dict.fromkeys(_RECOUNTED, 0)))
            self._write_runs(runs)
        for jpath in found.journals:
            with CatalogWriteError.raised_for(jpath), contextlib.suppress(FileNotFoundError):
                jpath.unlink()
        if found.journals or killed:
            logger.info("recovered %d journaled results of %d interrupted run(s) into %s",
                        len(found.records), len(killed | set(found.runs)), self.path)

    def _recount(self, run_ids: set[str]) -> dict[str, dict[str, int]]:
        """Counts of the rows ``run_ids`` left in the ``detectors`` table, by status.

        ``n_submitted`` is the rows measured on a worker (a ``worker`` recorded): results
        recorded without computing (inputs that failed planning, already corrected ones)
        are not submitted; tasks lost with their worker, or in flight when the run was
        killed, left no row and are not counted.
        """
        import pyarrow.dataset as pads

        det = arrow_table(self.path, "detectors", columns=["run_id", "status", "worker"],
                          filter=pads.field("run_id").isin(sorted(run_ids))).to_pylist()
        out: dict[str, dict[str, int]] = {}
        for row in det:
            counts = out.setdefault(row["run_id"], dict.fromkeys(_RECOUNTED, 0))
            name = f"n_{row['status']}"
            if name in counts:
                counts[name] += 1
            if row["worker"]:
                counts["n_submitted"] += 1
        return out

    # -- run records --------------------------------------------------------------------------
    def _read_runs(self) -> list[dict[str, Any]]:
        return arrow_table(self.path, "runs").to_pylist()

    def _check_held(self) -> None:
        """Raise `CatalogWriteError` when this writer's lock is no longer the catalog's
        (`CatalogLock.intact`): the folder was removed or moved during the run, or its lock
        file removed (perhaps for another run). Writing on would recreate part of a catalog
        and report it complete, or mix with that other run's writes."""
        if self._lock.held and not self._lock.intact():
            raise CatalogWriteError(
                f"{self.path}: the catalog's lock file {self._lock.path} was removed or "
                "replaced while this run was writing the catalog (the folder deleted or "
                "moved, or the lock file removed by hand): nothing more is written to it, and "
                "rows written before may be gone; run again into the catalog to measure what "
                "it lacks", self._lock.path)

    def _write_runs(self, rows: list[dict[str, Any]]) -> None:
        self._check_held()
        write_atomic(pa.Table.from_pylist(rows, schema=SCHEMAS["runs"]),
                     self.path / "runs" / PART)

    def check_config(self, config: Any, *, new_run: bool = False) -> None:
        """Raise `ConfigError` if the latest run used another config (unless ``new_run``).

        Raises
        ------
        DamagedCatalogError
            Unless ``new_run``, when a file of the tables cannot be read: a run that may
            resume is refused before it is recorded (`current` would be).
        """
        self.open()
        if new_run:
            return
        self._check_readable()
        runs = [r for r in self._read_runs() if not recorded_nothing(r)]
        if not runs:
            return
        latest = max(runs, key=lambda r: r["started"])
        digest = config_digest(config)
        if latest["config_digest"] != digest:
            what = ("holds results of a different configuration" if rows_recorded(latest) else
                    "was last run with a different configuration, whose run recorded no rows "
                    "(a new run over inputs it left alone: the earlier rows, of other "
                    "configurations, stay current until it measures them)")
            raise ConfigError(
                f"{self.path}: the catalog {what} (run {latest['run_id']}, config digest "
                f"{latest['config_digest']}; this run's is {digest}); use another output, "
                "or start a new run (new_run=True, --new-run) whose results replace earlier "
                "ones"
            )

    def start_run(
        self,
        *,
        config: Any,
        inputs: Iterable[str | os.PathLike] = (),
        url_stamps: Mapping[str, tuple[int, float]] | None = None,
        new_run: bool = False,
        options: Mapping[str, Any] | None = None,
        scheduler: str = "",
    ) -> str:
        """Open the catalog, check the config against earlier runs and record a new run.

        Parameters
        ----------
        config : AmpOffsetConfig or mapping
            The measurement configuration (recorded as JSON, compared by digest).
        inputs : iterable of path
            Input files (recorded with size and mtime).
        url_stamps : mapping, optional
            The size and time of inputs in a store, already asked of it (by planning), by
            URL: not asked again.
        new_run : bool
            Allow a config different from the latest run's; results of this run replace
            earlier rows of the same (visit, detector).
        options : mapping, optional
            Other run options to record (apply, output folder, camera...).
        scheduler : str
            Scheduler address, recorded.

        Returns
        -------
        str
            The run id.

        Raises
        ------
        ConfigError
            If the catalog holds results of a different config and ``new_run`` is False, or
            another live process is writing it.
        """
        self.open()
        self.check_config(config, new_run=new_run)
        digest = config_digest(config)
        runs = self._read_runs()
        stamp = _now()
        # Runs are ordered by their start (the latest-row rule): after every earlier run's,
        # even if this machine's clock went back since.
        latest = max((r["started"] for r in runs if r["started"] is not None), default=None)
        if latest is not None and stamp <= latest:
            stamp = latest + _MICROSECOND
        self.run_id = f"{stamp:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
        from ..io.remote import redact, redact_text  # (the I/O stack: when writing only)

        records = self._input_records(inputs, url_stamps)
        self._inputs = {r["path"]: _stamp(r["size"], r["mtime"], r.get("etag"))
                        for r in records}
        inputs_json = json.dumps(records)
        cfg = config.to_dict() if hasattr(config, "to_dict") else dict(config)
        self._run_row = {
            "run_id": self.run_id,
            "status": "running",
            "started": stamp,
            "finished": None,
            "seconds": None,
            "config": json.dumps(cfg, sort_keys=True),
            "config_digest": digest,
            # an output URL's password must not reach the catalog either
            "options": redact_text(json.dumps(dict(options or {}), sort_keys=True,
                                              default=str)),
            "versions": json.dumps(package_versions(), sort_keys=True),
            "inputs": inputs_json,
            "inputs_digest": hashlib.sha256(inputs_json.encode()).hexdigest()[:16],
            "n_inputs": len(records),
            "n_submitted": 0,
            "n_skipped": 0,
            "n_ok": 0,
            "n_flagged": 0,
            "n_failed": 0,
            "scheduler": redact(scheduler),
            "host": socket.gethostname(),
            "timings": "{}",
        }
        self._write_runs([*runs, self._run_row])
        self._journal = Journal(self.path, self.run_id)
        self._t0 = time.monotonic()
        self._tally = {}
        self._last_stamp = _micros(stamp)
        return self.run_id

    @staticmethod
    def _input_records(inputs: Iterable[str | os.PathLike],
                       url_stamps: Mapping[str, tuple[int, float]] | None
                       ) -> list[dict[str, Any]]:
        """`input_records` of ``inputs``, each path as the rows name it (`redact`: no
        credentials, undecodable bytes escaped), its size and time those of the file or
        object itself."""
        from ..io.remote import REDACTED, is_url, redact

        names = [os.fspath(p) for p in inputs]
        # the stamps planning asked, under the raw URL and under the name a caller that
        # redacted its inputs gives
        stamps: dict[str, Any] = dict(url_stamps or {})
        stamps.update({redact(u): v for u, v in stamps.items()})
        # a URL redacted by the caller is not asked again: the store would get the
        # placeholder for a password or signature (refused, with a needless warning)
        marks = (f":{REDACTED}@", f"://{REDACTED}@", "?<signature>")
        stamps.update({n: None for n in names if is_url(n) and n not in stamps
                       and any(m in n for m in marks)})
        records = input_records([_on_disk(n) for n in names], stamps)
        for record, name in zip(records, names, strict=True):
            record["path"] = redact(name)
        return records

    def annotate_run(self, **fields: Any) -> None:
        """Set fields of this run's record (e.g. ``scheduler``) written by `finish_run`."""
        unknown = set(fields) - set(SCHEMAS["runs"].names)
        if unknown:
            raise ConfigError(f"runs table has no column(s) {sorted(unknown)}")
        self._run_row.update(fields)

    def save_run(self) -> None:
        """Write this run's record as it stands (its annotations, still ``running``) to the
        runs table now: what the next writer keeps of it if this run is killed, when it
        recovers the run (``interrupted``, with the counts of the rows it left)."""
        if self.run_id is None or self._journal is None:
            return
        runs = [r for r in self._read_runs() if r["run_id"] != self.run_id]
        self._write_runs([*runs, dict(self._run_row)])

    def finish_run(
        self,
        counts: Mapping[str, int] | None = None,
        *,
        timings: Mapping[str, float] | None = None,
        status: str = "finished",
    ) -> None:
        """Flush every visit, record the run's counts and timings, remove its journal.

        Without ``counts`` (a run stopped early), the counts are what this writer recorded:
        results by status, and ``n_submitted`` as the results measured on a worker (see
        `_recount`).
        """
        self.flush(force=True)
        if self.run_id is None or self._journal is None:
            return
        row = dict(self._run_row)
        if counts is None:  # stopped early: at least what it recorded
            counts = {f"n_{k}": v for k, v in self._tally.items()}
        row.update({k: int(v) for k, v in counts.items() if k in row})
        row["status"] = status
        row["finished"] = _now()
        row["seconds"] = time.monotonic() - self._t0
        row["timings"] = json.dumps(dict(timings or {}), sort_keys=True)
        runs = [r for r in self._read_runs() if r["run_id"] != self.run_id]
        self._write_runs([*runs, row])
        self._journal.remove()
        self._journal = None

    # -- results ------------------------------------------------------------------------------
    def finished(self, config: Any = None) -> set[tuple[int, str]]:
        """``(visit, detector)`` pairs a resumed run may skip.

        A pair is done when its current row has status ok or flagged, was written by a run
        of the same config (``config``, else this run's), and its input file has the size
        and modification time that run recorded (a changed input is measured again).
        `~ampoffset_dask.process` asks more (`current`): the same input, and the outputs
        this run writes.
        """
        digest = (config_digest(config) if config is not None
                  else self._run_row.get("config_digest"))
        return {key for key, row in self.current().items()
                if row.status in DONE and (digest is None or row.config_digest == digest)
                and self.input_unchanged(row)}

    def current(self) -> dict[tuple[int, str], CurrentRow]:
        """The current row of each (visit, detector) with a detector name (the latest-row
        rule of `~ampoffset_dask.catalog.read`; of several current failed rows, the latest).

        Raises
        ------
        DamagedCatalogError
            When a file of the tables cannot be read: rows whose pedestals or interfaces
            cannot be read are not done, and resuming would skip them.
        """
        if not (self.path / "detectors").is_dir():
            return {}
        import pandas as pd

        runs: dict[str, tuple[str, dict[str, Any]]] = {}
        started: dict[str, Any] = {}
        for row in self._read_runs():
            runs[row["run_id"]] = (row["config_digest"], recorded_input_stamps(row["inputs"]))
            started[row["run_id"]] = row["started"]
        det = arrow_table(self.path, "detectors", columns=[
            "visit", "detector", "status", "input", "output", "applied", "run_id",
            "finished_at", "recorded_at", "geometry"]).to_pandas()
        self._check_readable()
        rank = row_order(det, pd.Series(started, dtype="datetime64[us, UTC]"))
        # (once: the latest-row rule and the sort below both use it)
        det = det.assign(_order=rank)
        det = det[latest_mask(det, order=rank) & (det["detector"] != "").to_numpy()]
        det = det.sort_values("_order", kind="stable")
        out: dict[tuple[int, str], CurrentRow] = {}
        for visit, name, status, path, output, applied, run_id, geometry in zip(
                det["visit"], det["detector"], det["status"], det["input"], det["output"],
                det["applied"], det["run_id"], det["geometry"], strict=True):
            run_digest, stamps = runs.get(run_id, (None, {}))
            out[(int(visit), name)] = CurrentRow(
                status=status, input=path, output=output or "", applied=bool(applied),
                run_id=run_id, config_digest=run_digest, stamp=stamps.get(path),
                geometry=geometry if isinstance(geometry, str) else "")  # null: NaN
        return out

    def _check_readable(self) -> None:
        """`check_readable` of the tables, once while the lock is held (no one else
        changes the files meanwhile, and this writer replaces files whole)."""
        if not self._readable:
            check_readable(self.path, VISIT_TABLES)
            self._readable = self._lock.held

    def input_unchanged(self, row: CurrentRow, stamp: tuple | None = None) -> bool:
        """Whether ``row``'s input still has the size and modification time its run recorded
        (True when none was recorded: nothing to compare with); ``stamp``: the input's
        stamp now, when known (a store object's, before `start_run` holds them)."""
        return not self._changed(row.input, row.stamp, stamp)

    def _changed(self, path: str, then: tuple[int, float] | None,
                 known: tuple | None = None) -> bool:
        if then is None:
            return False  # not recorded: nothing to compare with
        if known is not None:
            now = _stamp(*known)  # as recorded stamps are
        elif path in self._inputs:
            now = self._inputs[path]
        else:
            try:
                st = os.stat(_on_disk(path))
            except OSError:
                return True
            now = _stamp(st.st_size, st.st_mtime)
        if now is not None and len(then) < len(now):
            now = now[:len(then)]  # recorded without its ETag (an earlier version's run)
        return now != then

    def _state(self, visit: int) -> _VisitState:
        st = self._visits.get(visit)
        if st is None:
            existing = {t: read_visit_file(self.path, t, visit) for t in VISIT_TABLES}
            st = self._visits[visit] = _VisitState(visit, existing)
        return st

    def expect(self, visit: int, detectors: Iterable[str]) -> None:
        """Declare that this run will add ``detectors`` to ``visit``.

        The visit's files are rewritten as soon as all of them have arrived. Each entry is
        one result, by `DetectorResult.key`: a key listed twice (two inputs failing with
        one (visit, detector)) waits for two results.
        """
        from ..io.remote import redact

        st = self._state(int(visit))
        for key in detectors:
            # an unidentified input's key holds its path: as `add` records it (`storable`)
            st.expect(f"input:{redact(key[6:])}" if key.startswith("input:") else key)

    def add(self, result: DetectorResult) -> None:
        """Record one result: journal it now, write its visit when the visit is complete.

        The result is stamped ``recorded_at`` (this writer's clock, later than the run's
        start and than the result before): the order the latest-row rule follows. A result
        that cannot be stored (identity out of range, values of the wrong type) is recorded
        as a failed row of the unknown visit, with the reason.

        Raises
        ------
        CatalogWriteError
            When the journal or a visit file cannot be written (full disk); the result is
            still written with its visit when the run is closed, if the disk allows.
        """
        if self._journal is None:
            raise RuntimeError("CatalogWriter.add called before start_run")
        if not result.run_id:
            result.run_id = self.run_id or ""
        # The writer's clock orders results, never the worker's (finished_at): strictly
        # increasing within the run, so two results are never tied.
        self._last_stamp = max(time.time_ns() // 1000, self._last_stamp + 1)
        result.recorded_at = self._last_stamp
        # no credentials and no undecodable file-name bytes in the journal or the tables:
        # one such name would otherwise stop the whole batch, at every rerun
        storable(result)
        try:
            rows = check_record(result)
        except ValueError as exc:
            logger.warning("%s: cannot record the result of %s: %s", self.path,
                           result.input or result.detector, exc)
            result = storable(DetectorResult.failure(
                f"InputError: {result.input}: cannot record the result ({exc})",
                visit=None, detector=None, input=str(result.input)))
            result.run_id = self.run_id or ""
            result.recorded_at = self._last_stamp
            rows = check_record(result)
        visit, key = result.run_key
        st = self._state(visit)  # may read the visit's files: before anything is recorded
        # Memory first, then the journal: an interrupt (Ctrl-C, SIGTERM) between the two
        # still writes the result when the run is closed, whereas a result journaled first
        # and interrupted before it reached memory was left out of that write and its
        # journal then removed.
        st.records[key] = result
        st.rows[key] = rows
        st.arrive(result.key[1])
        st.dirty = True
        # counted with the memory copy: a result whose journal line cannot be written (full
        # disk) is still written with the visit when the run is closed
        self._tally[result.status] = self._tally.get(result.status, 0) + 1
        if result.worker:
            self._tally["submitted"] = self._tally.get("submitted", 0) + 1
        self._check_held()
        self._journal.append(result)
        if st.complete:
            self._flush_visit(st)
            del self._visits[visit]
            self._truncate_journal()
        elif time.monotonic() - self._last_flush >= self.flush_interval:
            self.flush()

    def _truncate_journal(self) -> None:
        """Empty the journal once everything in it is in the Parquet files (bounds its size)."""
        if self._journal is not None and not any(st.dirty for st in self._visits.values()):
            self._journal.truncate()

    def flush(self, visit: int | None = None, *, force: bool = False) -> None:
        """Rewrite the files of in-progress visits that changed since the last write."""
        targets = [self._visits[visit]] if visit is not None else list(self._visits.values())
        for st in targets:
            if st.dirty or (force and st.records):
                self._flush_visit(st)
        self._last_flush = time.monotonic()
        self._truncate_journal()

    def _flush_visit(self, st: _VisitState) -> None:
        if not st.records:
            return
        self._check_held()
        self._write_visit(st.visit, st.existing, list(st.records.values()),
                          rows=[st.rows[key] for key in st.records])
        st.dirty = False

    def _write_visit(self, visit: int, existing: dict[str, pa.Table],
                     records: list[DetectorResult],
                     rows: list[dict[str, pa.Table]] | None = None) -> None:
        """``existing`` rows plus ``records``, a record replacing the row of its own run with
        the same `~ampoffset_dask.catalog.schema.row_key` (and that row's pedestals and
        interfaces).

        ``rows``: the records' rows already converted (`check_record`), in the same order.
        """
        if rows is None:
            new = records_to_tables(records, self.run_id or "")
        else:
            new = {t: pa.concat_tables([r[t] for r in rows]).combine_chunks()
                   for t in VISIT_TABLES}
        replaced = {(r.run_key[1], r.run_id or self.run_id or "") for r in records}
        for table in VISIT_TABLES:
            old = existing[table]
            if old.num_rows:
                if table == "detectors":
                    inputs, statuses = old["input"].to_pylist(), old["status"].to_pylist()
                else:  # the rows of a measured detector (a failure has none)
                    inputs = statuses = [""] * old.num_rows
                keys = [(row_key(d, i, s), run) for d, i, s, run in zip(
                    old["detector"].to_pylist(), inputs, statuses, old["run_id"].to_pylist(),
                    strict=True)]
                old = old.filter(pa.array([k not in replaced for k in keys]))
            merged = pa.concat_tables([old, new[table]]) if old.num_rows else new[table]
            folder = visit_dir(self.path, table, visit)
            if merged.num_rows == 0:
                with contextlib.suppress(FileNotFoundError):
                    (folder / PART).unlink()
                continue
            write_atomic(sorted_table(merged, table), folder / PART)

