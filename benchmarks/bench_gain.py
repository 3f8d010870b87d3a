"""Gain-step diagnosis: detection power and false-positive rate on simulated detectors.

For each illumination (sky images at several levels with the simulator's few-per-cent
gradients, and a flat-like exposure whose level changes by 20 % across the detector), one
amp (C15) gets a relative gain error ``g``; the table gives the fraction of that amp's
interfaces flagged ``gain_like`` and, for ``g = 0`` (purely additive pedestals), the
fraction of all interfaces flagged (false positives). The smallest ``g`` flagged at >= 90 %
is printed per illumination.

Run: ``python benchmarks/bench_gain.py [--seeds 5] [--scale 0.25] [--detector R02_S02]``
"""

from __future__ import annotations

import argparse

import numpy as np

from ampoffset_dask import AmpOffsetConfig, get_camera, measure_detector
from ampoffset_dask.simulate import scale_detector, simulate_detector

GAINS = (0.0, 0.005, 0.01, 0.02, 0.05, 0.1)
ILLUMINATIONS = {
    "sky 300": {"sky": 300.0},
    "sky 1200": {"sky": 1200.0},
    "sky 3000": {"sky": 3000.0},
    "flat 10000, 20% gradient": {"sky": 10000.0, "sky_gradient": 0.0, "flat_gradient": 0.2,
                                 "n_stars": 0, "n_saturated": 0},
}


def _flat_sky(level: float, gradient: float, det):
    h, w = det.shape

    def sky(y, x):
        return (level * (1.0 + gradient * (x / w - 0.5)) * (1.0 + gradient * (y / h - 0.5))
                ).astype(np.float32)

    return sky


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--detector", default="R02_S02")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--scale", type=float, default=0.25)
    args = parser.parse_args()
    camera = get_camera("lsstcam")
    info = camera.info(args.detector)
    det = scale_detector(camera[args.detector], args.scale)
    target = det.amp_names.index("C15")
    print(f"{det.name} at scale {args.scale} ({det.width}x{det.height}), {args.seeds} seeds; "
          "fraction of C15's interfaces flagged gain_like (g = 0: of all interfaces)")
    print(f"{'illumination':26s} " + " ".join(f"g={g:<6g}" for g in GAINS))
    for label, options in ILLUMINATIONS.items():
        opts = dict(options)
        flat = opts.pop("flat_gradient", None)
        if flat is not None:
            opts["sky"] = _flat_sky(opts["sky"], flat, det)
            config = AmpOffsetConfig.from_preset("cp-flat")
        else:
            config = AmpOffsetConfig()
        row = []
        for g in GAINS:
            errors = np.zeros(len(det))
            errors[target] = g
            hit, total = 0, 0
            for seed in range(args.seeds):
                sim = simulate_detector(det, seed=[seed, 5], gain=info["amp_gain"],
                                        read_noise=info["amp_read_noise"], gain_errors=errors,
                                        **opts)
                m = measure_detector(sim.image, sim.mask, det, config)
                for itf in m.interfaces:
                    if g == 0 or "C15" in (itf.amp_a, itf.amp_b):
                        hit += itf.gain_like
                        total += 1
            row.append(hit / total)
        detected = [g for g, f in zip(GAINS, row, strict=True) if g > 0 and f >= 0.9]
        smallest = f"{min(detected):g}" if detected else f"> {GAINS[-1]:g}"
        print(f"{label:26s} " + " ".join(f"{f:<8.3f}" for f in row)
              + f"  smallest g at 90%: {smallest}", flush=True)


if __name__ == "__main__":
    main()
