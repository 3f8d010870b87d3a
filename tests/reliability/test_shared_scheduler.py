"""Issue 10 item 1: runs sharing one scheduler never get each other's results.

Two ``ampoffset-dask run`` processes with different configs and output folders run at the
same time on one real ``dask scheduler`` (two ``dask worker`` processes); both are forked,
with everything imported, from one process that runs nothing itself, so they start
together. Each catalog must equal its own clean measurement exactly, and each output folder
must hold all its own corrected images (read back: the pedestals in their headers are that
run's).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from astropy.io import fits
from pipeline.helpers import assert_catalog_matches, direct_measurements

from ampoffset_dask import AmpOffsetConfig, read_catalog
from ampoffset_dask.pipeline.inputs import InputItem, plan_tasks
from reliability.forked import script_env

CONFIGS = {"a": {}, "b": {"ampEdgeWidth": 40, "ampEdgeMaxOffset": 3.0}}


def test_keys_are_unique_per_run(sim4):
    (task,) = plan_tasks([InputItem(str(sim4[0]))])
    assert task.key("run1") != task.key("run2")
    assert task.key("run1") == f"ampoffset-run1-{task.visit}-{task.name}"


# ``ampoffset-dask ARGS`` (the CLI's main) for each entry of the JSON argument {name: ARGS},
# in processes forked from one (`forked.run_forked`).
FORKED_RUNS = textwrap.dedent("""
    import json, sys
    import distributed  # noqa: F401
    import pyarrow.parquet  # noqa: F401
    import ampoffset_dask.catalog, ampoffset_dask.io.fits  # noqa: F401
    import ampoffset_dask.pipeline.cluster, ampoffset_dask.pipeline.run  # noqa: F401
    import ampoffset_dask.pipeline.worker_logs, distributed.scheduler, tqdm.auto  # noqa: F401
    from ampoffset_dask.cli import main
    from forked import run_forked

    run_forked({name: (lambda args=args: main(args))
                for name, args in json.loads(sys.argv[1]).items()})
""")



@pytest.mark.slow
def test_two_runs_on_one_scheduler_keep_their_own_results(sim4, scheduler, tmp_path,
                                                          cli_env):
    runs = {}
    for name, cfg in CONFIGS.items():
        sets = [a for k, v in cfg.items() for a in ("--set", f"{k}={v}")]
        runs[name] = ["run", *map(str, sim4), "--output", str(tmp_path / f"cat_{name}"),
                      "--scheduler", scheduler, "--output-images", str(tmp_path / f"img_{name}"),
                      "--max-in-flight", "8", "--no-progress", *sets]
    proc = subprocess.run([sys.executable, "-c", FORKED_RUNS, json.dumps(runs)],
                          capture_output=True, text=True, env=script_env(cli_env),
                          cwd=tmp_path, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    codes = {name: code for name, (_, code) in json.loads(proc.stdout).items()}
    for name in CONFIGS:
        assert codes[name] == 0, (name, (tmp_path / f"{name}.out").read_text(),
                                  (tmp_path / f"{name}.err").read_text())

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
