"""Test configuration: tests/golden.py importable as ``golden``; shared fixtures."""

import os
import sys
from pathlib import Path

import pytest

# The numpy kernels unless a test asks for numba: every process the tests start (CLI runs,
# dask workers, notebook kernels) would otherwise load the compiled kernels' cache, about
# 1.2 s of CPU each. The two paths are bit-identical; tests/algorithm (test_kernels,
# test_parity, test_pinned) and tests/pipeline/test_detector_job.py run both explicitly.
os.environ.setdefault("AMPOFFSET_KERNELS", "numpy")

sys.path.insert(0, str(Path(__file__).resolve().parent))

from golden import SHARED, SHARED_FOLDERS


def pytest_configure(config):
    """Stop with one clear message, before collection, when the reference data is missing
    (otherwise every module reading it fails to import with its own traceback)."""
    missing = [f"{name}/" for name in SHARED_FOLDERS if not (SHARED / name).is_dir()]
    if missing:
        raise pytest.UsageError(
            f"reference data not found: {SHARED} lacks {', '.join(missing)}. The tests read "
            "the shared folder beside the repository (../shared relative to the repository "
            "root); put it there or set AMPOFFSET_SHARED=/path/to/shared."
        )


# Tests that run the compiled kernels: numba compiles them (or loads its cache) once per
# process, tens of CPU seconds in a fresh checkout, so with ``-n`` they share one test
# process (``--dist loadgroup`` in pyproject's addopts).
_NUMBA_MODULES = {"test_kernels.py", "test_smoothing.py"}
_NUMBA_TESTS = {"test_kernels_choice_from_dask_config"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if (item.path.name in _NUMBA_MODULES or "numba" in item.nodeid
                or item.originalname in _NUMBA_TESTS):
            item.add_marker(pytest.mark.xdist_group("numba-kernels"))


@pytest.fixture(scope="session")
def shared_scheduler(tmp_path_factory):
    """The address of a real ``dask scheduler`` with two ``dask worker`` processes on
    127.0.0.1, started once per test process for every test that needs a cluster but not a
    cluster of its own (tests that kill, stop or inspect their cluster start their own).

    Runs on a shared scheduler are what users do too; each run's results are keyed by its
    own run token (tests/reliability/test_shared_scheduler.py).
    """
    from pipeline.helpers import dask_processes

    with dask_processes(tmp_path_factory.mktemp("shared-cluster"), n_workers=2) as (
            address, _, _):
        yield address


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
