"""``measure_detector``: the one entry point from pixels to pedestals.

Follows the order of LSST's ``AmpOffsetTask.run`` (ALGORITHM.md section 1.2): background,
detection, masking, edge profiles, interface offsets, least squares. Only the edge strips
feed the offsets, so the masks that matter there (EDGE border, grown detections) are built
on the strips alone; the full image is touched only by the background and the smoothing
that sets the detection threshold. With both switched off, only the strips are read from
the (possibly lazy) input arrays.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import math
import types
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np

from ..config import AmpOffsetConfig
from ..errors import ConfigError, GeometryError, InputError
from ..exposure import (
    as_exposure_parts,
    carries_mask,
    frame_pair,
    is_exposure_like,
    mask_words,
)
from ..geometry import Detector
from ..masks import DEFAULT_MASK_PLANES, mask_bits
from . import kernels
from .background import subtract_background
from .background_bias import with_background_bias
from .buffers import ThreadBuffers
from .detection import (
    detection_threshold,
    drop_faint_footprints,
    gaussian_kernel,
    grow,
    grow_radius,
    kernel_half_width,
    smooth,
)
from .edges import INSET_ZERO, strip_slices
from .gain import GainStep, amp_levels, gain_steps
from .offsets import InterfaceOffset, measure_interfaces, window_length
from .quality import undefined_cause
from .result import DetectorMeasurement, InterfaceResult
from .solve import right_hand_side, solve_pedestals
from .strips import StripBlock, lines_stats, strip_blocks
from .uncertainty import forced_errors, interface_offset_errors, pedestal_errors

__all__ = ["check_amp_geometry", "measure_detector"]

logger = logging.getLogger(__name__)


class _Scratch(ThreadBuffers):
    """Full-size buffers that one thread reuses from one detector to the next.

    A fresh 64 MB array costs ~7 ms of page faults when first written, as much as a
    compiled pass over it, and a fresh zeroed mask faults in a page wherever it is first
    read or written. Only intermediates go here (the background-subtracted and the
    smoothed image, the bad-pixel, statistics, detection and border masks), never
    anything returned; a nested measurement (the robust estimator's) gets fresh arrays. A
    thread keeps each buffer's bytes at the largest size it needed (two float32 images
    and four boolean masks: 2.5 images' worth).
    """

    def __init__(self) -> None:
        super().__init__()
        self.busy = False


_SCRATCH = _Scratch()


@contextlib.contextmanager
def _scratch() -> Iterator[Callable[..., np.ndarray]]:
    """``take(name, shape, dtype=float32)``: this thread's buffer ``name`` (uninitialised)
    for the duration of the ``with`` block (`ThreadBuffers.view`)."""
    local = _SCRATCH
    if local.busy:
        yield lambda name, shape, dtype=np.float32: np.empty(shape, dtype=dtype)
        return
    local.busy = True
    try:
        yield local.view
    finally:
        local.busy = False


#: Smallest background bin (pixels) `check_amp_geometry` accepts.
MIN_BACKGROUND_BIN = 4


def check_amp_geometry(detector: Detector, config: AmpOffsetConfig) -> None:
    """LSST's pre-flight checks of the amp size against the edge-strip configuration.

    Raises
    ------
    GeometryError
        When the amps do not tile the detector as a grid of equal boxes.
    ConfigError
        When the strip does not fit in the amp or a moving-average window is empty.
    """
    detector.check()
    amp = detector.amplifiers[0]
    short = min(amp.width, amp.height)
    if config.amp_edge_width >= short - 2 * config.amp_edge_inset:
        raise ConfigError(
            f"detector {detector.name!r}: ampEdgeWidth={config.amp_edge_width} must be smaller "
            f"than the short amp side ({short}) minus 2*ampEdgeInset "
            f"({2 * config.amp_edge_inset})"
        )
    if config.do_background:
        size = short * config.background_fraction_sample
        if size < MIN_BACKGROUND_BIN:
            # Smaller bins follow the pixels, steps and all: the background would remove
            # what is measured (and a sub-pixel bin grid can need terabytes).
            raise ConfigError(
                f"detector {detector.name!r}: backgroundFractionSample="
                f"{config.background_fraction_sample} gives background bins of {size:.3g} "
                f"pixels on {short}-pixel amps; they must be at least {MIN_BACKGROUND_BIN} "
                "pixels")
    if config.do_window_smoothing and config.amp_edge_inset > 0:
        # Only interfaces with data on both sides are smoothed; with ampEdgeInset 0 none has
        # (one of its strips is empty: `edges.strip_slices`).
        for length in sorted({i.length for i in detector.grid(config.apply_weights).interfaces}):
            if window_length(config.amp_edge_window_frac, length) < 1:
                raise ConfigError(
                    f"detector {detector.name!r}: ampEdgeWindowFrac={config.amp_edge_window_frac}"
                    f" gives an empty moving-average window on {length}-pixel interfaces"
                )


def measure_detector(
    image: Any,
    mask: Any = None,
    detector: Detector | None = None,
    config: AmpOffsetConfig | None = None,
    mask_planes: Mapping[str, int] | None = None,
    *,
    interface_estimator: Any = None,
) -> DetectorMeasurement:
    """Measure the amp pedestals of one detector exactly as LSST's AmpOffsetTask does.

    Parameters
    ----------
    image : array_like or exposure
        Assembled detector image ``(height, width)``: numpy, dask or xarray array (read as
        float32; a DataArray with ``y``/``x`` dimensions is put in the detector frame by
        them, as a Dataset's image is: transposed to ``(y, x)`` and sorted back by its
        coordinates; one with unlabelled dimensions is taken by position), or any exposure
        `ampoffset_dask.exposure.as_exposure_parts` accepts (our `Exposure`, an opened
        file, a Dataset from `ampoffset_dask.open_exposure`, an afw-like exposure); then
        ``mask``, ``detector`` and ``mask_planes`` default to its contents.
    mask : array_like of int, optional
        Mask bits; all zero when omitted. A DataArray is put in the detector frame as
        ``image`` is. Booleans mark the ``BAD`` plane (refused when ``mask_planes`` has
        none).
    detector : Detector
        Amp geometry, amps in detector order.
    config : AmpOffsetConfig, optional
        LSST's defaults when omitted.
    mask_planes : mapping, optional
        Plane name -> bit; afw's default dictionary when omitted.

    interface_estimator : callable, optional
        Internal hook of the ``"robust"`` estimator: ``f(res, stats_a, stats_b, config) ->
        (InterfaceOffset, err)`` (``stats_*`` the two strips' `StripStats`) replaces each
        interface's offset and error.

    Returns
    -------
    DetectorMeasurement
        Pedestals in amp order (positive = amp too bright) and per-interface diagnostics.
        The inputs are never modified.

    Raises
    ------
    GeometryError, ConfigError, InputError
        For a layout, configuration or array the algorithm cannot use.

    Examples
    --------
    Two 100x100 amps side by side; amp B sits 3 ADU above amp A:

    >>> import numpy as np
    >>> from ampoffset_dask import AmpOffsetConfig, measure_detector
    >>> from ampoffset_dask.geometry import detector_from_boxes
    >>> det = detector_from_boxes("D", 200, 100, [("A", 0, 0, 100, 100),
    ...                                           ("B", 100, 0, 100, 100)])
    >>> image = np.random.default_rng(1).normal(1000.0, 1.0, det.shape).astype(np.float32)
    >>> image[:, 100:] += 3.0
    >>> config = AmpOffsetConfig(amp_edge_width=16, do_background=False, do_detection=False)
    >>> m = measure_detector(image, None, det, config)
    >>> m.pedestals.round(1)  # zero mean; subtracting them levels the amps
    array([-1.5,  1.5])
    >>> [i.id for i in m.interfaces], m.masked_fraction
    (['A-B'], 0.0)
    """
    if is_exposure_like(image):
        parts = as_exposure_parts(image, mask_planes)
        if mask is None:
            mask = parts.mask
        elif parts.mask is not None and carries_mask(image):
            # a masked array's own masked pixels stay masked (BAD) beside the mask given
            name = detector.name if detector is not None else "?"
            mask = np.asarray(mask_words(mask, mask_planes, name)) | parts.mask
        image = parts.image
        detector = parts.detector if detector is None else detector
        mask_planes = parts.mask_planes if mask_planes is None else mask_planes
    if detector is None:
        raise InputError("measure_detector needs a detector (amp geometry)")
    # Pixels are taken by position: DataArrays labelled y/x are put in the detector frame
    # first, as a Dataset's planes are (a reversed or transposed one would swap pedestals).
    image, mask = frame_pair(image, mask, detector)
    # bool, narrower-integer and whole-number float masks in words the bit tests take
    mask = mask_words(mask, mask_planes, detector.name)
    config = AmpOffsetConfig() if config is None else config
    config.validate()
    if config.estimator == "robust" and interface_estimator is None:
        from .estimators import measure_robust  # imports this module

        return measure_robust(image, mask, detector, config, mask_planes)
    check_amp_geometry(detector, config)
    grid = detector.grid(config.apply_weights)
    planes = dict(DEFAULT_MASK_PLANES if mask_planes is None else mask_planes)
    shape = tuple(np.shape(image))
    if shape != detector.shape:
        raise GeometryError(
            f"detector {detector.name!r}: image shape {shape} does not match the detector "
            f"size {detector.shape} (height, width)"
        )
    if mask is not None and tuple(np.shape(mask)) != shape:
        raise InputError(
            f"detector {detector.name!r}: mask shape {tuple(np.shape(mask))} differs from the "
            f"image shape {shape}"
        )
    bad_planes = set(config.bad_mask_planes)
    bits = mask_bits(bad_planes, planes, "background.ignoredPixelMask")
    warnings: list[str] = []

    strips, layout = _strip_layout(detector, bool(config.apply_weights), config.amp_edge_inset,
                                   config.amp_edge_width)
    # The strips as lines (one row per position along the interface), stacked by kind.
    blocks = [StripBlock(keys, sides, bounds, np.empty(lines_shape, dtype=np.float32))
              for keys, sides, bounds, lines_shape in layout]

    # Background and detection off: only the edge strips are read (from lazy arrays too).
    strips_only = not (config.do_background or config.do_detection)
    background = detection = "off"
    threshold = math.nan
    n_detected = 0
    raw_lines = None  # strips before background subtraction (gain diagnosis, sky levels)
    if strips_only:
        _read_strips(image, mask, strips, bits, blocks)
    else:
        # The intermediate images live in this thread's scratch buffers (`_Scratch`).
        with _scratch() as take:
            m = None if mask is None else np.asarray(mask)
            backend = kernels.active()
            det_bits = mask_bits(("DETECTED", "DETECTED_NEGATIVE"), planes)
            # One pass: the bad pixels, whether earlier detections are flagged, and the
            # detection's statistics mask. The pixels are not copied (read-only from here on,
            # unless converted to float32): the background subtraction writes a new image.
            pixels = np.asarray(image)
            # Detection clears the DETECTED planes before it smooths (ALGORITHM.md 4, step
            # 1): earlier bits of theirs never reach its statistic, whatever statsMask says.
            stats_bits = (mask_bits(config.detection.stats_mask, planes,
                                    "detection.statsMask") & ~det_bits
                          if config.do_detection else 0)
            img, bad, any_det, stats_bad = backend.prepare_pixels(
                pixels, m, bits, det_bits if config.do_detection and bits & det_bits else 0,
                stats_bits, copy=False, bad_out=take("bad", shape, np.bool_),
                stats_out=take("stats_bad", shape, np.bool_) if stats_bits else None)
            if any_det:
                # Detection clears earlier DETECTED bits before the edges see the mask (the
                # background still ignores them); non-finite as before the background.
                bad_after_detection = backend.bad_pixels(
                    img, m, bits & ~det_bits, out=take("bad_after_detection", shape, np.bool_))
            else:
                bad_after_detection = bad
            if config.do_background:
                raw_lines = [_put_lines(np.empty_like(b.lines), b, strips, img) for b in blocks]
                amp = detector.amplifiers[0]
                # In place only on a converted copy of ours: the input is never modified.
                dest = (take("subtracted", img.shape) if np.may_share_memory(img, pixels)
                        else img)
                background = subtract_background(
                    img, bad, min(amp.width, amp.height), config.background_fraction_sample,
                    config.background.algorithm, config.background.undersample_style, out=dest,
                )
                if background == "ok":
                    img = dest
                else:
                    warnings.append(f"background {background}")
            extra = take("extra", shape, np.bool_)  # EDGE border and grown detections
            extra.fill(False)
            seeds = None
            if config.do_detection:
                bad = bad_after_detection
                detection, threshold, n_detected, seeds = _detect(img, stats_bad, config, strips,
                                                                  extra, bad_planes, take)
                if detection != "ok":
                    warnings.append(f"detection {detection}")
            for b in blocks:
                _put_lines(b.lines, b, strips, img, bad=bad, extra=extra)
            all_masked = backend.all_covered(bad, extra)
            if not all_masked and seeds is not None:
                all_masked = _grown_covers_rest(seeds, n_detected, bad, extra, config)
            seeds = None  # releases the smoothed image it holds

    # Every per-strip statistic, once: LSST's edge profiles and what the diagnostics share.
    stats = {}
    for i, b in enumerate(blocks):
        block_stats = lines_stats(b.lines, b.bounds, b.sides, inset=config.amp_edge_inset,
                                  raw=None if raw_lines is None else raw_lines[i])
        stats.update(zip(b.keys, block_stats, strict=True))
    total = sum(b.lines.size for b in blocks)
    masked = total - sum(int(np.add.reduce(st.count)) for st in stats.values())
    masked_fraction = masked / total if total else math.nan  # no strips: nothing to mask
    if strips_only:
        all_masked = total > 0 and masked == total  # only masked or non-finite pixels are NaN
    if not grid.interfaces:  # one amp: no step to measure, whatever the route
        all_masked = False
        warnings.append("no amp interfaces (a single amp): nothing to measure, pedestal 0")
    elif config.amp_edge_inset == 0:
        # LSST's numbers (every interface unmeasured), with the cause named
        warnings.append(f"{INSET_ZERO}: no interface is measured")

    results, offsets = _measure_interfaces(grid, detector, stats, config, warnings,
                                           interface_estimator)

    if all_masked:
        pedestals = np.zeros(len(detector))
        msg = ("every pixel of the edge strips is masked: pedestals set to zero"
               if strips_only  # the rest of the image, not read, may hold data
               else "all pixels are masked: pedestals set to zero")
        if n_detected:  # say whose doing it is: a flat or blank image is all "detected"
            msg += (f" (detection marked {n_detected} of {shape[0] * shape[1]} pixels, "
                    f"threshold {threshold:.6g}: a blank or constant image?)"
                    if n_detected > 0.5 * shape[0] * shape[1]
                    else f" (grown detections cover the rest; {n_detected} pixels above "
                         f"the threshold {threshold:.6g})")
        (logger.warning if config.do_apply_amp_offset else logger.info)(
            "%s: %s", detector.name, msg)
        warnings.append(msg)
        errors = np.full(len(detector), np.nan)
    else:
        pedestals = solve_pedestals(grid.associations, right_hand_side(grid, offsets))
        used = np.array([not (r.min_frac_fail or r.max_offset_fail)
                         and math.isfinite(r.offset_raw) for r in results])
        forced = forced_errors([r.offset_raw for r in results], [r.offset_err for r in results],
                               [r.max_offset_fail for r in results],
                               [r.min_frac_fail for r in results])
        errors = pedestal_errors(grid, np.array([r.offset_err for r in results]), used, forced)
        if background == "ok" and interface_estimator is None:
            # The background model absorbed part of each step: a bias the pixel noise
            # does not carry (background_bias module docstring).
            try:
                offset_errors, errors = with_background_bias(
                    detector, config, pedestals, [r.offset_err for r in results], errors,
                    used, forced)
            except np.linalg.LinAlgError as exc:
                # A heavily masked background can leave the absorbed steps' Newton system
                # singular: the bias, hence the errors, are then unknown (the pedestals,
                # LSST's numbers, stand).
                msg = (f"pedestal errors undefined: the background's absorbed steps could not "
                       f"be solved for ({exc})")
                logger.warning("%s: %s", detector.name, msg)
                warnings.append(msg)
                errors = np.full(len(detector), np.nan)
            else:
                results = [dataclasses.replace(r, offset_err=float(e))
                           for r, e in zip(results, offset_errors, strict=True)]

    return DetectorMeasurement(
        detector=detector.name,
        amp_names=detector.amp_names,
        pedestals=pedestals,
        interfaces=tuple(results),
        background=background,
        detection=detection,
        threshold=float(threshold),
        n_detected=int(n_detected),
        masked_fraction=float(masked_fraction),
        all_masked=all_masked,
        warnings=tuple(warnings),
        pedestal_errors=errors,
        amp_levels=amp_levels({key: st.level for key, st in stats.items()}, len(detector)),
    )


def _measure_interfaces(
    grid: Any,
    detector: Detector,
    stats: Mapping[tuple[int, int], Any],
    config: AmpOffsetConfig,
    warnings: list[str] | None = None,
    interface_estimator: Any = None,
) -> tuple[list[InterfaceResult], dict[tuple[int, int], float]]:
    """Every interface's offset, its error and the gain diagnosis, from the strips'
    statistics ``{(amp, side): StripStats}``; the results in ``grid.interfaces`` order and
    the offsets by ``(a, b)``. Fully masked interfaces are noted in ``warnings``."""
    window = config.amp_edge_window_frac if config.do_window_smoothing else None
    pairs = [(stats[(itf.a, itf.side)], stats[(itf.b, (itf.side + 2) % 4)])
             for itf in grid.interfaces]
    measured = []
    offsets: dict[tuple[int, int], float] = {}
    offs = measure_interfaces([itf.id for itf in grid.interfaces],
                              [a.profile for a, _ in pairs], [b.profile for _, b in pairs],
                              window_frac=window, min_frac=config.amp_edge_min_frac,
                              max_offset=config.amp_edge_max_offset)
    errs = interface_offset_errors(pairs, [sm for _, sm in offs],
                                   [res.offset_raw for res, _ in offs])
    for itf, (stats_a, stats_b), (res, _), err in zip(grid.interfaces, pairs, offs, errs,
                                                     strict=True):
        if interface_estimator is not None:
            res, err = interface_estimator(res, stats_a, stats_b, config)
        if res.good_frac == 0.0 and res.min_frac_fail and res.offset_raw == 0.0:
            logger.debug("%s: interface %s is fully masked", detector.name, itf.id)
            if warnings is not None:
                warnings.append(f"interface {itf.id} fully masked")
        elif res.max_offset_fail and not res.min_frac_fail and warnings is not None:
            warnings.append(f"interface {itf.id}: offset {res.offset_raw:.3g} beyond "
                            f"ampEdgeMaxOffset {config.amp_edge_max_offset:g}, set to 0 "
                            "(do-no-harm)")
        elif (math.isnan(res.offset_raw) and not res.min_frac_fail
              and warnings is not None):
            warnings.append(f"interface {itf.id}: {undefined_cause(res.good_frac)}, "
                            "offset set to 0 (do-no-harm)")
        offsets[(itf.a, itf.b)] = res.offset
        measured.append((res, err))
    gains = gain_steps(pairs)
    results = [_interface_result(itf, detector, res, err, gain)
               for itf, (res, err), gain in zip(grid.interfaces, measured, gains, strict=True)]
    return results, offsets


@functools.lru_cache(maxsize=32)
def _strip_layout(detector: Detector, apply_weights: bool, inset: int, width: int) -> tuple[
        Mapping[tuple[int, int], tuple[slice, slice]], tuple[tuple[Any, ...], ...]]:
    """The edge strips each interface needs, ``{(amp, side): (rows, columns)}`` (read-only),
    and the layout of their `strip_blocks` (keys, sides, bounds, lines shape), cached per
    geometry: the same for every detector of a camera type."""
    grid = detector.grid(apply_weights)
    needed = [(i.a, i.side) for i in grid.interfaces] + [
        (i.b, (i.side + 2) % 4) for i in grid.interfaces
    ]
    strips = {key: strip_slices(detector.amplifiers[key[0]], key[1], inset, width)
              for key in needed}
    blocks = strip_blocks({
        key: (key[1], (rows.stop - rows.start, cols.stop - cols.start))
        for key, (rows, cols) in strips.items()
    })
    layout = tuple((tuple(b.keys), tuple(b.sides), tuple(b.bounds), b.lines.shape)
                   for b in blocks)
    return types.MappingProxyType(strips), layout


def _interface_result(itf, detector: Detector, res: InterfaceOffset, err: float,
                      gain: GainStep) -> InterfaceResult:
    return InterfaceResult(
        id=itf.id,
        amp_a=detector.amplifiers[itf.a].name,
        amp_b=detector.amplifiers[itf.b].name,
        side=itf.side,
        length=itf.length,
        offset_raw=float(res.offset_raw),
        offset=float(res.offset),
        good_frac=float(res.good_frac),
        min_frac_fail=bool(res.min_frac_fail),
        max_offset_fail=bool(res.max_offset_fail),
        offset_err=float(err),
        gain_ratio=float(gain.gain_ratio),
        gain_ratio_err=float(gain.gain_ratio_err),
        gain_like=bool(gain.gain_like),
    )


def _put_lines(dest: np.ndarray, block: StripBlock, strips: dict, source: Any, *,
               mask: Any = None, bits: int = 0, bad: np.ndarray | None = None,
               extra: np.ndarray | None = None, finite: bool = False) -> np.ndarray:
    """Copy the block's strips of ``source`` into ``dest`` as lines (float32), NaN where
    ``mask & bits`` is set, where ``bad`` or ``extra`` is True and (``finite``) where not
    finite (`kernels._numpy.put_strips`); ``source`` and ``mask`` may be lazy arrays (only
    the strips are read)."""
    kernels.active().put_strips(
        [dest[a:b] for a, b in zip(block.bounds, block.bounds[1:], strict=False)], source,
        [strips[key] for key in block.keys], [side in (0, 2) for side in block.sides],
        mask=mask, bits=bits, bad=bad, extra=extra, finite=finite)
    return dest


def _read_strips(image: Any, mask: Any, strips: dict, bits: int,
                 blocks: list[StripBlock]) -> None:
    """Read only the edge strips into the blocks' lines (works on lazy arrays), NaN where
    masked or non-finite."""
    for b in blocks:
        _put_lines(b.lines, b, strips, image, mask=mask, bits=bits, finite=True)


def _detect(
    img: np.ndarray,
    stats_bad: np.ndarray | None,
    config: AmpOffsetConfig,
    strips: dict,
    extra: np.ndarray,
    bad_planes: set[str],
    take: Callable[..., np.ndarray] | None = None,
) -> tuple[str, float, int, np.ndarray | None]:
    """Run detection on ``img``; OR the EDGE border and grown detections into ``extra``.

    ``stats_bad`` flags the pixels whose mask has a ``statsMask`` plane (None: none);
    ``take(name, shape, dtype)`` (`_scratch`), if given, provides the buffers of the smoothed
    image and of the dilated statistics mask.

    Only pixels whose planes are in the task's ignored list are marked, and grown
    detections are only materialised where the edge strips need them.

    Returns
    -------
    status, threshold, n_above, seeds
        ``seeds()`` builds the full-size mask of the ungrown detections that mask pixels
        (None if there are none): rarely needed (`_grown_covers_rest`), so not built here.
    """
    det = config.detection
    r = kernel_half_width(det.sigma, det.n_sigma_for_kernel)
    h, w = img.shape
    if "EDGE" in bad_planes:
        extra[:r] = extra[h - r:] = True
        extra[:, :r] = extra[:, w - r:] = True
    out = None if take is None else take("smoothed", (max(h - 2 * r, 0), max(w - 2 * r, 0)))
    smoothed = smooth(img, gaussian_kernel(det.sigma, det.n_sigma_for_kernel), out=out)
    threshold = detection_threshold(
        smoothed, stats_bad, det.threshold_value, det.threshold_type,
        excluded_out=None if take is None or stats_bad is None
        else take("excluded", smoothed.shape, np.bool_))
    if not math.isfinite(threshold):
        return "skipped: no usable pixel for the threshold", threshold, 0, None
    backend = kernels.active()
    polarity = det.threshold_polarity
    positive, negative = polarity != "negative", polarity != "positive"
    drop_faint_footprints(smoothed, threshold, det.include_threshold_multiplier, positive,
                          negative)
    mark_positive = "DETECTED" in bad_planes
    mark_negative = "DETECTED_NEGATIVE" in bad_planes
    # Grown detections are only needed in the edge strips: the count reads the smoothed
    # image once, and each strip is grown from the seeds within reach of it (no full-size
    # seed mask is written).
    n, any_seed = backend.grow_detections(
        smoothed, threshold, r, positive, negative, mark_positive, mark_negative,
        grow_radius(det.n_sigma_to_grow, det.sigma), det.isotropic_grow, strips.values(),
        extra)
    if not any_seed:
        return "ok", threshold, n, None

    def seeds() -> np.ndarray:
        return backend.threshold_seeds(smoothed, threshold, img.shape, r, positive, negative,
                                       mark_positive, mark_negative)[0]

    return "ok", threshold, n, seeds


def _grown_covers_rest(seeds: Callable[[], np.ndarray], n_detected: int, bad: np.ndarray,
                       extra: np.ndarray, config: AmpOffsetConfig) -> bool:
    """Whether grown detections mask every pixel not already masked (exact, rarely costly).

    ``n_detected`` (detected pixels, marked as seeds or not) bounds the number of seeds.
    """
    det = config.detection
    radius = grow_radius(det.n_sigma_to_grow, det.sigma)
    # Grown seeds cover at most this many pixels; fewer than the free ones (bounded below
    # without building bad | extra) settles it.
    reach = n_detected * (2 * radius + 1) ** 2
    if reach < bad.size - int(np.count_nonzero(bad)) - int(np.count_nonzero(extra)):
        return False
    return bool((grow(seeds(), radius, det.isotropic_grow) | bad | extra).all())
