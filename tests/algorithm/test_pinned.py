"""LSST's numbers of a simulated detector, pinned bit for bit.

``data/pinned_measurements.json`` holds the numbers of the numpy reference and of the numba
kernels (recorded with ``python tests/algorithm/test_pinned.py``). Any change to the
diagnostics (errors, gain diagnosis, levels) or to the speed of the hot path must leave
every pinned value identical, on both kernel paths, with two allowances for what does not
depend on this code:

- the detection threshold, a clipped standard deviation, is held within a few units in the
  last place: the clipped sums of large arrays are the one place where the summation order
  is free (the compiled ones are vectorised for the CPU at hand, the numpy ones follow the
  blocks of `stats.clipped_mean_var_usable`); the kept pixels, and so every mask, do not
  depend on it;
- the pedestals come out of LSST's least-squares solve (``np.linalg.lstsq``), which runs in
  the LAPACK and BLAS kernels the installed numpy selects for the processor: their last
  bits differ between processors (e.g. with and without AVX-512), so they are held to
  1e-12 ADU while the interface offsets going into the solve stay bit for bit.

The simulated image itself is the same on every machine (`ampoffset_dask.simulate` uses no
vectorised transcendental functions).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pytest

from ampoffset_dask import AmpOffsetConfig, get_camera, measure_detector
from ampoffset_dask.algorithm.kernels import use_kernels
from ampoffset_dask.simulate import scale_detector, simulate_detector

PINNED = Path(__file__).parent / "data" / "pinned_measurements.json"
CONFIGS = {
    "default": {},
    "edges-only": {"do_background": False, "do_detection": False},
}
FIELDS = ("offset_raw", "offset", "good_frac", "min_frac_fail", "max_offset_fail")


@functools.lru_cache(maxsize=1)
def _simulated():
    """A quarter-size ITL detector with a bright star at an amp boundary (detections and
    saturated pixels mask parts of the strips)."""
    camera = get_camera("lsstcam")
    det = scale_detector(camera["R02_S02"], 0.25)
    info = camera.info("R02_S02")
    sim = simulate_detector(det, seed=[4, 2], sky=900.0, gain=info["amp_gain"],
                            read_noise=info["amp_read_noise"],
                            bright_stars=[(det.amplifiers[2].x1 - 20.0, 400.0, 5e7)])
    return det, sim


def pinned_values(config: str) -> dict[str, list[float]]:
    """LSST's outputs of the simulated detector, as float lists."""
    det, sim = _simulated()
    m = measure_detector(sim.image, sim.mask, det, AmpOffsetConfig(**CONFIGS[config]))
    out = {"pedestals": [float(v) for v in m.pedestals],
           "scalars": [m.threshold, float(m.n_detected), m.masked_fraction]}
    for name in FIELDS:
        out[name] = [float(getattr(i, name)) for i in m.interfaces]
    return out


@pytest.mark.parametrize("kernels", ["numpy", "numba"])
@pytest.mark.parametrize("config", list(CONFIGS))
def test_lsst_numbers_are_pinned(config, kernels):
    expected = json.loads(PINNED.read_text())[kernels][config]
    with use_kernels(kernels):
        got = pinned_values(config)
    assert set(got) == set(expected)
    for name, values in expected.items():
        want = np.array([float.fromhex(v) for v in values])
        have = np.array(got[name])
        if name == "pedestals":
            np.testing.assert_allclose(have, want, rtol=0.0, atol=1e-12, err_msg=name)
            continue
        if name == "scalars":
            # The threshold (a clipped standard deviation) may move by a few units in its
            # last place with the order of its clipped sums (module docstring); every
            # other value stays exact.
            np.testing.assert_array_max_ulp(have[:1], want[:1], maxulp=8)
            have, want = have[1:], want[1:]
        # Bit for bit (NaN where the recording has NaN): array_equal, not allclose.
        np.testing.assert_array_equal(have, want, err_msg=name)


def record() -> None:
    """Write ``data/pinned_measurements.json`` from this code (hex floats, exact)."""
    out = {}
    for kernels in ("numpy", "numba"):
        with use_kernels(kernels):
            out[kernels] = {config: {name: [float(v).hex() for v in values]
                                     for name, values in pinned_values(config).items()}
                            for config in CONFIGS}
    PINNED.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    record()
