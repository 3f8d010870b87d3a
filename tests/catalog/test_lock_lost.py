"""A writer whose catalog folder or lock file disappears during a run stops, rather than
recreating part of the catalog and reporting the run complete."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ampoffset_dask import AmpOffsetConfig
from ampoffset_dask.catalog import CatalogWriter, DetectorResult
from ampoffset_dask.catalog.lock import CatalogLock
from ampoffset_dask.catalog.schema import CatalogWriteError
from ampoffset_dask.pipeline.run import execute, prepare


def _result(visit: int, detector: str) -> DetectorResult:
    return DetectorResult(visit=visit, detector=detector, status="ok", detector_id=94,
                          input=f"{visit}_{detector}.fits", amp_names=["C10", "C11"],
                          pedestals=[0.5, -0.5], worker="tcp://127.0.0.1:40000")


def test_removed_catalog_folder_stops_the_writer(tmp_path: Path) -> None:
    cat = tmp_path / "cat"
    writer = CatalogWriter(cat)
    writer.open()
    writer.start_run(config=AmpOffsetConfig(), inputs=[])
    writer.add(_result(1, "R22_S10"))
    shutil.rmtree(cat)
    with pytest.raises(CatalogWriteError, match=r"lock file .* was removed or replaced"):
        writer.add(_result(1, "R22_S11"))
    with pytest.raises(CatalogWriteError, match="removed or replaced"):
        writer.finish_run({"n_ok": 2})
    writer._release()
    # nothing recreated: no partial catalog claiming a finished run
    assert not cat.exists()


def test_lock_removed_for_another_run_is_left_to_it(tmp_path: Path) -> None:
    cat = tmp_path / "cat"
    first = CatalogWriter(cat)
    first.open()
    first.start_run(config=AmpOffsetConfig(), inputs=[])
    (cat / ".lock").unlink()  # "remove the lock file if that process is gone"
    second = CatalogWriter(cat)
    second.open()
    second.start_run(config=AmpOffsetConfig(), inputs=[])
    with pytest.raises(CatalogWriteError, match="removed or replaced"):
        first.add(_result(1, "R22_S10"))
    first._release()
    # the first writer's release does not remove the second's lock
    assert second._lock.intact()
    assert CatalogLock(cat).read_owner() is not None
    second.add(_result(1, "R22_S11"))
    second.finish_run()
    second.close()
    assert not (cat / ".lock").exists()


def test_run_whose_catalog_was_removed_fails_clearly(tmp_path: Path) -> None:
    junk = tmp_path / "in" / "junk.fits"
    junk.parent.mkdir()
    junk.write_bytes(b"not a FITS file at all")
    cat = tmp_path / "cat"
    # the junk input's failed row is the run's first write: refused, nothing recreated
    with pytest.raises(CatalogWriteError, match="removed or replaced"), \
            prepare([junk], cat) as run:
        shutil.rmtree(cat)
        execute(run)
    assert not (cat / "runs").exists() and not (cat / "detectors").exists()


def test_a_catalog_held_by_an_open_prepared_run_of_this_process_says_so(tmp_path):
    from ampoffset_dask.catalog.lock import CatalogBusyError

    junk = tmp_path / "junk.fits"
    junk.write_bytes(b"not a FITS file at all")
    run = prepare([junk], tmp_path / "cat")
    try:
        with pytest.raises(CatalogBusyError, match=r"in use by .*, this very process: .* "
                                                   r"use it in a 'with' block"):
            prepare([junk], tmp_path / "cat")
    finally:
        run.close()
    prepare([junk], tmp_path / "cat").close()  # closed: free again
