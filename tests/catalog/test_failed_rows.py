"""Failed rows of distinct inputs with one (visit, detector): none is lost or hidden by another.

Copies of one file without a visit fail with the same (visit -1, detector): each keeps its
row, in the files, after a journal replay and in the latest-row view, while a measurement
of the (visit, detector) still supersedes them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

from ampoffset_dask import AmpOffsetConfig
from ampoffset_dask.catalog import CatalogWriter, DetectorResult, read_catalog
from ampoffset_dask.catalog.schema import UNKNOWN_VISIT


def _failure(path: str, visit: int | None = None) -> DetectorResult:
    return DetectorResult.failure(f"InputError: {path}: no visit number in the header",
                                  visit=visit, detector="RXX_S00", input=path)


def _ok(path: str, visit: int, value: float = 1.0) -> DetectorResult:
    return DetectorResult(visit=visit, detector="RXX_S00", status="ok", input=path,
                          amp_names=["C10", "C11"], pedestals=[value, -value])


def _inputs(cat, **kw) -> list[tuple[int, str, str]]:
    det = read_catalog(cat, "detectors", **kw)
    return sorted(zip(det["visit"], det["input"], det["status"], strict=True))


def test_failures_of_one_identity_keep_a_row_per_input(tmp_path):
    cat = tmp_path / "cat"
    paths = [f"/data/bias{n}.fits" for n in (1, 2, 3)]
    with CatalogWriter(cat, flush_interval=1e9) as w:
        w.start_run(config=AmpOffsetConfig(), inputs=[])
        w.expect(UNKNOWN_VISIT, ["RXX_S00"] * 3)  # one key, three results
        for n, path in enumerate(paths, 1):
            w.add(_failure(path))
            # the visit is written when its third result arrives, not before
            assert (UNKNOWN_VISIT in w._visits) == (n < 3)
        w.finish_run({"n_failed": 3})
    expected = [(UNKNOWN_VISIT, p, "failed") for p in paths]
    assert _inputs(cat, all_rows=True) == expected
    assert _inputs(cat) == expected  # no failure hides another

    # a second run failing the same way: each input's latest failure is shown
    with CatalogWriter(cat) as w:
        w.start_run(config=AmpOffsetConfig(), inputs=[])
        for path in paths[:2]:
            w.add(_failure(path))
        w.finish_run()
    assert len(read_catalog(cat, "detectors", all_rows=True)) == 5
    assert _inputs(cat) == expected
    runs = read_catalog(cat, "runs")["run_id"].tolist()
    assert read_catalog(cat, "detectors")["run_id"].tolist() == [runs[1], runs[1], runs[0]]

    # bias1 given a visit: its failure of the unknown visit is no longer current
    with CatalogWriter(cat) as w:
        w.start_run(config=AmpOffsetConfig(), inputs=[])
        w.add(_ok(paths[0], 5))
        w.finish_run()
    assert _inputs(cat) == [(UNKNOWN_VISIT, p, "failed") for p in paths[1:]] + [
        (5, paths[0], "ok")]


def test_a_measurement_supersedes_the_failures_and_keeps_its_pedestals(tmp_path):
    """Two inputs failing with (visit 7, RXX_S00) and a third measuring it, in one run and
    then in separate runs."""
    cat = tmp_path / "cat"
    with CatalogWriter(cat) as w:
        w.start_run(config=AmpOffsetConfig(), inputs=[])
        w.expect(7, ["RXX_S00"] * 3)
        w.add(_failure("/data/a.fits", 7))
        w.add(_failure("/data/b.fits", 7))
        w.add(_ok("/data/c.fits", 7, 2.0))
        w.finish_run()
    assert len(read_catalog(cat, "detectors", all_rows=True)) == 3
    assert _inputs(cat) == [(7, "/data/c.fits", "ok")]
    # the failures of the measuring run do not hide its pedestals
    assert read_catalog(cat, "pedestals")["pedestal"].tolist() == [2.0, -2.0]
    assert len(read_catalog(cat, "pedestals", format="dask").compute()) == 2

    # a later failure of another input supersedes the measurement; later failures of
    # other inputs are shown beside it; a later measurement supersedes them all
    with CatalogWriter(cat) as w:
        w.start_run(config=AmpOffsetConfig(), inputs=[])
        w.add(_failure("/data/a.fits", 7))
        w.add(_failure("/data/b.fits", 7))
        w.finish_run()
    assert _inputs(cat) == [(7, "/data/a.fits", "failed"), (7, "/data/b.fits", "failed")]
    assert len(read_catalog(cat, "pedestals")) == 0
    with CatalogWriter(cat) as w:
        w.start_run(config=AmpOffsetConfig(), inputs=[])
        assert w.finished() == set()
        w.add(_ok("/data/c.fits", 7, 3.0))
        w.finish_run()
    assert _inputs(cat) == [(7, "/data/c.fits", "ok")]
    assert read_catalog(cat, "pedestals")["pedestal"].tolist() == [3.0, -3.0]


def test_journal_replay_keeps_every_failed_input(tmp_path):
    """A run killed before writing its visit: the next writer recovers all three rows."""
    cat = tmp_path / "cat"
    script = textwrap.dedent(f"""
        import os, signal
        from ampoffset_dask import AmpOffsetConfig
        from ampoffset_dask.catalog import CatalogWriter, DetectorResult
        w = CatalogWriter({str(cat)!r}, flush_interval=1e9)
        w.start_run(config=AmpOffsetConfig(), inputs=[])
        w.expect(-1, ["RXX_S00", "RXX_S01"])  # RXX_S01 never comes: nothing written
        for n in (1, 2, 3):
            w.add(DetectorResult.failure("no visit", visit=None, detector="RXX_S00",
                                         input=f"/data/bias{{n}}.fits"))
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env={**os.environ})
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert not (cat / "detectors").exists()  # nothing but the journal
    with CatalogWriter(cat) as w:
        w.open()
    assert _inputs(cat) == [(UNKNOWN_VISIT, f"/data/bias{n}.fits", "failed") for n in (1, 2, 3)]

