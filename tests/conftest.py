"""Test configuration: tests/golden.py importable as ``golden``; shared fixtures."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture
def pixel_counter(monkeypatch):
    """Count the pixels every `read_section` call returns (all lazy reads go through it)."""
    import ampoffset_dask.io.sections as sections_io

    counts = {"calls": 0, "pixels": 0}
    original = sections_io.read_section

    def counting(*args, **kwargs):
        out = original(*args, **kwargs)
        counts["calls"] += 1
        counts["pixels"] += int(out.size)
        return out

    monkeypatch.setattr(sections_io, "read_section", counting)
    return counts
