"""What a re-run over a catalog skips, measures and writes, through real runs.

A resumed run skips a detector only when the catalog's current row is this run's result:
the same input (B4), and the corrected images this run writes (B6); an input that the
catalog's run corrected in place is done, not flagged again (B5). Failed inputs sharing
one (visit, detector) each keep their row (B3). In-place correction of a raw is refused.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
from astropy.io import fits
from cli_helpers import cli
from io_helpers import REAL

from ampoffset_dask import InputError, process, read_catalog
from ampoffset_dask.pipeline import RunOptions, prepare
from ampoffset_dask.simulate import simulate_focal_plane

from .helpers import SCALE, direct_measurements

NOWHERE = "tcp://127.0.0.1:9"  # nothing listens here: reaching it would exit 3


def _run(inputs, catalog, client, **kw):
    return process(inputs, catalog, client=client, progress=False, **kw)


def _counts(summary):
    return summary.n_ok, summary.n_flagged, summary.n_failed, summary.n_skipped


def test_copies_of_a_file_without_a_visit_each_keep_their_failed_row(tmp_path):
    src = REAL / "lsst_afw_formats" / "LATISS_bias_2018-09-21_afwExposure_zeroed.fits"
    calibs = tmp_path / "calibs"
    calibs.mkdir()
    paths = [str(shutil.copy(src, calibs / f"bias{n}.fits")) for n in (1, 2, 3)]
    cat = tmp_path / "cat_calibs"
    # nothing to compute: every input fails planning (no visit), no cluster is started
    proc = cli("run", calibs, "--output", cat, "--scheduler", "local:1", "--no-progress")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "failed 3" in proc.stdout
    assert read_catalog(cat, "runs")["n_failed"].tolist() == [3]
    for all_rows in (True, False):
        det = read_catalog(cat, "detectors", all_rows=all_rows)
        assert det["input"].tolist() == paths
        assert set(det["visit"]) == {-1} and set(det["detector"]) == {"RXX_S00"}
        assert set(det["status"]) == {"failed"}
        assert all(p in e for p, e in zip(paths, det["error"], strict=True))


def test_another_input_of_a_measured_detector_is_measured_and_supersedes(client, tmp_path,
                                                                         caplog):
    a, b = (simulate_focal_plane(tmp_path / name, "lsstcam", detectors=["R22_S11"],
                                 scale=SCALE, seed=seed).paths[0]
            for name, seed in (("simA", 1), ("simB", 2)))
    cat = tmp_path / "cat"
    assert _counts(_run(a.parent, cat, client)) == (1, 0, 0, 0)
    with caplog.at_level(logging.WARNING, logger="ampoffset_dask"):
        assert _counts(_run(b.parent, cat, client)) == (1, 0, 0, 0)
    warned = [r.getMessage() for r in caplog.records if "another input" in r.getMessage()]
    assert len(warned) == 1 and str(a) in warned[0] and str(b) in warned[0]
    assert read_catalog(cat, "detectors")["input"].tolist() == [str(b)]
    np.testing.assert_array_equal(read_catalog(cat, "pedestals")["pedestal"],
                                  direct_measurements([b])[0]["pedestal"])
    # the same input again is done; the first one again is measured and current again
    assert _counts(_run(b.parent, cat, client)) == (0, 0, 0, 1)
    assert _counts(_run(a.parent, cat, client)) == (1, 0, 0, 0)
    assert read_catalog(cat, "detectors")["input"].tolist() == [str(a)]
    assert len(read_catalog(cat, "detectors", all_rows=True)) == 3


def test_a_file_corrected_in_place_is_done_not_flagged(sim_visit, client, tmp_path):
    folder = tmp_path / "inplace"
    folder.mkdir()
    path = Path(shutil.copy(sim_visit.paths[0], folder / sim_visit.paths[0].name))
    cat = tmp_path / "cat"
    assert _counts(_run(folder, cat, client, in_place=True)) == (1, 0, 0, 0)
    pedestals = read_catalog(cat, "pedestals")
    assert len(pedestals) == 16
    corrected = path.read_bytes()
    # the file now says it was corrected; the catalog says this run did it, in place
    for options in ({"in_place": True}, {}):
        summary = _run(folder, cat, client, **options)
        assert _counts(summary) == (0, 0, 0, 1) and summary.n_submitted == 0
    assert path.read_bytes() == corrected  # not corrected twice
    det = read_catalog(cat, "detectors", all_rows=True)
    assert det["status"].tolist() == ["ok"] and det["applied"].tolist() == [True]
    assert det["output"].tolist() == [str(path)]
    pd.testing.assert_frame_equal(read_catalog(cat, "pedestals"), pedestals)
    # copies asked for: a corrected file is not copied as corrected again, and its row
    # stays current (a flagged row replaced it for good, and every later run flagged it)
    for _ in range(2):
        summary = _run(folder, cat, client, output_images=tmp_path / "images")
        assert _counts(summary) == (0, 0, 0, 1) and summary.n_submitted == 0
        assert any("already corrected are neither measured nor written" in note
                   for note in summary.notes)
    assert not (tmp_path / "images").exists() or not any((tmp_path / "images").rglob("*.fits"))
    assert _counts(_run(folder, cat, client, in_place=True)) == (0, 0, 0, 1)
    pd.testing.assert_frame_equal(read_catalog(cat, "pedestals"), pedestals)
    assert read_catalog(cat, "detectors")["status"].tolist() == ["ok"]


def test_resume_writes_the_images_a_later_run_asks_for(sim_visit, client, tmp_path):
    src = sim_visit.paths[:1]
    cat = tmp_path / "cat"
    assert _counts(_run(src, cat, client)) == (1, 0, 0, 0)
    images = tmp_path / "images"
    assert _counts(_run(src, cat, client, output_images=images)) == (1, 0, 0, 0)
    [written] = images.rglob("*.fits")
    assert read_catalog(cat, "detectors")["output"].tolist() == [str(written)]
    assert _counts(_run(src, cat, client, output_images=images)) == (0, 0, 0, 1)
    # the image gone: written again
    written.unlink()
    assert _counts(_run(src, cat, client, output_images=images)) == (1, 0, 0, 0)
    assert written.is_file()
    # another folder: written there
    other = tmp_path / "other"
    assert _counts(_run(src, cat, client, output_images=other)) == (1, 0, 0, 0)
    [elsewhere] = other.rglob("*.fits")
    assert read_catalog(cat, "detectors")["output"].tolist() == [str(elsewhere)]
    # measuring only: the measurement is there, whatever images its row names
    assert _counts(_run(src, cat, client)) == (0, 0, 0, 1)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_in_place_on_a_raw_is_refused_before_any_cluster(tmp_path):
    raw = tmp_path / "raw.fits"  # an uncompressed multi-extension LSST raw (16 segments)
    raw.write_bytes(gzip.decompress(
        (REAL / "lsst_raw_headers_zeroed" / "LATISS_2018-09-20_065_RXX_S00_ITL.fits.gz")
        .read_bytes()))
    before = _sha(raw)
    proc = cli("run", raw, "--output", tmp_path / "cat", "--in-place", "--scheduler",
               NOWHERE, "--no-progress")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "raw file cannot be corrected in place" in proc.stderr
    assert str(raw) in proc.stderr and "--output-images" in proc.stderr
    assert proc.stderr.count("error:") == 1
    assert _sha(raw) == before
    assert not (tmp_path / "cat" / "runs").exists()
    try:
        prepare(raw, tmp_path / "cat", options=RunOptions(in_place=True))
    except InputError as exc:
        assert str(raw) in str(exc)
    else:
        raise AssertionError("expected InputError")
    # corrected copies of the raw are fine
    with prepare(raw, tmp_path / "cat", options=RunOptions(
            output_images=tmp_path / "images")) as run:
        assert [t.raw for t in run.runnable] == [True]


def test_inputs_inside_the_output_images_folder_are_refused_in_python_too(tmp_path):
    """`process(folder, output_images=folder)` said "no FITS files found" (the output folder
    is left out of the input scan); now the same refusal as the command line, and nothing
    is created."""
    import pytest

    sim = simulate_focal_plane(tmp_path / "night", "lsstcam", detectors=["R22_S11"],
                               scale=0.1, seed=3)
    folder = Path(sim.paths[0]).parent
    for images in (folder, folder.parent):
        with pytest.raises(InputError, match=r"the input folder (is|lies inside) the "
                                             r"--output-images folder"):
            process(folder, tmp_path / "cat", output_images=images, progress=False)
    assert not (tmp_path / "cat").exists()


def test_a_visit_filtered_read_hides_what_the_full_read_hides(tmp_path):
    """A failure of the unknown visit (-1) that a later row of the same input under a known
    visit supersedes is hidden from ``visits=[-1]`` reads too, as from the full read."""
    src = REAL / "lsst_afw_formats" / "LATISS_bias_2018-09-21_afwExposure_zeroed.fits"
    folder = tmp_path / "calib"
    folder.mkdir()
    shutil.copy(src, folder / "bias.fits")
    cat = tmp_path / "cat"
    cli("run", folder, "--output", cat, "--scheduler", "local:1", "--no-progress")
    assert read_catalog(cat, "detectors", visits=[-1])["visit"].tolist() == [-1]
    cli("run", folder, "--output", cat, "--visit", "5", "--scheduler", "local:1",
        "--no-progress")
    full = read_catalog(cat, "detectors")
    assert full["visit"].tolist() == [5]
    assert len(read_catalog(cat, "detectors", visits=[-1])) == 0
    assert len(read_catalog(cat, "detectors", visits=[-1, 5], columns=["status"])) == 1
    assert len(read_catalog(cat, "detectors", visits=[-1], all_rows=True)) == 1


def test_a_file_corrected_by_an_interrupted_run_keeps_its_pedestals(sim_visit, client,
                                                                     tmp_path):
    """A file corrected in place whose result never reached the catalog (the run was
    stopped, or its worker died, after the write): the next run records the pedestals its
    header says were subtracted instead of a flagged row without any."""
    from ampoffset_dask import AmpOffsetConfig
    from ampoffset_dask.pipeline.detector_job import process_file

    folder = tmp_path / "inplace"
    folder.mkdir()
    path = Path(shutil.copy(sim_visit.paths[0], folder / sim_visit.paths[0].name))
    # what the interrupted run's task did: correct the file, its result lost
    job = process_file(str(path), None, AmpOffsetConfig(), output=str(path), in_place=True)
    assert job.status == "ok" and job.applied
    summary = _run(folder, tmp_path / "cat", client, in_place=True)
    assert _counts(summary) == (0, 1, 0, 0) and summary.n_submitted == 0
    det = read_catalog(tmp_path / "cat", "detectors")
    assert det["status"].tolist() == ["flagged"] and det["applied"].tolist() == [True]
    assert "pedestals its header says were subtracted are recorded" in det["error"][0]
    ped = read_catalog(tmp_path / "cat", "pedestals")
    assert ped["amp"].tolist() == list(job.amp_names)
    np.testing.assert_array_equal(ped["pedestal"], job.pedestals)
    assert ped["applied"].all() and ped["pedestal_err"].isna().all()


def _copies(paths, folder: Path) -> list[Path]:
    folder.mkdir()
    return [Path(shutil.copy2(p, folder / Path(p).name)) for p in paths]


def test_force_spares_the_files_this_catalog_corrected_in_place(sim_visit, client, tmp_path):
    """``--force`` corrects files corrected elsewhere; before, it also subtracted this
    catalog's own in-place corrections a second time (its rows then held the leftovers)."""
    paths = _copies(sim_visit.paths[:2], tmp_path / "in")
    cat = tmp_path / "cat"
    assert _counts(_run(paths, cat, client, in_place=True)) == (2, 0, 0, 0)
    corrected = [p.read_bytes() for p in paths]
    pedestals = read_catalog(cat, "pedestals")
    for options in ({"in_place": True}, {}):
        summary = _run(paths, cat, client, force=True, **options)
        assert _counts(summary) == (0, 0, 0, 2) and summary.n_submitted == 0
    assert [p.read_bytes() for p in paths] == corrected
    pd.testing.assert_frame_equal(read_catalog(cat, "pedestals"), pedestals)


def _without_run_card(path):
    """Every HDU's header cards and pixels, but the card naming the correcting run."""
    with fits.open(path) as hdul:
        return [([c.image for c in hdu.header.cards if "AMPOFFSET RUN" not in c.keyword],
                 None if hdu.data is None else hdu.data.tobytes()) for hdu in hdul]


def test_a_restored_original_is_corrected_again(sim_visit, client, tmp_path):
    """A backup restored over a file corrected in place (``cp -p``, ``rsync -a``) has the
    original's size and time, which the row recorded: its header says it is not corrected,
    so it is measured and corrected again (before: skipped, the catalog saying applied)."""
    [path] = _copies(sim_visit.paths[:1], tmp_path / "in")
    backup = Path(shutil.copy2(path, tmp_path / "backup.fits"))
    cat = tmp_path / "cat"
    assert _counts(_run([path], cat, client, in_place=True)) == (1, 0, 0, 0)
    first = _without_run_card(path)
    shutil.copy2(backup, path)
    summary = _run([path], cat, client, in_place=True)
    assert _counts(summary) == (1, 0, 0, 0)
    # the same correction, recorded as the second run's
    assert _without_run_card(path) == first
    assert fits.getheader(path, 0)["AMPOFFSET RUN"] == summary.run_id
    assert _counts(_run([path], cat, client, in_place=True)) == (0, 0, 0, 1)


def test_resume_measures_again_the_rows_of_another_measurement(sim_visit, client, tmp_path):
    """After an interrupted ``--gain nominal --new-run`` (here: ``--overscan none``, which
    the same rule covers, on one of two files), the resumed run passes the check against the
    latest run, and the rows of the earlier run are not its results: they are measured again
    (before: skipped, so ADU rows stood beside electron rows)."""
    paths = list(sim_visit.paths[:2])
    cat = tmp_path / "cat"
    assert _counts(_run(paths, cat, client)) == (2, 0, 0, 0)
    assert _counts(_run(paths[:1], cat, client, overscan="none", new_run=True)) == (1, 0, 0, 0)
    summary = _run(paths, cat, client, overscan="none")
    assert _counts(summary) == (1, 0, 0, 1)
    runs = read_catalog(cat, "runs")["run_id"].tolist()
    assert read_catalog(cat, "detectors")["run_id"].tolist() == [runs[1], runs[2]]


def test_the_run_after_an_interrupted_new_run_finishes_it(sim_visit, client, tmp_path):
    """A ``--new-run`` (the same configuration: say, after an upgrade) stopped before
    reaching its inputs; the next plain run, "run again to resume", took the earlier run's
    rows for done and the new run stayed half done, without a word."""
    paths = list(sim_visit.paths[:2])
    cat = tmp_path / "cat"
    assert _counts(_run(paths, cat, client)) == (2, 0, 0, 0)
    with prepare(paths, cat, options=RunOptions(new_run=True)):
        pass  # stopped before anything ran
    summary = _run(paths, cat, client)
    assert _counts(summary) == (2, 0, 0, 0)
    assert set(read_catalog(cat, "detectors")["run_id"]) == {summary.run_id}
    assert _counts(_run(paths, cat, client)) == (0, 0, 0, 2)
    # a finished --new-run over one input: both rows are done
    assert _counts(_run(paths[1:], cat, client, new_run=True)) == (1, 0, 0, 0)
    assert _counts(_run(paths, cat, client)) == (0, 0, 0, 2)


def test_resume_writes_again_an_image_another_catalog_replaced(sim_visit, client, tmp_path):
    """Two catalogs writing corrected images into one folder: a resume of the first trusted
    the image the second wrote over its own (it only checked that the file existed)."""
    from ampoffset_dask import AmpOffsetConfig

    src = list(sim_visit.paths[:2])
    images = tmp_path / "images"
    a, b = tmp_path / "a", tmp_path / "b"
    assert _counts(_run(src, a, client, output_images=images)) == (2, 0, 0, 0)
    assert _counts(_run(src, a, client, output_images=images)) == (0, 0, 0, 2)
    other = AmpOffsetConfig(amp_edge_width=16)
    assert _counts(_run(src[:1], b, client, output_images=images, config=other)) == (1, 0, 0, 0)
    summary = _run(src, a, client, output_images=images)
    assert _counts(summary) == (1, 0, 0, 1)
    pedestals = read_catalog(a, "pedestals")
    for row in read_catalog(a, "detectors").itertuples():
        ped = pedestals[pedestals["detector"] == row.detector].sort_values("amp_index")
        header = fits.getheader(row.output, 0)
        written = [header[f"LSST ISR AMPOFFSET PEDESTAL {amp}"] for amp in ped["amp"]]
        np.testing.assert_allclose(written, ped["pedestal"], atol=1e-6)


def _two_amp_camera(path: Path, boxes) -> Path:
    path.write_text(json.dumps({
        "name": "mycam",
        "amp_layouts": {"two": {"detector_size": [640, 200], "amps": [
            {"name": name, "bbox": box} for name, box in zip("LR", boxes, strict=True)]}},
        "detectors": [{"id": 90, "name": "R22_S00", "physical_type": "two"}],
    }))
    return path


def test_resume_measures_again_a_detector_whose_layout_changed(sim_visit, client, tmp_path):
    """The same camera file, edited (two amps left and right, then top and bottom): before,
    the resume skipped the detector and kept the pedestals of the old layout."""
    src = sim_visit.paths[:1]
    assert "R22_S00" in src[0].name
    camera = _two_amp_camera(tmp_path / "cam.json", ([0, 0, 320, 200], [320, 0, 320, 200]))
    cat = tmp_path / "cat"
    assert _counts(_run(src, cat, client, camera=str(camera))) == (1, 0, 0, 0)
    assert _counts(_run(src, cat, client, camera=str(camera))) == (0, 0, 0, 1)
    _two_amp_camera(camera, ([0, 0, 640, 100], [0, 100, 640, 100]))
    assert _counts(_run(src, cat, client, camera=str(camera))) == (1, 0, 0, 0)
    fresh = tmp_path / "fresh"
    assert _counts(_run(src, fresh, client, camera=str(camera))) == (1, 0, 0, 0)
    pd.testing.assert_frame_equal(
        read_catalog(cat, "pedestals")[["amp", "pedestal"]],
        read_catalog(fresh, "pedestals")[["amp", "pedestal"]])
    # the headers' layout (16 amps) after the camera's: another measurement too
    assert _counts(_run(src, cat, client)) == (1, 0, 0, 0)
    assert len(read_catalog(cat, "pedestals")) == 16


def test_rows_of_catalogs_without_the_geometry_column_resume(sim_visit, client, tmp_path):
    """Catalogs written before the ``geometry`` column: their rows say no layout, and are
    trusted as before; the visit is rewritten with the column when another row joins it."""
    import pyarrow.parquet as pq

    src = list(sim_visit.paths[:2])
    cat = tmp_path / "cat"
    assert _counts(_run(src[:1], cat, client)) == (1, 0, 0, 0)
    for path in (cat / "detectors").rglob("*.parquet"):
        pq.write_table(pq.read_table(path).drop_columns(["geometry"]), path)
    assert read_catalog(cat, "detectors")["geometry"].isna().all()
    assert _counts(_run(src, cat, client)) == (1, 0, 0, 1)
    det = read_catalog(cat, "detectors")
    assert det["geometry"].isna().tolist() == [True, False]
