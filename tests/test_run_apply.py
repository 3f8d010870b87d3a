"""``ampoffset-dask run --apply`` writes exactly the pixels ``AmpOffsetTask`` produces."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest
from io_helpers import REAL

from ampoffset_dask import AmpOffsetConfig, AmpOffsetTask, read_catalog
from ampoffset_dask.cli import main
from ampoffset_dask.io.fits import read_exposure
from ampoffset_dask.simulate import simulate_focal_plane

RAW_GZ = REAL / "lsstcam_bot_spots" / "e2v_spot.fits.gz"


@pytest.fixture(scope="module")
def applied(tmp_path_factory, shared_scheduler):
    """One CLI run over a simulated LSST exposure file and a real LSSTCam raw, made once per
    run: the ``-n`` processes that get a case share it (read only)."""
    from run_shared import once_per_run

    def make(root: Path) -> dict:
        # A low sky (background-subtracted-like levels) is where rounding the pedestal to
        # float32 first would change the last bit of many pixels.
        sim = simulate_focal_plane(root / "sim", "lsstcam", detectors=["R22_S11"],
                                   visits=[5], scale=0.15, seed=4, sky=20.0)
        raw = root / "raw" / "e2v_spot.fits"  # uncompressed: the corrected copy is not gzipped
        raw.parent.mkdir()
        with gzip.open(RAW_GZ) as src, open(raw, "wb") as dst:
            shutil.copyfileobj(src, dst)
        code = main(["run", str(sim.paths[0]), str(raw), "--output", str(root / "cat"),
                     "--apply", "--output-images", str(root / "out"),
                     "--scheduler", shared_scheduler, "--no-progress"])
        assert code == 0
        # Where each corrected copy went is the catalog's record of the run.
        rows = read_catalog(root / "cat", "detectors")
        output = {Path(i).name: Path(o)
                  for i, o in zip(rows["input"], rows["output"], strict=True)}
        out = {"exposure": output[sim.paths[0].name], "raw": output[raw.name]}
        assert all(p.is_relative_to(root / "out") for p in out.values())
        return {"exposure": (sim.paths[0], out["exposure"]), "raw": (raw, out["raw"])}

    return once_per_run(tmp_path_factory, "run_apply", make)


@pytest.mark.parametrize("kind", ["exposure", "raw"])
def test_cli_apply_equals_task_apply_bit_for_bit(applied, kind):
    src, out = applied[kind]
    data = read_exposure(src)
    exposure = data.to_exposure()
    before = exposure.image.copy()
    result = AmpOffsetTask(AmpOffsetConfig(do_apply_amp_offset=True)).run(exposure)
    assert np.abs(result.pedestals).max() > 0  # something was subtracted
    written = read_exposure(out)
    assert written.image.dtype == np.float32
    assert np.array_equal(written.image, exposure.image)
    assert written.visit == data.visit
    if kind == "exposure":
        # the old float32 subtraction (pedestal rounded first) differs in the last bit
        f32 = before.copy()
        for amp, p in zip(exposure.detector.amplifiers, result.pedestals, strict=True):
            f32[amp.slices] -= np.float32(p)
        assert not np.array_equal(f32, exposure.image)
