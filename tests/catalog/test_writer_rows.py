"""The writer's visit files: each record converted once when added, its rows kept."""

from __future__ import annotations

from ampoffset_dask import AmpOffsetConfig, read_catalog
from ampoffset_dask.catalog import CatalogWriter
from ampoffset_dask.catalog.read import read_visit_file
from ampoffset_dask.catalog.schema import UNKNOWN_VISIT, DetectorResult


def _rec(detector, pedestals, **kw):
    return DetectorResult(visit=5, detector=detector, status="ok", input=f"{detector}.fits",
                          amp_names=["C10", "C11"], pedestals=pedestals, **kw)


def test_visit_rows_follow_the_latest_record_of_each_detector(tmp_path):
    with CatalogWriter(tmp_path, flush_interval=0) as writer:
        writer.start_run(config=AmpOffsetConfig(), inputs=[])
        writer.expect(5, ["R22_S11", "R22_S12"])
        writer.add(_rec("R22_S11", [1.0, -1.0]))  # flushed now (flush_interval 0)
        writer.add(_rec("R22_S11", [2.0, -2.0]))  # the same run again: replaces its rows
        writer.add(_rec("R22_S12", [3.0, -3.0], detector_id=2**64))  # cannot be stored
        writer.add(_rec("R22_S12", [4.0, -4.0]))  # completes the visit
        writer.finish_run()
    det = read_catalog(tmp_path, "detectors")
    ped = read_catalog(tmp_path, "pedestals")
    rows = sorted(zip(det["visit"], det["detector"], det["status"], strict=True))
    assert rows == [(5, "R22_S11", "ok"), (5, "R22_S12", "ok")]
    # the record that could not be stored: a failed row of the unknown visit (which the
    # reader leaves out once the same input has a row of its own)
    [failed] = read_visit_file(tmp_path, "detectors", UNKNOWN_VISIT).to_pylist()
    assert failed["status"] == "failed" and failed["input"] == "R22_S12.fits"
    assert "cannot record the result" in failed["error"]
    got = {(d, a): p for d, a, p in zip(ped["detector"], ped["amp"], ped["pedestal"],
                                         strict=True)}
    assert got == {("R22_S11", "C10"): 2.0, ("R22_S11", "C11"): -2.0,
                   ("R22_S12", "C10"): 4.0, ("R22_S12", "C11"): -4.0}


def test_a_stamp_recorded_without_an_etag_is_compared_without_it(tmp_path):
    # a catalog of an earlier version recorded objects' size and time only: the ETag
    # asked of the store now made every object count as changed, measured again once
    url = "s3://bucket/x.fits"
    with CatalogWriter(tmp_path) as writer:
        writer.start_run(config=AmpOffsetConfig(), inputs=[url],
                         url_stamps={url: (100, 5.0, '"tag1"')})
        assert not writer._changed(url, (100, 5.0))  # an earlier version's record
        assert not writer._changed(url, (100, 5.0, '"tag1"'))
        assert writer._changed(url, (100, 5.0, '"tag2"'))  # replaced within the second
        assert writer._changed(url, (100, 6.0))
        writer.finish_run()
    runs = read_catalog(tmp_path, "runs")
    import json

    assert json.loads(runs["inputs"].iloc[0]) == [
        {"path": url, "size": 100, "mtime": 5.0, "etag": '"tag1"'}]
