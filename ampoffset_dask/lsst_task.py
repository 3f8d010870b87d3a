"""Former name of `ampoffset_dask._pipe_base` (the ``lsst.pipe.base.Task`` stand-in)."""

from ._pipe_base import ConfigurableField, Struct, Task, TaskMetadata

__all__ = ["ConfigurableField", "Struct", "Task", "TaskMetadata"]
