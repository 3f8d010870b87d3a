"""The amp-offset algorithm: pure numpy/scipy, no dask, no I/O."""

from .measure import measure_detector
from .result import DetectorMeasurement, InterfaceResult

__all__ = ["DetectorMeasurement", "InterfaceResult", "measure_detector"]
