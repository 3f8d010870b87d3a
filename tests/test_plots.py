"""Plots: files are PNGs of the expected size, not blank, and bad input is refused."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ampoffset_dask import get_camera
from ampoffset_dask.errors import InputError
from ampoffset_dask.plots import (
    DPI,
    amp_map,
    before_after,
    binned_image,
    focal_plane_map,
    interface_histogram,
)
from ampoffset_dask.simulate import scale_detector, simulate_detector


@pytest.fixture(scope="module", autouse=True)
def matplotlib():
    """The [plot] extra (installed by [test]); imported when these tests run, not when every
    test process collects them."""
    return pytest.importorskip("matplotlib")


def imread(path):
    from matplotlib.image import imread

    return imread(path)


def check_png(path, size_inches):
    """The file is a PNG of ``size_inches`` at DPI with real content."""
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = imread(path)
    w, h = size_inches
    assert abs(img.shape[0] - h * DPI) <= 1 and abs(img.shape[1] - w * DPI) <= 1
    rgb = img[..., :3]
    assert rgb.std() > 0.05  # not a blank page
    # distinct 8-bit colours, each packed into one integer (np.unique(axis=0) on the pixel
    # rows counts the same but sorts ~50x slower)
    rgb8 = (rgb.reshape(-1, 3) * 255).astype(np.uint8).astype(np.uint32)
    colours = np.unique((rgb8[:, 0] << 16) | (rgb8[:, 1] << 8) | rgb8[:, 2])
    assert len(colours) > 50
    return img


@pytest.fixture(scope="module")
def camera():
    return get_camera("lsstcam")


@pytest.fixture(scope="module")
def raft_pedestals(camera):
    rng = np.random.default_rng(0)
    rows = [(v, d, a, float(rng.normal(0, 1.5)))
            for v in (1, 2)
            for d in camera.detector_names if d.startswith("R22_")
            for a in camera[d].amp_names]
    return pd.DataFrame(rows, columns=["visit", "detector", "amp", "pedestal"])


def test_focal_plane_map(tmp_path, camera, raft_pedestals):
    path = tmp_path / "fp.png"
    fig = focal_plane_map(raft_pedestals, camera, visit=2, path=path)
    img = check_png(path, (8.0, 7.0))
    # Red and blue tiles of the diverging colour map are both present.
    rgb = img[..., :3]
    reddish = (rgb[..., 0] > 0.6) & (rgb[..., 2] < 0.4)
    bluish = (rgb[..., 2] > 0.6) & (rgb[..., 0] < 0.4)
    assert reddish.sum() > 500 and bluish.sum() > 500
    ax = fig.axes[0]
    assert "visit 2" in ax.get_title() and "9 detectors" in ax.get_title()
    labels = {t.get_text() for t in ax.texts}
    assert {"R22_S00", "R22_S11", "R22_S22"} <= labels
    # 9 detectors x 16 amps tiles, coloured by the visit-2 pedestals.
    coll = ax.collections[1]
    assert len(coll.get_paths()) == 144
    expected = raft_pedestals.query("visit == 2")["pedestal"].to_numpy()
    np.testing.assert_allclose(np.sort(np.asarray(coll.get_array())), np.sort(expected))


def test_focal_plane_map_of_counts_is_one_sided(camera, raft_pedestals):
    counts = raft_pedestals.query("visit == 2").assign(pedestal=0.0)
    counts.loc[counts.index[:3], "pedestal"] = [1.0, 2.0, 2.0]
    fig = focal_plane_map(counts, camera, vmin=0, vmax=2, cmap="Reds", value_label="flags")
    coll = fig.axes[0].collections[1]
    assert coll.get_clim() == (0.0, 2.0)
    assert coll.colorbar.ax.get_ylabel() == "flags"
    assert list(coll.colorbar.get_ticks()) == [0.0, 1.0, 2.0]
    # Without vmax the one-sided scale ends at the largest value.
    fig = focal_plane_map(counts, camera, vmin=0, cmap="Reds", value_label="flags")
    assert fig.axes[0].collections[1].get_clim() == (0.0, 2.0)
    # The default stays the symmetric pedestal scale.
    fig = focal_plane_map(counts, camera, vmax=3)
    assert fig.axes[0].collections[1].get_clim() == (-3.0, 3.0)
    assert fig.axes[0].collections[1].colorbar.ax.get_ylabel() == "amp pedestal (ADU)"


def test_focal_plane_map_bad_input(camera, raft_pedestals):
    with pytest.raises(InputError, match="several visits"):
        focal_plane_map(raft_pedestals, camera)
    with pytest.raises(InputError, match="no rows for visit 7"):
        focal_plane_map(raft_pedestals, camera, visit=7)
    bad = raft_pedestals.assign(detector="R99_S99")
    with pytest.raises(InputError, match="R99_S99"):
        focal_plane_map(bad, camera, visit=1)
    with pytest.raises(InputError, match="missing column"):
        focal_plane_map(raft_pedestals.drop(columns="pedestal"), camera, visit=1)


def test_interface_histogram(tmp_path):
    rng = np.random.default_rng(1)
    table = pd.DataFrame({"offset_raw": rng.normal(0, 2.5, 400),
                          "good_frac": rng.uniform(0.2, 1.0, 400)})
    table["max_offset_fail"] = table["offset_raw"].abs() > 5
    table["min_frac_fail"] = table["good_frac"] < 0.5
    path = tmp_path / "ih.png"
    fig = interface_histogram(table, path=path, max_offset=5.0, min_frac=0.5)
    check_png(path, (10.0, 4.2))
    ax1, ax2 = fig.axes[:2]
    lines = sorted(float(line.get_xdata()[0]) for line in ax1.get_lines())
    assert lines == [-5.0, 5.0]
    assert [float(line.get_xdata()[0]) for line in ax2.get_lines()] == [0.5]
    assert f"{int(table['max_offset_fail'].sum())} over" in ax1.get_title()
    assert f"{int(table['min_frac_fail'].sum())} under" in ax2.get_title()
    # The bars are the counts of every interface (offsets beyond the axis in the end bins).
    (offsets,) = ax1.patches
    counts, edges, _ = offsets.get_data()
    raw = np.clip(table["offset_raw"], edges[0], edges[-1])
    np.testing.assert_array_equal(counts, np.histogram(raw, edges)[0])
    assert counts.sum() == 400 and len(counts) == 60
    (fracs,) = ax2.patches
    counts, edges, _ = fracs.get_data()
    np.testing.assert_array_equal(counts, np.histogram(table["good_frac"], edges)[0])
    assert edges[0] == 0.0 and edges[-1] == 1.0 and counts.sum() == 400


def test_amp_map_accepts_mapping_sequence_table(tmp_path, camera):
    det = camera["R22_S11"]
    values = np.linspace(-2, 2, 16)
    as_dict = dict(zip(det.amp_names, values, strict=True))
    table = pd.DataFrame({"amp": det.amp_names, "pedestal": values})
    interfaces = pd.DataFrame({"amp_a": ["C10"], "amp_b": ["C11"], "offset": [0.5]})
    for i, peds in enumerate((values, as_dict, table)):
        path = tmp_path / f"amp{i}.png"
        fig = amp_map(peds, det, interfaces=interfaces, path=path)
        check_png(path, tuple(fig.get_size_inches()))
        texts = [t.get_text() for t in fig.axes[0].texts]
        assert "C10\n-2.00" in texts and "C00\n+2.00" in texts and "+0.50" in texts
    with pytest.raises(InputError, match="3 pedestals for 16 amps"):
        amp_map([1.0, 2.0, 3.0], det)


def test_binned_image_is_a_masked_block_median():
    image = np.arange(64, dtype=np.float32).reshape(8, 8)
    mask = np.zeros((8, 8), np.int32)
    mask[0, 0] = 1
    out = binned_image(image, mask, bin_size=4, bad_bits=1)
    assert out.shape == (2, 2)
    block = image[:4, :4].ravel()[1:]
    assert out[0, 0] == pytest.approx(np.median(block))
    assert out[1, 1] == pytest.approx(np.median(image[4:, 4:]))
    with pytest.raises(InputError, match="smaller than one"):
        binned_image(image, bin_size=16)


def test_before_after_shows_the_steps_then_removes_them(tmp_path, camera):
    det = scale_detector(camera["R22_S11"], 0.25)
    peds = np.tile([3.0, -3.0], 8)
    sim = simulate_detector(det, seed=2, pedestals=peds, sky=1200.0)
    path = tmp_path / "ba.png"
    fig = before_after(sim.image, det, peds, mask=sim.mask, path=path)
    check_png(path, tuple(fig.get_size_inches()))
    before, after = (np.ma.filled(ax.images[0].get_array(), np.nan) for ax in fig.axes[:2])
    x0, x1, _, _ = fig.axes[0].images[0].get_extent()
    b = round((x1 - x0) / before.shape[1])

    def amp_medians(binned):
        out = []
        for amp in det.amplifiers:
            rows = slice(-(-amp.y0 // b) + 1, amp.y1 // b - 1)
            cols = slice(-(-amp.x0 // b) + 1, amp.x1 // b - 1)
            out.append(np.nanmedian(binned[rows, cols]))
        return np.array(out)

    # Before: the +-3 ADU amp steps; after: flat within a fraction of an ADU.
    steps_before = amp_medians(before)
    assert np.all(np.abs(steps_before - (peds - peds.mean())) < 1.0)
    assert np.all(np.abs(amp_medians(after)) < 0.7)
    with pytest.raises(InputError, match="does not match"):
        before_after(sim.image[:-1], det, peds)


def test_plot_visit_from_a_catalog(tmp_path, camera):
    """plot_visit on a catalog written by CatalogWriter, with and without the input file."""
    from ampoffset_dask import AmpOffsetConfig, measure_detector
    from ampoffset_dask.catalog import CatalogWriter, DetectorResult
    from ampoffset_dask.io.fits import write_exposure
    from ampoffset_dask.plots import plot_visit

    det = scale_detector(camera["R22_S11"], 0.1)
    sim = simulate_detector(det, seed=4)
    path = tmp_path / "in.fits"
    write_exposure(path, sim.image, sim.mask, sim.variance, detector=det,
                   header={"SIMCAM": "lsstcam", "VISIT": 5})
    m = measure_detector(sim.image, sim.mask, det)
    cat = tmp_path / "cat"
    with CatalogWriter(cat) as writer:
        writer.start_run(config=AmpOffsetConfig(), inputs=[path])
        writer.add(DetectorResult(visit=5, detector=det.name, status="ok", detector_id=det.id,
                                  input=str(path), amp_names=list(m.amp_names),
                                  pedestals=[float(p) for p in m.pedestals],
                                  interfaces=[i.to_dict() for i in m.interfaces]))
        writer.finish_run()
    written = plot_visit(cat)
    assert [p.name for p in written] == ["focal_plane_v5.png", "interfaces_v5.png",
                                         "amps_v5_R22_S11.png", "before_after_v5_R22_S11.png"]
    assert all(p.parent == cat / "plots" for p in written)
    for p in written:
        assert imread(p)[..., :3].std() > 0.05
    # Without the input file: no before/after; the camera is found from the detector names.
    path.unlink()
    written = plot_visit(cat, 5, out=tmp_path / "p2")
    assert [p.name for p in written] == ["focal_plane_v5.png", "interfaces_v5.png",
                                         "amps_v5_R22_S11.png"]
    with pytest.raises(InputError, match="no visit 6"):
        plot_visit(cat, 6)
    with pytest.raises(InputError, match="R22_S12"):
        plot_visit(cat, 5, detector="R22_S12", out=tmp_path / "p3")
    assert not list((tmp_path / "p3").glob("*"))  # refused before drawing anything


def test_before_after_bins_match_a_direct_computation(camera):
    """The corrected bins (shifted per amp, straddling bins recomputed) equal binning the
    corrected image."""
    from ampoffset_dask.plots import _binned_after

    det = scale_detector(camera["R01_S00"], 0.1)  # 80x200 amps: 7-pixel bins straddle amps
    sim = simulate_detector(det, seed=9)
    values = dict(zip(det.amp_names, np.linspace(-3, 3, 16), strict=True))
    corrected = sim.image.copy()
    for amp in det.amplifiers:
        corrected[amp.slices] -= np.float32(values[amp.name])
    before = binned_image(sim.image, sim.mask, 7, 0x1FF)
    fast = _binned_after(sim.image, sim.mask, before, det, values, 7, 0x1FF)
    np.testing.assert_allclose(fast, binned_image(corrected, sim.mask, 7, 0x1FF), atol=1e-3)


def test_focal_plane_map_for_a_user_camera_without_positions(tmp_path):
    """A camera file without corners_mm/offset_mm (documented as optional): the detectors are
    drawn side by side in pixel units; a single detector works too."""
    from io_helpers import kast_camera_doc

    from ampoffset_dask.cameras import Camera

    doc = kast_camera_doc()
    doc["detectors"].append({"id": 1, "name": "kast_red", "physical_type": "kast"})
    cam = Camera.from_dict(doc)
    table = pd.DataFrame({"detector": ["kast_blue", "kast_blue", "kast_red", "kast_red"],
                          "amp": ["L", "R", "L", "R"], "pedestal": [-1.5, 1.5, 0.7, -0.7]})
    fig = focal_plane_map(table, cam, path=tmp_path / "two.png")
    ax = fig.axes[0]
    assert "pixels" in ax.get_xlabel()
    x0, x1 = ax.get_xlim()
    assert x1 - x0 > 2 * 2048  # two 2048-pixel detectors next to each other
    check_png(tmp_path / "two.png", (8.0, 7.0))
    one = focal_plane_map(table[table.detector == "kast_blue"], cam, path=tmp_path / "one.png")
    assert [t.get_text() for t in one.axes[0].texts] == ["kast_blue", "L", "R"]
    check_png(tmp_path / "one.png", (8.0, 7.0))


def test_focal_plane_position_from_offset_when_corners_are_missing(camera):
    """offset_mm + yaw + pixel size give the same outline as corners_mm."""
    from ampoffset_dask.plots import _corners_mm

    doc = camera.to_dict()
    for det in doc["detectors"]:
        det.pop("corners_mm", None)
    from ampoffset_dask.cameras import Camera

    stripped = Camera.from_dict(doc)
    for name in ("R22_S11", "R01_S00", "R30_S22"):
        expected = np.asarray(camera.info(name)["corners_mm"])[:, :2]
        np.testing.assert_allclose(_corners_mm(stripped, name), expected, atol=0.02)


def test_save_figure_writes_what_savefig_writes(tmp_path, camera):
    """save_figure lays the figure out itself and saves without the layout engine: the PNG
    is byte for byte matplotlib's own savefig (which lays out during a draw of its own), for
    a figure with an inset colour bar, and the figure keeps its constrained layout."""
    from matplotlib.layout_engine import ConstrainedLayoutEngine

    from ampoffset_dask.plots import save_figure

    det = camera["R22_S11"]
    peds = np.linspace(-2, 2, 16)
    interfaces = pd.DataFrame({"amp_a": ["C10"], "amp_b": ["C11"], "offset": [0.5]})
    fig = amp_map(peds, det, interfaces=interfaces)
    engine = fig.get_layout_engine()
    ours = save_figure(fig, tmp_path / "ours.png")
    assert fig.get_layout_engine() is engine
    assert isinstance(engine, ConstrainedLayoutEngine)
    reference = tmp_path / "reference.png"
    amp_map(peds, det, interfaces=interfaces).savefig(reference, dpi=DPI, format="png")
    assert ours.read_bytes() == reference.read_bytes()
    check_png(ours, tuple(fig.get_size_inches()))
    assert not list(tmp_path.glob(".*"))  # no temporary file left
