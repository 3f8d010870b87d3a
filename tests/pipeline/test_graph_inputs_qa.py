"""build_graph's inputs as process takes them: a manifest row failing with another input's
identity, a camera file given by a relative path, and no inputs at all."""

from __future__ import annotations

import shutil
from pathlib import Path

import dask
import pytest

from ampoffset_dask import AmpOffsetConfig, InputError
from ampoffset_dask.pipeline import build_graph
from ampoffset_dask.simulate import simulate_focal_plane

EDGES = AmpOffsetConfig(do_background=False, do_detection=False)


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sim")
    return simulate_focal_plane(folder / "sim", "lsstcam", detectors=["R22_S11", "R22_S12"],
                                visits=[1], scale=0.05, seed=11).paths


@pytest.mark.parametrize("missing_first", [False, True])
def test_a_failing_row_with_another_inputs_identity_keeps_both(two, tmp_path, missing_first):
    for p in two:
        shutil.copy(p, tmp_path / ("good.fits" if "R22_S11" in p.name else "other.fits"))
    rows = ["good.fits,1,R22_S11", "other.fits,1,R22_S12"]
    missing = "missing.fits,1,R22_S11"
    rows = [missing, *rows] if missing_first else [*rows, missing]
    (tmp_path / "m.csv").write_text("path,visit,detector\n" + "\n".join(rows) + "\n")
    graph = build_graph(tmp_path / "m.csv", config=EDGES, output_images=tmp_path / "out")
    got = dask.compute(graph, scheduler="sync")[0]
    assert got[(1, "R22_S11")].status == "ok"
    assert Path(got[(1, "R22_S11")].input).name == "good.fits"
    failed = got[(1, f"input:{tmp_path / 'missing.fits'}")]
    assert failed.status == "failed" and "no such file" in failed.error
    assert failed.detector == "R22_S11"
    assert (tmp_path / "out" / "1" / "R22_S11" / "good.fits").is_file()


def test_a_relative_camera_file_works_from_another_working_directory(tmp_path, monkeypatch):
    from golden import SHARED

    shutil.copy(SHARED / "cameras" / "lsstcam.json", tmp_path / "mycam.json")
    raw = SHARED / "realdata" / "lsstcam_bot_spots" / "e2v_spot.fits.gz"  # read in place
    monkeypatch.chdir(tmp_path)
    graph = build_graph(raw, config=EDGES, camera="mycam.json")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    (result,) = dask.compute(graph, scheduler="sync")[0].values()
    assert result.status == "ok", result.error


def test_no_inputs_is_refused():
    with pytest.raises(InputError, match=r"no FITS files found in \[\]"):
        build_graph([])
