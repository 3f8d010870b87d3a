"""The run journal: each result appended as one JSON line the moment it arrives.

``CATALOG/_journal/<run>.jsonl`` holds the results of a running run that are not yet in the
Parquet files. It is emptied once they are, and removed when the run finishes; a journal
that is still there belongs to a run that was killed, and `replay` reads it back.

Replay never bricks a catalog: a line it cannot turn into a storable record (cut short by
the crash, not UTF-8, not a JSON object, wrong types, identities out of range) is moved to
``CATALOG/_quarantine/<run>.jsonl`` with a warning, and the rest is recovered.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Any

from .schema import DetectorResult, check_record

__all__ = ["Journal", "Replay", "replay"]

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
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a", buffering=1, encoding="utf-8")

    @property
    def closed(self) -> bool:
        """Whether `close` was called."""
        return self._file is None

    def append(self, record: DetectorResult) -> None:
        """Write ``record`` as one line (line-buffered: on disk before the call returns)."""
        self._file.write(json.dumps(record.to_dict()) + "\n")

    def truncate(self) -> None:
        """Empty the journal (everything in it is in the Parquet files)."""
        self._file.flush()
        self._file.seek(0)
        self._file.truncate()

    def close(self) -> None:
        """Close the file (kept on disk)."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def remove(self) -> None:
        """Close and delete the journal (the run finished)."""
        self.close()
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass


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


def _parse(line: bytes, run_id: str) -> DetectorResult:
    data: Any = json.loads(line.decode("utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"not a JSON object: {type(data).__name__}")
    record = DetectorResult.from_dict(data)
    record.run_id = record.run_id or run_id
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
                    out.records.append(_parse(line, run_id))
                except (ValueError, TypeError, UnicodeDecodeError, OverflowError) as exc:
                    bad.append(line if line.endswith(b"\n") else line + b"\n")
                    reasons.append(f"line {number}: {exc}")
        if bad:
            qdir = root / QUARANTINE_DIR
            qdir.mkdir(exist_ok=True)
            qpath = qdir / path.name
            with open(qpath, "ab") as q:
                q.writelines(bad)
            out.quarantined += len(bad)
            logger.warning("%s: %d journal line(s) of run %s could not be recovered and were "
                           "moved to %s (%s)", root, len(bad), run_id, qpath,
                           "; ".join(reasons[:3]) + (" ..." if len(reasons) > 3 else ""))
    return out
