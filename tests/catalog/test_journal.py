"""The journal alone: append, truncate, replay, quarantine of lines it cannot convert."""

from __future__ import annotations

import json
import logging

from ampoffset_dask.catalog.journal import Journal, replay
from ampoffset_dask.catalog.schema import DetectorResult


def _rec(visit=3, detector="R22_S11", **kw):
    return DetectorResult(visit=visit, detector=detector, status="ok", input="a.fits",
                          amp_names=["C10", "C11"], pedestals=[0.5, -0.5], **kw)


def test_append_truncate_remove(tmp_path):
    j = Journal(tmp_path, "run1")
    j.append(_rec())
    j.append(_rec(detector="R22_S12"))
    lines = j.path.read_text().splitlines()
    assert [json.loads(line)["detector"] for line in lines] == ["R22_S11", "R22_S12"]
    j.truncate()
    assert j.path.read_text() == ""
    j.append(_rec(visit=4))
    j.close()
    assert j.closed and json.loads(j.path.read_text())["visit"] == 4
    found = replay(tmp_path)
    assert found.runs == ["run1"] and found.journals == [j.path] and found.quarantined == 0
    [rec] = found.records
    assert (rec.visit, rec.detector, rec.run_id, rec.pedestals) == (4, "R22_S11", "run1",
                                                                    [0.5, -0.5])
    j2 = Journal(tmp_path, "run2")
    j2.remove()
    assert not j2.path.exists()


def test_to_dict_is_asdict_and_shares_nothing_mutable():
    """The journal line's dictionary: what `dataclasses.asdict` gives (numpy pedestals as
    floats), with copies of every list and dict, and a round trip through JSON."""
    import dataclasses

    import numpy as np

    itf = {"id": "C10-C11", "amp_a": "C10", "offset": 1.5, "min_frac_fail": False,
           "extra": [1, {"k": (2, 3)}]}
    rec = _rec(interfaces=[itf], warnings=["w"], detector_id=7)
    rec.pedestals = list(np.array([0.25, -0.25]))
    out = rec.to_dict()
    expected = dataclasses.asdict(rec)
    expected["pedestals"] = [0.25, -0.25]
    assert out == expected and list(out) == list(expected)
    assert all(type(p) is float for p in out["pedestals"])
    assert out["interfaces"][0] is not itf and out["interfaces"][0]["extra"] is not itf["extra"]
    assert out["warnings"] is not rec.warnings and out["amp_names"] is not rec.amp_names
    assert DetectorResult.from_dict(json.loads(json.dumps(out))).pedestals == [0.25, -0.25]


def test_replay_quarantines_what_it_cannot_convert(tmp_path, caplog):
    j = Journal(tmp_path, "run9")
    j.append(_rec(visit=1))
    j.close()
    good_big = _rec(visit=2, detector_id=3_000_000_000).to_dict()
    bad = [
        b"42\n",                                                   # a bare number
        b'"text"\n',                                               # not an object
        json.dumps(dict(_rec().to_dict(), visit="7")).encode() + b"\n",   # wrong type
        json.dumps(dict(_rec().to_dict(), visit=10**20)).encode() + b"\n",  # 20 digits
        json.dumps(dict(_rec().to_dict(), detector_id=2**64)).encode() + b"\n",
        json.dumps(dict(_rec().to_dict(), pedestals=["x", 1])).encode() + b"\n",
        json.dumps({"visit": 3}).encode() + b"\n",                 # fields missing
        b'{"visit": 3, "detector": "\xff\xfe"}\n',                 # not UTF-8
    ]
    with open(j.path, "ab") as f:
        f.write(json.dumps(good_big).encode() + b"\n")
        f.writelines(bad)
        f.write(b'{"visit": 5, "detec')                            # cut short by a crash
    with caplog.at_level(logging.WARNING, logger="ampoffset_dask.catalog"):
        found = replay(tmp_path)
    assert [(r.visit, r.detector_id) for r in found.records] == [(1, None), (2, 3_000_000_000)]
    assert found.quarantined == len(bad) + 1
    quarantine = (tmp_path / "_quarantine" / "run9.jsonl").read_bytes()
    assert quarantine.count(b"\n") == len(bad) + 1 and b"\xff\xfe" in quarantine
    assert any("moved to" in r.getMessage() and "run9" in r.getMessage()
               for r in caplog.records)


def test_no_journal_nothing_to_replay(tmp_path):
    found = replay(tmp_path)
    assert found.records == [] and found.journals == []
