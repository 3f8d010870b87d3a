"""Issue 10 item 9: an exposure whose header says its pedestals were subtracted
(``LSST ISR AMPOFFSET PEDESTAL SUBTRACTED = T``) is flagged "already corrected" and not
corrected again, unless ``--force``.
"""

from __future__ import annotations

import pytest
from astropy.io import fits
from cli_helpers import cli

from ampoffset_dask import read_catalog


@pytest.mark.slow
def test_corrected_outputs_are_not_corrected_again(sim4, scheduler, tmp_path):
    first = cli("run", *sim4, "--output", tmp_path / "cat1", "--output-images",
                    tmp_path / "corrected", "--scheduler", scheduler, "--no-progress")
    assert first.returncode == 0, first.stdout + first.stderr
    outputs = sorted((tmp_path / "corrected").rglob("*.fits"))
    assert len(outputs) == len(sim4)
    assert all(fits.getheader(p, 0)["LSST ISR AMPOFFSET PEDESTAL SUBTRACTED"] is True
               for p in outputs)
    before = {p: p.read_bytes() for p in outputs}

    again = cli("run", tmp_path / "corrected", "--output", tmp_path / "cat2",
                    "--output-images", tmp_path / "twice", "--scheduler", scheduler,
                    "--no-progress")
    assert again.returncode == 0, again.stdout + again.stderr
    rows = read_catalog(tmp_path / "cat2", "detectors")
    assert len(rows) == len(sim4)
    assert set(rows["status"]) == {"flagged"}
    assert all("already corrected" in e and "--force" in e for e in rows["error"])
    assert list((tmp_path / "twice").rglob("*.fits")) == []
    assert all(p.read_bytes() == before[p] for p in outputs)

    forced = cli("run", tmp_path / "corrected", "--output", tmp_path / "cat3",
                     "--output-images", tmp_path / "twice", "--scheduler", scheduler,
                     "--force", "--no-progress")
    assert forced.returncode == 0, forced.stdout + forced.stderr
    rows = read_catalog(tmp_path / "cat3", "detectors")
    assert set(rows["status"]) == {"ok"}
    assert len(list((tmp_path / "twice").rglob("*.fits"))) == len(sim4)
    forced_out = sorted((tmp_path / "twice").rglob("*.fits"))
    assert all(fits.getheader(p, 0)["LSST ISR AMPOFFSET PEDESTAL SUBTRACTED"] is True
               for p in forced_out)
