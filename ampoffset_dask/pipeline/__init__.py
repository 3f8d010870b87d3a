"""Distributed processing on Dask: clusters, the per-detector task, `process`, graphs.

This is the only subpackage that imports dask.distributed. Package defaults are registered
in dask's configuration under the ``ampoffset`` key on import.
"""

from __future__ import annotations

from ._config import load_defaults

load_defaults()

from .cluster import ClientHandle, get_client  # noqa: E402
from .detector_job import process_file  # noqa: E402
from .graph import build_graph, measure_visit  # noqa: E402
from .options import RunOptions  # noqa: E402
from .run import PreparedRun, RunSummary, execute, prepare, process, stream_tasks  # noqa: E402

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
