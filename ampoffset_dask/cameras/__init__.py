"""Built-in camera descriptions (LSSTCam, LSSTComCam, LATISS, HSC, DECam) and user cameras."""

from __future__ import annotations

from .camera import (
    Camera,
    RawAmp,
    UnknownDetectorError,
    canonical_camera_name,
    get_camera,
    list_cameras,
)

__all__ = [
    "Camera",
    "RawAmp",
    "UnknownDetectorError",
    "canonical_camera_name",
    "get_camera",
    "list_cameras",
]
