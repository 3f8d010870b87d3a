"""The function `~ampoffset_dask.pipeline.run.execute` submits for each detector, in a module
that imports nothing heavy.

Dask's scheduler unpickles every submitted task, so it imports the module that holds the
task's function: from here that costs nothing, while `ampoffset_dask.pipeline.detector_job`
would pull the whole pipeline and I/O stack (astropy.io.fits, the catalog writers, ~0.9 s of
CPU) into the scheduler process. The workers import the real job on the first call.
"""

from __future__ import annotations

from typing import Any


def identified_job(**kwargs: Any) -> Any:
    """`ampoffset_dask.pipeline.detector_job.identified_job` (same arguments and result)."""
    from .pipeline.detector_job import identified_job as job

    return job(**kwargs)
