"""ampoffset-dask: LSST-compatible amplifier-offset correction for focal planes on Dask."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from ._lazy import lazy_attributes
from .algorithm.measure import measure_detector
from .algorithm.result import DetectorMeasurement, InterfaceResult
from .config import AmpOffsetConfig
from .errors import AmpOffsetError, ClusterError, ConfigError, GeometryError, InputError
from .exposure import Exposure
from .geometry import Amplifier, Detector
from .task import AmpOffsetTask

try:
    __version__ = version("ampoffset-dask")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0+unknown"

# Heavier layers (xarray, dask, pyarrow) load on first use so that the algorithm layer
# stays cheap to import on workers and in the LSST stack.
_LAZY = {
    "Camera": "ampoffset_dask.cameras",
    "get_camera": "ampoffset_dask.cameras",
    "list_cameras": "ampoffset_dask.cameras",
    "open_exposure": "ampoffset_dask.io.xarray",
    "open_visit": "ampoffset_dask.io.xarray",
    "process": "ampoffset_dask.pipeline.run",
    "RunOptions": "ampoffset_dask.pipeline.options",
    "build_graph": "ampoffset_dask.pipeline.graph",
    "measure_visit": "ampoffset_dask.pipeline.graph",
    "read_catalog": "ampoffset_dask.catalog",
}

__all__ = [
    "AmpOffsetConfig",
    "AmpOffsetError",
    "AmpOffsetTask",
    "Amplifier",
    "ClusterError",
    "ConfigError",
    "Detector",
    "DetectorMeasurement",
    "Exposure",
    "GeometryError",
    "InputError",
    "InterfaceResult",
    "__version__",
    "measure_detector",
    *_LAZY,
]


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, globals())
