"""Issue 10 item 3: one header value never bricks the catalog.

Before: ``DETECTOR=3000000000`` overflowed the int32 ``detector_id`` column and aborted the
run (and, through the journal, every later run); a 20-digit ``VISIT`` made `read_catalog`,
``ampoffset-dask catalog`` and every later run fail; an unconvertible journal line was fatal
or silently dropped.
"""

from __future__ import annotations

import json
import logging

import numpy as np
from astropy.io import fits

from ampoffset_dask import measure_detector, process, read_catalog
from ampoffset_dask.cli import main
from ampoffset_dask.io.fits import read_exposure

BIG_ID = 3_000_000_000
HUGE_VISIT = 12345678901234567890  # 20 digits, > int64


def _write(path, name, visit, det_id, seed):
    rng = np.random.default_rng(seed)
    image = rng.normal(1000.0, 5.0, (300, 400)).astype(np.float32)
    image[:, 200:] += 3.0  # amp B sits 3 ADU above amp A (under ampEdgeMaxOffset)
    header = fits.Header()
    header["DETNAME"] = name
    header["VISIT"] = visit
    header["DETECTOR"] = det_id
    header["DATASECA"] = "[1:200,1:300]"
    header["DATASECB"] = "[201:400,1:300]"
    fits.PrimaryHDU(image, header).writeto(path)


def test_out_of_range_identities_are_failed_rows(tmp_path, scheduler, capsys):
    data = tmp_path / "in"
    data.mkdir()
    _write(data / "big_id.fits", "D1", 5, BIG_ID, 1)
    _write(data / "huge_visit.fits", "D2", HUGE_VISIT, 2, 2)
    _write(data / "huge_id.fits", "D3", 5, 2**64, 3)
    _write(data / "good.fits", "D4", 5, 4, 4)
    cat = tmp_path / "cat"
    summary = process(data, cat, client=scheduler, progress=False)
    assert (summary.n_ok, summary.n_failed) == (2, 2)
    errors = {d: e for _, d, e in summary.failed}
    huge_visit = errors["D2"]
    assert "huge_visit.fits" in huge_visit and f"visit {HUGE_VISIT} is out of range" in huge_visit
    assert f"detector id {2**64} is out of range" in errors["D3"]
    assert "huge_id.fits" in errors["D3"]

    det = read_catalog(cat, "detectors")
    ok = det[det["status"] == "ok"].set_index("detector")
    assert ok.loc["D1", "detector_id"] == BIG_ID and ok.loc["D4", "detector_id"] == 4
    failed = det[det["status"] == "failed"].set_index("detector")
    assert (failed.loc["D2", "visit"], failed.loc["D3", "visit"]) == (-1, 5)
    ped = read_catalog(cat, "pedestals")
    d1 = ped[ped["detector"] == "D1"]
    assert list(d1["detector_id"]) == [BIG_ID, BIG_ID]
    exp = read_exposure(data / "big_id.fits")  # the numbers are those of a direct call
    direct = measure_detector(exp.image, exp.mask, exp.detector, mask_planes=exp.mask_planes)
    assert exp.detector.id == BIG_ID
    np.testing.assert_array_equal(d1["pedestal"], direct.pedestals)

    assert main(["catalog", str(cat), "--json"]) == 0
    summary_json = json.loads(capsys.readouterr().out)
    assert summary_json["status"] == {"failed": 2, "ok": 2} and summary_json["visits"] == [5]
    assert summary_json["failed_without_visit"] == 1  # -1 is no visit
    # A later run works: the two good detectors are skipped, the two bad ones fail again.
    again = process(data, cat, client=scheduler, progress=False)
    assert (again.n_skipped, again.n_ok, again.n_failed) == (2, 0, 2)


def test_journal_replay_quarantines_and_the_run_goes_on(tmp_path, scheduler, caplog):
    data = tmp_path / "in"
    data.mkdir()
    _write(data / "good.fits", "D4", 5, 4, 4)
    cat = tmp_path / "cat"
    journal = cat / "_journal" / "20200101T000000-dead00.jsonl"
    journal.parent.mkdir(parents=True)
    good = {"visit": 6, "detector": "D9", "status": "ok", "detector_id": BIG_ID,
            "input": "x.fits", "amp_names": ["A", "B"], "pedestals": [3.5, -3.5]}
    journal.write_bytes(b"\n".join([
        json.dumps(good).encode(),
        json.dumps(dict(good, detector="D8", visit=HUGE_VISIT)).encode(),  # out of range
        json.dumps(dict(good, detector="D7", pedestals="oops")).encode(),   # wrong type
        b"17",                                                              # bare number
        b'{"visit": 6, "detector": "\xff"}',                                # not UTF-8
    ]) + b"\n")
    with caplog.at_level(logging.WARNING, logger="ampoffset_dask"):
        summary = process(data, cat, client=scheduler, progress=False)
    assert summary.n_ok == 1 and summary.n_failed == 0
    assert any("could not be recovered" in r.getMessage() for r in caplog.records)
    quarantine = (cat / "_quarantine" / journal.name).read_bytes().splitlines()
    assert len(quarantine) == 4 and b"17" in quarantine
    det = read_catalog(cat, "detectors").set_index("detector")
    assert det.loc["D9", "detector_id"] == BIG_ID and det.loc["D9", "visit"] == 6
    assert set(det.index) == {"D4", "D9"}
    assert not journal.exists()
