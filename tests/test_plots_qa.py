"""QA of the catalog plots and summaries: what a panel shows for a file corrected in place or
already corrected, units after ``gain="nominal"``, the do-no-harm limits of the run that
measured the rows, tables of several rows per amp, and ``info``'s detector id."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from plot_helpers import panels, reference_panels, run_quiet, saved_figures

from ampoffset_dask import get_camera, read_catalog
from ampoffset_dask.errors import InputError
from ampoffset_dask.simulate import simulate_focal_plane

DET = "R22_S11"


pytest.importorskip("matplotlib")  # the [plot] extra, in the test extra


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sim")
    return simulate_focal_plane(folder / "sim", "lsstcam", detectors=[DET], visits=[1, 2],
                                scale=0.05, seed=5)


def _file(sim, visit):
    return next(p for p in sim.paths if f"_{visit:06d}_" in p.name)


def _labels(fig):
    """Every axis and colour-bar label of ``fig`` (inset colour bars included)."""
    axes = list(fig.axes)
    axes += [c for ax in fig.axes for c in getattr(ax, "child_axes", [])]
    return " | ".join(t for ax in axes for t in (ax.get_xlabel(), ax.get_ylabel()) if t)


@pytest.fixture(scope="module")
def reference(sim, inprocess_client, tmp_path_factory):
    """Before/after panels of visit 1 measured from the simulated file, not corrected."""
    return reference_panels(_file(sim, 1), tmp_path_factory.mktemp("ref"), inprocess_client, DET)


# -- 1: files already corrected ------------------------------------------------------------
def test_in_place_and_already_corrected_panels_match_the_uncorrected_run(
        sim, inprocess_client, reference, tmp_path, monkeypatch):
    from ampoffset_dask.plots import plot_visit

    ip = tmp_path / "ip"
    ip.mkdir()
    shutil.copy(_file(sim, 1), ip)
    run_quiet(ip, tmp_path / "ipcat", inprocess_client, in_place=True)
    row = read_catalog(tmp_path / "ipcat", "detectors").iloc[0]
    assert row.output == row.input and row.applied
    # a new catalog of the corrected file: a flagged row holding the header's pedestals
    run_quiet(ip, tmp_path / "flagcat", inprocess_client)
    flagged = read_catalog(tmp_path / "flagcat", "detectors").iloc[0]
    assert flagged.status == "flagged" and "already corrected" in flagged.error

    before_ref, after_ref = reference
    # the steps between amps the "after" panel must have removed
    assert np.nanstd(before_ref - after_ref) > 0.1
    for cat in ("ipcat", "flagcat"):
        figs = saved_figures(monkeypatch)
        plot_visit(tmp_path / cat, 1, out=tmp_path / f"{cat}_plots")
        fig = figs[f"before_after_v1_{DET}.png"]
        before, after = panels(fig)
        # the same panels as the uncorrected input gives: the pedestals added back once
        # for "before", none subtracted again for "after"
        np.testing.assert_allclose(before, before_ref, atol=2e-3, err_msg=cat)
        np.testing.assert_allclose(after, after_ref, atol=2e-3, err_msg=cat)
        assert "rebuilt" in fig.axes[0].get_title() and "rebuilt" in fig._suptitle.get_text()


# -- 2: units after gain="nominal" ---------------------------------------------------------
@pytest.fixture(scope="module")
def adu_catalog(sim, inprocess_client, tmp_path_factory):
    """A full-size frame in ADU (the simulation's electrons / the camera's nominal gains:
    shrunk detectors have none), measured with ``gain="nominal"``."""
    folder = tmp_path_factory.mktemp("adu")
    full = simulate_focal_plane(folder / "full", "lsstcam", detectors=[DET], visits=[1],
                                seed=5)
    gains = get_camera("lsstcam").info(DET)["amp_gain"]
    with fits.open(full.paths[0]) as hdul:
        image = hdul["IMAGE"].data.astype(float)
        geometry = get_camera("lsstcam")[DET]
        for amp, gain in zip(geometry.amplifiers, gains, strict=True):
            image[amp.slices] /= gain
        hdul["IMAGE"].data = image.astype(np.float32)
        hdul.writeto(folder / full.paths[0].name)
    shutil.rmtree(folder / "full")
    cat = folder / "cat"
    run_quiet([folder / full.paths[0].name], cat, inprocess_client, gain="nominal",
              camera="lsstcam")
    assert set(read_catalog(cat, "detectors")["gain"]) == {"nominal"}
    return cat


def _amp_steps(panel, detector):
    """RMS of the amps' median levels in a binned panel (the steps between amps)."""
    bs = detector.width // panel.shape[1]
    levels = np.array([np.nanmedian(panel[-(-a.y0 // bs):a.y1 // bs, -(-a.x0 // bs):a.x1 // bs])
                       for a in detector.amplifiers])
    return float(np.std(levels))


def test_plots_of_electron_pedestals_say_e_and_use_electron_pixels(
        adu_catalog, tmp_path, monkeypatch):
    from ampoffset_dask.plots import plot_visit

    figs = saved_figures(monkeypatch)
    plot_visit(adu_catalog, 1, out=tmp_path)
    assert set(figs) == {"focal_plane_v1.png", "interfaces_v1.png", f"amps_v1_{DET}.png",
                         f"before_after_v1_{DET}.png"}
    for name, fig in figs.items():
        labels = _labels(fig)
        assert "(e-)" in labels or "e- minus" in labels, (name, labels)
        assert "ADU" not in labels, (name, labels)
    # the image read with the run's gains: subtracting the electron pedestals removes the
    # steps between amps (an ADU image keeps steps of sky x (1/gain_a - 1/gain_b))
    before, after = panels(figs[f"before_after_v1_{DET}.png"])
    geometry = get_camera("lsstcam")[DET]
    pedestals = read_catalog(adu_catalog, "pedestals")["pedestal"]
    assert _amp_steps(before, geometry) == pytest.approx(np.std(pedestals), rel=0.3)
    assert _amp_steps(after, geometry) < 0.3 * _amp_steps(before, geometry)


def test_catalog_summary_unit(adu_catalog, sim, inprocess_client, tmp_path, capsys):
    from ampoffset_dask.cli import main

    assert main(["catalog", str(adu_catalog)]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("pedestals"))
    assert "e-" in line and "ADU" not in line
    # visit 2 again in ADU (a new run without gains): two units, no common RMS
    mixed = tmp_path / "mixed"
    shutil.copytree(adu_catalog, mixed)
    run_quiet([_file(sim, 2)], mixed, inprocess_client, new_run=True)
    assert main(["catalog", str(mixed), "--json"]) == 0
    import json

    summary = json.loads(capsys.readouterr().out)
    assert summary["pedestal_unit"] == "mixed" and summary["pedestal_rms"] is None
    assert {u: v["amps"] for u, v in summary["pedestals_by_unit"].items()} == {
        "e-": 16, "ADU": 16}, summary
    assert main(["catalog", str(mixed)]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("pedestals"))
    assert "two units" in line and "no RMS over both" in line


def test_trends_axis_unit(adu_catalog, tmp_path, monkeypatch):
    from ampoffset_dask.trends import find_trends, read_series, write_trends

    figs = {}
    import ampoffset_dask.plots as plots

    monkeypatch.setattr(plots, "save_figure", lambda fig, path: figs.setdefault(path.name, fig)
                        and path)
    series = read_series(adu_catalog)
    write_trends(find_trends(series), tmp_path)
    assert "pedestal (e-)" in _labels(figs["trends_series.png"])


# -- 3: the limits of the run that measured the rows ---------------------------------------
def test_interface_limits_of_the_rows_run(sim, inprocess_client, tmp_path, monkeypatch):
    from ampoffset_dask import AmpOffsetConfig
    from ampoffset_dask.plots import plot_visit

    cat = tmp_path / "cat"
    run_quiet(sim.paths, cat, inprocess_client)  # default ampEdgeMaxOffset=5, ampEdgeMinFrac=0.5
    run_quiet([_file(sim, 1)], cat, inprocess_client, new_run=True,
         config=AmpOffsetConfig(amp_edge_max_offset=0.8, amp_edge_min_frac=0.3))

    def drawn(visit):
        figs = saved_figures(monkeypatch)
        plot_visit(cat, visit, out=tmp_path / f"p{visit}")
        offsets, fracs = figs[f"interfaces_v{visit}.png"].axes[:2]
        return ({round(abs(float(line.get_xdata()[0])), 6) for line in offsets.lines},
                {round(float(line.get_xdata()[0]), 6) for line in fracs.lines})

    assert drawn(2) == ({5.0}, {0.5})  # measured by the first run only
    assert drawn(1) == ({0.8}, {0.3})


# -- 4: several rows per amp ------------------------------------------------------------
def test_amp_map_and_before_after_refuse_several_rows_per_amp():
    from ampoffset_dask.plots import amp_map, before_after

    det = get_camera("lsstcam")[DET]
    rows = [(v, DET, a, float(v * 10 + k), f"run{v}")
            for v in (1, 2) for k, a in enumerate(det.amp_names)]
    table = pd.DataFrame(rows, columns=["visit", "detector", "amp", "pedestal", "run_id"])
    image = np.zeros(det.shape, dtype=np.float32)
    for call in (lambda t, **kw: amp_map(t, det, **kw),
                 lambda t, **kw: before_after(image, det, t, bin_size=64, **kw)):
        with pytest.raises(InputError, match=r"visit=V.*several visits \[1, 2\]"):
            call(table)
        # one visit's history (all_rows): several runs' rows of each amp
        history = table.assign(visit=1)
        with pytest.raises(InputError, match=r"several rows for amp\(s\) \['C00'.*run1"):
            call(history)
    fig = amp_map(table, det, visit=2)
    texts = {t.get_text() for t in fig.axes[0].texts}
    assert f"{det.amp_names[0]}\n+20.00" in texts  # visit 2's value, not the last row's
    fig = amp_map(table, det, visit=1)
    assert f"{det.amp_names[0]}\n+10.00" in {t.get_text() for t in fig.axes[0].texts}


# -- 5: info's detector id --------------------------------------------------------------
def test_info_shows_the_cameras_detector_id(sim, tmp_path, capsys):
    from ampoffset_dask.cli import main

    path = tmp_path / "noid.fits"
    shutil.copy(_file(sim, 1), path)
    with fits.open(path, mode="update") as hdul:  # the name only: no id, no camera key
        for key in ("DETECTOR", "SIMCAM"):
            del hdul[0].header[key]
    assert main(["info", str(path), "--camera", "lsstcam"]) == 0
    out = capsys.readouterr().out
    assert f"detector    {DET} (id 94)" in out, out
    assert main(["info", str(path), "--camera", "lsstcam", "--json"]) == 0
    import json

    assert json.loads(capsys.readouterr().out)["detector_id"] == 94
