"""The ``ampoffset-dask`` command: in-process through `ampoffset_dask.cli.main` (fast), and
through its installed entry point in subprocesses where the process itself is tested."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cli_helpers import cli
from cli_helpers import cli_subprocess as run_entry_point

import ampoffset_dask
from ampoffset_dask.catalog import read_catalog

SUBCOMMANDS = ("demo", "simulate", "run", "plot", "cameras", "info", "catalog", "presets")


def cli_subprocess(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """``ampoffset-dask ARGS`` through the installed console script."""
    env = dict(os.environ, PYTHONWARNINGS="ignore", TQDM_DISABLE="1")
    return run_entry_point(*args, env=env, timeout=timeout)


def one_error_line(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """stderr is a single ``ampoffset-dask ...: error: ...`` line holding every needle."""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert "error:" in lines[0] and "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


# -- help, version, cameras ---------------------------------------------------------------
def test_help_everywhere():
    top = cli("--help")
    assert top.returncode == 0
    for name in SUBCOMMANDS:
        assert name in top.stdout
    assert "exit codes" in top.stdout
    for name in SUBCOMMANDS:
        proc = cli(name, "--help")
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.startswith(f"usage: ampoffset-dask {name}")
        assert "exit codes" in proc.stdout


def test_version_and_no_command():
    proc = cli("--version")
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"ampoffset-dask {ampoffset_dask.__version__}"
    proc = cli()
    assert proc.returncode == 2 and "usage:" in proc.stderr


def test_entry_point_runs_main():
    """The installed console script is `main`: same output, same exit codes."""
    proc = cli_subprocess("--version")
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"ampoffset-dask {ampoffset_dask.__version__}"
    proc = cli_subprocess("cameras", "nocam")
    assert proc.returncode == 2
    one_error_line(proc, "unknown camera 'nocam'")
    # the same behaviour (main returns 2, the script exits with it): in this process
    proc = cli()
    assert proc.returncode == 2 and "usage:" in proc.stderr


def test_usage_errors_exit_2():
    proc = cli("simulate", "--scale", "-1", "--out", "x")
    assert proc.returncode == 2 and "must be a positive number" in proc.stderr
    proc = cli("nosuchcommand")
    assert proc.returncode == 2


def test_cameras():
    proc = cli("cameras")
    assert proc.returncode == 0
    for name in ("lsstcam", "lsstcomcam", "latiss", "hsc", "decam"):
        assert name in proc.stdout
    rows = json.loads(cli("cameras", "--json").stdout)
    assert {r["name"]: r["detectors"] for r in rows}["lsstcam"] == 205
    dets = json.loads(cli("cameras", "LSSTCam", "--json").stdout)
    r22 = {d["name"]: d for d in dets}["R22_S11"]
    assert (r22["id"], r22["physical_type"], r22["width"], r22["height"]) == (94, "E2V", 4096,
                                                                              4004)
    proc = cli("cameras", "nocam")
    assert proc.returncode == 2
    one_error_line(proc, "unknown camera 'nocam'")
    verbose = cli("-v", "cameras", "nocam")
    assert verbose.returncode == 2 and "Traceback" in verbose.stderr


# -- simulate, info, run, catalog, plot ------------------------------------------------------
@pytest.fixture(scope="module")
def workdir(tmp_path_factory, shared_scheduler):
    """Simulated files and their catalog, made once per run and shared by the ``-n``
    processes: tests read them and write elsewhere (copies in ``tmp_path``)."""
    from run_shared import once_per_run

    def make(work: Path) -> Path:
        sim = work / "sim"
        proc = cli("simulate", "--camera", "lsstcam", "--detectors", "R22_S11,R22_S12",
                   "--visits", "2", "--scale", "0.1", "--seed", "3", "--out", sim)
        assert proc.returncode == 0, proc.stderr
        assert "wrote 4 exposure(s)" in proc.stdout
        proc = cli("run", sim, "--output", work / "cat", "--scheduler", shared_scheduler,
                   "--no-progress")
        assert proc.returncode == 0, proc.stderr
        return work

    return once_per_run(tmp_path_factory, "cli_workdir", make)


def test_simulate_writes_files_and_truth(workdir, tmp_path):
    sim = workdir / "sim"
    files = sorted(p.name for p in sim.glob("*.fits"))
    assert files == ["lsstcam_000001_R22_S11.fits", "lsstcam_000001_R22_S12.fits",
                     "lsstcam_000002_R22_S11.fits", "lsstcam_000002_R22_S12.fits"]
    truth = pd.read_parquet(sim / "truth.parquet")
    assert list(truth.columns) == ["visit", "detector", "amp", "pedestal"]
    assert len(truth) == 64
    proc = cli("simulate", "--detectors", "R22_S11", "--scale", "0.1", "--seed", "3", "--out",
               sim)
    assert proc.returncode == 2
    one_error_line(proc, "already exists", "--overwrite")
    proc = cli("simulate", "--detectors", "R22_S99", "--scale", "0.1", "--out", tmp_path / "x")
    assert proc.returncode == 2
    one_error_line(proc, "R22_S99")


def test_info(workdir, tmp_path):
    path = workdir / "sim" / "lsstcam_000002_R22_S12.fits"
    proc = cli("info", path)
    assert proc.returncode == 0, proc.stderr
    assert "R22_S12 (id 95)" in proc.stdout and "visit       2" in proc.stdout
    assert "16 of 80 x 200" in proc.stdout and "SAT=1" in proc.stdout
    data = json.loads(cli("info", path, "--json").stdout)
    assert data["detector"] == "R22_S12" and data["visit"] == 2 and data["shape"] == [400, 640]
    assert [a["name"] for a in data["amps"]][:2] == ["C10", "C11"]
    not_fits = tmp_path / "notes.txt"
    not_fits.write_text("hello\n")
    proc = cli("info", not_fits)
    assert proc.returncode == 2
    one_error_line(proc, "notes.txt")
    proc = cli("info", workdir / "missing.fits")
    assert proc.returncode == 2
    one_error_line(proc, "missing.fits")
    proc = cli("info", workdir)
    assert proc.returncode == 2
    one_error_line(proc, "directory")


def test_run_fills_the_catalog_close_to_truth(workdir):
    cat = workdir / "cat"
    det = read_catalog(cat, "detectors")
    assert len(det) == 4 and set(det["status"]) == {"ok"}
    ped = read_catalog(cat, "pedestals")
    truth = pd.read_parquet(workdir / "sim" / "truth.parquet")
    merged = ped.merge(truth, on=["visit", "detector", "amp"], suffixes=("", "_truth"))
    assert len(merged) == 64
    err = merged["pedestal"] - merged["pedestal_truth"]
    # Tiny 80x200 amps: only a loose check that the run measured the injected steps.
    assert np.corrcoef(merged["pedestal"], merged["pedestal_truth"])[0, 1] > 0.3
    assert np.sqrt(np.mean(err ** 2)) < np.sqrt(np.mean(merged["pedestal_truth"] ** 2))


def test_run_resumes_and_reports_failures(workdir, tmp_path, shared_scheduler):
    # Second run on the same catalog (a copy: the shared one stays as the first run left
    # it), asking for another cluster: everything is skipped (and with nothing to run, no
    # cluster is started).
    shutil.copytree(workdir / "cat", tmp_path / "again")
    proc = cli("run", workdir / "sim", "--output", tmp_path / "again", "--scheduler", "local:2",
               "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert "skipped 4" in proc.stdout
    # A truncated file among good ones: exit 1, the bad input named on stderr.
    inputs = tmp_path / "in"
    inputs.mkdir()
    good = workdir / "sim" / "lsstcam_000001_R22_S11.fits"
    shutil.copy(good, inputs / good.name)
    (inputs / "broken.fits").write_bytes(good.read_bytes()[:20000])
    proc = cli("run", inputs, "--output", tmp_path / "cat", "--scheduler", shared_scheduler,
               "--no-progress")
    assert proc.returncode == 1, proc.stderr
    det = read_catalog(tmp_path / "cat", "detectors")
    assert sorted(det["status"]) == ["failed", "ok"], det[["input", "status", "error"]].to_dict()
    assert "1 detector(s) failed" in proc.stderr and "broken.fits" in proc.stderr, proc.stderr


def test_run_input_errors(tmp_path, workdir):
    proc = cli("run", tmp_path / "nothing", "--output", tmp_path / "cat")
    assert proc.returncode == 2
    one_error_line(proc, "nothing", "no such file")
    proc = cli("run", tmp_path, "--output", tmp_path / "cat", "--apply")
    assert proc.returncode == 2
    one_error_line(proc, "--output-images")
    proc = cli("run", tmp_path, "--output", tmp_path / "cat", "--set", "ampEdgeWidth=-3")
    assert proc.returncode == 2
    one_error_line(proc, "ampEdgeWidth")
    # a detector the named camera does not have: one error, before planning (no catalog)
    proc = cli("run", workdir / "sim", "--output", tmp_path / "cat3", "--camera", "lsstcam",
               "--detector", "BOGUS", "--scheduler", "nosuch-spec")
    assert proc.returncode == 2
    assert ("error: --detector 'BOGUS': camera 'lsstcam' has no detector 'BOGUS'"
            in proc.stderr.splitlines()[-1])
    assert not (tmp_path / "cat3").exists()
    # an empty input folder is found at planning, before the scheduler spec is used (exit 2)
    proc = cli("run", tmp_path, "--output", tmp_path / "cat", "--scheduler", "nosuch-spec")
    assert proc.returncode == 2
    one_error_line(proc, "no FITS files")
    # with real inputs, the unusable scheduler spec is exit 3
    proc = cli("run", workdir / "sim", "--output", tmp_path / "cat2", "--scheduler",
               "nosuch-spec")
    assert proc.returncode == 3
    one_error_line(proc, "nosuch-spec")
    assert not (tmp_path / "cat" / "runs").exists()


def test_catalog_summary_and_tables(workdir):
    cat = workdir / "cat"
    proc = cli("catalog", cat)
    assert proc.returncode == 0, proc.stderr
    assert "detectors   4: ok 4" in proc.stdout and "64 amps" in proc.stdout
    summary = json.loads(cli("catalog", cat, "--json").stdout)
    assert summary["visits"] == [1, 2] and summary["status"] == {"ok": 4}
    assert summary["interfaces"] == 4 * 22
    one = json.loads(cli("catalog", cat, "--visit", "2", "--json").stdout)
    assert one["visits"] == [2] and one["detectors"] == 2
    table = cli("catalog", cat, "--table", "pedestals", "--limit", "5")
    assert table.returncode == 0
    assert "R22_S11" in table.stdout and "more rows" in table.stdout
    proc = cli("catalog", workdir / "nocat")
    assert proc.returncode == 2
    one_error_line(proc, "nocat")


def test_plot(workdir, tmp_path):
    from matplotlib.image import imread  # matplotlib only in the test process that plots

    cat, out = workdir / "cat", tmp_path / "plots"
    proc = cli("plot", cat, "--visit", "2", "--out", out, "--detector", "R22_S12")
    assert proc.returncode == 0, proc.stderr
    names = sorted(Path(line).name for line in proc.stdout.split())
    assert names == ["amps_v2_R22_S12.png", "before_after_v2_R22_S12.png",
                     "focal_plane_v2.png", "interfaces_v2.png"]
    for name in names:
        img = imread(out / name)
        assert img.shape[0] > 200 and img.shape[1] > 400
        assert img[..., :3].std() > 0.05
    assert imread(out / "focal_plane_v2.png").shape[:2] == (700, 800)
    proc = cli("plot", cat)
    assert proc.returncode == 2
    one_error_line(proc, "several visits", "--visit")
    proc = cli("plot", cat, "--visit", "9")
    assert proc.returncode == 2
    one_error_line(proc, "no visit 9")


# -- demo ---------------------------------------------------------------------------------------
def test_demo_end_to_end_small(tmp_path, shared_scheduler):
    out = tmp_path / "demo"
    proc = cli("demo", "--out", out, "--scale", "0.12", "--workers", "1")
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert "Dask cluster: 1 worker(s)" in text  # a local cluster of its own
    assert "simulated 9 detectors" in text and "measured 9/9 detectors" in text
    rms = float(text.split("pedestal RMS error vs truth:")[1].split()[0])
    injected = float(text.split("injected pedestals RMS")[1].split()[0])
    assert 0.0 < rms < 1.5 and rms < 0.75 * injected
    assert len(list((out / "data").glob("*.fits"))) == 9
    det = read_catalog(out / "catalog", "detectors")
    assert len(det) == 9 and set(det["status"]) == {"ok"}
    pngs = sorted(p.name for p in (out / "plots").glob("*.png"))
    assert "focal_plane_v1.png" in pngs and "interfaces_v1.png" in pngs and len(pngs) == 4
    # Running it again in the same folder works (fresh run, files replaced), here on a
    # running scheduler instead of a local cluster of its own.
    again = cli("demo", "--out", out, "--scale", "0.12", "--scheduler", shared_scheduler)
    assert again.returncode == 0, again.stderr
    assert "Dask cluster: 2 worker(s)" in again.stdout  # the shared scheduler's
    assert f"{rms:.3f}" in again.stdout  # same seed, same numbers


@pytest.mark.parametrize("text, value", [
    ("false", False), ("False", False), ("True", True), ("10", 10), ("2.5", 2.5),
    ('["BAD", "SAT"]', ["BAD", "SAT"]), ("['BAD', 'SAT']", ["BAD", "SAT"]), ("None", None),
    ("meanclip", "meanclip"), ("AKIMA_SPLINE", "AKIMA_SPLINE"),
])
def test_set_values_as_json_or_as_lsst_config_files_write_them(text, value):
    from ampoffset_dask.cli import _override_value

    assert _override_value(text) == value


def test_set_overrides_reach_the_config():
    from ampoffset_dask.cli import _load_config

    config = _load_config(None, ["doBackground=False", "ampEdgeMaxOffset=10",
                                 "detection.statsMask=['BAD', 'SAT']"])
    assert config.do_background is False and config.amp_edge_max_offset == 10
    assert list(config.detection.stats_mask) == ["BAD", "SAT"]


def test_astropy_warnings_only_with_verbose(tmp_path):
    """astropy's own warnings about an odd file (here a non-ASCII header byte) stay out of
    the command's output unless -v asks for them."""
    from astropy.io import fits

    path = tmp_path / "odd.fits"
    fits.PrimaryHDU(np.zeros((4, 6), np.float32)).writeto(path)
    data = bytearray(path.read_bytes())
    k = data.index(b"END" + b" " * 77)
    data[k - 80:k] = b"COMMENT caf\xe9".ljust(80)  # a non-ASCII byte in a header card
    path.write_bytes(bytes(data))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    quiet = run_entry_point("info", path, env=env)
    loud = run_entry_point("-v", "info", path, env=env)
    assert "non-ASCII" not in quiet.stderr
    assert "non-ASCII" in loud.stderr
    assert quiet.returncode == loud.returncode


def test_a_refused_run_leaves_no_folders_behind(tmp_path, workdir):
    """Folders a refused run created are removed (an empty catalog folder was then "not an
    ampoffset-dask catalog"); folders that were there before stay."""
    one = next((workdir / "sim").glob("*.fits"))
    dupes = tmp_path / "dupes"
    dupes.mkdir()
    for name in ("a.fits", "b.fits"):  # the same (visit, detector) twice: refused
        shutil.copy(one, dupes / name)
    proc = cli("run", dupes, "--output", tmp_path / "cat", "--output-images", tmp_path / "img",
               "--scheduler", "nosuch-spec")
    assert proc.returncode == 2
    one_error_line(proc, "several inputs are the same (visit, detector)")
    assert not (tmp_path / "cat").exists() and not (tmp_path / "img").exists()
    (tmp_path / "mine").mkdir()
    proc = cli("run", dupes, "--output", tmp_path / "mine", "--scheduler", "nosuch-spec")
    assert proc.returncode == 2 and (tmp_path / "mine").is_dir()


# -- what info, run, catalog and plot say about geometry, identity and failures ---------------
def test_info_says_where_the_amp_geometry_came_from(workdir, tmp_path):
    """`info` names the camera it used (given, from the header, recognised) or where the
    geometry came from otherwise, and a gzip-wrapped file as such ("compressed" stays tile
    compression)."""
    from astropy.io import fits
    from golden import SHARED

    camera = tmp_path / "tiny.json"
    camera.write_text(json.dumps({
        "name": "tiny",
        "amp_layouts": {"two": {"detector_size": [64, 20], "amps": [
            {"name": "L", "bbox": [0, 0, 32, 20]}, {"name": "R", "bbox": [32, 0, 32, 20]}]}},
        "detectors": [{"id": 0, "name": "tiny_ccd", "physical_type": "two"}]}))
    plain = tmp_path / "plain.fits.gz"  # no keywords: the geometry is the camera's
    fits.PrimaryHDU(np.zeros((20, 64), np.float32)).writeto(plain)
    proc = cli("info", plain, "--camera", camera)
    assert proc.returncode == 0, proc.stderr
    assert f"camera      tiny (--camera {camera})" in proc.stdout
    assert "kind        image (gzip-wrapped)," in proc.stdout
    data = json.loads(cli("info", plain, "--camera", camera, "--json").stdout)
    assert (data["camera"], data["geometry_source"]) == ("tiny", "camera")
    assert (data["wrapped"], data["compressed"]) == ("gzip", False)

    sim = workdir / "sim" / "lsstcam_000001_R22_S11.fits"  # scaled: no camera's size
    proc = cli("info", sim)
    assert "camera      - (amp geometry from the header's DATASEC keywords)" in proc.stdout
    data = json.loads(cli("info", sim, "--json").stdout)
    assert (data["geometry_source"], data["wrapped"]) == ("header keywords", None)

    afw = SHARED / "realdata/lsst_afw_formats/LATISS_bias_2018-09-21_afwExposure_zeroed.fits"
    proc = cli("info", afw, "--camera", "latiss")
    assert proc.returncode == 0, proc.stderr
    assert ("camera      - (amp geometry from the file's persisted detector, not from "
            "--camera latiss)") in proc.stdout
    assert "kind        exposure (tile-compressed)," in proc.stdout
    data = json.loads(cli("info", afw, "--json").stdout)
    assert (data["geometry_source"], data["compressed"]) == ("persisted detector", True)


def test_run_notes_inputs_keeping_their_header_identity(workdir, tmp_path, shared_scheduler):
    """--visit N and --detector NAME only fill in what headers lack: a run over files whose
    headers name both says once (not per file) how many kept their own, with an example."""
    shutil.copytree(workdir / "cat", tmp_path / "cat")  # resumed: nothing to compute
    proc = cli("run", workdir / "sim", "--output", tmp_path / "cat", "--visit", "7",
               "--detector", "R02_S02", "--scheduler", shared_scheduler, "--no-progress")
    assert proc.returncode == 0, proc.stderr
    notes = [line for line in proc.stderr.splitlines() if "note:" in line]
    assert len(notes) == 1, proc.stderr
    assert "--visit 7 only applies to inputs whose headers give no visit: 4 input(s)" in notes[0]
    assert ("--detector R02_S02 only applies to inputs whose headers give no detector: 4 "
            "input(s)") in notes[0]
    assert "lsstcam_000001_R22_S11.fits (detector R22_S11)" in notes[0]
    det = read_catalog(tmp_path / "cat", "detectors")
    assert sorted(det["visit"].unique()) == [1, 2]


def _catalog_with_a_failed_input(workdir: Path, tmp_path: Path) -> tuple[Path, str]:
    """A copy of the shared catalog plus the failed row of an unreadable input (visit -1,
    no detector), recorded without any cluster (the simulated files are resumed); the run's
    stderr."""
    cat = tmp_path / "cat"
    shutil.copytree(workdir / "cat", cat)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "junk.fits").write_text("not a FITS file\n")
    proc = cli("run", workdir / "sim", tmp_path / "junk", "--output", cat, "--scheduler",
               "nosuch-spec", "--no-progress")
    assert proc.returncode == 1, proc.stderr
    return cat, proc.stderr


def test_failed_rows_of_unknown_inputs_name_the_file(workdir, tmp_path):
    cat, stderr = _catalog_with_a_failed_input(workdir, tmp_path)
    assert "  visit -1 (unknown) junk.fits: InputError: " in stderr
    proc = cli("catalog", cat)
    assert proc.returncode == 0, proc.stderr
    assert "  failed: visit -1 (unknown) junk.fits: InputError: " in proc.stdout
    failed = json.loads(cli("catalog", cat, "--json").stdout)["failed"]
    assert [(f["visit"], f["detector"]) for f in failed] == [(-1, "")]
    assert failed[0]["input"].endswith("junk.fits")
    # detector_id stays an integer beside the failed row's null
    table = cli("catalog", cat, "--table", "detectors").stdout.splitlines()
    ids = [line.split()[2] for line in table[1:] if "R22_S1" in line]
    assert sorted(set(ids)) == ["94", "95"], table


def test_catalog_of_a_visit_it_does_not_have(workdir):
    cat = workdir / "cat"
    for extra in ((), ("--json",), ("--table", "pedestals")):
        proc = cli("catalog", cat, "--visit", "123", *extra)
        assert proc.returncode == 2 and not proc.stdout
        one_error_line(proc, f"no rows for visit 123 in {cat}")


def test_plot_of_a_visit_whose_detectors_all_failed(workdir, tmp_path):
    """Nothing measured, nothing to plot: said on stderr, exit 2 like the other visits plot
    cannot draw, and no output folder made."""
    cat, _ = _catalog_with_a_failed_input(workdir, tmp_path)
    proc = cli("plot", cat, "--visit", "-1", "--out", tmp_path / "plots")
    assert proc.returncode == 2
    one_error_line(proc, "nothing to plot for visit -1: all 1 detector(s) failed")
    assert not (tmp_path / "plots").exists()


def test_run_refuses_inputs_in_the_output_images_folder(workdir, tmp_path):
    night = tmp_path / "night"
    shutil.copytree(workdir / "sim", night)
    for images, where in ((night, "is"), (tmp_path, "lies inside")):
        proc = cli("run", night, "--output", tmp_path / "cat", "--output-images", images,
                   "--scheduler", "nosuch-spec")
        assert proc.returncode == 2
        one_error_line(proc, f"the input folder {where} the --output-images folder")
        assert not (tmp_path / "cat").exists()
    # a folder inside the inputs is fine: this run gets as far as the (unusable) scheduler
    proc = cli("run", night, "--output", tmp_path / "cat", "--output-images",
               night / "corrected", "--scheduler", "nosuch-spec")
    assert proc.returncode == 3, proc.stderr


def test_info_reads_zip_members_and_file_uris(workdir, tmp_path):
    """``info`` takes what `run` takes: a zip member (as Butler zip datastores give them) and
    a ``file://`` URI, named as given."""
    import zipfile

    path = workdir / "sim" / "lsstcam_000002_R22_S12.fits"
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(path, "x/R22_S12.fits")
    member = f"{archive}#zip-path=x/R22_S12.fits"
    for given in (member, path.as_uri()):
        proc = cli("info", given, "--json")
        assert proc.returncode == 0, proc.stderr
        data = json.loads(proc.stdout)
        assert data["path"] == given and data["detector"] == "R22_S12"
        assert data["size_bytes"] == path.stat().st_size
    proc = cli("info", f"{archive}#zip-path=x/missing.fits")
    assert proc.returncode == 2
    one_error_line(proc, "missing.fits")


def test_catalog_table_as_json(workdir):
    """``--table T --json``: the rows as a JSON list of records (all of them unless
    --limit), values as the catalog holds them."""
    cat = workdir / "cat"
    proc = cli("catalog", cat, "--table", "pedestals", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    ped = read_catalog(cat, "pedestals")
    assert len(rows) == len(ped) == 64  # more than the text table's 50
    assert [(r["visit"], r["detector"], r["amp"], r["pedestal"]) for r in rows] == list(
        zip(ped["visit"], ped["detector"], ped["amp"], ped["pedestal"], strict=True))
    assert len(json.loads(cli("catalog", cat, "--table", "interfaces", "--json", "--limit",
                              "3").stdout)) == 3
    runs = json.loads(cli("catalog", cat, "--table", "runs", "--json").stdout)
    assert len(runs) == 1 and runs[0]["status"] == "finished"
    assert runs[0]["started"].startswith("20")  # times in ISO 8601
    visit = json.loads(cli("catalog", cat, "--visit", "2", "--table", "detectors",
                           "--json").stdout)
    assert sorted(r["detector"] for r in visit) == ["R22_S11", "R22_S12"]
    assert {r["detector_id"] for r in visit} == {94, 95}


def test_catalog_summary_says_when_rows_come_from_several_configs(workdir, tmp_path,
                                                                   shared_scheduler):
    cat = tmp_path / "cat"
    shutil.copytree(workdir / "cat", cat)
    one = json.loads(cli("catalog", cat, "--json").stdout)["configs"]
    assert len(one) == 1 and one[0]["detectors"] == 4 and one[0]["amps"] == 64
    assert "configs" not in cli("catalog", cat).stdout
    # a new run with another config on one of the four detectors
    proc = cli("run", workdir / "sim" / "lsstcam_000002_R22_S12.fits", "--output", cat,
               "--new-run", "--set", "ampEdgeMaxOffset=0.01", "--scheduler", shared_scheduler,
               "--no-progress")
    assert proc.returncode == 0, proc.stderr
    first, second = read_catalog(cat, "runs")["run_id"]
    summary = json.loads(cli("catalog", cat, "--json").stdout)
    groups = summary["configs"]
    assert [g["runs"] for g in groups] == [[{"run_id": first, "detectors": 3}],
                                           [{"run_id": second, "detectors": 1}]]
    assert [(g["detectors"], g["amps"], g["interfaces"]) for g in groups] == [(3, 48, 66),
                                                                              (1, 16, 22)]
    assert [g["amp_edge_max_offset"] for g in groups] == [5.0, 0.01]
    assert groups[0]["config_digest"] != groups[1]["config_digest"]
    assert sum(g["max_offset_fail"] for g in groups) == summary["max_offset_fail"]
    assert groups[1]["max_offset_fail"] > 0  # the 0.01 limit: what the pooled count mixes in
    text = cli("catalog", cat).stdout
    assert "configs     2: the rows above come from runs with different configurations" in text
    lines = [line for line in text.splitlines() if line.startswith("  config ")]
    assert len(lines) == 2
    assert "(ampEdgeMaxOffset 5): 3 detector(s), 48 amps" in lines[0] and first in lines[0]
    assert "(ampEdgeMaxOffset 0.01): 1 detector(s), 16 amps" in lines[1]
    assert f"{second} (1)" in lines[1]


def test_catalog_json_is_strict_json_with_an_infinite_config_value(workdir, tmp_path,
                                                                   shared_scheduler):
    """``--set ampEdgeMaxOffset=Infinity`` is a valid config; the summary printed it as a
    bare ``Infinity``, which JSON has no token for (strict parsers refused the output)."""
    cat = tmp_path / "cat"
    shutil.copytree(workdir / "cat", cat)
    proc = cli("run", workdir / "sim" / "lsstcam_000002_R22_S12.fits", "--output", cat,
               "--new-run", "--set", "ampEdgeMaxOffset=Infinity", "--scheduler",
               shared_scheduler, "--no-progress")
    assert proc.returncode == 0, proc.stderr

    def strict(token: str) -> None:
        raise AssertionError(f"not JSON: {token}")

    text = cli("catalog", cat, "--json").stdout
    groups = json.loads(text, parse_constant=strict)["configs"]
    assert sorted(str(g["amp_edge_max_offset"]) for g in groups) == ["5.0", "Infinity"]


def test_catalog_help_and_exit_code_agree_on_failed_detectors(workdir, tmp_path):
    """`catalog` lists failed detectors and exits 0 (README: exit 1 is a run's): its help
    does not promise exit 1; `run` and `demo`, which do exit 1, say so."""
    def epilog(command: str) -> str:
        proc = cli(command, "--help")
        assert proc.returncode == 0
        return " ".join(proc.stdout.split("exit codes:")[1].split())

    assert "1 some detectors failed" not in epilog("catalog")
    assert "0 ok; 2 usage or input error" in epilog("catalog")
    for command in ("run", "demo"):
        assert "1 some detectors failed" in epilog(command)
    cat, _ = _catalog_with_a_failed_input(workdir, tmp_path)
    proc = cli("catalog", cat)
    assert proc.returncode == 0 and "  failed: " in proc.stdout


def test_a_newline_in_a_failed_file_name_stays_on_its_line(tmp_path):
    """An empty file named "empty\\n  visit 1 R22_S00: fine.fits" printed a second line
    that read as another detector's failure."""
    bad = tmp_path / "empty\n  visit 1 R22_S00: fine.fits"
    bad.write_bytes(b"")
    proc = cli("run", bad, "--output", tmp_path / "cat", "--scheduler", "local:1",
               "--no-progress")
    assert proc.returncode == 1, proc.stderr
    listed = [line for line in proc.stderr.splitlines() if line.startswith("  visit")]
    assert len(listed) == 1 and "empty\\n  visit 1 R22_S00: fine.fits" in listed[0], listed
