"""Distributed processing on Dask: clusters, the per-detector task, `process`, graphs.

This is the only subpackage that imports dask.distributed. Package defaults are registered
in dask's configuration under the ``ampoffset`` key on import.
"""

from __future__ import annotations

from .._lazy import lazy_attributes
from ._config import load_defaults

load_defaults()

# Each public name and the module that defines it, imported when first used: a dask worker
# unpickling its task imports this package and `detector_job` only, not `run` and the
# catalog reader behind it (pyarrow.compute and pyarrow.parquet, ~0.15 CPU s per worker).
_LAZY = {
    "ClientHandle": ".cluster",
    "get_client": ".cluster",
    "process_file": ".detector_job",
    "build_graph": ".graph",
    "measure_visit": ".graph",
    "RunOptions": ".options",
    "PreparedRun": ".run",
    "RunSummary": ".run",
    "execute": ".run",
    "prepare": ".run",
    "process": ".run",
    "stream_tasks": ".run",
}


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, globals())


__all__ = [
    "ClientHandle",
    "PreparedRun",
    "RunOptions",
    "RunSummary",
    "build_graph",
    "execute",
    "get_client",
    "load_defaults",
    "measure_visit",
    "prepare",
    "process",
    "process_file",
    "stream_tasks",
]
