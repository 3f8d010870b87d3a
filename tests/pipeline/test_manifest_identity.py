"""A manifest's identity against the header's: a detector the header contradicts is a failed
row saying so (not a result that comes back under another name); a contradicting visit is
recorded as the manifest gives it, with a warning naming both."""

from __future__ import annotations

import logging
import shutil

import pandas as pd
import pytest
from astropy.io import fits

from ampoffset_dask.pipeline.detector_job import planning_failure
from ampoffset_dask.pipeline.inputs import discover_inputs, plan_tasks

from .helpers import VISIT


def _manifest(tmp_path, rows):
    path = tmp_path / "manifest.csv"
    pd.DataFrame(rows, columns=["path", "visit", "detector"]).to_csv(path, index=False)
    return discover_inputs(path)


@pytest.mark.parametrize("camera", [None, "lsstcam"])
def test_a_detector_the_header_contradicts_fails_its_row(sim_visit, tmp_path, camera):
    """Without a camera the geometry was the header's (the result then came back as
    another detector); with one it was the manifest's (the other detector's pixels measured
    under its name): either way the row fails, naming both."""
    s00, s01 = (str(p) for p in sim_visit.paths[:2])  # R22_S00, R22_S01
    items = _manifest(tmp_path, [(s00, VISIT, "R22_S00"), (s01, VISIT, "R22_S02")])
    good, bad = plan_tasks(items, camera=camera)
    assert good.error == "" and good.name == "R22_S00"
    assert bad.error == (f"InputError: {s01}: the manifest says detector R22_S02, the header "
                         "says R22_S01")
    assert bad.detector is None and (bad.visit, bad.name) == (VISIT, "R22_S02")
    row = planning_failure(bad)
    assert row.status == "failed" and "the manifest says detector R22_S02" in row.error


def test_a_manifest_naming_the_header_s_detector_plans(sim_visit, tmp_path):
    s01 = str(sim_visit.paths[1])
    (task,) = plan_tasks(_manifest(tmp_path, [(s01, VISIT, "R22_S01")]), camera="lsstcam")
    assert task.error == "" and task.name == task.detector.name == "R22_S01"


def test_a_manifest_names_a_detector_the_header_does_not(sim_visit, tmp_path):
    """A header naming no detector of the camera: the manifest says which it is."""
    path = shutil.copy(sim_visit.paths[1], tmp_path / "anon.fits")
    for key in ("DETNAME", "DETECTOR"):
        fits.delval(path, key)
    (task,) = plan_tasks(_manifest(tmp_path, [(str(path), VISIT, "R22_S02")]),
                         camera="lsstcam")
    assert task.error == "" and task.name == task.detector.name == "R22_S02"


def test_a_visit_the_header_contradicts_is_warned_about_once(sim_visit, tmp_path, caplog):
    s00 = str(sim_visit.paths[0])
    with caplog.at_level(logging.WARNING, logger="ampoffset_dask.pipeline.inputs"):
        (task,) = plan_tasks(_manifest(tmp_path, [(s00, 123, "R22_S00")]))
    assert task.error == "" and task.visit == 123
    said = [r.getMessage() for r in caplog.records
            if "the manifest says visit" in r.getMessage()]
    assert said == [f"{s00}: the manifest says visit 123, the header says {VISIT}; "
                    "recording the manifest's"]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ampoffset_dask.pipeline.inputs"):
        plan_tasks(_manifest(tmp_path, [(s00, VISIT, "R22_S00")]))
    assert "the manifest says visit" not in caplog.text


@pytest.mark.parametrize("value", [1.5, "abc"])
def test_planning_names_a_visit_keyword_that_is_not_an_integer(sim_visit, tmp_path, value):
    path = shutil.copy(sim_visit.paths[0], tmp_path / "v.fits")
    fits.setval(path, "VISIT", value=value)
    (task,) = plan_tasks(discover_inputs(path))
    assert task.error.startswith(f"InputError: {path}: header keyword VISIT = {value!r} is "
                                 "not an integer (a visit number); give it with --visit N")


def test_a_failed_input_keeps_the_detector_id_its_manifest_gives(tmp_path):
    """A Butler manifest row whose file is missing or unreadable: the failed row kept its
    visit and detector, not its id (the column became floats with NaN)."""
    path = tmp_path / "manifest.csv"
    pd.DataFrame([(str(tmp_path / "gone.fits"), VISIT, "R22_S11", 94)],
                 columns=["path", "visit", "detector", "detector_id"]).to_csv(path, index=False)
    (task,) = plan_tasks(discover_inputs(path))
    assert task.error and task.detector_id == 94
    row = planning_failure(task)
    assert (row.status, row.visit, row.detector, row.detector_id) == (
        "failed", VISIT, "R22_S11", 94)
