"""A batch holding a file whose name is not UTF-8 (``junk\\xfe.fits`` on Linux) is measured
and recorded: that name escaped, the same way every time, so that a rerun resumes. Before,
the one name stopped the whole batch ("internal error: cannot convert the record to catalog
rows: 'utf-8' codec can't encode ..."), nothing was recorded, and every rerun did the same.
"""

from __future__ import annotations

import os
import shutil

import pytest

from ampoffset_dask import process
from ampoffset_dask.catalog.read import arrow_table


def _files(folder, sim_dir) -> tuple[str, str]:
    """Two good detectors, a third under a latin-1 name and junk under a name that is not
    UTF-8 either: ``(the third's name, the junk's)`` as Python gives them."""
    good = sorted(sim_dir.glob("*.fits"))[:3]
    for path in good[:2]:
        shutil.copy(path, folder)
    raw = os.fsencode(folder)
    try:
        shutil.copy(good[2], os.path.join(raw, b"S02_\xe9t\xe9.fits"))
        with open(os.path.join(raw, b"junk\xfe.fits"), "wb") as f:
            f.write(b"xx")
    except OSError:  # a file system that refuses names that are not UTF-8 (macOS)
        pytest.skip("this file system takes UTF-8 names only")
    return (os.fsdecode(os.path.join(raw, b"S02_\xe9t\xe9.fits")),
            os.fsdecode(os.path.join(raw, b"junk\xfe.fits")))


@pytest.mark.skipif(os.name != "posix", reason="POSIX file names are bytes")
def test_a_name_that_is_not_utf8_neither_stops_the_batch_nor_resume(sim_dir, tmp_path, client):
    folder = tmp_path / "in"
    folder.mkdir()
    latin1, _ = _files(folder, sim_dir)
    cat = tmp_path / "cat"

    first = process(str(folder), cat, client=client, progress=False)
    assert (first.n_ok, first.n_failed, first.n_skipped) == (3, 1, 0)
    rows = arrow_table(cat, "detectors", columns=["status", "input", "error"]).to_pylist()
    shown = {r["input"]: r for r in rows}
    escaped_latin1 = f"{folder}/S02_\\xe9t\\xe9.fits"
    escaped_junk = f"{folder}/junk\\xfe.fits"
    assert shown[escaped_latin1]["status"] == "ok"  # measured, under its escaped name
    assert shown[escaped_junk]["status"] == "failed"  # junk: a failed row naming it
    assert escaped_junk in shown[escaped_junk]["error"]
    assert "FITS" in shown[escaped_junk]["error"]
    assert len(rows) == 4

    # a rerun: the three measured files are recognised (the same escape), none measured
    # again; the junk fails again, as any failed input is retried
    again = process(str(folder), cat, client=client, progress=False)
    assert (again.n_ok, again.n_failed, again.n_skipped) == (0, 1, 3)

    # the file behind the escaped name changes: measured again (its stamp is the file's)
    stat = os.stat(latin1)
    os.utime(latin1, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    third = process(str(folder), cat, client=client, progress=False)
    assert (third.n_ok, third.n_failed, third.n_skipped) == (1, 1, 2)


@pytest.mark.skipif(os.name != "posix", reason="POSIX file names are bytes")
def test_corrected_images_of_such_names_resume(sim_dir, tmp_path, client):
    """The row names the image escaped: a rerun compares it with the escaped name of the
    image it would write (before: never equal, so the image was written again every time),
    and reads the image itself to check its pedestals."""
    folder = tmp_path / "in"
    folder.mkdir()
    _files(folder, sim_dir)
    cat, images = tmp_path / "cat", tmp_path / "images"
    first = process(str(folder), cat, client=client, progress=False, output_images=images)
    assert (first.n_ok, first.n_failed) == (3, 1)
    written = [name for _, _, names in os.walk(os.fsencode(images)) for name in names]
    assert any(b"\xe9" in name for name in written), written
    again = process(str(folder), cat, client=client, progress=False, output_images=images)
    assert (again.n_ok, again.n_failed, again.n_skipped) == (0, 1, 3)
