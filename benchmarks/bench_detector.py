"""Seconds per full-size LSSTCam ITL detector for measure_detector, single-threaded.

Builds a 4072x4000 float32 ITL detector (sky, gradient, stars, cosmic rays, bad columns,
noise, per-amp pedestals) and prints the median of 5 runs for the default configuration
and for edges only (``doBackground=False, doDetection=False``), plus peak traced memory
relative to the image size.

Run: ``python benchmarks/bench_detector.py [--repeat 5]``
"""

from __future__ import annotations

import os

# Single-threaded: pin the BLAS pools before numpy loads.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402

import numpy as np  # noqa: E402

from ampoffset_dask import AmpOffsetConfig, get_camera, measure_detector  # noqa: E402
from ampoffset_dask.simulate import simulate_detector  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--detector", default="R02_S02", help="an ITL detector of LSSTCam")
    args = parser.parse_args()

    detector = get_camera("lsstcam")[args.detector]
    sim = simulate_detector(detector, seed=1)
    image, mask = sim.image, sim.mask
    print(f"detector {detector.name}: {image.shape[1]}x{image.shape[0]} float32, "
          f"{image.nbytes / 2**20:.1f} MiB")
    configs = {
        "default": AmpOffsetConfig(),
        "edges-only": AmpOffsetConfig(do_background=False, do_detection=False),
    }
    for label, config in configs.items():
        measure_detector(image, mask, detector, config)  # warm-up
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            measure_detector(image, mask, detector, config)
            times.append(time.perf_counter() - t0)
        tracemalloc.start()
        measure_detector(image, mask, detector, config)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        print(f"{label:>10}: {statistics.median(times):.3f} s per detector "
              f"(median of {args.repeat}, min {min(times):.3f} s); "
              f"peak memory {peak / image.nbytes:.2f}x image size")
    truth = np.asarray(sim.pedestals)
    result = measure_detector(image, mask, detector, configs["default"])
    rms = float(np.sqrt(np.mean((result.pedestals - (truth - truth.mean())) ** 2)))
    print(f"pedestal RMS error vs injected (default config): {rms:.3f} ADU")


if __name__ == "__main__":
    main()
