"""Which detector `plot_visit` draws: the row's own CCD of a multi-CCD file, and a
``detector=`` matched as `read_catalog` matches it (any case, or the integer id)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from astropy.io import fits
from io_helpers import decam_primary, decam_raw_hdu

from ampoffset_dask import AmpOffsetConfig, get_camera
from ampoffset_dask.catalog import CatalogWriter, DetectorResult
from ampoffset_dask.errors import InputError


@pytest.fixture(scope="module", autouse=True)
def matplotlib():
    return pytest.importorskip("matplotlib")


def _write_catalog(cat, rows):
    """A catalog of one run with ``rows`` (visit, detector, detector_id, input, pedestals)."""
    with CatalogWriter(cat) as writer:
        writer.start_run(config=AmpOffsetConfig(), inputs=sorted({r[3] for r in rows}))
        for visit, name, det_id, path, peds in rows:
            writer.add(DetectorResult(visit=visit, detector=name, status="ok",
                                      detector_id=det_id, input=str(path),
                                      amp_names=list(peds), pedestals=list(peds.values()),
                                      interfaces=[]))
        writer.finish_run()


def _spy_before_after(monkeypatch):
    """The (image, detector) each `before_after` call of `plot_visit` draws."""
    import ampoffset_dask.plots as plots

    drawn = []
    real = plots.before_after

    def spy(image, detector, *args, **kwargs):
        drawn.append((np.asarray(image), detector))
        return real(image, detector, *args, **kwargs)

    monkeypatch.setattr(plots, "before_after", spy)
    return drawn


@pytest.fixture(scope="module")
def decam_mef(tmp_path_factory):
    """A DECam raw with S1 in HDU 1 (sky 800) and N4 in HDU 2 (sky 700), and a catalog of
    both CCDs."""
    root = tmp_path_factory.mktemp("mef")
    path = root / "DECam_00177764.fits.fz"
    fits.HDUList([
        decam_primary(177764),
        decam_raw_hdu("S1", 800.0, {"A": 3.0, "B": 0.0}, {"A": 1200.0, "B": 950.0}),
        decam_raw_hdu("N4", 700.0, {"A": 0.0, "B": 4.0}, {"A": 1010.0, "B": 1330.0}),
    ]).writeto(path)
    cam = get_camera("decam")
    cat = root / "cat"
    _write_catalog(cat, [(177764, "S1", cam["S1"].id, path, {"A": 1.5, "B": -1.5}),
                         (177764, "N4", cam["N4"].id, path, {"A": -2.0, "B": 2.0})])
    return path, cat


def test_plot_of_a_multi_ccd_file_reads_the_rows_own_ccd(tmp_path, monkeypatch, decam_mef):
    from ampoffset_dask.plots import plot_visit

    cat = decam_mef[1]
    for name, sky in (("S1", 800.0), ("N4", 700.0)):
        drawn = _spy_before_after(monkeypatch)
        written = plot_visit(cat, detector=name, out=tmp_path / name)
        assert f"before_after_v177764_{name}.png" in [p.name for p in written]
        (image, det), = drawn
        want = get_camera("decam")[name]
        assert det.name == name
        assert ([(a.name, a.x0) for a in det.amplifiers]
                == [(a.name, a.x0) for a in want.amplifiers])
        # overscan-subtracted sky of that CCD (plus its steps of at most 4 ADU), not the
        # other CCD's
        assert abs(float(np.nanmedian(image)) - sky) < 10


def test_plot_skips_the_before_after_of_a_ccd_missing_from_the_file(tmp_path, monkeypatch,
                                                                    caplog):
    """A file that no longer holds the row's CCD: no other CCD is drawn in its place."""
    from ampoffset_dask.plots import _read_detector, plot_visit

    path = tmp_path / "DECam_00177765.fits.fz"
    fits.HDUList([decam_primary(177765),
                  decam_raw_hdu("S1", 800.0, {"A": 0.0, "B": 0.0}, {"A": 1000.0, "B": 1000.0}),
                  decam_raw_hdu("N5", 700.0, {"A": 0.0, "B": 0.0}, {"A": 1000.0, "B": 1000.0}),
                  ]).writeto(path)
    cat = tmp_path / "cat"
    _write_catalog(cat, [(177765, "N4", get_camera("decam")["N4"].id, path,
                          {"A": -2.0, "B": 2.0})])
    with pytest.raises(InputError, match=r"DECam_00177765.*detector N4.*no CCD HDU"):
        _read_detector(str(path), "N4", None, {})
    drawn = _spy_before_after(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="ampoffset_dask"):
        written = plot_visit(cat, detector="N4", out=tmp_path / "plots")
    assert not drawn
    # the amp map still has N4's own layout, from the camera
    assert [p.name for p in written] == ["focal_plane_v177765.png", "amps_v177765_N4.png"]
    assert "N4" in caplog.text and "DECam_00177765" in caplog.text


@pytest.fixture(scope="module")
def lsst_catalog(tmp_path_factory):
    """A catalog of R22_S11 and R22_S12 (input files gone: amp maps only)."""
    cam = get_camera("lsstcam")
    cat = tmp_path_factory.mktemp("lsst") / "cat"
    peds = {a: 0.1 * i for i, a in enumerate(cam["R22_S11"].amp_names)}
    _write_catalog(cat, [(1, d, cam[d].id, "/nonexistent/in.fits", peds)
                         for d in ("R22_S11", "R22_S12")])
    return cat


def test_plot_detector_matches_any_case_or_the_id(tmp_path, lsst_catalog):
    from ampoffset_dask.plots import plot_visit

    det_id = get_camera("lsstcam")["R22_S12"].id
    for i, key in enumerate(["r22_s12", " r22_S12 ", det_id, str(det_id), "R22_S12"]):
        written = plot_visit(lsst_catalog, detector=key, out=tmp_path / str(i))
        assert ([p.name for p in written if p.name.startswith("amps_")]
                == ["amps_v1_R22_S12.png"]), key


def test_plot_detector_not_in_the_visit_is_refused(tmp_path, lsst_catalog):
    from ampoffset_dask.plots import plot_visit

    # R22_S10 is a camera detector, not one of the catalog's
    for key in ("R22_S99", 12345, get_camera("lsstcam")["R22_S10"].id):
        with pytest.raises(InputError) as err:
            plot_visit(lsst_catalog, detector=key, out=tmp_path / "p")
        # the message names the catalog, the visit and the detector as given
        assert str(err.value) == f"{lsst_catalog}: visit 1: no measured detector {key!r}"
    assert not (tmp_path / "p").exists()


def test_cli_plot_detector_by_lower_case_name_and_id(tmp_path, lsst_catalog):
    from ampoffset_dask.cli import main

    det_id = get_camera("lsstcam")["R22_S12"].id
    for key in ("r22_s12", str(det_id)):
        out = tmp_path / key
        assert main(["plot", str(lsst_catalog), "--detector", key, "--out", str(out)]) == 0
        assert (out / "amps_v1_R22_S12.png").is_file()
