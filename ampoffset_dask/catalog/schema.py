"""The catalog's tables: Arrow schemas, the per-detector record and its rows.

Nothing here reads or writes files: `DetectorResult` is what a detector job returns (and what
the journal holds, one JSON line each); `records_to_tables` turns records into the rows of the
``detectors``, ``pedestals`` and ``interfaces`` tables; `check_record` says whether a record
can be stored at all (identities in range, values of the column types). The catalog's own
errors (`CatalogFileError` and its kinds) are defined here, where every module can use them.

Two times are recorded per ``detectors`` row. ``finished_at`` is the worker's clock when the
task ended: information only. ``recorded_at`` is the catalog writer's clock when it recorded
the result (`~ampoffset_dask.catalog.writer.CatalogWriter.add`); with the ``started`` of the
row's run (also the writer's clock) it decides which row of a (visit, detector) is the latest
(`~ampoffset_dask.catalog.read.latest_mask`), so a worker whose clock is off cannot keep an
old row current.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import datetime as _dt
import errno
import math
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from ..errors import InputError

__all__ = [
    "COMPACTED",
    "DONE",
    "INT64_MAX",
    "PART",
    "SCHEMAS",
    "SORT",
    "TABLES",
    "UNKNOWN_VISIT",
    "VISIT_TABLES",
    "CatalogFileError",
    "CatalogWriteError",
    "DamagedCatalogError",
    "DetectorResult",
    "check_identity",
    "check_record",
    "records_to_tables",
    "row_key",
    "sorted_table",
    "storable",
]

#: Visit used for inputs whose identity could not be read.
UNKNOWN_VISIT = -1
#: Largest visit number or detector id a catalog can hold (the int64 columns).
INT64_MAX = 2**63 - 1

_TS = pa.timestamp("us", tz="UTC")

#: Column schemas of the per-visit tables (``visit`` is the partition column, not stored).
SCHEMAS: dict[str, pa.Schema] = {
    "detectors": pa.schema([
        ("detector", pa.string()),
        ("detector_id", pa.int64()),
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
        ("recorded_at", _TS),
        ("dataset_id", pa.string()),
        ("fetched_fraction", pa.float64()),
        ("geometry", pa.string()),
    ]),
    "pedestals": pa.schema([
        ("detector", pa.string()),
        ("detector_id", pa.int64()),
        ("amp", pa.string()),
        ("amp_index", pa.int32()),
        ("pedestal", pa.float64()),
        ("pedestal_err", pa.float64()),
        ("level", pa.float64()),
        ("applied", pa.bool_()),
        ("run_id", pa.string()),
    ]),
    "interfaces": pa.schema([
        ("detector", pa.string()),
        ("detector_id", pa.int64()),
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
        ("offset_err", pa.float64()),
        ("weight", pa.float64()),
        ("gain_ratio", pa.float64()),
        ("gain_ratio_err", pa.float64()),
        ("gain_like", pa.bool_()),
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
#: The one file of each table's visit folder.
PART = "part-0.parquet"
#: Folder of each table's compacted files (many visits per file; see
#: `~ampoffset_dask.catalog.compact`). The leading underscore keeps Parquet readers of the
#: ``visit=`` folders from mistaking it for data.
COMPACTED = "_compacted"
#: Statuses of a measured detector (resume skips them).
DONE = ("ok", "flagged")
#: Row order of each table (stable: interfaces keep LSST's order within a detector).
SORT = {
    "detectors": ["visit", "detector", "input"],
    "pedestals": ["visit", "detector", "amp_index"],
    "interfaces": ["visit", "detector"],
    "runs": ["started"],
}


class CatalogFileError(InputError):
    """A catalog file cannot be read or written; the message names it and what to do.

    An `~ampoffset_dask.errors.InputError`: the command line reports it in one line with the
    usage/input exit code (2).

    Attributes
    ----------
    path : Path or None
        The file (or folder) concerned.
    """

    def __init__(self, message: str, path: os.PathLike | str | None = None) -> None:
        super().__init__(message)
        self.path = path


class DamagedCatalogError(CatalogFileError):
    """A catalog file exists but cannot be read (cut short, not Parquet, unreadable)."""


class CatalogWriteError(CatalogFileError):
    """The catalog could not be written (full disk, file-size limit, read-only file system,
    no permission); the message names the file and the operating system's reason."""

    @classmethod
    def from_os_error(cls, path: os.PathLike | str, exc: OSError,
                      consequence: str = "") -> CatalogWriteError:
        """The error for ``exc``, raised writing ``path``.

        ``consequence`` (what became of the catalog) ends the message; by default, that
        nothing recorded is lost and running again resumes (true of every writer: files are
        replaced whole, and results not yet in the tables stay in the run's journal).
        """
        # pyarrow's own text ("Error writing bytes to file. Detail: ...") buries the reason
        reason = os.strerror(exc.errno) if exc.errno else (exc.strerror or str(exc))
        remedy = _REMEDIES.get(exc.errno or 0, "fix that")
        consequence = consequence or (
            "Nothing recorded before is lost (results not yet in the tables are kept in the "
            "run's journal, CATALOG/_journal, and the next run or 'ampoffset-dask catalog "
            "compact' recovers them)")
        return cls(f"cannot write the catalog file {path}: {reason}. {consequence}; "
                   f"{remedy}, then run the command again (a run resumes where it stopped)",
                   path)

    @classmethod
    @contextlib.contextmanager
    def raised_for(cls, path: os.PathLike | str, consequence: str = "") -> Iterator[None]:
        """Turn an `OSError` in the block, writing ``path``, into this error (`from_os_error`)."""
        try:
            yield
        except OSError as exc:
            raise cls.from_os_error(path, exc, consequence) from exc


#: What to do about each operating-system reason a catalog write fails.
_REMEDIES = {
    errno.ENOSPC: "free some space on that file system",
    errno.EDQUOT: "free some space within your disk quota",
    errno.EFBIG: "raise the file-size limit (ulimit -f)",
    errno.EROFS: "the file system is read-only: copy the catalog to a writable folder",
    errno.EACCES: "make the catalog folder writable",
    errno.EPERM: "make the catalog folder writable",
}


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
        URL inputs: the bytes this task fetched over the object's size (NaN for local
        files). It can exceed 1 on small objects: the header reads fetch whole blocks,
        which may hold pixels a strip's range request then fetches again.
    geometry : str
        A digest of the amp layout the detector was measured with (its amp boxes, and the
        raw boxes of a camera that assembled it): a resumed run measures the detector again
        when its layout changed (empty: not recorded, as in catalogs of earlier versions).
    seconds, cpu_seconds : float
        Wall time and CPU time (of the task's thread) spent on the worker.
    amp_names, pedestals : list
        Pedestals in amp order.
    interfaces : list of dict
        `InterfaceResult.to_dict` of each interface.
    overscan, gain : str
        Raw ISR applied while reading (``"per-row"``, ``"mean"``, ``"none"``; ``"nominal"``,
        ``"none"``); empty when the detector failed before reading.
    finished_at : float
        When the task ended (seconds since the epoch), by the clock of the machine that
        built the record (a worker): information only, never used to order rows.
    recorded_at : int or None
        When the catalog writer recorded the result (microseconds since the epoch, the
        writer's clock, increasing within a run); set by `CatalogWriter.add`, None before.
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
    pedestal_errors: list[float] = dataclasses.field(default_factory=list)
    amp_levels: list[float] = dataclasses.field(default_factory=list)
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
    recorded_at: int | None = None
    run_id: str = ""
    dataset_id: str = ""
    fetched_fraction: float = float("nan")
    geometry: str = ""

    @property
    def key(self) -> tuple[int, str]:
        """``(visit, detector)``; for unidentified inputs the detector part is the input."""
        return self.visit, row_key(self.detector, self.input)

    @property
    def run_key(self) -> tuple[int, str]:
        """The key of this record's row among its run's rows: `key`, with the input added
        for a failure (`row_key`)."""
        return self.visit, row_key(self.detector, self.input, self.status)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dictionary (the journal line).

        The same as `dataclasses.asdict` (containers copied, so the dictionary shares
        nothing mutable with the record) without its generic deep copy of every scalar,
        which cost more than the rest of recording a result.
        """
        out = {name: _plain(getattr(self, name)) for name in _FIELD_NAMES}
        out["pedestals"] = [float(p) for p in self.pedestals]
        out["pedestal_errors"] = [float(e) for e in self.pedestal_errors]
        out["amp_levels"] = [float(v) for v in self.amp_levels]
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
            pedestal_errors=_floats(getattr(m, "pedestal_errors", None)),
            amp_levels=_floats(getattr(m, "amp_levels", None)),
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


#: `DetectorResult`'s field names, in declaration order.
_FIELD_NAMES = tuple(f.name for f in dataclasses.fields(DetectorResult))
_SCALARS = (str, int, float, bool, type(None))


def _plain(value: Any) -> Any:
    """``value`` with its lists, tuples and dicts copied (what `dataclasses.asdict` does to a
    field), immutable scalars as they are, anything else deep-copied."""
    kind = type(value)
    if kind in _SCALARS:
        return value
    if kind is list:
        return [_plain(v) for v in value]
    if kind is dict:
        return {_plain(k): _plain(v) for k, v in value.items()}
    if kind is tuple:
        return tuple(_plain(v) for v in value)
    return copy.deepcopy(value)


def row_key(detector: str, input: str, status: str = "") -> str:
    """Key of a row within its visit: the detector, or ``input:<file>`` when unknown.

    With ``status``, the key of a row within its run's rows of the visit: a failed row's key
    also holds its input, so that inputs failing with the same (visit, detector) (copies of
    one file without a visit, say) keep a row each; a run has one measurement of a detector.
    """
    if not detector:
        return f"input:{input}"
    if status == "failed":
        return f"{detector}\0input:{input}"  # NUL: in neither a FITS header nor a path
    return detector


def check_identity(visit: Any, detector_id: Any = None, *, what: str = "",
                   unknown_ok: bool = True) -> None:
    """Raise `ValueError` unless ``visit`` is an integer in 0..2**63-1 (or `UNKNOWN_VISIT`
    when ``unknown_ok``) and ``detector_id`` is None or an integer in 0..2**63-1.

    ``what`` (a file name) starts the message.
    """
    prefix = f"{what}: " if what else ""
    low_visit = UNKNOWN_VISIT if unknown_ok else 0
    for name, value, low in (("visit", visit, low_visit), ("detector id", detector_id, 0)):
        if value is None and name == "detector id":
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{prefix}{name} {value!r} is not an integer")
        if not low <= value <= INT64_MAX:
            raise ValueError(f"{prefix}{name} {value} is out of range ({low} to {INT64_MAX})")


def storable(record: DetectorResult) -> DetectorResult:
    """``record`` (changed in place, and returned) as the catalog stores it: no credentials,
    no text that is not UTF-8.

    The input and output go through `~ampoffset_dask.io.remote.redact`: a URL's password
    and a signed URL's query never reach the tables or the journal, and the error and
    warnings lose them too (the input's raw form, and any URL they quote). Every text of
    the record is then `~ampoffset_dask.io.remote.printable`: bytes of a file name that are
    not UTF-8 (``junk\\xfe.fits``, which Python holds as surrogate escapes that no Parquet
    or JSON text can hold) are written ``\\xNN``, the same way each time, so the row's
    ``input`` is what `~ampoffset_dask.process` compares a rerun's inputs with (``redact``
    of the path, the same function).
    """
    from ..io.remote import printable, redact, redact_text

    raw = record.input
    if isinstance(raw, str):
        record.input = redact(raw)
        if isinstance(record.error, str):
            if raw and raw != record.input:
                record.error = record.error.replace(raw, record.input)
            record.error = redact_text(record.error)
    if isinstance(record.output, str):
        record.output = redact(record.output)
    if isinstance(record.warnings, list):
        record.warnings = [redact_text(w) if isinstance(w, str) else w
                           for w in record.warnings]
    for name in _FIELD_NAMES:
        value = getattr(record, name)
        if _not_utf8(value):  # rare: most records are left as they are, nothing copied
            setattr(record, name, _printable(value, printable))
    return record


def _printable(value: Any, printable: Any) -> Any:
    """``value`` with its texts (also those in lists and dicts) `printable`."""
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, list):
        return [_printable(v, printable) for v in value]
    if isinstance(value, dict):
        return {_printable(k, printable): _printable(v, printable) for k, v in value.items()}
    return value


def _not_utf8(value: Any) -> bool:
    """Whether ``value`` holds a text that is not valid UTF-8 (lone surrogates)."""
    if isinstance(value, str):
        if value.isascii():
            return False
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return True
        return False
    if isinstance(value, list):
        return any(_not_utf8(v) for v in value)
    if isinstance(value, dict):
        return any(_not_utf8(k) or _not_utf8(v) for k, v in value.items())
    return False


def check_record(record: DetectorResult) -> dict[str, pa.Table]:
    """Raise `ValueError` if ``record`` cannot be stored (bad identity, wrong types, text
    that is not UTF-8: see `storable`).

    Returns
    -------
    dict
        The record's rows, ``records_to_tables([record], record.run_id)``: converting them
        is the check, and a writer keeps them instead of converting the record again.
    """
    check_identity(record.visit, record.detector_id)
    for name in ("detector", "status", "error", "input", "output", "run_id"):
        if not isinstance(getattr(record, name), str):
            raise ValueError(f"{name} {getattr(record, name)!r} is not a string")
    try:
        return records_to_tables([record], record.run_id)
    except (pa.ArrowException, TypeError, ValueError, OverflowError, KeyError) as exc:
        # Arrow's "'utf-8' codec can't encode" names neither the field nor the text
        bad = next((n for n in _FIELD_NAMES if _not_utf8(getattr(record, n))), None)
        if bad is not None:
            raise ValueError(f"{bad} {getattr(record, bad)!r} is not UTF-8 text (undecodable "
                             "bytes of a file name?); `storable` escapes it") from exc
        raise ValueError(f"cannot convert the record to catalog rows: {exc}") from exc


def _floats(values: Any) -> list[float]:
    """A measurement's optional per-amp array as a list (empty when absent)."""
    return [] if values is None else [float(v) for v in values]


def _item(values: Sequence[float], i: int) -> float:
    """``values[i]`` as a float, NaN when the record has no such value (older journals)."""
    return float(values[i]) if i < len(values) else math.nan


def records_to_tables(records: Sequence[DetectorResult], run_id: str) -> dict[str, pa.Table]:
    """The ``detectors``, ``pedestals`` and ``interfaces`` rows of ``records``.

    Failed records have a ``detectors`` row only. ``run_id`` fills records without one.
    """
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
        det["recorded_at"].append(r.recorded_at)  # microseconds: the column's unit
        det["dataset_id"].append(r.dataset_id or "")
        det["fetched_fraction"].append(float(r.fetched_fraction))
        det["geometry"].append(r.geometry or "")
        if r.status == "failed":
            continue
        for i, (amp, value) in enumerate(zip(r.amp_names, r.pedestals, strict=True)):
            ped["detector"].append(r.detector)
            ped["detector_id"].append(r.detector_id)
            ped["amp"].append(amp)
            ped["amp_index"].append(i)
            ped["pedestal"].append(float(value))
            ped["pedestal_err"].append(_item(r.pedestal_errors, i))
            ped["level"].append(_item(r.amp_levels, i))
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
            itf["offset_err"].append(float(it.get("offset_err", math.nan)))
            itf["weight"].append(float(it.get("weight", 1.0)))
            itf["gain_ratio"].append(float(it.get("gain_ratio", math.nan)))
            itf["gain_ratio_err"].append(float(it.get("gain_ratio_err", math.nan)))
            itf["gain_like"].append(bool(it.get("gain_like", False)))
            itf["run_id"].append(rid)
    return {
        "detectors": pa.table(det, schema=SCHEMAS["detectors"]),
        "pedestals": pa.table(ped, schema=SCHEMAS["pedestals"]),
        "interfaces": pa.table(itf, schema=SCHEMAS["interfaces"]),
    }


def sorted_table(table: pa.Table, name: str) -> pa.Table:
    """Rows in a stable, documented order (Arrow's sort is stable).

    Large tables are sorted on one integer key made of the ranks of the sort columns (a
    stable radix sort in numpy: several times faster than a multi-column sort with strings);
    the order is the same.
    """
    keys = [c for c in SORT[name] if c in table.column_names]
    if table.num_rows < 2 or not keys:
        return table
    order = _rank_order(table, keys) if table.num_rows >= 50_000 else None
    if order is None:
        return table.sort_by([(c, "ascending") for c in keys])
    if np.all(order[1:] > order[:-1]):
        return table  # already in order
    return table.take(pa.array(order))


def _rank_order(table: pa.Table, keys: list[str]) -> np.ndarray | None:
    """Stable sort order of ``table`` by ``keys``, or None when the fast path does not apply
    (nulls, or too many distinct values for one int64 key)."""
    import pyarrow.compute as pc

    key = np.zeros(table.num_rows, dtype=np.int64)
    span = 1
    for column in keys:
        col = table[column]
        if col.null_count or pa.types.is_timestamp(col.type):
            return None
        values = pc.unique(col)
        values = values.take(pc.sort_indices(values))
        n = len(values)
        if span * n >= 2**62:
            return None
        rank = pc.index_in(col, value_set=values).to_numpy(zero_copy_only=False)
        key = key * n + rank.astype(np.int64)
        span *= n
    return np.argsort(key, kind="stable")
