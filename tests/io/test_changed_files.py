"""A file changed after its headers were read is refused, not cut with its old geometry."""

from __future__ import annotations

import os
import pickle
import shutil

import numpy as np
import pytest

from ampoffset_dask import AmpOffsetConfig, InputError, measure_detector, open_exposure
from ampoffset_dask.io.fits import open_lazy
from ampoffset_dask.simulate import simulate_focal_plane

EDGES = AmpOffsetConfig(do_background=False, do_detection=False)


@pytest.fixture(scope="module")
def two_detectors(tmp_path_factory):
    """An ITL and an e2v detector file (different sizes), small."""
    folder = tmp_path_factory.mktemp("changed")
    sim = simulate_focal_plane(folder / "sim", "lsstcam", detectors=["R01_S00", "R22_S11"],
                               scale=0.1, seed=3)
    itl, e2v = sorted(sim.paths)
    return itl, e2v


def _replace(path, source):
    shutil.copy(source, f"{path}.tmp")
    os.replace(f"{path}.tmp", path)


@pytest.mark.parametrize("opener", [open_lazy, open_exposure])
def test_a_file_replaced_after_opening_is_refused(tmp_path, two_detectors, opener):
    itl, e2v = two_detectors
    path = tmp_path / "detector.fits"
    shutil.copy(itl, path)
    opened = opener(path)
    expected = measure_detector(opener(itl), config=EDGES).pedestals
    np.testing.assert_array_equal(measure_detector(opened, config=EDGES).pedestals, expected)
    _replace(path, e2v)  # another detector, another size
    with pytest.raises(InputError, match=r"detector.fits: the file changed since it was "
                                         r"opened .* open it again"):
        measure_detector(opened, config=EDGES)
    reopened = opener(path)
    np.testing.assert_array_equal(measure_detector(reopened, config=EDGES).pedestals,
                                  measure_detector(opener(e2v), config=EDGES).pedestals)


def test_a_rewritten_file_of_the_same_size_is_refused_and_the_stamp_travels(tmp_path,
                                                                            two_detectors):
    itl, _ = two_detectors
    path = tmp_path / "detector.fits"
    shutil.copy(itl, path)
    plane = open_lazy(path).image
    travelled = pickle.loads(pickle.dumps(plane))  # as a dask task carries it to a worker
    assert travelled.stamp == plane.stamp is not None
    np.testing.assert_array_equal(travelled[:10, :10], plane[:10, :10])
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # same bytes, new time
    for p in (plane, travelled):
        with pytest.raises(InputError, match="changed since it was opened"):
            p[:10, :10]
