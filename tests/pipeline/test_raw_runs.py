"""Real instruments' raw files through `process` and the command line: overscan and gains,
flagged detectors, user-camera raws (the Kast example of docs/cameras.md), multi-CCD files."""

from __future__ import annotations

import contextlib
import glob
import json
import re
import shlex
import subprocess
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from cli_helpers import cli
from io_helpers import REAL, decam_primary, decam_raw_hdu

from ampoffset_dask import AmpOffsetConfig, get_camera, measure_detector, process
from ampoffset_dask.catalog import read_catalog
from ampoffset_dask.io.fits import read_exposure

EDGES = AmpOffsetConfig(do_background=False, do_detection=False)
RAW_HEADERS = REAL / "lsst_raw_headers_zeroed" / (
    "LSSTCam_BOT_MC_C_20211212_000310_R22_S22_E2V_flat.fits.gz")
DOCS = Path(__file__).resolve().parents[2] / "docs" / "cameras.md"


def lsst_raw(path: Path, steps: np.ndarray, electrons: bool, seed: int = 0,
             sky: float = 1000.0, noise: float = 0.0) -> np.ndarray:
    """A full-size LSSTCam E2V raw (R22_S22) with the real file's headers and HDU layout:
    per-amp bias levels of 300-900 ADU drifting along the readout, a flat ``sky`` (ADU, or
    electrons when ``electrons``: each amp's ADU are then divided by its nominal gain) sky with
    the pedestal ``steps[i]`` added to amp i, ``noise`` ADU of read noise (none by default:
    noisy int32 segments are slow to compress). Returns the nominal gains."""
    cam = get_camera("lsstcam")
    gains = np.array(cam.info("R22_S22")["amp_gain"])
    rng = np.random.default_rng(seed)
    out = []
    with fits.open(RAW_HEADERS) as hdul:
        out.append(fits.PrimaryHDU(header=hdul[0].header))
        for i, raw in enumerate(cam.raw_amps("R22_S22")):
            h = hdul[raw.extname]
            ny, nx = h.shape
            x0, y0, w, hh = raw.raw_data_bbox
            bias = 300.0 + 37.5 * ((5 * i) % 16) + 3.0 * np.arange(ny) / ny
            seg = np.repeat(bias[:, None], nx, axis=1)
            signal = sky + steps[i]
            seg[y0:y0 + hh, x0:x0 + w] += signal / gains[i] if electrons else signal
            if noise:
                seg += rng.normal(0.0, noise, seg.shape)
            out.append(fits.CompImageHDU(np.round(seg).astype(np.int32), header=h.header,
                                         name=raw.extname, compression_type="RICE_1"))
    fits.HDUList(out).writeto(path)
    return gains


def _run(inputs, catalog, client, **kw):
    return process(inputs, catalog, client=client, progress=False, config=EDGES, **kw)


def test_lsst_raw_flagged_without_overscan_measured_with_it(tmp_path, client):
    # whole-ADU pedestals (no noise: exact after the overscan), neighbours within the 5 ADU cap
    steps = np.random.default_rng(1).integers(-2, 3, 16).astype(float)
    path = tmp_path / "raw.fits"
    lsst_raw(path, steps, electrons=False)
    before = _run(path, tmp_path / "before", client, overscan="none")
    assert (before.n_ok, before.n_flagged, before.n_failed) == (0, 1, 0)
    (_visit, det, why), = before.flagged
    assert det == "R22_S22" and re.fullmatch(
        r"\d+ of 22 interfaces exceed ampEdgeMaxOffset=5: not bias/overscan corrected, or "
        r"gains differ\?", why), why
    assert len(before.notes) == 1 and "--overscan none" in before.notes[0]
    rows = read_catalog(tmp_path / "before", "detectors")
    assert rows.status.tolist() == ["flagged"] and rows.overscan.tolist() == ["none"]

    after = _run(path, tmp_path / "after", client)  # overscan "auto"
    assert (after.n_ok, after.n_flagged) == (1, 0) and not after.notes
    rows = read_catalog(tmp_path / "after", "detectors")
    assert rows.overscan.tolist() == ["per-row"] and rows.gain.tolist() == ["none"]
    ped = read_catalog(tmp_path / "after", "pedestals").sort_values("amp_index").pedestal
    np.testing.assert_allclose(ped.to_numpy(), steps - steps.mean(), atol=0.02)


def test_nominal_gains_make_electron_flat_raws_measurable(tmp_path, client):
    steps = np.linspace(-2.0, 2.0, 16)
    path = tmp_path / "raw.fits"
    gains = lsst_raw(path, steps, electrons=True, seed=2, sky=20000.0)
    adu = _run(path, tmp_path / "adu", client)  # ADU: the amps differ by their gains
    assert adu.n_flagged == 1 and "gains differ?" in adu.flagged[0][2]
    out = tmp_path / "corrected"
    electrons = _run(path, tmp_path / "e", client, gain="nominal", output_images=out)
    assert electrons.n_ok == 1
    rows = read_catalog(tmp_path / "e", "detectors")
    assert rows.gain.tolist() == ["nominal"] and rows.overscan.tolist() == ["per-row"]
    ped = read_catalog(tmp_path / "e", "pedestals").sort_values("amp_index").pedestal
    np.testing.assert_allclose(ped.to_numpy(), steps - steps.mean(), atol=0.15)
    written = Path(rows.output.iloc[0])
    header = fits.getheader(written, 0)
    assert (header["OVERSCAN"], header["GAINCORR"], header["BUNIT"]) == (
        "per-row", "nominal", "electron")
    corrected = fits.getdata(written, "IMAGE")
    assert abs(float(np.median(corrected)) - 20000.0) < 3.0 and gains.min() > 1.0


# -- the Kast example of docs/cameras.md, verbatim ----------------------------------------------
def _doc_blocks() -> dict[str, list[str]]:
    text = DOCS.read_text()
    section = text.split("### Example: a two-amp spectrograph CCD", 1)[1].split("\n## ", 1)[0]
    blocks: dict[str, list[str]] = {}
    for lang, body in re.findall(r"```(\w+)\n(.*?)```", section, flags=re.S):
        blocks.setdefault(lang, []).append(body)
    return blocks


def _shell(line: str, cwd: Path) -> subprocess.CompletedProcess:
    """An ``ampoffset-dask ...`` command line run in this process (`cli`) from ``cwd``, its
    words split and its wildcards expanded as a POSIX shell does."""
    with contextlib.chdir(cwd):
        words = []
        for word in shlex.split(line):
            words.extend(sorted(glob.glob(word)) or [word] if glob.has_magic(word) else [word])
        assert words[0] == "ampoffset-dask", line
        return cli(*words[1:])


def test_kast_docs_example_through_run_equals_python_route(tmp_path, monkeypatch):
    blocks = _doc_blocks()
    (tmp_path / "kast.json").write_text(blocks["json"][0])
    frames = ("b1.fits.gz", "b21.fits.gz", "b27.fits.gz")  # arc, bias, science
    for name in frames:
        (tmp_path / name).symlink_to(REAL / "kast_blue_pypeit" / name)
    # the Python route, verbatim
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(blocks["python"][0], scope)  # the documented example itself
    assert scope["ds"].attrs["overscan"] == "per-row"
    # the command line, verbatim (the shell expands b*.fits.gz)
    run_line, plot_line = blocks["bash"][0].strip().splitlines()
    # its local cluster with one worker (Dask config; the command line stays verbatim): a
    # worker memory limit above half of what is free leaves room for one only
    import dask
    import psutil

    one = int(psutil.virtual_memory().available * 0.9 * 0.6)
    with dask.config.set({"ampoffset.local.memory-limit-per-worker": one}):
        proc = _shell(run_line, tmp_path)
    assert proc.returncode == 0, proc.stderr
    det = read_catalog(tmp_path / "kast-catalog", "detectors")
    assert sorted(det.visit) == [1, 21, 27] and det.worker.nunique() == 1
    assert set(det.overscan) == {"per-row"} and set(det.status) <= {"ok", "flagged"}
    ped = read_catalog(tmp_path / "kast-catalog", "pedestals")
    for name in frames:
        exp = read_exposure(name, camera="kast.json", detector="kast_blue", overscan=True)
        expected = measure_detector(exp.image, exp.mask, exp.detector).pedestal_by_amp
        visit = int(fits.getheader(name)["OBSNUM"])
        got = ped[ped.visit == visit].set_index("amp").pedestal.to_dict()
        assert got == pytest.approx(expected, abs=1e-9), (name, got, expected)
        print(f"{name}: run {got} python {expected}")
    proc = _shell(plot_line, tmp_path)
    assert proc.returncode == 0, proc.stderr
    pngs = sorted(p.name for p in (tmp_path / "kast-catalog" / "plots").glob("*.png"))
    assert pngs == ["amps_v27_kast_blue.png", "before_after_v27_kast_blue.png",
                    "focal_plane_v27.png", "interfaces_v27.png"]


def test_cli_overscan_none_on_raws_is_flagged_and_summarised(tmp_path, shared_scheduler):
    for name in ("b1.fits.gz", "b27.fits.gz"):
        (tmp_path / name).symlink_to(REAL / "kast_blue_pypeit" / name)
    (tmp_path / "kast.json").write_text(_doc_blocks()["json"][0])
    proc = _shell("ampoffset-dask run b1.fits.gz b27.fits.gz --camera kast.json --visit OBSNUM "
                  f"--overscan none --output cat --scheduler {shared_scheduler} "
                  "--set doDetection=false", tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    warned = [line for line in lines if "--overscan none" in line]
    assert len(warned) == 1 and "2 raw detector(s)" in warned[0]
    summary = [line for line in lines if "flagged" in line]
    assert len(summary) == 1 and summary[0].startswith("ampoffset-dask run: 2 detector(s) flagged")
    assert "1 of 1 interfaces exceed ampEdgeMaxOffset=5" in summary[0]
    assert set(read_catalog(tmp_path / "cat", "detectors").status) == {"flagged"}


def test_cli_presets_and_preset_hint(tmp_path, shared_scheduler):
    proc = _shell("ampoffset-dask presets --json", tmp_path)
    presets = {p["name"]: p for p in json.loads(proc.stdout)}
    assert presets["lsstcam"]["overrides"] == {"ampEdgeMaxOffset": 10.0,
                                               "doApplyAmpOffset": False}
    assert "obs_lsst" in presets["lsstcam"]["source"] and "cp-flat" in presets
    # a real ComCam raw (pixels zeroed): the header names the camera
    raw = REAL / "lsst_raw_headers_zeroed" / "LSSTComCam_CC_C_20190530_000001_R22_S00_ITL.fits.gz"
    sched = shared_scheduler
    edges = "--set doBackground=false --set doDetection=false"
    proc = _shell(f"ampoffset-dask run {raw} --output c1 --scheduler {sched} {edges}", tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "preset 'lsstcomcam'" in proc.stderr and "--preset lsstcomcam" in proc.stderr
    assert "not applied" in proc.stderr
    config = json.loads(read_catalog(tmp_path / "c1", "runs").config.iloc[0])
    assert config["amp_edge_max_offset"] == 5.0  # the hint did not change anything
    proc = _shell(f"ampoffset-dask run {raw} --output c2 --scheduler {sched} "
                  f"--preset lsstcomcam {edges}", tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "--preset lsstcomcam" not in proc.stderr
    # the preset's doApplyAmpOffset=True has no output images to write: measured only, said
    assert "this run writes no corrected images" in proc.stderr
    config = json.loads(read_catalog(tmp_path / "c2", "runs").config.iloc[0])
    assert config["amp_edge_max_offset"] == 10.0 and config["do_apply_amp_offset"] is False
    assert config["do_background"] is False  # --set on top of the preset


# -- multi-CCD files --------------------------------------------------------------------------
def test_decam_mef_is_one_task_per_ccd(tmp_path, client, pixel_counter):
    """Each CCD of a DECam raw MEF is its own task, reading only its HDU; corrected CCDs go
    to one file each."""
    path = tmp_path / "DECam_00177764.fits.fz"
    steps = {"S1": {"A": 3.0, "B": 0.0}, "N4": {"A": 0.0, "B": -2.0}}
    fits.HDUList([
        decam_primary(177764),
        decam_raw_hdu("S1", 800.0, steps["S1"], {"A": 1200.0, "B": 950.0}),
        decam_raw_hdu("N4", 700.0, steps["N4"], {"A": 1010.0, "B": 1330.0}),
    ]).writeto(path)
    from ampoffset_dask.pipeline.inputs import discover_inputs, plan_tasks

    planned = plan_tasks(discover_inputs(path))
    assert [(t.visit, t.name, t.hdu, t.raw) for t in planned] == [
        (177764, "S1", 1, True), (177764, "N4", 2, True)]
    out = tmp_path / "corrected"
    summary = _run(path, tmp_path / "cat", client, output_images=out)
    assert summary.n_ok == 2, summary
    ped = read_catalog(tmp_path / "cat", "pedestals")
    for name, amp_steps in steps.items():
        got = ped[ped.detector == name].set_index("amp").pedestal
        assert got["A"] - got["B"] == pytest.approx(amp_steps["A"] - amp_steps["B"], abs=0.05)
    det = read_catalog(tmp_path / "cat", "detectors").set_index("detector")
    assert det.loc["S1", "detector_id"] == 25 and det.loc["N4", "detector_id"] == 35
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*.fits")) == [
        "177764/N4/DECam_00177764.fits", "177764/S1/DECam_00177764.fits"]
    s1 = read_exposure(out / "177764" / "S1" / "DECam_00177764.fits")
    assert s1.detector.name == "S1" and s1.image.shape == (4096, 2048)
