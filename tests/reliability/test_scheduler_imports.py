"""A shared scheduler stays light: unpickling a run's submitted tasks (which Dask's scheduler
does for every task) imports neither the pipeline nor the I/O stack (astropy.io.fits, pandas,
pyarrow: ~0.9 s of CPU and their memory in the scheduler process)."""

from __future__ import annotations

import subprocess
import sys

import cloudpickle

from ampoffset_dask.pipeline import prepare

HEAVY = ("ampoffset_dask.pipeline", "ampoffset_dask.io", "ampoffset_dask.catalog",
         "astropy.io.fits", "pandas", "pyarrow", "distributed")

_LOAD = f"""
import pickle, sys
fn, kwargs = pickle.loads(sys.stdin.buffer.read())
assert callable(fn) and kwargs["detector"].name, kwargs
print(" ".join(m for m in {HEAVY!r} if m in sys.modules))
"""


def test_submitted_tasks_unpickle_without_the_pipeline(sim4, tmp_path):
    import ampoffset_dask.pipeline.run as run_module

    with prepare([str(sim4[0])], tmp_path / "cat") as run:
        (task,) = run.runnable
        # what execute submits for a detector: its function and the heavy arguments
        fn = run_module.identified_job
        kwargs = {"path": task.path, "detector": task.detector, "config": run.config,
                  "visit": task.visit, "camera": run.camera, "hdu": task.hdu}
        payload = cloudpickle.dumps((fn, kwargs))
        loaded = subprocess.run([sys.executable, "-c", _LOAD], input=payload,
                                capture_output=True, check=False, timeout=60)
        assert loaded.returncode == 0, loaded.stderr.decode()
        assert loaded.stdout.decode().split() == []
        # and it is the detector job: the same result as the pipeline's own function
        from ampoffset_dask.pipeline.detector_job import identified_job

        digest, result = fn(**kwargs)
        digest2, result2 = identified_job(**kwargs)
        assert digest == digest2 and result.status == result2.status == "ok"
        assert result.pedestals == result2.pedestals
