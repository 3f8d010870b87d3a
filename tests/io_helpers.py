"""Helpers shared by the file tests: real test files, small cameras, written detectors."""

from __future__ import annotations

import numpy as np
from golden import SHARED

REAL = SHARED / "realdata"


def write_stepped_lsstcam(path, name: str, visit: int, step: float, noise: float = 0.0,
                          seed: int = 0):
    """Write a full-size LSSTCam detector whose amp i sits ``i * step`` above a 1000 ADU sky.

    Returns ``(path, image, detector)``.
    """
    from ampoffset_dask import get_camera
    from ampoffset_dask.io.fits import write_exposure

    det = get_camera("lsstcam")[name]
    if noise:
        image = np.random.default_rng(seed).normal(1000.0, noise, det.shape).astype(np.float32)
    else:
        image = np.full(det.shape, 1000.0, dtype=np.float32)
    for i, amp in enumerate(det):
        image[amp.slices] += step * i
    path = write_exposure(path, image,
                          header={"CAMERA": "lsstcam", "DETNAME": name, "VISIT": visit})
    return path, image, det


def kast_camera_doc() -> dict:
    """The Lick Kast blue CCD: 2 amps side by side, serial overscan after the data."""
    return {
        "name": "kast_blue",
        "amp_layouts": {
            "kast": {
                "detector_size": [2048, 350],
                "amps": [
                    # 1-based data columns 1-1024 / 1025-2048, overscan 2050-2080 / 2081-2111
                    {"name": "L", "bbox": [0, 0, 1024, 350], "raw_data_bbox": [0, 0, 1024, 350],
                     "raw_serial_overscan_bbox": [2049, 0, 31, 350]},
                    {"name": "R", "bbox": [1024, 0, 1024, 350],
                     "raw_data_bbox": [1024, 0, 1024, 350],
                     "raw_serial_overscan_bbox": [2080, 0, 31, 350]},
                ],
            }
        },
        "detectors": [{"id": 0, "name": "kast_blue", "physical_type": "kast"}],
    }


def tiny_raw_camera_doc() -> dict:
    """A 2x2-amp camera with LSST-style per-amp Segment HDUs, flips and overscan."""
    amps = []
    for name, ix, iy, hdu in (("C10", 0, 1, 1), ("C11", 1, 1, 2), ("C01", 1, 0, 3),
                              ("C00", 0, 0, 4)):
        amps.append({
            "name": name, "hdu": hdu, "bbox": [ix * 6, iy * 4, 6, 4],
            "raw_flip_x": ix == 1, "raw_flip_y": iy == 1,
        })
    return {
        "name": "tinycam",
        "amp_layouts": {
            "T": {
                "detector_size": [12, 8],
                "raw_amp_geometry": {"rawDataBBox": [2, 0, 6, 4],
                                     "rawSerialOverscanBBox": [8, 0, 3, 4]},
                "amps": amps,
            }
        },
        "detectors": [{"id": 7, "name": "R00_S00", "physical_type": "T"}],
    }


def _section(x0: int, y0: int, w: int, h: int) -> str:
    return f"[{x0 + 1}:{x0 + w},{y0 + 1}:{y0 + h}]"


def decam_raw_hdu(name: str, sky: float, steps: dict[str, float], bias: dict[str, float]):
    """One DECam raw CCD extension (2160x4146 uint16), boxes from the camera description."""
    from astropy.io import fits

    from ampoffset_dask import get_camera

    cam = get_camera("decam")
    det = cam[name]
    data = np.zeros((4146, 2160), np.float64)
    header = fits.Header()
    for amp, raw in zip(det, cam.raw_amps(name), strict=True):
        x0, y0, w, h = raw.raw_data_bbox
        ox, oy, ow, oh = raw.raw_serial_overscan_bbox
        rows = bias[amp.name] + 0.5 * np.arange(h) / h  # a slow bias drift along the readout
        data[y0:y0 + h, x0:x0 + w] = sky + steps[amp.name] + rows[:, None]
        data[oy:oy + oh, ox:ox + ow] = rows[:, None]
        header[f"DATASEC{amp.name}"] = _section(x0, y0, w, h)
        header[f"BIASSEC{amp.name}"] = _section(ox, oy, ow, oh)
        header[f"CCDSEC{amp.name}"] = _section(amp.x0, amp.y0, amp.width, amp.height)
        header[f"GAIN{amp.name}"] = 4.0
    header["DETSIZE"] = "[1:29400,1:29050]"
    header["DETECTOR"] = "S3-111_107419-8-3"
    header["CCDNUM"] = det.id
    header["DETPOS"] = name
    header["BUNIT"] = "adu"
    hdu = fits.CompImageHDU(np.round(data).astype(np.uint16), header=header, name=name,
                            compression_type="RICE_1")
    return hdu


def decam_primary(expnum: int):
    """A DECam raw primary header (keywords as DECam writes them)."""
    from astropy.io import fits

    primary = fits.PrimaryHDU()
    for key, value in (("PROCTYPE", "RAW"), ("PRODTYPE", "image"), ("INSTRUME", "DECam"),
                       ("TELESCOP", "CTIO 4.0-m telescope"), ("EXPNUM", expnum),
                       ("OBSID", "ct4m20130213t090140"), ("OBSTYPE", "object"),
                       ("DATE-OBS", "2013-02-13T09:01:40.966998"), ("EXPTIME", 30.0)):
        primary.header[key] = value
    return primary
