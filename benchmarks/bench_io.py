"""I/O speed on a full-size LSSTCam detector file (page cache warm).

Prints:

1. full open + read of the file (`read_exposure`: headers, image, mask, variance into native
   arrays) against ``numpy.fromfile`` of the same bytes (target <= 1.5x);
2. edges-only read (the amp edge strips of image and mask that `measure_detector` reads with
   background and detection off) against a full read of the same two planes (target
   <= 0.35x): through `LazyPlane` inside `map_once` (each plane mapped once, as a detector
   job's edges-only measurement reads), the same with a mapping per strip (as a lazy
   Dataset's chunk tasks read), and strip by strip through the Dataset as `measure_detector`
   does (each strip a separate dask computation, so dask's per-computation overhead shows);
   plus `measure_detector` end to end on the lazy Dataset and `measure_visit` on the same
   Dataset (both read an untouched Dataset's planes through their `LazyPlane`s; the visit
   task inside `map_once`), on
   `open_lazy` planes (no dask, inside `map_once`) and after a full `read_exposure`, and a
   whole edges-only detector job (`process_file`);
3. the same reads for a RICE tile-compressed copy (128x128 tiles: strips decompress only the
   tiles they touch) against decompressing both planes;
4. reading an LSSTCam raw (the real ITL raw of ``../shared/realdata``, its pixels replaced by
   noise: 16 int32 segments assembled into the detector, per-row overscan subtracted), CPU
   time, and its header inspection alone.

Usage::

    python benchmarks/bench_io.py [--repeat 5] [--detector R22_S11] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from ampoffset_dask import AmpOffsetConfig, measure_detector
from ampoffset_dask.algorithm.edges import strip_slices
from ampoffset_dask.cameras import get_camera
from ampoffset_dask.io.fits import (
    amp_sources,
    inspect_file,
    open_lazy,
    read_exposure,
    resolve_detector,
    write_exposure,
)
from ampoffset_dask.io.sections import LazyPlane, _read_full, map_once
from ampoffset_dask.io.xarray import open_exposure
from ampoffset_dask.pipeline import measure_visit
from ampoffset_dask.pipeline.detector_job import process_file


def _time(fn, repeat: int, clock=time.perf_counter) -> float:
    """Best of ``repeat`` runs after a warm-up (the least disturbed by other processes);
    ``clock=time.process_time`` for CPU time."""
    fn()  # warm-up (page cache, imports)
    times = []
    for _ in range(repeat):
        t0 = clock()
        fn()
        times.append(clock() - t0)
    return min(times)


def _strips(detector, config):
    """The (rows, cols) strips measure_detector reads: both sides of every interface."""
    grid = detector.grid(config.apply_weights)
    out = []
    for itf in grid.interfaces:
        a, b = detector.amplifiers[itf.a], detector.amplifiers[itf.b]
        out.append(strip_slices(a, itf.side, config.amp_edge_inset, config.amp_edge_width))
        out.append(strip_slices(b, (itf.side + 2) % 4, config.amp_edge_inset,
                                config.amp_edge_width))
    return out


def _edges_only(path, strips):
    """Strips of image and mask through the lazy Dataset, one read each (measure_detector's
    access pattern: every strip is a small dask computation)."""
    ds = open_exposure(path)
    image, mask = ds["image"].data, ds["mask"].data
    n = 0
    for sl in strips:
        n += np.asarray(image[sl]).size + np.asarray(mask[sl]).size
    return n


def _edges_io_layer(path, strips, once=True):
    """The same strips read by `LazyPlane` objects (no dask): inside `map_once` (``once``)
    as a detector job reads them, else each read mapping its plane anew."""
    info = inspect_file(path)
    det = resolve_detector(info)
    sources = amp_sources(info, det)
    image = LazyPlane(path, det.shape, np.float32, sources)
    mask = LazyPlane(path, det.shape, np.int32,
                     tuple(dataclasses.replace(s, hdu=info.mask_hdu) for s in sources))
    with map_once() if once else contextlib.nullcontext():
        return sum(image[sl].size + mask[sl].size for sl in strips)


def _full_two_planes(path):
    info = inspect_file(path)
    image = _read_full(info.path, info.image_hdu, np.float32)[0]
    mask = _read_full(info.path, info.mask_hdu, np.int32)[0]
    return image.size + mask.size


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--detector", default="R22_S11")
    parser.add_argument("--dir", default=None, help="folder for the temporary files")
    args = parser.parse_args(argv)

    det = get_camera("lsstcam")[args.detector]
    config = AmpOffsetConfig(do_background=False, do_detection=False)
    rng = np.random.default_rng(0)
    image = rng.normal(1000.0, 10.0, det.shape).astype(np.float32)
    mask = (rng.random(det.shape) < 0.01).astype(np.int32)
    variance = np.full(det.shape, 100.0, np.float32)
    header = {"CAMERA": "lsstcam", "DETNAME": det.name, "DETECTOR": det.id, "VISIT": 1}

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        plain = write_exposure(Path(tmp) / "plain.fits", image, mask, variance, header=header)
        rice = write_exposure(Path(tmp) / "rice.fits", image, mask, variance, header=header,
                              compress="rice")
        size = plain.stat().st_size
        print(f"detector {det.name} {det.width}x{det.height}, {len(det)} amps; "
              f"file {size / 1e6:.1f} MB (RICE copy {rice.stat().st_size / 1e6:.1f} MB); "
              f"best of {args.repeat}")

        t_np = _time(lambda: np.fromfile(plain, dtype=np.uint8), args.repeat)
        t_full = _time(lambda: read_exposure(plain), args.repeat)
        print(f"1. numpy.fromfile (all bytes)      {t_np * 1e3:8.1f} ms")
        print(f"   read_exposure (open + 3 planes) {t_full * 1e3:8.1f} ms   "
              f"ratio {t_full / t_np:.2f}x (target <= 1.5x)")

        strips = _strips(det, config)
        n_edges = _edges_io_layer(plain, strips)
        n_full = _full_two_planes(plain)
        t_two = _time(lambda: _full_two_planes(plain), args.repeat)
        t_io = _time(lambda: _edges_io_layer(plain, strips), args.repeat)
        t_each = _time(lambda: _edges_io_layer(plain, strips, once=False), args.repeat)
        t_edges = _time(lambda: _edges_only(plain, strips), args.repeat)
        print(f"2. full read, image + mask         {t_two * 1e3:8.1f} ms   ({n_full} pixels)")
        print(f"   edges-only read, map_once       {t_io * 1e3:8.1f} ms   ({n_edges} pixels, "
              f"{n_edges / n_full:.1%})   ratio {t_io / t_two:.2f}x (target <= 0.35x)")
        print(f"   edges-only read, map per strip  {t_each * 1e3:8.1f} ms   ratio "
              f"{t_each / t_two:.2f}x")
        print(f"   edges-only via lazy Dataset     {t_edges * 1e3:8.1f} ms   ratio "
              f"{t_edges / t_two:.2f}x ({2 * len(strips)} separate dask computations)")
        t_measure = _time(lambda: measure_detector(open_exposure(plain), None, None, config),
                          args.repeat)
        print(f"   measure_detector, edges only    {t_measure * 1e3:8.1f} ms   (lazy Dataset, "
              "read through its LazyPlanes; incl. offsets and solve)")
        t_visit = _time(lambda: measure_visit({"d": open_exposure(plain)}, config=config,
                                              scheduler="sync"), args.repeat)
        print(f"   measure_visit, edges only       {t_visit * 1e3:8.1f} ms   (the same Dataset, "
              "inside map_once)")

        def measure_lazy(path):
            lazy = open_lazy(path)
            with map_once():
                return measure_detector(lazy.image, lazy.mask, lazy.detector, config,
                                        lazy.mask_planes)

        def measure_full(path):
            exp = read_exposure(path)
            return measure_detector(exp.image, exp.mask, exp.detector, config, exp.mask_planes)

        t_lazy = _time(lambda: measure_lazy(plain), args.repeat)
        t_eager = _time(lambda: measure_full(plain), args.repeat)
        print(f"   measure_detector, edges only    {t_lazy * 1e3:8.1f} ms   (open_lazy, no dask) "
              f"vs {t_eager * 1e3:.1f} ms after read_exposure: ratio {t_lazy / t_eager:.2f}x")
        t_job = _time(lambda: process_file(str(plain), None, config), args.repeat)
        print(f"   detector job, edges only        {t_job * 1e3:8.1f} ms   (`process_file`: "
              "what each task of an edges-only `process` run does)")

        t_rice_full = _time(lambda: _full_two_planes(rice), args.repeat)
        t_rice_io = _time(lambda: _edges_io_layer(rice, strips), args.repeat)
        t_rice_edges = _time(lambda: _edges_only(rice, strips), args.repeat)
        print(f"3. RICE full decompression, 2 planes {t_rice_full * 1e3:6.1f} ms")
        print(f"   RICE edges-only, chunk reads    {t_rice_io * 1e3:8.1f} ms   "
              f"ratio {t_rice_io / t_rice_full:.2f}x")
        print(f"   RICE edges-only via Dataset     {t_rice_edges * 1e3:8.1f} ms   "
              f"ratio {t_rice_edges / t_rice_full:.2f}x")

        raw = _noisy_raw(Path(tmp), rng)
        if raw is None:
            print(f"4. (no LSSTCam raw at {RAW}: set AMPOFFSET_SHARED)")
        else:
            cpu = time.process_time
            t_raw = _time(lambda: read_exposure(raw, variance=False), args.repeat, cpu)
            t_head = _time(lambda: inspect_file(raw), args.repeat, cpu)
            print(f"4. LSSTCam raw, read + assemble  {t_raw * 1e3:8.1f} ms CPU   (16 segments, "
                  f"per-row overscan; of which headers {t_head * 1e3:.1f} ms)")
    return 0


SHARED = Path(os.environ.get("AMPOFFSET_SHARED", Path(__file__).resolve().parents[2] / "shared"))
RAW = SHARED / "realdata" / "lsstcam_bot_spots" / "itl_spot.fits.gz"


def _noisy_raw(folder: Path, rng: np.random.Generator) -> Path | None:
    """The real ITL raw's layout (headers, 16 segments with overscan), noise for pixels."""
    from astropy.io import fits

    if not RAW.exists():
        return None
    with fits.open(RAW) as hdul:
        hdul = fits.HDUList([h.copy() for h in hdul])
    for hdu in hdul[1:]:
        if isinstance(hdu, fits.ImageHDU) and hdu.data is not None:
            hdu.data = np.round(rng.normal(20000.0, 9.0, hdu.data.shape)).astype(np.int32)
    out = folder / "raw.fits"
    hdul.writeto(out)
    return out



if __name__ == "__main__":
    raise SystemExit(main())
