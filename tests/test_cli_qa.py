"""QA of the command line: ``catalog --limit`` below 1, the unknown visit of failed inputs
without identity in the summary, and dask's internal tracebacks kept out of default output."""

from __future__ import annotations

import json
import logging
import shutil

import pytest
from cli_helpers import cli

from ampoffset_dask.simulate import simulate_focal_plane

DET = "R22_S11"


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    """A catalog of one detector of visit 1 and one unreadable input (visit -1)."""
    folder = tmp_path_factory.mktemp("cliqa")
    sim = simulate_focal_plane(folder / "sim", "lsstcam", detectors=[DET], visits=[1],
                               scale=0.05, seed=3)
    src = folder / "src"
    src.mkdir()
    shutil.copy(sim.paths[0], src)
    (src / "junk.fits").write_text("not a FITS file\n")
    cat = folder / "cat"
    proc = cli("run", src, "--output", cat, "--scheduler", "local:1", "--no-progress")
    assert proc.returncode == 1, proc.stderr  # the junk input failed
    return cat


def test_catalog_limit_below_one_is_a_usage_error(catalog):
    for limit in ("-1", "0"):
        for extra in ((), ("--json",)):
            proc = cli("catalog", catalog, "--table", "detectors", "--limit", limit, *extra)
            assert proc.returncode == 2
            assert f"argument --limit: '{limit}' must be >= 1" in proc.stderr
            assert proc.stdout == ""
    # the smallest limit
    proc = cli("catalog", catalog, "--table", "detectors", "--json", "--limit", "1")
    assert proc.returncode == 0 and len(json.loads(proc.stdout)) == 1
    proc = cli("catalog", catalog, "--table", "detectors", "--limit", "1")
    assert proc.stdout.splitlines()[-1] == "... 1 more rows (use --limit)"


def test_catalog_summary_does_not_count_the_unknown_visit(catalog):
    proc = cli("catalog", catalog)
    assert proc.returncode == 0, proc.stderr
    assert ("visits      1: 1 (plus 1 failed input(s) without a visit: unreadable identity)"
            in proc.stdout.splitlines())
    summary = json.loads(cli("catalog", catalog, "--json").stdout)
    assert summary["visits"] == [1] and summary["failed_without_visit"] == 1
    assert summary["detectors"] == 2


def test_plot_chooses_the_one_visit(catalog, tmp_path):
    pytest.importorskip("matplotlib")
    proc = cli("plot", catalog, "--out", tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / f"amps_v1_{DET}.png").is_file()
    proc = cli("plot", catalog, "--visit", "-1", "--out", tmp_path)
    assert proc.returncode == 2 and "(-1 is no visit: it holds the failed inputs" in proc.stderr


def test_dask_client_tracebacks_only_with_verbose(capfd):
    """A lost scheduler makes ``distributed.client`` log a CancelledError traceback of its
    own: a logger distributed configures with its own level and handler. Without -v the
    command's one-line error says it; -v and -vv show it."""
    pytest.importorskip("distributed")
    import distributed  # noqa: F401  (configures its loggers)

    from ampoffset_dask.cli import _logging_restored, _setup_logging

    log = logging.getLogger("distributed.client")
    for verbose, shown in ((0, False), (1, True), (2, True)):
        capfd.readouterr()
        with _logging_restored():
            _setup_logging(verbose)
            assert log.isEnabledFor(logging.ERROR) is shown, verbose
            try:
                raise RuntimeError("reconnect cancelled")
            except RuntimeError:
                log.exception("Client._reconnect failed")
        if not shown:
            assert "reconnect cancelled" not in capfd.readouterr().err
        # left as it was afterwards
        assert log.level == logging.WARNING


def test_info_gives_the_given_cameras_id_for_a_name_only_header():
    """A ComCam raw names R22_S00 without an id; read with --camera lsstcam it is
    LSSTCam's R22_S00 (id 90), not ComCam's id 0."""
    from golden import SHARED

    from ampoffset_dask import get_camera

    raw = (SHARED / "realdata/lsst_raw_headers_zeroed"
           / "LSSTComCam_CC_C_20190530_000001_R22_S00_ITL.fits.gz")
    own = json.loads(cli("info", raw, "--json").stdout)
    given = json.loads(cli("info", raw, "--camera", "lsstcam", "--json").stdout)
    assert own["detector_id"] == get_camera("lsstcomcam")["R22_S00"].id == 0
    assert given["detector"] == "R22_S00"
    assert given["detector_id"] == get_camera("lsstcam")["R22_S00"].id == 90


def test_input_files_inside_the_output_images_folder_are_refused(tmp_path):
    """Corrected images written into the folder of inputs given one by one (a shell glob)
    marked it a folder of outputs: every later run over the night skipped those inputs."""
    from ampoffset_dask.io.paths import OUTPUT_MARKER

    sim = simulate_focal_plane(tmp_path / "sim", "lsstcam", detectors=[DET, "R22_S12"],
                               visits=[1], scale=0.05, seed=4)
    ccd = tmp_path / "night" / "ccd"
    ccd.mkdir(parents=True)
    files = [shutil.copy(p, ccd) for p in sim.paths]
    proc = cli("run", *files, "--output", tmp_path / "cat", "--output-images", ccd,
               "--scheduler", "local:1", "--no-progress")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "lies inside the --output-images folder" in proc.stderr
    assert not (ccd / OUTPUT_MARKER).exists() and not (tmp_path / "cat").exists()
    # the night's folder still gives both inputs
    again = cli("run", tmp_path / "night", "--output", tmp_path / "cat2", "--scheduler",
                "local:1", "--no-progress")
    assert again.returncode == 0 and "ok 2," in again.stdout, again.stdout + again.stderr


def test_run_takes_a_file_uri_as_process_does(tmp_path):
    sim = simulate_focal_plane(tmp_path / "sim", "lsstcam", detectors=[DET], visits=[1],
                               scale=0.05, seed=6)
    uri = sim.paths[0].resolve().as_uri()
    assert uri.startswith("file:///")
    proc = cli("run", uri, "--output", tmp_path / "cat", "--scheduler", "local:1",
               "--no-progress")
    assert proc.returncode == 0 and "ok 1," in proc.stdout, proc.stdout + proc.stderr
    missing = cli("run", uri + "x", "--output", tmp_path / "cat2", "--no-progress")
    assert missing.returncode == 2 and "no such file or folder" in missing.stderr
