"""QA of the catalog plots: a before/after plot of a file that is no longer the one the
catalog measured (restored after an in-place correction, or corrected in place later by
another catalog), `amp_map` given tables of several detectors, and the unknown visit of
failed inputs without identity."""

from __future__ import annotations

import logging
import os
import shutil

import numpy as np
import pandas as pd
import pytest
from plot_helpers import panels, reference_panels, run_quiet, saved_figures

from ampoffset_dask import get_camera, read_catalog
from ampoffset_dask.errors import InputError
from ampoffset_dask.simulate import simulate_focal_plane

DET = "R22_S11"


pytest.importorskip("matplotlib")  # the [plot] extra, in the test extra


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sim")
    return simulate_focal_plane(folder / "sim", "lsstcam", detectors=[DET], visits=[1],
                                scale=0.05, seed=7)


@pytest.fixture(scope="module")
def reference(sim, inprocess_client, tmp_path_factory):
    """Before/after panels measured from the simulated file, not corrected."""
    return reference_panels(sim.paths[0], tmp_path_factory.mktemp("ref"), inprocess_client, DET)


# -- the file is not the one measured ------------------------------------------------------
def test_restored_file_is_not_drawn_as_corrected(sim, inprocess_client, tmp_path, caplog):
    from ampoffset_dask.plots import plot_visit

    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(sim.paths[0], src)
    path = src / sim.paths[0].name
    run_quiet(src, tmp_path / "cat", inprocess_client, in_place=True)
    shutil.copy(sim.paths[0], path)  # restored: a new modification time
    with caplog.at_level(logging.WARNING, logger="ampoffset_dask.plots"):
        written = plot_visit(tmp_path / "cat", 1, out=tmp_path / "plots")
    names = {p.name for p in written}
    # the file no longer holds the correction: no panels claiming it does
    assert f"before_after_v1_{DET}.png" not in names
    assert f"amps_v1_{DET}.png" in names
    warning = " ".join(r.getMessage() for r in caplog.records)
    assert str(path) in warning and DET in warning and "restored" in warning


def test_restored_file_with_its_recorded_stamp_is_drawn_as_measured(
        sim, inprocess_client, reference, tmp_path, monkeypatch):
    from ampoffset_dask.plots import plot_visit

    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(sim.paths[0], src)
    path = src / sim.paths[0].name
    st = os.stat(path)
    run_quiet(src, tmp_path / "cat", inprocess_client, in_place=True)
    shutil.copy(sim.paths[0], path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # as `cp -p` of a backup
    figs = saved_figures(monkeypatch)
    plot_visit(tmp_path / "cat", 1, out=tmp_path / "plots")
    fig = figs[f"before_after_v1_{DET}.png"]
    before, after = panels(fig)
    before_ref, after_ref = reference
    assert np.nanstd(before_ref - after_ref) > 0.1
    # the uncorrected file's panels: nothing added back to "before"
    np.testing.assert_allclose(before, before_ref, atol=2e-3)
    np.testing.assert_allclose(after, after_ref, atol=2e-3)
    assert "rebuilt" not in fig.axes[0].get_title()


def test_file_corrected_later_by_another_catalog_gets_no_before_after(
        sim, inprocess_client, tmp_path, caplog):
    from ampoffset_dask.plots import plot_visit

    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(sim.paths[0], src)
    path = src / sim.paths[0].name
    run_quiet(src, tmp_path / "a", inprocess_client)  # measured only
    run_quiet(src, tmp_path / "b", inprocess_client, in_place=True, config={"ampEdgeWidth": 8})
    pa = read_catalog(tmp_path / "a", "pedestals").set_index("amp")["pedestal"]
    pb = read_catalog(tmp_path / "b", "pedestals").set_index("amp")["pedestal"]
    assert float((pa - pb).abs().max()) > 1e-3  # B's correction is not A's
    with caplog.at_level(logging.WARNING, logger="ampoffset_dask.plots"):
        written = plot_visit(tmp_path / "a", 1, out=tmp_path / "plots")
    assert f"before_after_v1_{DET}.png" not in {p.name for p in written}
    warning = " ".join(r.getMessage() for r in caplog.records)
    run_b = read_catalog(tmp_path / "b", "runs")["run_id"].iloc[0]
    assert str(path) in warning and DET in warning and run_b in warning


# -- amp_map of tables with several detectors ----------------------------------------------
def _tables():
    """Pedestals and interfaces of two detectors, each with its own values."""
    cam = get_camera("lsstcam")
    ped, itf = [], []
    for k, name in enumerate((DET, "R22_S10")):
        geom = cam[name]
        for i, amp in enumerate(geom.amp_names):
            ped.append({"visit": 1, "detector": name, "amp": amp,
                        "pedestal": (k + 1) * 10.0 + i / 100})
        for amp_a, amp_b in zip(geom.amp_names[:-1], geom.amp_names[1:], strict=True):
            itf.append({"visit": 1, "detector": name, "amp_a": amp_a, "amp_b": amp_b,
                        "offset": 5.0 if name == DET else -7.0})
    return pd.DataFrame(ped), pd.DataFrame(itf)


def _interface_labels(fig):
    return [t.get_text() for t in fig.axes[0].texts if "\n" not in t.get_text()]


def test_amp_map_draws_only_its_detectors_interfaces():
    from ampoffset_dask.plots import amp_map

    ped, itf = _tables()
    geom = get_camera("lsstcam")[DET]
    labels = _interface_labels(amp_map(ped, geom, interfaces=itf))
    # one label per boundary of this detector, none of the other's
    assert len(labels) == len(itf[itf.detector == DET])
    assert set(labels) == {"+5.00"}


def test_amp_map_refuses_a_table_without_the_detector():
    from ampoffset_dask.plots import amp_map

    ped, itf = _tables()
    geom = get_camera("lsstcam")[DET]
    other = ped[ped.detector != DET]
    with pytest.raises(InputError, match=rf"pedestals of {DET}: .*no row of detector {DET}"):
        amp_map(other, geom, title=DET)
    with pytest.raises(InputError, match=rf"interfaces of {DET}: .*no row of detector {DET}"):
        amp_map(ped, geom, interfaces=itf[itf.detector != DET])


# -- the unknown visit ---------------------------------------------------------------------
def test_plot_visit_leaves_out_the_unknown_visit(sim, inprocess_client, tmp_path):
    from ampoffset_dask.plots import plot_visit

    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(sim.paths[0], src)
    (src / "junk.fits").write_text("not a FITS file\n")
    run_quiet(src, tmp_path / "cat", inprocess_client)
    det = read_catalog(tmp_path / "cat", "detectors")
    assert sorted(det["visit"]) == [-1, 1]
    # the one visit is chosen without --visit
    written = plot_visit(tmp_path / "cat", out=tmp_path / "plots")
    assert f"amps_v1_{DET}.png" in {p.name for p in written}
    with pytest.raises(InputError,
                       match=r"visit -1: all 1 detector\(s\) failed \(-1 is no visit"):
        plot_visit(tmp_path / "cat", -1, out=tmp_path / "plots")
