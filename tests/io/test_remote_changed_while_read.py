"""An object replaced in its store while a task reads it fails the task, as a local file
does: the store is asked once more for the object's size and time after the reads."""

from __future__ import annotations

import pytest

from ampoffset_dask.io import remote
from ampoffset_dask.pipeline.detector_job import DetectorJob
from ampoffset_dask.simulate import simulate_focal_plane


@pytest.fixture
def uploaded(s3_bucket, tmp_path):
    """One simulated detector file as an object, a longer replacement of it (another
    detector's file with a block of padding after its last HDU) and the store's client."""
    bucket, client = s3_bucket
    sim = simulate_focal_plane(tmp_path / "sim", "lsstcam", detectors=["R22_S11", "R22_S12"],
                               scale=0.05, seed=5)
    first, second = (str(p) for p in sim.paths)
    longer = tmp_path / "longer.fits"
    longer.write_bytes(open(second, "rb").read() + b"\0" * 2880)
    url = f"s3://{bucket}/v/d.fits"
    client.upload_file(first, bucket, "v/d.fits")
    return url, str(longer), bucket, client


@pytest.mark.parametrize("replace", [True, False], ids=["replaced", "unchanged"])
def test_an_object_replaced_after_its_read_fails(uploaded, monkeypatch, replace):
    import ampoffset_dask.io.fits as fits_io

    url, longer, bucket, client = uploaded
    stamp = remote.url_stamp(url)
    assert stamp is not None
    original = fits_io.read_exposure

    def read_then_replace(*args, **kwargs):
        out = original(*args, **kwargs)
        if replace:
            client.upload_file(longer, bucket, "v/d.fits")
        return out

    monkeypatch.setattr(fits_io, "read_exposure", read_then_replace)
    res = DetectorJob(url, planned_stamp=stamp).run_safely()
    if not replace:
        assert res.status == "ok", res.error
        return
    assert res.status == "failed", res
    assert f"{url}: the object changed in the store while it was read" in res.error
    assert "since it was planned" not in res.error
