"""Writing exposures: project layout, LSST metadata keys, atomic replace, compression."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from test_fits import _small_detector

from ampoffset_dask import InputError
from ampoffset_dask.cameras import get_camera
from ampoffset_dask.io.fits import inspect_file, read_exposure, resolve_detector
from ampoffset_dask.io.writer import write_exposure


@pytest.mark.parametrize("compress", [None, "gzip", "rice"])
def test_write_read_round_trip(tmp_path, compress):
    det = _small_detector("R22_S11", amp_w=40, amp_h=50, nx=8, ny=2, det_id=94)
    rng = np.random.default_rng(1)
    image = rng.normal(1000, 10, det.shape).astype(np.float32)
    mask = rng.integers(0, 4, det.shape).astype(np.int32)
    variance = np.full(det.shape, 12.5, np.float32)
    planes = {"BAD": 0, "SAT": 1, "CR": 5, "NO_DATA": 8, "DETECTED": 12}
    path = write_exposure(
        tmp_path / "x.fits", image, mask, variance, mask_planes=planes,
        header={"INSTRUME": "LSSTCam", "CAMERA": "lsstcam", "DETNAME": "R22_S11",
                "DETECTOR": 94, "VISIT": 2024110100123},
        metadata={"LSST ISR AMPOFFSET PEDESTAL C10": 1.25,
                  "LSST ISR AMPOFFSET PEDESTAL SUBTRACTED": True},
        compress=compress,
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.fits"]  # no temp file left
    info = inspect_file(path)
    assert (info.kind, info.camera, info.detector, info.detector_id, info.visit) == (
        "exposure", "lsstcam", "R22_S11", 94, 2024110100123)
    assert info.compressed == (compress is not None)
    assert info.mask_planes == planes
    data = read_exposure(path, detector=det)
    assert data.detector == det
    assert data.image.dtype == np.float32 and data.image.dtype.isnative
    if compress == "rice":
        assert np.abs(data.image - image).max() < 1.0  # quantized floats
    else:
        np.testing.assert_array_equal(data.image, image)
    np.testing.assert_array_equal(data.mask, mask)
    np.testing.assert_array_equal(data.variance, variance)
    with fits.open(path) as hdul:
        assert hdul[0].header["HIERARCH LSST ISR AMPOFFSET PEDESTAL C10"] == 1.25
        assert hdul[0].header["HIERARCH LSST ISR AMPOFFSET PEDESTAL SUBTRACTED"] is True
        assert [h.header.get("EXTTYPE") for h in hdul[1:4]] == ["IMAGE", "MASK", "VARIANCE"]


def test_full_size_lsstcam_file_resolves_from_header(tmp_path):
    det = get_camera("lsstcam")["R22_S11"]
    path = write_exposure(tmp_path / "full.fits", np.zeros(det.shape, np.float32),
                          header={"INSTRUME": "LSSTCam", "DETNAME": "R22_S11", "VISIT": 7})
    data = read_exposure(path)
    assert data.detector == det and data.visit == 7 and data.info.camera == "lsstcam"


def test_write_refuses_overwrite_and_is_atomic(tmp_path):
    path = tmp_path / "x.fits"
    write_exposure(path, np.zeros((8, 12), np.float32))
    before = path.read_bytes()
    with pytest.raises(InputError, match=r"refusing to overwrite"):
        write_exposure(path, np.ones((8, 12), np.float32))
    assert path.read_bytes() == before
    with pytest.raises(InputError, match=r"mask shape"):
        write_exposure(path, np.ones((8, 12)), mask=np.zeros((3, 3)), overwrite=True)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.fits"]
    write_exposure(path, np.ones((8, 12), np.float32), overwrite=True)
    assert read_exposure(path, detector=_small_detector()).image.sum() == 96
    with pytest.raises(InputError, match=r"is a directory"):
        write_exposure(tmp_path, np.ones((8, 12)))


def test_written_geometry_is_read_back_without_camera(tmp_path):
    det = _small_detector("mine", det_id=3)
    path = write_exposure(tmp_path / "g.fits", np.arange(96, dtype=np.float32).reshape(8, 12),
                          detector=det, header={"VISIT": 5})
    info = inspect_file(path)
    assert info.camera is None and info.detector == "mine" and info.detector_id == 3
    assert resolve_detector(info) == det
    assert read_exposure(path).detector == det


def test_lsst_metadata_comments_become_card_comments(tmp_path):
    from ampoffset_dask import AmpOffsetConfig, measure_detector
    from ampoffset_dask.algorithm.metadata import lsst_metadata_comments
    from ampoffset_dask.simulate import simulate_detector

    det = _small_detector("R22_S11", amp_w=40, amp_h=30, nx=2, ny=2)
    sim = simulate_detector(det, seed=3, n_stars=0, n_cosmic_rays=0, n_bad_columns=0,
                            n_saturated=0)
    m = measure_detector(sim.image, sim.mask, det,
                         AmpOffsetConfig(amp_edge_width=8, amp_edge_inset=2,
                                         do_background=False, do_detection=False))
    meta = lsst_metadata_comments(m, applied=True)
    path = write_exposure(tmp_path / "c.fits", sim.image, metadata=meta, detector=det)
    header = fits.getheader(path, 0)
    for key, (value, comment) in meta.items():
        card = f"HIERARCH {key}"
        assert header[card] == value
        # FITS cards are 80 characters: a long comment is cut, never the value
        assert header.comments[card] and comment.startswith(header.comments[card])
    assert header["HIERARCH LSST ISR AMPOFFSET PEDESTAL SUBTRACTED"] is True


def test_a_replaced_file_keeps_its_mode_and_is_on_disk_before_its_name(tmp_path, monkeypatch):
    """In place, the corrected file took the default mode (0600 became 0644: a private
    file world-readable) and was renamed over the original without being flushed, so a
    crash could leave a truncated file under the original's name."""
    import os
    import stat

    path = tmp_path / "x.fits"
    write_exposure(path, np.zeros((8, 12), np.float32))
    os.chmod(path, 0o600)
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", str(src)))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    write_exposure(path, np.ones((8, 12), np.float32), overwrite=True)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    (_, synced), (_, renamed), (_, folder) = events
    assert synced == renamed and folder == str(tmp_path)  # the file, then the folder entry
    assert read_exposure(path, detector=_small_detector()).image.sum() == 96
    events.clear()
    write_exposure(tmp_path / "new.fits", np.ones((8, 12), np.float32))  # a new file
    assert [e for e, _ in events] == ["replace"]
