"""Time per full-size LSSTCam ITL detector for measure_detector, per kernel path.

Builds a 4072x4000 float32 ITL detector (sky, gradient, stars, cosmic rays, bad columns,
noise, per-amp pedestals) and, for each kernel path (numpy reference, numba), prints the
median time of the default configuration and of edges only (``doBackground=False,
doDetection=False``) and their ratio to ``scipy.ndimage.gaussian_filter(image, 2)`` on the
same image. The filter is timed interleaved with the measurements in this process, so the
ratios hold on a busy machine where absolute seconds do not; ratios of thread CPU time are
printed too (the steadiest figure when other processes compete for the cores). Also
printed: peak traced memory relative to the image, and the first-call cost of the compiled
kernels in a fresh process (compilation with an empty cache, then a load from the on-disk
cache).

Single-threaded (BLAS and OpenMP pools pinned to one thread), as a dask worker runs it.

With ``--profile``, instead of timing, prints where the time goes (cProfile of three calls
per configuration and kernel path, in this process): the share of each part of
`measure_detector`, LSST's work and the diagnostics beside it.

Run: ``python benchmarks/bench_detector.py [--repeat 5] [--kernels numpy numba] [--profile]``
"""

from __future__ import annotations

import os

# Single-threaded: pin the BLAS pools before numpy loads.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import cProfile  # noqa: E402
import pstats  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402

import numpy as np  # noqa: E402
from scipy.ndimage import gaussian_filter  # noqa: E402

from ampoffset_dask import AmpOffsetConfig, get_camera, measure_detector  # noqa: E402
from ampoffset_dask.algorithm import measure as measure_module  # noqa: E402
from ampoffset_dask.algorithm.kernels import numba_available, use_kernels  # noqa: E402
from ampoffset_dask.simulate import simulate_detector  # noqa: E402

# Run in a fresh interpreter: seconds of the first and of the second measure_detector call
# on a small detector with the numba kernels (the difference is compile or cache-load time).
_FIRST_CALL = """
import time
t0 = time.perf_counter()
from ampoffset_dask import AmpOffsetConfig, get_camera, measure_detector
from ampoffset_dask.algorithm.kernels import set_kernels
from ampoffset_dask.simulate import scale_detector, simulate_detector
set_kernels("numba")
det = scale_detector(get_camera("lsstcam")["R02_S02"], 0.1)
sim = simulate_detector(det, seed=1)
t1 = time.perf_counter()
measure_detector(sim.image, sim.mask, det, AmpOffsetConfig())
t2 = time.perf_counter()
measure_detector(sim.image, sim.mask, det, AmpOffsetConfig())
t3 = time.perf_counter()
print(t1 - t0, t2 - t1, t3 - t2)
"""


def first_call_cost() -> tuple[float, float]:
    """Extra seconds of the first call in a new process: empty cache, then warm cache."""
    costs = []
    with tempfile.TemporaryDirectory(prefix="ampoffset-numba-cache-") as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        for _ in range(2):
            out = subprocess.run([sys.executable, "-c", _FIRST_CALL], env=env, check=True,
                                 capture_output=True, text=True).stdout.split()
            _, first, second = map(float, out)
            costs.append(first - second)
    return costs[0], costs[1]


def _timed(fn) -> tuple[float, float]:
    """Wall and thread CPU seconds of ``fn()``."""
    c0 = time.thread_time()
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0, time.thread_time() - c0


def bench_path(kernels: str, image: np.ndarray, mask: np.ndarray, detector, configs: dict,
               repeat: int) -> dict:
    """Median seconds of each config and of the Gaussian filter, interleaved."""
    times: dict[str, list[tuple[float, float]]] = {label: [] for label in configs}
    times["gaussian_filter"] = []
    peaks = {}
    with use_kernels(kernels):
        for config in configs.values():
            measure_detector(image, mask, detector, config)  # warm-up (and compilation)
        for _ in range(repeat):
            times["gaussian_filter"].append(_timed(lambda: gaussian_filter(image, 2)))
            for label, config in configs.items():
                times[label].append(_timed(
                    lambda config=config: measure_detector(image, mask, detector, config)))
        for label, config in configs.items():
            # The thread's reused intermediate images are allocated again under the trace,
            # so the peak counts them.
            measure_module._SCRATCH.buffers.clear()
            tracemalloc.start()
            measure_detector(image, mask, detector, config)
            peaks[label] = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
    med = {label: statistics.median(w for w, _ in t) for label, t in times.items()}
    cpu = {label: statistics.median(c for _, c in t) for label, t in times.items()}
    g, gc = med["gaussian_filter"], cpu["gaussian_filter"]
    print(f"\n[{kernels}] gaussian_filter(image, 2): {g:.3f} s, {gc:.3f} CPU s "
          f"(medians of {repeat})")
    for label in configs:
        print(f"    {label:>10}: {med[label]:.3f} s per detector = "
              f"{med[label] / g:.2f}x gaussian_filter; CPU {cpu[label]:.3f} s = "
              f"{cpu[label] / gc:.2f}x; peak memory {peaks[label] / image.nbytes:.2f}x image")
    return {"wall": med, "cpu": cpu}


# (label, file, function): the parts of measure_detector whose cumulative time is shared out.
_PARTS = (
    ("read edge strips (LSST)", "measure.py", "_read_strips"),
    ("background (LSST)", "background.py", "subtract_background"),
    ("detection (LSST)", "measure.py", "_detect"),
    ("strip statistics (all; LSST's edge profiles among them)", "strips.py", "lines_stats"),
    ("offsets and clip (LSST)", "offsets.py", "measure_interfaces"),
    ("solve (LSST)", "solve.py", "solve_pedestals"),
    ("offset errors (diagnostic)", "uncertainty.py", "interface_offset_errors"),
    ("pedestal errors (diagnostic)", "uncertainty.py", "pedestal_errors"),
    ("gain diagnosis (diagnostic)", "gain.py", "gain_steps"),
    ("amp levels (diagnostic)", "gain.py", "amp_levels"),
)


def profile_path(kernels: str, image: np.ndarray, mask: np.ndarray, detector,
                 configs: dict) -> None:
    """Print the cProfile share of each part of measure_detector, per configuration."""
    with use_kernels(kernels):
        for label, config in configs.items():
            measure_detector(image, mask, detector, config)  # warm-up (and compilation)
            prof = cProfile.Profile()
            prof.enable()
            for _ in range(3):
                measure_detector(image, mask, detector, config)
            prof.disable()
            stats = pstats.Stats(prof).stats
            total = sum(v[3] for k, v in stats.items() if k[2] == "measure_detector")
            print(f"\n[{kernels}] {label}: {total / 3:.3f} s per detector under cProfile")
            for name, path, func in _PARTS:
                t = sum(v[3] for k, v in stats.items()
                        if k[0].endswith(os.sep + path) and k[2] == func)
                if t:
                    print(f"    {100 * t / total:5.1f} %  {name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--detector", default="R02_S02", help="an ITL detector of LSSTCam")
    parser.add_argument("--kernels", nargs="+", default=None,
                        help="kernel paths to time (default: numpy, and numba if installed)")
    parser.add_argument("--profile", action="store_true",
                        help="print where the time goes (cProfile shares) instead of timing")
    args = parser.parse_args()
    paths = args.kernels or (["numpy", "numba"] if numba_available() else ["numpy"])

    detector = get_camera("lsstcam")[args.detector]
    sim = simulate_detector(detector, seed=1)
    image, mask = sim.image, sim.mask
    print(f"detector {detector.name}: {image.shape[1]}x{image.shape[0]} float32, "
          f"{image.nbytes / 2**20:.1f} MiB; 1-min load average {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} cores")
    configs = {
        "default": AmpOffsetConfig(),
        "edges-only": AmpOffsetConfig(do_background=False, do_detection=False),
    }
    if args.profile:
        for k in paths:
            profile_path(k, image, mask, detector, configs)
        return
    results = {k: bench_path(k, image, mask, detector, configs, args.repeat) for k in paths}
    if "numba" in paths:
        cold, warm = first_call_cost()
        print(f"\n[numba] first call in a new process: +{cold:.2f} s with an empty cache "
              f"(compilation), +{warm:.2f} s from the on-disk cache (once per worker process)")
    if len(results) == 2:
        for kind in ("wall", "cpu"):
            a, b = results["numpy"][kind], results["numba"][kind]
            print(f"numba vs numpy ({kind} time): default {a['default'] / b['default']:.2f}x "
                  f"faster, edges-only {a['edges-only'] / b['edges-only']:.2f}x")
    truth = np.asarray(sim.pedestals)
    result = measure_detector(image, mask, detector, configs["default"])
    rms = float(np.sqrt(np.mean((result.pedestals - (truth - truth.mean())) ** 2)))
    print(f"pedestal RMS error vs injected (default config): {rms:.3f} ADU")


if __name__ == "__main__":
    main()
