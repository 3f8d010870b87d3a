"""Issue 10 item 6: corrected outputs never collide, never overwrite an input, and are named
for what they are.

Each planning error must exit 2 before any cluster is contacted (the runs point at a port
where no scheduler listens: reaching it would exit 3).
"""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pytest
from cli_helpers import cli
from pipeline.helpers import VISIT

from ampoffset_dask import read_catalog
from ampoffset_dask.io.fits import read_exposure

NOWHERE = "tcp://127.0.0.1:9"  # nothing listens here


@pytest.mark.slow
def test_same_basename_and_visit_give_two_outputs(sim4, scheduler, tmp_path):
    for folder, src in (("a", sim4[0]), ("b", sim4[1])):
        (tmp_path / folder).mkdir()
        shutil.copy(src, tmp_path / folder / "exposure.fits")
    gz = tmp_path / "c" / "other.fits.gz"
    gz.parent.mkdir()
    gz.write_bytes(gzip.compress(sim4[2].read_bytes(), compresslevel=1))
    out = tmp_path / "out"
    proc = cli("run", tmp_path / "a", tmp_path / "b", tmp_path / "c",
                   "--output", tmp_path / "cat", "--output-images", out,
                   "--scheduler", scheduler, "--no-progress")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = read_catalog(tmp_path / "cat", "detectors").set_index("input")
    written = {rows.loc[str(tmp_path / "a" / "exposure.fits"), "output"],
               rows.loc[str(tmp_path / "b" / "exposure.fits"), "output"],
               rows.loc[str(gz), "output"]}
    assert len(written) == 3  # no two rows claim one file
    for path in written:
        path = Path(path)
        assert path.is_file() and path.suffix == ".fits"
        assert path.read_bytes()[:6] == b"SIMPLE"  # plain FITS, named so (not .gz)
        exp = read_exposure(path)
        assert path.parent.name == exp.detector.name  # the detector name is in the path
        assert path.parent.parent.name == str(VISIT)
    assert (out / str(VISIT) / "R22_S21" / "other.fits").is_file()


@pytest.mark.slow
def test_output_over_another_input_is_refused_before_any_cluster(sim4, tmp_path):
    # b.fits is detector R22_S12 stored where R22_S11's output "b.fits" would be written
    out = tmp_path / "out"
    victim = out / str(VISIT) / "R22_S11" / "b.fits"
    victim.parent.mkdir(parents=True)
    shutil.copy(sim4[1], victim)
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(sim4[0], data / "b.fits")  # R22_S11
    before = victim.read_bytes()
    proc = cli("run", data / "b.fits", victim, "--output", tmp_path / "cat",
                   "--output-images", out, "--scheduler", NOWHERE, "--no-progress")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    # an input inside the output folder, which the run would mark as one of corrected
    # images, is refused first (overwriting it is one of the ways it would be lost)
    assert f"{victim}: the input lies inside the --output-images folder {out}" in proc.stderr
    assert proc.stderr.count("error:") == 1
    assert victim.read_bytes() == before


@pytest.mark.slow
def test_in_place_on_a_gzip_file_is_refused(sim4, tmp_path):
    gz = tmp_path / "x.fits.gz"
    gz.write_bytes(gzip.compress(sim4[0].read_bytes(), compresslevel=1))
    before = gz.read_bytes()
    proc = cli("run", gz, "--output", tmp_path / "cat", "--in-place",
                   "--scheduler", NOWHERE, "--no-progress")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "cannot be corrected in place" in proc.stderr and str(gz) in proc.stderr
    assert gz.read_bytes() == before
