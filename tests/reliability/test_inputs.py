"""Issue 10 item 8 (and item 6's last point, issue 9's shared walker): what a folder holds.

Entries that are not regular files (dangling symlinks, symlink loops, directories named
``*.fits``) become failed rows "not a regular file" instead of vanishing with exit 0;
``open_visit`` and ``process`` see the same files (``.fit.gz`` included, sub-folders
searched); corrected images written into the input tree are not inputs of the next run.
The runs are real ``ampoffset-dask run`` processes on a real scheduler and workers.
"""

from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
from cli_helpers import cli
from pipeline.helpers import SCALE, VISIT

from ampoffset_dask import open_visit, read_catalog
from ampoffset_dask.io.paths import FITS_SUFFIXES, OUTPUT_MARKER, walk_fits
from ampoffset_dask.simulate import simulate_focal_plane

DETECTORS = ["R22_S11", "R22_S12", "R22_S21"]


@pytest.fixture
def tree(tmp_path):
    """An input folder: two plain files at the top, a gzipped ``.fit.gz`` in a sub-folder,
    and three FITS-named entries that are not regular files."""
    sim = simulate_focal_plane(tmp_path / "sim", "lsstcam", detectors=DETECTORS,
                               visits=[VISIT], scale=SCALE, seed=3)
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    for p in sim.paths[:2]:
        shutil.copy(p, data / p.name)
    gz = data / "sub" / (Path(sim.paths[2]).stem + ".fit.gz")
    gz.write_bytes(gzip.compress(Path(sim.paths[2]).read_bytes(), compresslevel=1))
    os.symlink(tmp_path / "missing.fits", data / "gone.fits")
    os.symlink(data / "loop.fits", data / "loop.fits")
    (data / "folder.fits").mkdir()
    (data / "notes.txt").write_text("not an input")
    return data, [Path(p) for p in sim.paths], gz


def run_cli(*args):
    return cli("run", *args, "--no-progress")


def test_walker_reports_what_it_cannot_read(tree):
    data, _, gz = tree
    found = {Path(f.path).name: f.problem for f in walk_fits(data)}
    assert ".fit.gz" in FITS_SUFFIXES
    assert found[gz.name] == ""  # in sub/, with the .fit.gz suffix
    assert found["gone.fits"] == "not a regular file (dangling symlink)"
    assert found["loop.fits"] == "not a regular file (symlink loop)"
    assert found["folder.fits"] == "not a regular file (a directory)"
    assert "notes.txt" not in found and len(found) == 6


@pytest.mark.slow
def test_non_regular_entries_are_failed_rows(tree, scheduler, tmp_path):
    data, _, gz = tree
    catalog = tmp_path / "catalog"
    proc = run_cli(data, "--output", catalog, "--scheduler", scheduler)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    rows = read_catalog(catalog, "detectors")
    failed = rows[rows["status"] == "failed"].set_index("input")["error"]
    expected = {str(data / "gone.fits"): "dangling symlink",
                str(data / "loop.fits"): "symlink loop",
                str(data / "folder.fits"): "a directory"}
    assert sorted(failed.index) == sorted(expected)
    for path, why in expected.items():
        assert "not a regular file" in failed[path] and why in failed[path], failed[path]
        assert path in proc.stderr  # reported by name
    ok = rows[rows["status"] == "ok"]
    assert sorted(ok["detector"]) == DETECTORS  # the .fit.gz in sub/ was found
    assert str(gz) in set(ok["input"])


@pytest.mark.slow
def test_open_visit_and_process_see_the_same_files(tree, scheduler, tmp_path):
    data, _, gz = tree
    for name in ("gone.fits", "loop.fits"):
        (data / name).unlink()
    (data / "folder.fits").rmdir()
    visit = open_visit(data)
    assert sorted(visit.attrs["detectors"]) == DETECTORS
    assert str(gz) in {visit[d].attrs["path"] for d in DETECTORS}
    catalog = tmp_path / "catalog"
    proc = run_cli(data, "--output", catalog, "--scheduler", scheduler)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = read_catalog(catalog, "detectors")
    assert sorted(rows["input"]) == sorted(visit[d].attrs["path"] for d in DETECTORS)


@pytest.mark.slow
def test_quoted_glob_works(tree, scheduler, tmp_path):
    data, _, _ = tree
    catalog = tmp_path / "catalog"
    proc = run_cli(str(data / "*_R22_S1?.fits"), "--output", catalog,
                   "--scheduler", scheduler)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sorted(read_catalog(catalog, "detectors")["detector"]) == ["R22_S11", "R22_S12"]


@pytest.mark.slow
def test_corrected_outputs_in_the_input_tree_are_not_inputs(tree, scheduler, tmp_path):
    data, _, _ = tree
    for name in ("gone.fits", "loop.fits"):
        (data / name).unlink()
    (data / "folder.fits").rmdir()
    first = run_cli(data, "--output", tmp_path / "cat1", "--scheduler", scheduler,
                    "--apply", "--output-images", data / "corrected")
    assert first.returncode == 0, first.stdout + first.stderr
    found = [f.path for f in walk_fits(data)]
    assert found and not any(p.startswith(str(data / "corrected")) for p in found)
    outputs = sorted(p for p in (data / "corrected").rglob("*") if p.is_file()
                     and p.name != OUTPUT_MARKER)
    assert len(outputs) == 3  # ...which holds the three corrected images
    second = run_cli(data, "--output", tmp_path / "cat2", "--scheduler", scheduler)
    assert second.returncode == 0, second.stdout + second.stderr
    rows = read_catalog(tmp_path / "cat2", "detectors")
    assert len(rows) == 3
    assert not any(p.startswith(str(data / "corrected")) for p in rows["input"])
    first_rows = read_catalog(tmp_path / "cat1", "pedestals")
    second_rows = read_catalog(tmp_path / "cat2", "pedestals")
    pd.testing.assert_series_equal(first_rows["pedestal"], second_rows["pedestal"])
