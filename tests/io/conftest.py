"""Fixtures for the I/O tests."""

from __future__ import annotations

import pytest
from io_helpers import kast_camera_doc, tiny_raw_camera_doc

from ampoffset_dask.cameras import Camera


@pytest.fixture
def kast_camera() -> Camera:
    return Camera.from_dict(kast_camera_doc())


@pytest.fixture
def tiny_camera() -> Camera:
    return Camera.from_dict(tiny_raw_camera_doc())
