"""Readers of the reference cases in ../shared/golden (read in place, not copied)."""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

import numpy as np

from ampoffset_dask import Amplifier, AmpOffsetConfig, Detector

#: The reference data: ``../shared`` beside the repository, or ``$AMPOFFSET_SHARED``.
SHARED = Path(os.environ.get("AMPOFFSET_SHARED")
              or Path(__file__).resolve().parents[2] / "shared")
GOLDEN = SHARED / "golden"
#: What the tests read from it (checked once, before collection, by conftest.py).
SHARED_FOLDERS = ("golden", "cameras", "realdata")


def lsst_fixture() -> dict:
    return json.loads((GOLDEN / "lsst_test_ampoffset.json").read_text())


def lsst_detector(fixture: dict | None = None) -> Detector:
    fx = fixture or lsst_fixture()
    amps = tuple(
        Amplifier(a["name"], a["x0"], a["y0"], a["width"], a["height"])
        for a in fx["amps_in_detector_order"]
    )
    d = fx["detector"]
    return Detector(d["name"], d["width"], d["height"], amps)


def lsst_values(kind: str) -> np.ndarray:
    if kind == "symmetric":
        return np.linspace(-2.5, 2.5, 8)
    if kind == "random":
        return np.random.RandomState(seed=1746).uniform(-2.5, 2.5, 8)
    return np.array([5, 1, 3, -4, 30, 25, 22, 27], dtype=float)


def lsst_image(kind: str, background: str | None = None) -> np.ndarray:
    """LSST's buildExposure: per-amp constants, optional constant or ramp background."""
    det = lsst_detector()
    image = np.zeros(det.shape, dtype=np.float32)
    for amp, value in zip(det.amplifiers, lsst_values(kind), strict=True):
        image[amp.slices] = value
    if background in ("constant", "ramp"):
        image += np.float32(100)
    if background == "ramp":
        profile = np.interp(range(det.height), (0, det.height - 1), (0.0, 100.0))
        image[:] = (image.astype(np.float64) + profile[:, None]).astype(np.float32)
    return image


def lsst_config(kind: str, *, background: bool, weighted: bool) -> AmpOffsetConfig:
    cfg = AmpOffsetConfig(
        do_background=background, do_detection=background, amp_edge_width=12,
        do_apply_amp_offset=True, apply_weights=weighted,
    )
    if kind == "artificial":
        cfg.amp_edge_max_offset = 50.0
    if kind == "random" and background:
        cfg.amp_edge_min_frac = 0.1
    return cfg


def mini_itl() -> tuple[np.ndarray, np.ndarray, dict, Detector, dict]:
    """Image, mask, mask planes, detector and expectations of mini_itl.fits.gz."""
    from astropy.io import fits

    expected = json.loads((GOLDEN / "mini_itl_expected.json").read_text())
    with fits.open(GOLDEN / expected["file"]) as hdul:
        image = hdul["IMAGE"].data.astype(np.float32)
        mask = hdul["MASK"].data.astype(np.int32)
        planes = {
            k[3:]: int(v) for k, v in hdul["MASK"].header.items() if k.startswith("MP_")
        }
    amps = tuple(
        Amplifier(a["name"], a["x0"], a["y0"], a["width"], a["height"])
        for a in expected["amps_in_detector_order"]
    )
    h, w = expected["shape"]
    return image, mask, planes, Detector("mini_itl", w, h, amps), expected


@functools.lru_cache(maxsize=2)
def full_size_simulation(name: str, seed: int = 7):
    """A simulated full-size LSSTCam detector (`simulate_detector`), built once per test
    process (~1.5 CPU s each) for the tests that compare both kernel paths on it; its arrays
    are read-only so no test can change what the next one sees."""
    from ampoffset_dask import get_camera
    from ampoffset_dask.simulate import simulate_detector

    sim = simulate_detector(get_camera("lsstcam")[name], seed=seed)
    for array in (sim.image, sim.mask):
        array.flags.writeable = False
    return sim


def noise_free_three_amps() -> tuple[Detector, np.ndarray]:
    """Amps A | B | C of a 60x26 detector: A constant, B constant but for its top rows
    (noise-free edges whose differences all get clipped: the A-B interface has no clipped
    mean, a NaN raw offset), C 3 ADU above B with noise. Measure it with
    ``ampEdgeInset=2, ampEdgeWidth=8`` and no background or detection."""
    from ampoffset_dask.geometry import detector_from_boxes

    det = detector_from_boxes("D", 60, 26, [("A", 0, 0, 20, 26), ("B", 20, 0, 20, 26),
                                            ("C", 40, 0, 20, 26)])
    rng = np.random.default_rng(182)
    k = int(rng.integers(1, 14))
    image = np.zeros((26, 60), np.float32)
    image[:, :20] = np.float32(rng.choice([0.0, 0.1, 0.3, 1.7, 1e3 / 3]))
    image[26 - k:, 20:40] = rng.normal(0, 1, k).astype(np.float32)[:, None]
    image[:, 40:] = np.random.default_rng(5).normal(3, 0.5, (26, 20)).astype(np.float32)
    return det, image
