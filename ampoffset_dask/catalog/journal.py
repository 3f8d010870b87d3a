"""The run journal: each result appended as one JSON line the moment it arrives.

``CATALOG/_journal/<run>.jsonl`` holds the results of a running run that are not yet in the
Parquet files. It is emptied once they are, and removed when the run finishes; a journal
that is still there belongs to a run that was killed, and `replay` reads it back.

Replay never bricks a catalog: a line it cannot turn into a storable record (cut short by
the crash, not UTF-8, not a JSON object, wrong types, identities out of range) is moved to
``CATALOG/_quarantine/<run>.jsonl`` with a warning, and the rest is recovered.

A journal that cannot be written (full disk, file-size limit) raises
`~ampoffset_dask.catalog.schema.CatalogWriteError` naming it; the lines written before stay.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Any

from .lock import CatalogLock, owner_alive
from .schema import CatalogWriteError, DetectorResult, check_record, storable

__all__ = ["Journal", "PendingJournal", "Replay", "pending_journals", "replay"]

logger = logging.getLogger(__name__)

JOURNAL_DIR = "_journal"
QUARANTINE_DIR = "_quarantine"


class Journal:
    """The append-only journal of one run.

    Parameters
    ----------
    root : path-like
        The catalog directory.
    run_id : str
        The run (the file is ``_journal/<run_id>.jsonl``).
    """

    def __init__(self, root: str | os.PathLike, run_id: str) -> None:
        self.path = Path(root) / JOURNAL_DIR / f"{run_id}.jsonl"
        with _writing(self.path):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a", buffering=1, encoding="utf-8")

    @property
    def closed(self) -> bool:
        """Whether `close` was called."""
        return self._file is None

    def append(self, record: DetectorResult) -> None:
        """Write ``record`` as one line (line-buffered: on disk before the call returns)."""
        with _writing(self.path):
            self._file.write(json.dumps(record.to_dict()) + "\n")

    def truncate(self) -> None:
        """Empty the journal (everything in it is in the Parquet files)."""
        with _writing(self.path):
            self._file.flush()
            self._file.seek(0)
            self._file.truncate()

    def close(self) -> None:
        """Close the file (kept on disk).

        A line still buffered that cannot be written (full disk) is dropped with a warning:
        closing must not fail, and the run reports the write error it met first.
        """
        if self._file is not None:
            file, self._file = self._file, None
            try:
                file.close()
            except OSError as exc:
                logger.warning("%s: could not finish writing the journal: %s", self.path, exc)

    def remove(self) -> None:
        """Close and delete the journal (the run finished)."""
        self.close()
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass


def _writing(path: Path) -> contextlib.AbstractContextManager[None]:
    """`CatalogWriteError.raised_for` the journal ``path``: what it holds is kept, the line
    being written is not."""
    return CatalogWriteError.raised_for(path, (
        "Nothing recorded before is lost (the journal's earlier lines are kept, and the next "
        "run or 'ampoffset-dask catalog compact' recovers them); the result being written is "
        "not recorded, and running again measures it"))


@dataclasses.dataclass
class Replay:
    """What `replay` found.

    Attributes
    ----------
    records : list of DetectorResult
        Recovered records, in journal order (later lines of a key win when written).
    runs : list of str
        Run ids of the journals read.
    journals : list of Path
        The journal files read (remove them once the records are stored).
    quarantined : int
        Lines moved to the quarantine folder.
    """

    records: list[DetectorResult] = dataclasses.field(default_factory=list)
    runs: list[str] = dataclasses.field(default_factory=list)
    journals: list[Path] = dataclasses.field(default_factory=list)
    quarantined: int = 0


def parse_line(line: bytes, run_id: str) -> DetectorResult:
    """One journal line of run ``run_id`` as the record the writer stores."""
    data: Any = json.loads(line.decode("utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"not a JSON object: {type(data).__name__}")
    record = DetectorResult.from_dict(data)
    record.run_id = record.run_id or run_id
    # as `CatalogWriter.add` stores results: a line an older writer journaled with a file
    # name that is not UTF-8 (surrogate escapes in the JSON) or a URL's password is
    # recovered escaped and redacted, not quarantined or written in clear
    storable(record)
    check_record(record)
    return record


def replay(root: str | os.PathLike) -> Replay:
    """Read back the journals of interrupted runs in ``root`` (nothing is written but the
    quarantine file)."""
    root = Path(root)
    folder = root / JOURNAL_DIR
    out = Replay()
    if not folder.is_dir():
        return out
    for path in sorted(folder.glob("*.jsonl")):
        run_id = path.stem
        out.runs.append(run_id)
        out.journals.append(path)
        bad: list[bytes] = []
        reasons: list[str] = []
        with open(path, "rb") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    out.records.append(parse_line(line, run_id))
                except (ValueError, TypeError, UnicodeDecodeError, OverflowError) as exc:
                    bad.append(line if line.endswith(b"\n") else line + b"\n")
                    reasons.append(f"line {number}: {exc}")
        if bad:
            qdir = root / QUARANTINE_DIR
            qpath = qdir / path.name
            with _writing(qpath):
                qdir.mkdir(exist_ok=True)
                with open(qpath, "ab") as q:
                    q.writelines(bad)
            out.quarantined += len(bad)
            logger.warning("%s: %d journal line(s) of run %s could not be recovered and were "
                           "moved to %s (%s)", root, len(bad), run_id, qpath,
                           "; ".join(reasons[:3]) + (" ..." if len(reasons) > 3 else ""))
    return out


@dataclasses.dataclass(frozen=True)
class PendingJournal:
    """A journal in a catalog: results of an unfinished run not (yet) in the tables.

    Attributes
    ----------
    run_id : str
        The run.
    path : Path
        The journal file.
    n_results : int
        Its lines (results; a line cut short by a crash counts too).
    live : bool
        Whether a live writer holds the catalog (the run is going on, or the writer is
        recovering the journal); False after a run was killed.
    """

    run_id: str
    path: Path
    n_results: int
    live: bool


def pending_journals(root: str | os.PathLike, *, live: bool = True) -> list[PendingJournal]:
    """The journals in ``root`` and how many results each holds (reads only; no lock).

    A journal outlives its run only when the run was killed (kill -9, power loss): its
    results reach the tables when the next writer opens the catalog (a run, a compaction).

    Parameters
    ----------
    root : path-like
        The catalog directory.
    live : bool
        False: leave out (and do not read) the journals of a live writer: a run going on.
    """
    folder = Path(root) / JOURNAL_DIR
    try:
        names = sorted(n for n in os.listdir(folder) if n.endswith(".jsonl"))
    except (FileNotFoundError, NotADirectoryError):
        return []
    if not names:
        return []
    # Under a live lock every journal is its holder's business: the running run's own, or
    # one it is replaying. The owner record is read, never the flock taken: a reader must
    # not make a writer starting at that moment find the catalog busy.
    owner = CatalogLock(root).read_owner()
    held = bool(owner) and owner_alive(owner)
    if held and not live:
        return []
    out = []
    for name in names:
        path = folder / name
        try:
            with open(path, "rb") as f:
                n = sum(1 for line in f if line.strip())
        except FileNotFoundError:  # recovered meanwhile
            continue
        out.append(PendingJournal(name[:-len(".jsonl")], path, n, held))
    return out
