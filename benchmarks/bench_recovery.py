"""Pedestal recovery: RMS error of measured vs injected pedestals on simulated detectors.

Simulates full-size LSSTCam detectors (ITL by default) with `ampoffset_dask.simulate`
(sky ~1200 ADU, gradients, stars, cosmic rays, bad columns, saturated stars, photon + read
noise, per-amp pedestals of 1.5 ADU RMS), measures them with the default (LSST) configuration
and prints, per seed and overall, the RMS error of the recovered pedestals, the RMS of the
injected ones, and the slope of recovered vs injected.

Run: ``python benchmarks/bench_recovery.py [--detector R02_S02] [--seeds 3] [--sky 1200]
[--scale 1]``
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from ampoffset_dask import AmpOffsetConfig, get_camera, measure_detector
from ampoffset_dask.simulate import scale_detector, simulate_detector


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--camera", default="lsstcam")
    parser.add_argument("--detector", default="R02_S02",
                        help="detector name (R02_S02 is ITL, R22_S11 is E2V)")
    parser.add_argument("--seeds", type=int, default=3, help="independent simulations")
    parser.add_argument("--sky", type=float, default=1200.0, help="sky level (ADU)")
    parser.add_argument("--scale", type=float, default=1.0, help="detector size factor")
    args = parser.parse_args()

    camera = get_camera(args.camera)
    info = camera.info(args.detector)
    detector = scale_detector(camera[args.detector], args.scale)
    config = AmpOffsetConfig()
    print(f"{camera.name} {detector.name} ({info.get('physical_type', '?')}): "
          f"{detector.width}x{detector.height}, {len(detector)} amps, sky {args.sky:g} ADU, "
          "default config")
    measured, injected = [], []
    for seed in range(args.seeds):
        t0 = time.perf_counter()
        sim = simulate_detector(detector, seed=[seed, 1, detector.id or 0], sky=args.sky,
                                gain=info["amp_gain"], read_noise=info["amp_read_noise"],
                                saturation=info["amp_saturation"])
        t1 = time.perf_counter()
        result = measure_detector(sim.image, sim.mask, detector, config)
        t2 = time.perf_counter()
        err = result.pedestals - sim.pedestals
        print(f"  seed {seed}: RMS error {np.sqrt(np.mean(err ** 2)):.3f} ADU "
              f"(injected RMS {np.sqrt(np.mean(sim.pedestals ** 2)):.2f}), "
              f"max |error| {np.abs(err).max():.3f}; simulate {t1 - t0:.1f} s, "
              f"measure {t2 - t1:.1f} s")
        measured.append(result.pedestals)
        injected.append(sim.pedestals)
    p, t = np.concatenate(measured), np.concatenate(injected)
    slope = float(p @ t / (t @ t))
    print(f"overall: RMS error {np.sqrt(np.mean((p - t) ** 2)):.3f} ADU over {p.size} amps; "
          f"injected RMS {np.sqrt(np.mean(t ** 2)):.2f} ADU; slope recovered/injected "
          f"{slope:.3f}")


if __name__ == "__main__":
    main()
