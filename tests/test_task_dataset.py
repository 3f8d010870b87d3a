"""AmpOffsetTask.run and measure_detector on a lazy Dataset from open_exposure."""

from __future__ import annotations

import json

import numpy as np
from golden import mini_itl

from ampoffset_dask import AmpOffsetConfig, AmpOffsetTask, measure_detector, open_exposure
from ampoffset_dask.io.fits import write_exposure


def test_task_runs_on_a_lazy_dataset(tmp_path):
    image, mask, planes, detector, expected = mini_itl()
    path = write_exposure(tmp_path / "mini.fits", image, mask, mask_planes=planes,
                          detector=detector, header={"VISIT": 5, "DETNAME": detector.name})
    ds = open_exposure(path)
    config = AmpOffsetConfig(do_apply_amp_offset=True)
    result = AmpOffsetTask(config).run(ds)
    np.testing.assert_allclose(result.pedestals, expected["results"]["default"]["pedestals"],
                               rtol=0, atol=1e-5)
    direct = measure_detector(image, mask, detector, AmpOffsetConfig(), planes)
    np.testing.assert_array_equal(result.pedestals, direct.pedestals)
    meta = json.loads(ds.attrs["ampoffset_metadata"])  # a string: to_netcdf takes it
    assert meta["LSST ISR AMPOFFSET PEDESTAL SUBTRACTED"] is True
    assert meta[f"LSST ISR AMPOFFSET PEDESTAL {detector.amp_names[0]}"] == result.pedestals[0]
    # Applying replaces the image lazily with the corrected one; the file is untouched.
    corrected = ds["image"].values
    for amp, p in zip(detector.amplifiers, result.pedestals, strict=True):
        want = (image[amp.slices].astype(np.float64) - p).astype(np.float32)
        np.testing.assert_array_equal(corrected[amp.slices], want)
    np.testing.assert_array_equal(open_exposure(path)["image"].values, image)
