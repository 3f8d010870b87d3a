"""File input/output: FITS readers and writers (`fits`), lazy xarray views (`xarray`).

``ampoffset_dask.io.xarray`` is imported on demand (it pulls in xarray and dask).
"""

from __future__ import annotations

from .fits import (
    ExposureData,
    FileInfo,
    inspect_file,
    read_exposure,
    read_section,
    resolve_detector,
    write_exposure,
)

__all__ = [
    "ExposureData",
    "FileInfo",
    "inspect_file",
    "read_exposure",
    "read_section",
    "resolve_detector",
    "write_exposure",
]
