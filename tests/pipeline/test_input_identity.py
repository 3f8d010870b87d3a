"""Which (visit, detector) an input is: a manifest's identity against a folder's or another
row's, one detector given twice under names or ids that differ, a camera's spelling of a
name, ``file://`` inputs, a manifest visit that is not a number, a failed copy superseding."""

from __future__ import annotations

import json
import logging
import shutil
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from cli_helpers import cli

from ampoffset_dask import process, read_catalog
from ampoffset_dask.errors import InputError
from ampoffset_dask.pipeline.inputs import discover_inputs, plan_tasks

from .helpers import SCALE, VISIT


def _run(inputs, catalog, client, **kw):
    return process(inputs, catalog, client=client, progress=False, **kw)


def _rows(catalog):
    return read_catalog(catalog, "detectors").sort_values("input").reset_index(drop=True)


def _copy(src, folder: Path, name: str | None = None) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    return str(shutil.copy(src, folder / (name or Path(src).name)))


def _manifest(path: Path, rows, columns=("path", "visit", "detector")) -> str:
    pd.DataFrame(rows, columns=list(columns)).to_csv(path, index=False)
    return str(path)


@pytest.fixture(scope="session")
def scaled_camera(tmp_path_factory) -> str:
    """LSSTCam raft R22 at the simulations' scale, as a camera file (the built-in one
    describes full-size detectors, which the simulated images do not fit)."""
    from ampoffset_dask import get_camera
    from ampoffset_dask.simulate import scale_detector

    doc = json.loads(resources.files("ampoffset_dask.cameras").joinpath(
        "lsstcam.json").read_text())
    full = get_camera("lsstcam")
    doc["name"] = doc["instrument"] = "lsstcam-scaled"
    doc["detectors"] = [d for d in doc["detectors"] if d["name"].startswith("R22_")]
    for kind, layout in doc["amp_layouts"].items():
        like = next((d["name"] for d in doc["detectors"] if d["physical_type"] == kind), None)
        if like is None:
            continue
        small = scale_detector(full[like], SCALE)
        amps = {a.name: a for a in small.amplifiers}
        layout["detector_size"] = [small.width, small.height]
        layout["amp_size"] = [small.amplifiers[0].width, small.amplifiers[0].height]
        for amp in layout["amps"]:
            a = amps[amp["name"]]
            amp["bbox"] = [a.x0, a.y0, a.width, a.height]
            for key in [k for k in amp if k.startswith("raw")]:
                del amp[key]
        for det in doc["detectors"]:
            if det["physical_type"] == kind:
                det["bbox"] = [0, 0, small.width, small.height]
    path = tmp_path_factory.mktemp("camera") / "lsstcam_scaled.json"
    path.write_text(json.dumps(doc))
    return str(path)


# -- one file named twice ------------------------------------------------------------------

@pytest.mark.parametrize("manifest_first", [False, True])
def test_a_manifest_s_identity_wins_over_a_folder_s_whatever_the_order(
        sim_visit, client, tmp_path, manifest_first):
    """Folder first, the manifest's visit was dropped silently (the row had the header's)."""
    path = _copy(sim_visit.paths[0], tmp_path / "data")
    manifest = _manifest(tmp_path / "m.csv", [(path, 123, None)])
    inputs = [manifest, str(tmp_path / "data")]
    summary = _run(inputs if manifest_first else inputs[::-1], tmp_path / "cat", client)
    assert (summary.n_inputs, summary.n_ok) == (1, 1)
    rows = _rows(tmp_path / "cat")
    assert rows[["visit", "detector", "status", "input"]].values.tolist() == [
        [123, "R22_S00", "ok", path]]


def test_a_file_given_two_identities_is_refused(sim_visit, client, tmp_path):
    """Before, the first manifest row was kept and the second dropped silently."""
    path = _copy(sim_visit.paths[0], tmp_path / "data")
    manifest = _manifest(tmp_path / "m.csv", [(path, VISIT, "R22_S00"), (path, 8, "R22_S00")])
    with pytest.raises(InputError) as info:
        _run(manifest, tmp_path / "cat", client)
    said = str(info.value)
    assert said.startswith(f"{path}: given twice with different identities")
    assert f"visit {VISIT}, detector R22_S00" in said and "visit 8, detector R22_S00" in said
    assert not (tmp_path / "cat").exists()
    # the same identity twice (and a name in another case) is one input
    same = _manifest(tmp_path / "same.csv", [(path, VISIT, "R22_S00"), (path, VISIT, "r22_s00")])
    (item,) = discover_inputs([same, str(tmp_path / "data")])
    assert (item.path, item.visit, item.detector) == (path, VISIT, "R22_S00")


# -- one detector given twice, without a camera --------------------------------------------

def test_two_inputs_of_one_detector_id_are_refused_without_a_camera(sim_visit, client,
                                                                    tmp_path):
    """Files without DETNAME are named after the file: two copies of one detector (one
    DETECTOR id) were measured ``ok`` as detectors ``a`` and ``b`` of one visit."""
    a, b = (_copy(sim_visit.paths[0], tmp_path / "data", n) for n in ("a.fits", "b.fits"))
    for path in (a, b):
        fits.delval(path, "DETNAME")
    with pytest.raises(InputError) as info:
        _run(str(tmp_path / "data"), tmp_path / "cat", client)
    assert str(info.value) == ("several inputs are the same (visit, detector): visit "
                               f"{VISIT} detectors a and b (both detector id 90): {a} and {b}")
    assert not (tmp_path / "cat").exists()


def test_detector_names_equal_but_for_case_are_refused(sim_visit, client, tmp_path):
    good = _copy(sim_visit.paths[0], tmp_path / "data", "good.fits")
    lower = _copy(sim_visit.paths[0], tmp_path / "data", "lower.fits")
    fits.setval(lower, "DETNAME", value="r22_s00")
    fits.delval(lower, "DETECTOR")  # the names alone say it
    with pytest.raises(InputError) as info:
        _run([good, lower], tmp_path / "cat", client)
    assert str(info.value) == (
        "several inputs are the same (visit, detector): visit "
        f"{VISIT} detector R22_S00 and r22_s00 (one name but for case): {good} and {lower}")


# -- the camera's name ---------------------------------------------------------------------

@pytest.mark.parametrize("given", ["r22_s00", "90"])
def test_a_manifest_detector_in_another_case_or_by_id_takes_the_camera_s_name(
        sim_visit, scaled_camera, client, tmp_path, given):
    """Before, the task failed with "result identity mismatch", a phantom failed row of
    detector ``r22_s00`` (or ``90``) left in the catalog."""
    path = str(sim_visit.paths[0])
    manifest = _manifest(tmp_path / "m.csv", [(path, VISIT, given)])
    summary = _run(manifest, tmp_path / "cat", client, camera=scaled_camera)
    assert (summary.n_ok, summary.n_failed) == (1, 0)
    rows = read_catalog(tmp_path / "cat", "detectors", all_rows=True)
    assert rows[["visit", "detector", "detector_id", "status"]].values.tolist() == [
        [VISIT, "R22_S00", 90, "ok"]]


def test_a_detector_option_in_another_case_takes_the_camera_s_name(
        sim_visit, scaled_camera, client, tmp_path):
    path = _copy(sim_visit.paths[0], tmp_path / "data", "anon.fits")
    for key in ("DETNAME", "DETECTOR"):
        fits.delval(path, key)
    summary = _run(path, tmp_path / "cat", client, camera=scaled_camera, detector="r22_s00")
    assert (summary.n_ok, summary.n_failed) == (1, 0)
    rows = read_catalog(tmp_path / "cat", "detectors", all_rows=True)
    assert rows[["detector", "status", "input"]].values.tolist() == [["R22_S00", "ok", path]]


def test_a_manifest_detector_the_camera_does_not_know_fails_its_row(
        sim_visit, scaled_camera, tmp_path):
    path = str(sim_visit.paths[0])
    (task,) = plan_tasks(discover_inputs(_manifest(tmp_path / "m.csv", [(path, VISIT, "R99_S99")])),
                         camera=scaled_camera)
    assert task.detector is None and task.name == "R99_S99"
    assert "has no detector 'R99_S99'" in task.error


def test_a_file_failing_before_its_header_is_read_takes_the_camera_s_name(
        scaled_camera, tmp_path):
    """A missing file's failed row was ``r22_s00``, beside the measurements' ``R22_S00``."""
    gone = str(tmp_path / "gone.fits")
    (task,) = plan_tasks(discover_inputs(_manifest(tmp_path / "m.csv", [(gone, VISIT, "r22_s00")])),
                         camera=scaled_camera)
    assert task.error and (task.visit, task.name) == (VISIT, "R22_S00")


def test_a_manifest_name_in_another_case_takes_the_header_s_without_a_camera(
        sim_visit, tmp_path):
    """Before, the row failed: "the manifest says detector r22_s00, the header says
    R22_S00"."""
    path = str(sim_visit.paths[0])
    (task,) = plan_tasks(discover_inputs(_manifest(tmp_path / "m.csv", [(path, VISIT, "r22_s00")])))
    assert (task.error, task.name, task.detector.name) == ("", "R22_S00", "R22_S00")


# -- a failed copy superseding a good row --------------------------------------------------

def _superseding(good: str, other: Path, cat: Path, client, caplog):
    """Measure ``good`` into ``cat``, then run ``other`` (of the same visit and detector):
    its summary, and the warnings about a row coming from another input."""
    assert _run(good, cat, client).n_ok == 1
    with caplog.at_level(logging.WARNING, logger="ampoffset_dask.pipeline.run"):
        summary = _run(str(other), cat, client)
    warned = [r.getMessage() for r in caplog.records if "another input" in r.getMessage()]
    return summary, warned


def test_a_damaged_copy_superseding_another_input_s_row_is_warned_about(
        sim_visit, client, tmp_path, caplog):
    """A copy cut in half fails planning under the identity its header gives: its failed row
    supersedes the good file's (README: Resume), which was silent."""
    good = str(sim_visit.paths[0])
    damaged = tmp_path / "damaged" / "copy.fits"
    damaged.parent.mkdir()
    data = Path(good).read_bytes()
    damaged.write_bytes(data[: len(data) // 2])
    cat = tmp_path / "cat"
    summary, warned = _superseding(good, damaged, cat, client, caplog)
    assert summary.n_failed == 1
    assert warned == [f"visit {VISIT} detector R22_S00: recording the failure of {damaged}, "
                      "whose row supersedes the catalog's current row, which came from "
                      f"another input: {good}"]
    rows = read_catalog(cat, "detectors")
    assert rows[["visit", "detector", "status", "input"]].values.tolist() == [
        [VISIT, "R22_S00", "failed", str(damaged)]]


def test_an_already_corrected_copy_superseding_another_input_s_row_is_warned_about(
        sim_visit, client, tmp_path, caplog):
    """A corrected copy of a file from another path (a night corrected in place, then copied
    to a new disk) replaced the good row with a flagged one without the warning a plain
    copy gets; the flag's hint said "use --force", which in place corrects it again."""
    good = str(sim_visit.paths[0])
    corrected = tmp_path / "images"
    assert _run(good, tmp_path / "first", client, output_images=corrected).n_ok == 1
    (copy,) = corrected.rglob("*.fits")
    summary, warned = _superseding(good, copy, tmp_path / "cat", client, caplog)
    assert summary.n_flagged == 1
    assert warned == [f"visit {VISIT} detector R22_S00: recording as already corrected "
                      f"{copy}, whose row supersedes the catalog's current row, which came "
                      f"from another input: {good}"]
    (_, _, why), = summary.flagged
    assert "--force / force=True measures it anyway, and in place corrects it a second " \
           "time" in why


# -- file:// URIs and manifest values ------------------------------------------------------

def test_file_uris_are_local_paths(sim_visit, client, tmp_path):
    """Before, ``file://`` inputs (given or in a manifest) were "no such file"."""
    first, second = (str(p) for p in sim_visit.paths[:2])
    manifest = _manifest(tmp_path / "m.csv", [(Path(second).as_uri(),)], columns=["path"])
    summary = _run([Path(first).as_uri(), manifest], tmp_path / "cat", client)
    assert (summary.n_inputs, summary.n_ok) == (2, 2)
    assert _rows(tmp_path / "cat")[["detector", "input"]].values.tolist() == [
        ["R22_S00", first], ["R22_S01", second]]


def test_a_manifest_visit_that_is_not_an_integer_is_an_input_error(sim_visit, tmp_path):
    """Before: "internal error: ValueError", exit 4."""
    first, second = (str(p) for p in sim_visit.paths[:2])
    manifest = _manifest(tmp_path / "m.csv", [(first, 7), (second, "v1")],
                         columns=["path", "visit"])
    proc = cli("run", manifest, "--output", tmp_path / "cat", "--scheduler", "local:1",
               "--no-progress")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"{manifest}: row 2 ({second}): visit 'v1' is not an integer" in proc.stderr
    with pytest.raises(InputError, match=r"row 1 .*: visit 1\.5 is not an integer"):
        discover_inputs(pd.DataFrame({"path": [first], "visit": [1.5]}))
    # integers read as text or as floats (a column with an empty cell) are visits
    items = discover_inputs(pd.DataFrame({"path": [first, second], "visit": [" 7", "7.0"]}))
    assert [i.visit for i in items] == [7, 7]


def test_a_file_replaced_by_one_whose_geometry_fails_supersedes_its_ok_row(
        sim_visit, client, tmp_path):
    """A file measured ok, then replaced at its path by one whose header geometry fails
    (a 1x1 image with the same DETNAME and VISIT): the failed row had no detector name, so
    the old ok row (and its pedestals, of a file that no longer exists) stayed current."""
    src = tmp_path / "in" / "x.fits"
    src.parent.mkdir()
    shutil.copyfile(sim_visit.paths[0], src)
    cat = tmp_path / "cat"
    assert _run(str(src), cat, client).n_ok == 1
    with fits.open(sim_visit.paths[0]) as hdul:
        headers = [h.header.copy() for h in hdul]
    tiny = [fits.PrimaryHDU(header=headers[0])] + [
        fits.ImageHDU(np.zeros((1, 1), dtype), header=h)
        for h, dtype in zip(headers[1:], (np.float32, np.int32, np.float32), strict=True)]
    fits.HDUList(tiny).writeto(src, overwrite=True)
    summary = _run(str(src), cat, client)
    assert summary.n_failed == 1
    rows = read_catalog(cat, "detectors")
    assert rows[["visit", "detector", "status"]].values.tolist() == [
        [VISIT, "R22_S00", "failed"]]
    assert rows["detector_id"].notna().all()
    assert read_catalog(cat, "pedestals", detectors=["R22_S00"]).empty


def test_detectors_of_one_id_in_two_cameras_or_named_differently_are_not_one(tmp_path):
    """The id rule is for detectors named after their files: LSSTCam's R01_S00 and LATISS's
    RXX_S00 (both id 0) of one visit number are two detectors, with or without the camera
    in their headers."""
    from ampoffset_dask.simulate import simulate_focal_plane

    simulate_focal_plane(tmp_path / "a", "lsstcam", detectors=["R01_S00"], visits=[5],
                         scale=0.05, seed=1)
    simulate_focal_plane(tmp_path / "b", "latiss", visits=[5], scale=0.05, seed=2)
    tasks = plan_tasks(discover_inputs([tmp_path / "a", tmp_path / "b"]))
    assert sorted((t.visit, t.name, t.error) for t in tasks) == [
        (5, "R01_S00", ""), (5, "RXX_S00", "")]
    for folder, camera in (("a", "LSSTCam"), ("b", "LATISS")):  # and with their cameras
        (path,) = (tmp_path / folder).glob("*.fits")
        with fits.open(path, mode="update") as hdul:
            hdul[0].header["INSTRUME"] = camera
    assert all(not t.error for t in plan_tasks(discover_inputs([tmp_path / "a",
                                                                 tmp_path / "b"])))
