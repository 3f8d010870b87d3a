"""Issue 10 item 1: runs sharing one scheduler never get each other's results.

Two ``ampoffset-dask run`` processes with different configs and output folders run at the
same time on one real ``dask scheduler`` (two ``dask worker`` processes). Each catalog must
equal its own clean measurement exactly, and each output folder must hold all its own
corrected images (read back: the pedestals in their headers are that run's).
"""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
from astropy.io import fits
from pipeline.helpers import assert_catalog_matches, direct_measurements

from ampoffset_dask import AmpOffsetConfig, read_catalog
from ampoffset_dask.pipeline.inputs import InputItem, plan_tasks

CONFIGS = {"a": {}, "b": {"ampEdgeWidth": 40, "ampEdgeMaxOffset": 3.0}}


def test_keys_are_unique_per_run(sim4):
    (task,) = plan_tasks([InputItem(str(sim4[0]))])
    assert task.key("run1") != task.key("run2")
    assert task.key("run1") == f"ampoffset-run1-{task.visit}-{task.name}"


@pytest.mark.slow
def test_two_runs_on_one_scheduler_keep_their_own_results(sim4, scheduler, tmp_path,
                                                          cli_env):
    procs = {}
    for name, cfg in CONFIGS.items():
        sets = [a for k, v in cfg.items() for a in ("--set", f"{k}={v}")]
        procs[name] = subprocess.Popen(
            ["ampoffset-dask", "run", *map(str, sim4), "--output", str(tmp_path / f"cat_{name}"),
             "--scheduler", scheduler, "--output-images", str(tmp_path / f"img_{name}"),
             "--max-in-flight", "8", "--no-progress", *sets],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env)
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, (name, out, err)

    for name, cfg in CONFIGS.items():
        config = AmpOffsetConfig.from_lsst(cfg) if cfg else None
        expected = direct_measurements(sim4, config)
        catalog = tmp_path / f"cat_{name}"
        assert_catalog_matches(catalog, expected)
        rows = read_catalog(catalog, "detectors")
        assert sorted(rows["input"]) == sorted(map(str, sim4))
        # every corrected image of this run is in this run's folder, with its pedestals
        images = sorted((tmp_path / f"img_{name}").rglob("*.fits"))
        assert len(images) == len(sim4)
        pedestals = expected[0].set_index(["detector", "amp"])["pedestal"]
        for path in images:
            header = fits.getheader(path, 0)
            det = header["DETNAME"]
            got = {k.split()[-1]: v for k, v in header.items()
                   if k.startswith("LSST ISR AMPOFFSET PEDESTAL ") and "SUBTRACTED" not in k}
            assert len(got) == 16
            want = pedestals.loc[det]
            # header cards keep ~16 significant digits
            np.testing.assert_allclose([got[a] for a in want.index], want.to_numpy(),
                                       rtol=1e-12, atol=1e-12)
    # the two configs really measure differently: a swap would show
    a = read_catalog(tmp_path / "cat_a", "pedestals")["pedestal"].to_numpy()
    b = read_catalog(tmp_path / "cat_b", "pedestals")["pedestal"].to_numpy()
    assert not np.array_equal(a, b)
