"""File names that are not UTF-8 (``junk\\xfe.fits``: Python holds them as surrogate escapes,
which no Parquet or JSON text can hold) are recorded escaped, the same way every time,
instead of stopping the whole batch."""

from __future__ import annotations

import json
import os

import pytest

from ampoffset_dask.catalog import CatalogWriter
from ampoffset_dask.catalog.journal import Journal, replay
from ampoffset_dask.catalog.schema import DetectorResult, check_record, storable
from ampoffset_dask.io.remote import printable, redact

#: ``junk<0xfe>.fits`` as Python gives a POSIX file name holding the byte 0xfe
JUNK = os.fsdecode(b"junk\xfe.fits") if os.name == "posix" else "junk\udcfe.fits"


def _ok(path: str, **kw) -> DetectorResult:
    return DetectorResult(visit=5, detector="R22_S11", status="ok", input=path,
                          amp_names=["C10", "C11"], pedestals=[0.5, -0.5], **kw)


def test_printable_escapes_the_undecodable_bytes_only():
    assert printable("junk\udcfe.fits") == "junk\\xfe.fits"
    # a latin-1 name in a UTF-8 folder: only the bytes that are not UTF-8 are escaped
    name = os.fsdecode(b"caf\xc3\xa9/\xe9t\xe9.fits") if os.name == "posix" else None
    if name is not None:
        assert printable(name) == "caf\u00e9/\\xe9t\\xe9.fits"
    assert printable("plain/été.fits") == "plain/été.fits"  # valid UTF-8: as it is
    assert printable("lone\ud800") == "lone\\ud800"  # a surrogate standing for no byte
    assert redact("/d/junk\udcfe.fits") == "/d/junk\\xfe.fits"
    assert printable(printable("junk\udcfe.fits")) == "junk\\xfe.fits"


def test_check_record_names_the_field_and_storable_makes_it_storable():
    rec = _ok(f"/d/{JUNK}", warnings=[f"/d/{JUNK}: odd header"],
              interfaces=[], output=f"/out/{JUNK}")
    with pytest.raises(ValueError, match=r"^input '/d/junk\\udcfe.fits' is not UTF-8 text"):
        check_record(rec)
    assert storable(rec) is rec
    assert (rec.input, rec.output, rec.warnings) == (
        "/d/junk\\xfe.fits", "/out/junk\\xfe.fits", ["/d/junk\\xfe.fits: odd header"])
    rows = check_record(rec)
    assert rows["detectors"]["input"].to_pylist() == ["/d/junk\\xfe.fits"]


def test_the_writer_records_an_undecodable_name_and_the_rest(tmp_path):
    """One such name among good ones: every result is recorded (before, the writer raised
    "cannot convert the record to catalog rows" and the run stopped with nothing recorded),
    the failure's visit is written as soon as its expected result arrives, and the journal
    holds the escaped name."""
    cat = tmp_path / "cat"
    bad = f"/d/{JUNK}"
    with CatalogWriter(cat) as writer:
        writer.start_run(config={"a": 1}, inputs=["/d/good.fits", bad])
        writer.expect(-1, [f"input:{bad}"])
        writer.expect(5, ["R22_S11", "R22_S12"])
        writer.add(DetectorResult.failure(f"InputError: {bad}: not a readable FITS file",
                                          visit=None, detector=None, input=bad))
        # the unknown visit was complete: written now, not only when the run ends
        assert list((cat / "detectors").glob("visit=-1/*.parquet"))
        writer.add(_ok("/d/good.fits"))
        writer.add(dataclasses_replace(_ok(bad), detector="R22_S12"))
        journal = Journal(cat, writer.run_id).path.read_text(encoding="utf-8")
        assert "\\\\xfe" in journal or journal == ""  # escaped, when not yet truncated
    current = CatalogWriter(cat).current()
    assert current[(5, "R22_S12")].input == "/d/junk\\xfe.fits"
    assert current[(5, "R22_S11")].input == "/d/good.fits"
    from ampoffset_dask.catalog.read import arrow_table

    failed = arrow_table(cat, "detectors", columns=["status", "input", "error"]).to_pylist()
    assert {"status": "failed", "input": "/d/junk\\xfe.fits",
            "error": "InputError: /d/junk\\xfe.fits: not a readable FITS file"} in failed


def dataclasses_replace(rec: DetectorResult, **kw) -> DetectorResult:
    import dataclasses

    return dataclasses.replace(rec, **kw)


def test_a_journal_line_with_an_undecodable_name_is_recovered(tmp_path):
    """A journal of an older writer (json escapes the surrogate as ``\\udcfe``) is replayed
    with the name escaped, not quarantined."""
    j = Journal(tmp_path, "run1")
    j.path.write_text(json.dumps(_ok(f"/d/{JUNK}").to_dict()) + "\n", encoding="utf-8")
    j.close()
    found = replay(tmp_path)
    assert found.quarantined == 0
    assert [r.input for r in found.records] == ["/d/junk\\xfe.fits"]


@pytest.fixture
def junk_file(tmp_path):
    if os.name != "posix":
        pytest.skip("POSIX file names are bytes")
    folder = tmp_path / "in"
    folder.mkdir()
    try:
        with open(os.path.join(os.fsencode(folder), b"junk\xfe.fits"), "wb") as f:
            f.write(b"SIMPLE")
    except OSError:  # a file system that refuses names that are not UTF-8 (macOS)
        pytest.skip("this file system takes UTF-8 names only")
    return folder / JUNK


def test_the_run_record_stamps_the_file_behind_an_escaped_name(junk_file, tmp_path):
    """The runs table names the input escaped, with the size and time of the file itself (so
    a resumed run notices when it changes)."""
    name = redact(str(junk_file))  # as `process` gives the writer its inputs
    with CatalogWriter(tmp_path / "cat") as writer:
        writer.start_run(config={"a": 1}, inputs=[name])
        [record] = json.loads(writer._run_row["inputs"])
        writer.finish_run()
    assert record["path"] == name == str(junk_file.parent) + "/junk\\xfe.fits"
    then = os.stat(junk_file)
    assert (record["size"], record["mtime"]) == (6, then.st_mtime)
    junk_file.write_bytes(b"SIMPLE and more")
    with CatalogWriter(tmp_path / "cat") as writer:
        writer.start_run(config={"a": 1}, inputs=[name])
        assert writer._changed(name, (6, then.st_mtime))
        now = os.stat(junk_file)
        assert not writer._changed(name, (now.st_size, now.st_mtime))
