"""The results catalog: Parquet tables of detectors, pedestals, interfaces and runs.

Layout of a catalog directory ``CATALOG``::

    CATALOG/detectors/visit=<v>/part-0.parquet    one row per (visit, detector)
    CATALOG/pedestals/visit=<v>/part-0.parquet    one row per (visit, detector, amp)
    CATALOG/interfaces/visit=<v>/part-0.parquet   one row per (visit, detector, interface)
    CATALOG/runs/part-0.parquet                   one row per run (config, versions, inputs)

The ``visit`` column lives in the hive-style directory name, so ``pandas.read_parquet(CATALOG /
"pedestals")`` and ``dask.dataframe.read_parquet`` see it (as a category; `read_catalog` gives
int64). Inputs whose visit could not be determined are recorded under ``visit=-1``.

There is at most one file per visit per table; every write goes to a hidden temporary file
in the same folder and is moved into place with `os.replace`, so readers never see a partial
file. Each result is also appended to a small journal (``CATALOG/_journal/<run>.jsonl``) as it
arrives; visit files are rewritten when a visit is complete and periodically while it is in
progress. A run that is killed loses at most the detectors that were in flight: the next run
replays the journal into the tables before doing anything else.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import hashlib
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from .errors import ConfigError, InputError

__all__ = [
    "SCHEMAS",
    "TABLES",
    "CatalogWriter",
    "DetectorResult",
    "config_digest",
    "package_versions",
    "read_catalog",
]

logger = logging.getLogger(__name__)

#: Visit used for inputs whose identity could not be read.
UNKNOWN_VISIT = -1

_TS = pa.timestamp("us", tz="UTC")

#: Column schemas of the per-visit tables (``visit`` is the partition column, not stored).
SCHEMAS: dict[str, pa.Schema] = {
    "detectors": pa.schema([
        ("detector", pa.string()),
        ("detector_id", pa.int32()),
        ("status", pa.string()),
        ("error", pa.string()),
        ("n_amps", pa.int32()),
        ("n_interfaces", pa.int32()),
        ("masked_fraction", pa.float64()),
        ("all_masked", pa.bool_()),
        ("background_ok", pa.bool_()),
        ("background", pa.string()),
        ("detection", pa.string()),
        ("n_detected", pa.int64()),
        ("warnings", pa.string()),
        ("applied", pa.bool_()),
        ("overscan", pa.string()),
        ("gain", pa.string()),
        ("seconds", pa.float64()),
        ("cpu_seconds", pa.float64()),
        ("attempts", pa.int32()),
        ("worker", pa.string()),
        ("input", pa.string()),
        ("output", pa.string()),
        ("run_id", pa.string()),
        ("finished_at", _TS),
        ("dataset_id", pa.string()),
        ("fetched_fraction", pa.float64()),
    ]),
    "pedestals": pa.schema([
        ("detector", pa.string()),
        ("detector_id", pa.int32()),
        ("amp", pa.string()),
        ("amp_index", pa.int32()),
        ("pedestal", pa.float64()),
        ("applied", pa.bool_()),
        ("run_id", pa.string()),
    ]),
    "interfaces": pa.schema([
        ("detector", pa.string()),
        ("detector_id", pa.int32()),
        ("interface_id", pa.string()),
        ("amp_a", pa.string()),
        ("amp_b", pa.string()),
        ("side", pa.int8()),
        ("length", pa.int32()),
        ("offset_raw", pa.float64()),
        ("offset", pa.float64()),
        ("good_frac", pa.float64()),
        ("min_frac_fail", pa.bool_()),
        ("max_offset_fail", pa.bool_()),
        ("run_id", pa.string()),
    ]),
    "runs": pa.schema([
        ("run_id", pa.string()),
        ("status", pa.string()),
        ("started", _TS),
        ("finished", _TS),
        ("seconds", pa.float64()),
        ("config", pa.string()),
        ("config_digest", pa.string()),
        ("options", pa.string()),
        ("versions", pa.string()),
        ("inputs", pa.string()),
        ("inputs_digest", pa.string()),
        ("n_inputs", pa.int64()),
        ("n_submitted", pa.int64()),
        ("n_skipped", pa.int64()),
        ("n_ok", pa.int64()),
        ("n_flagged", pa.int64()),
        ("n_failed", pa.int64()),
        ("scheduler", pa.string()),
        ("host", pa.string()),
        ("timings", pa.string()),
    ]),
}
VISIT_TABLES = ("detectors", "pedestals", "interfaces")
TABLES = (*VISIT_TABLES, "runs")
_PART = "part-0.parquet"
_DONE = ("ok", "flagged")


# ---------------------------------------------------------------------------------------------
# records
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass
class DetectorResult:
    """The small record one detector task returns (no pixels).

    Attributes
    ----------
    visit : int
        Visit number (`UNKNOWN_VISIT` when the input's identity could not be read).
    detector : str
        Detector name (empty when unknown).
    status : str
        ``"ok"``, ``"flagged"`` (measured, but e.g. every pixel masked) or ``"failed"``.
    error : str
        Why the detector failed or was flagged (empty when ok).
    input, output : str
        Input file (or URL) and corrected output file (empty when none was written).
    dataset_id : str
        Butler dataset UUID of the input (empty for inputs not found through a Butler).
    fetched_fraction : float
        URL inputs: the fraction of the object's bytes this task fetched (NaN for local
        files).
    seconds, cpu_seconds : float
        Wall time and CPU time (of the task's thread) spent on the worker.
    amp_names, pedestals : list
        Pedestals in amp order.
    interfaces : list of dict
        `InterfaceResult.to_dict` of each interface.
    overscan, gain : str
        Raw ISR applied while reading (``"per-row"``, ``"mean"``, ``"none"``; ``"nominal"``,
        ``"none"``); empty when the detector failed before reading.
    """

    visit: int
    detector: str
    status: str
    error: str = ""
    detector_id: int | None = None
    input: str = ""
    output: str = ""
    amp_names: list[str] = dataclasses.field(default_factory=list)
    pedestals: list[float] = dataclasses.field(default_factory=list)
    interfaces: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    applied: bool = False
    masked_fraction: float = float("nan")
    all_masked: bool = False
    background: str = ""
    detection: str = ""
    n_detected: int = 0
    warnings: list[str] = dataclasses.field(default_factory=list)
    overscan: str = ""
    gain: str = ""
    seconds: float = 0.0
    cpu_seconds: float = float("nan")
    attempts: int = 1
    worker: str = ""
    finished_at: float = dataclasses.field(default_factory=time.time)
    run_id: str = ""
    dataset_id: str = ""
    fetched_fraction: float = float("nan")

    @property
    def key(self) -> tuple[int, str]:
        """``(visit, detector)``; for unidentified inputs the detector part is the input."""
        return self.visit, _row_key(self.detector, self.input)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dictionary (the journal line)."""
        out = dataclasses.asdict(self)
        out["pedestals"] = [float(p) for p in self.pedestals]
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DetectorResult:
        """Inverse of `to_dict`; unknown keys are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    @classmethod
    def from_measurement(
        cls,
        measurement: Any,
        *,
        visit: int,
        detector: Any,
        input: str | os.PathLike,
        output: str | os.PathLike | None = None,
        **fields: Any,
    ) -> DetectorResult:
        """The record of a measured detector (``ok``, or ``flagged`` when all masked).

        Parameters
        ----------
        measurement : DetectorMeasurement
            What `~ampoffset_dask.measure_detector` returned.
        visit : int
            The visit.
        detector : Detector
            The geometry measured (name and id are recorded).
        input : path-like
            The input file.
        output : path-like, optional
            The corrected exposure written (``applied`` is True when given).
        **fields
            Other attributes (``seconds``, ``cpu_seconds``, ``worker``, ``attempts``...).
        """
        m = measurement
        flagged = bool(m.all_masked)
        return cls(
            visit=int(visit),
            detector=detector.name,
            status="flagged" if flagged else "ok",
            error="all pixels masked; pedestals set to 0" if flagged else "",
            detector_id=detector.id,
            input=str(input),
            output=str(output) if output else "",
            amp_names=list(m.amp_names),
            pedestals=[float(p) for p in m.pedestals],
            interfaces=[i.to_dict() for i in m.interfaces],
            applied=bool(output),
            masked_fraction=float(m.masked_fraction),
            all_masked=flagged,
            background=m.background,
            detection=m.detection,
            n_detected=int(m.n_detected),
            warnings=list(m.warnings),
            **fields,
        )

    @classmethod
    def failure(
        cls,
        error: str,
        *,
        visit: int | None,
        detector: str | None,
        input: str = "",
        detector_id: int | None = None,
        attempts: int = 1,
        worker: str = "",
        seconds: float = 0.0,
    ) -> DetectorResult:
        """A ``failed`` record with ``error`` as the message."""
        return cls(
            visit=UNKNOWN_VISIT if visit is None else int(visit),
            detector=detector or "",
            status="failed",
            error=error,
            detector_id=detector_id,
            input=input,
            attempts=attempts,
            worker=worker,
            seconds=seconds,
        )


def _row_key(detector: str, input: str) -> str:
    return detector if detector else f"input:{input}"


def _records_to_tables(records: Sequence[DetectorResult], run_id: str) -> dict[str, pa.Table]:
    det: dict[str, list] = {f.name: [] for f in SCHEMAS["detectors"]}
    ped: dict[str, list] = {f.name: [] for f in SCHEMAS["pedestals"]}
    itf: dict[str, list] = {f.name: [] for f in SCHEMAS["interfaces"]}
    for r in records:
        rid = r.run_id or run_id
        det["detector"].append(r.detector)
        det["detector_id"].append(r.detector_id)
        det["status"].append(r.status)
        det["error"].append(r.error)
        det["n_amps"].append(len(r.pedestals))
        det["n_interfaces"].append(len(r.interfaces))
        det["masked_fraction"].append(float(r.masked_fraction))
        det["all_masked"].append(bool(r.all_masked))
        det["background_ok"].append(r.background == "ok")
        det["background"].append(r.background)
        det["detection"].append(r.detection)
        det["n_detected"].append(int(r.n_detected))
        det["warnings"].append("; ".join(r.warnings))
        det["applied"].append(bool(r.applied))
        det["overscan"].append(r.overscan)
        det["gain"].append(r.gain)
        det["seconds"].append(float(r.seconds))
        det["cpu_seconds"].append(float(r.cpu_seconds))
        det["attempts"].append(int(r.attempts))
        det["worker"].append(r.worker)
        det["input"].append(r.input)
        det["output"].append(r.output)
        det["run_id"].append(rid)
        det["finished_at"].append(_dt.datetime.fromtimestamp(r.finished_at, _dt.UTC))
        det["dataset_id"].append(r.dataset_id or "")
        det["fetched_fraction"].append(float(r.fetched_fraction))
        if r.status == "failed":
            continue
        for i, (amp, value) in enumerate(zip(r.amp_names, r.pedestals, strict=True)):
            ped["detector"].append(r.detector)
            ped["detector_id"].append(r.detector_id)
            ped["amp"].append(amp)
            ped["amp_index"].append(i)
            ped["pedestal"].append(float(value))
            ped["applied"].append(bool(r.applied))
            ped["run_id"].append(rid)
        for it in r.interfaces:
            itf["detector"].append(r.detector)
            itf["detector_id"].append(r.detector_id)
            itf["interface_id"].append(it["id"])
            itf["amp_a"].append(it["amp_a"])
            itf["amp_b"].append(it["amp_b"])
            itf["side"].append(int(it["side"]))
            itf["length"].append(int(it["length"]))
            itf["offset_raw"].append(float(it["offset_raw"]))
            itf["offset"].append(float(it["offset"]))
            itf["good_frac"].append(float(it["good_frac"]))
            itf["min_frac_fail"].append(bool(it["min_frac_fail"]))
            itf["max_offset_fail"].append(bool(it["max_offset_fail"]))
            itf["run_id"].append(rid)
    return {
        "detectors": pa.table(det, schema=SCHEMAS["detectors"]),
        "pedestals": pa.table(ped, schema=SCHEMAS["pedestals"]),
        "interfaces": pa.table(itf, schema=SCHEMAS["interfaces"]),
    }


def _sorted(table: pa.Table, name: str) -> pa.Table:
    """Rows in a stable, documented order (Arrow's sort is stable)."""
    keys = [c for c in _SORT[name] if c in table.column_names]
    if table.num_rows < 2 or not keys:
        return table
    return table.sort_by([(c, "ascending") for c in keys])


# ---------------------------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------------------------
def config_digest(config: Any) -> str:
    """SHA-256 (hex, 16 chars) of a config's canonical JSON (``to_dict`` when it has one)."""
    data = config.to_dict() if hasattr(config, "to_dict") else config
    text = json.dumps(data, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def package_versions() -> dict[str, str]:
    """Versions of Python and of the packages that change the numbers or the files."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("ampoffset-dask", "numpy", "scipy", "astropy", "xarray", "dask",
                 "distributed", "pyarrow", "pandas"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:  # pragma: no cover - optional in odd environments
            out[name] = "not installed"
    return out


def input_records(paths: Iterable[str | os.PathLike]) -> list[dict[str, Any]]:
    """``[{path, size, mtime}]`` of each input (size -1 when the file cannot be stat'ed)."""
    out = []
    for p in paths:
        try:
            st = os.stat(p)
            out.append({"path": str(p), "size": st.st_size, "mtime": st.st_mtime})
        except OSError:
            out.append({"path": str(p), "size": -1, "mtime": None})
    return out


def _write_atomic(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        pq.write_table(table, tmp, compression="zstd")
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _visit_dir(root: Path, table: str, visit: int) -> Path:
    return root / table / f"visit={int(visit)}"


def _read_visit_file(root: Path, table: str, visit: int) -> pa.Table:
    path = _visit_dir(root, table, visit) / _PART
    if not path.exists():
        return SCHEMAS[table].empty_table()
    return pq.read_table(path, schema=SCHEMAS[table])


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.UTC)


# ---------------------------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------------------------
def _arrow_table(root: Path, table: str, columns: Sequence[str] | None = None,
                 filter: Any = None) -> pa.Table:
    if table not in TABLES:
        raise ConfigError(f"unknown catalog table {table!r}; choose from {', '.join(TABLES)}")
    folder = root / table
    if table == "runs":
        schema = SCHEMAS["runs"]
        path = folder / _PART
        tab = pq.read_table(path, schema=schema) if path.exists() else schema.empty_table()
        if columns is not None:
            tab = tab.select(list(columns))
        return tab
    schema = pa.schema([pa.field("visit", pa.int64()), *SCHEMAS[table]])
    if not folder.is_dir() or not any(folder.glob(f"visit=*/{_PART}")):
        tab = schema.empty_table()
        return tab.select(list(columns)) if columns is not None else tab
    part = pads.partitioning(pa.schema([("visit", pa.int64())]), flavor="hive")
    dataset = pads.dataset(folder, format="parquet", partitioning=part, schema=schema)
    return dataset.to_table(columns=list(columns) if columns else None, filter=filter)


_SORT = {
    "detectors": ["visit", "detector", "input"],
    "pedestals": ["visit", "detector", "amp_index"],
    "interfaces": ["visit", "detector"],
    "runs": ["started"],
}


def read_catalog(
    path: str | os.PathLike,
    table: str = "pedestals",
    format: str = "pandas",
    *,
    columns: Sequence[str] | None = None,
    visits: Iterable[int] | None = None,
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
    columns : sequence of str, optional
        Only these columns.
    visits : iterable of int, optional
        Only these visits (read only their files).

    Returns
    -------
    DataFrame, Table or dask DataFrame
        ``visit`` is int64 and comes first; rows are sorted by visit, detector, then amp
        order (pedestals) or LSST's interface order (interfaces).

    Raises
    ------
    InputError
        If ``path`` is not a catalog directory.
    ConfigError
        For an unknown table or format.
    """
    root = Path(path)
    if not root.is_dir():
        raise InputError(f"{root}: no catalog here (not a directory)")
    if format not in ("pandas", "astropy", "arrow", "dask"):
        raise ConfigError(f"format={format!r}: use 'pandas', 'astropy', 'arrow' or 'dask'")
    if format == "dask":
        import dask.dataframe as dd

        if table == "runs":
            return dd.from_pandas(read_catalog(root, "runs", columns=columns), npartitions=1)
        ddf = dd.read_parquet(str(root / table), columns=list(columns) if columns else None)
        if "visit" in ddf.columns:
            ddf["visit"] = ddf["visit"].astype("int64")
        return ddf
    flt = None
    if visits is not None and table != "runs":
        flt = pads.field("visit").isin([int(v) for v in visits])
    tab = _arrow_table(root, table, columns=None, filter=flt)
    # Stable sort: interfaces keep LSST's order within a detector.
    tab = _sorted(tab, table)
    if columns is not None:
        tab = tab.select(list(columns))
    if format == "arrow":
        return tab
    df = tab.to_pandas(types_mapper=None)
    df = df.reset_index(drop=True)
    if format == "pandas":
        return df
    from astropy.table import Table

    return Table.from_pandas(df)


# ---------------------------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass
class _VisitState:
    visit: int
    existing: dict[str, pa.Table]
    records: dict[str, DetectorResult] = dataclasses.field(default_factory=dict)
    expected: set[str] = dataclasses.field(default_factory=set)
    drop: set[str] = dataclasses.field(default_factory=set)
    dirty: bool = False


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
        self._journal = None
        self._journal_path: Path | None = None
        self._lock_path = self.path / ".lock"
        self._locked = False
        self._last_flush = time.monotonic()
        self._run_row: dict[str, Any] = {}
        self._t0 = 0.0
        self._unknown: set[str] | None = None

    # -- life cycle ---------------------------------------------------------------------------
    def __enter__(self) -> CatalogWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.run_id is not None and self._journal is not None:
            status = "interrupted" if exc_type is KeyboardInterrupt else "failed"
            if exc_type is None:
                status = "finished"
            self.finish_run(status=status)
        self.close()

    def open(self) -> None:
        """Create the directory, take the lock and replay journals of interrupted runs."""
        if self._locked:
            return
        if self.path.exists() and not self.path.is_dir():
            raise InputError(f"{self.path}: catalog output exists and is not a directory")
        self.path.mkdir(parents=True, exist_ok=True)
        self._acquire_lock()
        self._recover()

    def close(self) -> None:
        """Flush everything and release the lock (the journal is kept if not finished)."""
        if self._visits:
            self.flush(force=True)
        if self._journal is not None:
            self._journal.close()
            self._journal = None
        self._release_lock()

    def _acquire_lock(self) -> None:
        me = {"pid": os.getpid(), "host": socket.gethostname(), "time": time.time()}
        for _ in range(3):
            try:
                fd = os.open(self._lock_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                try:
                    owner = json.loads(self._lock_path.read_text() or "{}")
                except (OSError, ValueError):
                    owner = {}
                if _owner_alive(owner):
                    raise ConfigError(
                        f"{self.path}: catalog is being written by process {owner.get('pid')} "
                        f"on {owner.get('host')}; wait for it or remove {self._lock_path} if "
                        "that process is gone"
                    ) from None
                logger.info("taking over stale catalog lock %s (%s)", self._lock_path, owner)
                with contextlib.suppress(FileNotFoundError):
                    self._lock_path.unlink()
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            self._locked = True
            return
        raise ConfigError(f"{self.path}: could not take the catalog lock {self._lock_path}")

    def _release_lock(self) -> None:
        if self._locked:
            with contextlib.suppress(FileNotFoundError):
                self._lock_path.unlink()
            self._locked = False

    def _recover(self) -> None:
        folder = self.path / "_journal"
        journals = sorted(folder.glob("*.jsonl")) if folder.is_dir() else []
        if not journals:
            return
        by_visit: dict[int, dict[str, DetectorResult]] = {}
        n = 0
        for jpath in journals:
            run_id = jpath.stem
            with open(jpath) as f:
                for line in f:
                    try:
                        rec = DetectorResult.from_dict(json.loads(line))
                    except (ValueError, TypeError):
                        continue  # a line cut short by the crash
                    rec.run_id = rec.run_id or run_id
                    by_visit.setdefault(rec.visit, {})[rec.key[1]] = rec
                    n += 1
        for visit, records in by_visit.items():
            existing = {t: _read_visit_file(self.path, t, visit) for t in VISIT_TABLES}
            self._write_visit(visit, existing, list(records.values()), run_id="")
        runs = self._read_runs()
        for jpath in journals:
            for row in runs:
                if row["run_id"] == jpath.stem and row["status"] == "running":
                    row["status"] = "interrupted"
        if runs:
            self._write_runs(runs)
        for jpath in journals:
            jpath.unlink()
        logger.info("recovered %d journaled results of %d interrupted run(s) into %s",
                    n, len(journals), self.path)

    # -- run records --------------------------------------------------------------------------
    def _read_runs(self) -> list[dict[str, Any]]:
        return _arrow_table(self.path, "runs").to_pylist()

    def _write_runs(self, rows: list[dict[str, Any]]) -> None:
        _write_atomic(pa.Table.from_pylist(rows, schema=SCHEMAS["runs"]),
                      self.path / "runs" / _PART)

    def check_config(self, config: Any, *, new_run: bool = False) -> None:
        """Raise `ConfigError` if the latest run used another config (unless ``new_run``)."""
        self.open()
        if new_run:
            return
        runs = self._read_runs()
        if not runs:
            return
        latest = max(runs, key=lambda r: r["started"])
        digest = config_digest(config)
        if latest["config_digest"] != digest:
            raise ConfigError(
                f"{self.path}: the catalog holds results of a different configuration "
                f"(run {latest['run_id']}, config digest {latest['config_digest']}; this "
                f"run's is {digest}); use another output, or start a new run "
                "(new_run=True, --new-run) whose results replace earlier ones"
            )

    def start_run(
        self,
        *,
        config: Any,
        inputs: Iterable[str | os.PathLike] = (),
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
        self.run_id = f"{stamp:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
        inputs = input_records(inputs)
        inputs_json = json.dumps(inputs)
        cfg = config.to_dict() if hasattr(config, "to_dict") else dict(config)
        self._run_row = {
            "run_id": self.run_id,
            "status": "running",
            "started": stamp,
            "finished": None,
            "seconds": None,
            "config": json.dumps(cfg, sort_keys=True),
            "config_digest": digest,
            "options": json.dumps(dict(options or {}), sort_keys=True, default=str),
            "versions": json.dumps(package_versions(), sort_keys=True),
            "inputs": inputs_json,
            "inputs_digest": hashlib.sha256(inputs_json.encode()).hexdigest()[:16],
            "n_inputs": len(inputs),
            "n_submitted": 0,
            "n_skipped": 0,
            "n_ok": 0,
            "n_flagged": 0,
            "n_failed": 0,
            "scheduler": scheduler,
            "host": socket.gethostname(),
            "timings": "{}",
        }
        self._write_runs([*runs, self._run_row])
        jdir = self.path / "_journal"
        jdir.mkdir(exist_ok=True)
        self._journal_path = jdir / f"{self.run_id}.jsonl"
        self._journal = open(self._journal_path, "a", buffering=1)
        self._t0 = time.monotonic()
        return self.run_id

    def annotate_run(self, **fields: Any) -> None:
        """Set fields of this run's record (e.g. ``scheduler``) written by `finish_run`."""
        unknown = set(fields) - set(SCHEMAS["runs"].names)
        if unknown:
            raise ConfigError(f"runs table has no column(s) {sorted(unknown)}")
        self._run_row.update(fields)

    def finish_run(
        self,
        counts: Mapping[str, int] | None = None,
        *,
        timings: Mapping[str, float] | None = None,
        status: str = "finished",
    ) -> None:
        """Flush every visit, record the run's counts and timings, remove its journal."""
        self.flush(force=True)
        if self.run_id is None or self._journal is None:
            return
        row = dict(self._run_row)
        row.update({k: int(v) for k, v in (counts or {}).items() if k in row})
        row["status"] = status
        row["finished"] = _now()
        row["seconds"] = time.monotonic() - self._t0
        row["timings"] = json.dumps(dict(timings or {}), sort_keys=True)
        runs = [r for r in self._read_runs() if r["run_id"] != self.run_id]
        self._write_runs([*runs, row])
        self._journal.close()
        self._journal = None
        if self._journal_path is not None:
            with contextlib.suppress(FileNotFoundError):
                self._journal_path.unlink()

    # -- results ------------------------------------------------------------------------------
    def finished(self) -> set[tuple[int, str]]:
        """``(visit, detector)`` pairs already measured (status ok or flagged)."""
        if not (self.path / "detectors").is_dir():
            return set()
        tab = _arrow_table(self.path, "detectors", columns=["visit", "detector", "status"])
        return {
            (int(v), d)
            for v, d, s in zip(tab["visit"].to_pylist(), tab["detector"].to_pylist(),
                               tab["status"].to_pylist(), strict=True)
            if s in _DONE and d
        }

    def _state(self, visit: int) -> _VisitState:
        st = self._visits.get(visit)
        if st is None:
            existing = {t: _read_visit_file(self.path, t, visit) for t in VISIT_TABLES}
            st = self._visits[visit] = _VisitState(visit, existing)
        return st

    def expect(self, visit: int, detectors: Iterable[str]) -> None:
        """Declare that this run will add ``detectors`` to ``visit``.

        The visit's files are rewritten as soon as all of them have arrived.
        """
        self._state(int(visit)).expected.update(detectors)

    def add(self, result: DetectorResult) -> None:
        """Record one result: journal it now, write its visit when the visit is complete."""
        if self._journal is None:
            raise RuntimeError("CatalogWriter.add called before start_run")
        self._journal.write(json.dumps(result.to_dict()) + "\n")
        if not result.run_id:
            result.run_id = self.run_id or ""
        visit, key = result.key
        if visit != UNKNOWN_VISIT and result.input in self._unknown_inputs():
            # The input failed before its identity was known; now it has one.
            old = self._state(UNKNOWN_VISIT)
            old.drop.add(_row_key("", result.input))
            old.dirty = True
            self._unknown_inputs().discard(result.input)
        st = self._state(visit)
        st.records[key] = result
        st.dirty = True
        if st.expected and st.expected.issubset(st.records):
            self._flush_visit(st)
            del self._visits[visit]
            self._truncate_journal()
        elif time.monotonic() - self._last_flush >= self.flush_interval:
            self.flush()

    def _truncate_journal(self) -> None:
        """Empty the journal once everything in it is in the Parquet files (bounds its size)."""
        if self._journal is not None and not any(st.dirty for st in self._visits.values()):
            self._journal.flush()
            self._journal.seek(0)
            self._journal.truncate()

    def _unknown_inputs(self) -> set[str]:
        if self._unknown is None:
            tab = _read_visit_file(self.path, "detectors", UNKNOWN_VISIT)
            self._unknown = set(tab["input"].to_pylist())
        return self._unknown

    def flush(self, visit: int | None = None, *, force: bool = False) -> None:
        """Rewrite the files of in-progress visits that changed since the last write."""
        targets = [self._visits[visit]] if visit is not None else list(self._visits.values())
        for st in targets:
            if st.dirty or (force and st.records):
                self._flush_visit(st)
        self._last_flush = time.monotonic()
        self._truncate_journal()

    def _flush_visit(self, st: _VisitState) -> None:
        if not st.records and not st.drop:
            return
        self._write_visit(st.visit, st.existing, list(st.records.values()), self.run_id or "",
                          drop=st.drop)
        st.dirty = False

    def _write_visit(self, visit: int, existing: dict[str, pa.Table],
                     records: list[DetectorResult], run_id: str,
                     drop: Iterable[str] = ()) -> None:
        new = _records_to_tables(records, run_id)
        replaced = {r.key[1] for r in records} | set(drop)
        for table in VISIT_TABLES:
            old = existing[table]
            if old.num_rows:
                keys = [_row_key(d, i) for d, i in zip(
                    old["detector"].to_pylist(),
                    old["input"].to_pylist() if table == "detectors" else [""] * old.num_rows,
                    strict=True)]
                keep = pa.array([k not in replaced for k in keys])
                old = old.filter(keep)
            merged = pa.concat_tables([old, new[table]]) if old.num_rows else new[table]
            folder = _visit_dir(self.path, table, visit)
            if merged.num_rows == 0:
                with contextlib.suppress(FileNotFoundError):
                    (folder / _PART).unlink()
                continue
            _write_atomic(_sorted(merged, table), folder / _PART)


def _owner_alive(owner: Mapping[str, Any]) -> bool:
    pid = owner.get("pid")
    if not pid:
        return False
    if owner.get("host") != socket.gethostname():
        return True  # cannot tell: assume alive, the message tells the user what to do
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _dask_config(key: str, default: Any) -> Any:
    try:
        import dask.config
    except ImportError:  # pragma: no cover
        return default
    return dask.config.get(key, default)
