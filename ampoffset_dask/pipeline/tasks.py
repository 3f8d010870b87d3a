"""The per-detector task: open a file on the worker, measure, optionally write, report.

`process_file` is what `process` submits once per (visit, detector). It receives a path, the
detector geometry and the config - never pixels - and returns a small
`~ampoffset_dask.catalog.DetectorResult`. It never raises for a bad detector: input, geometry
and config errors (and anything unexpected) become a ``failed`` result with the message;
transient I/O errors are retried here, with exponential backoff, before giving up.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from ..algorithm.apply import apply_pedestals
from ..algorithm.metadata import lsst_metadata_comments
from ..catalog import DetectorResult
from ..config import AmpOffsetConfig
from ..errors import AmpOffsetError, InputError
from ..geometry import Detector

__all__ = ["output_header", "process_file", "with_io_retries"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: OSErrors that retrying cannot fix.
_PERMANENT = (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)


def with_io_retries(fn: Callable[[], T], *, retries: int, delay: float, what: str) -> T:
    """Call ``fn``; on a transient `OSError` wait ``delay * 2**k`` and try again.

    Parameters
    ----------
    fn : callable
        No-argument function.
    retries : int
        Retries after the first attempt.
    delay : float
        First wait in seconds; doubles each time.
    what : str
        For the log message (``"reading x.fits"``).

    Raises
    ------
    InputError
        For missing or unreadable files (not retried).
    OSError
        The last error once the retries are used up.
    """
    attempt = 0
    while True:
        try:
            return fn()
        except _PERMANENT as exc:
            raise InputError(f"{what}: {exc.strerror or exc}") from exc
        except OSError as exc:
            if isinstance(exc, AmpOffsetError) or attempt >= retries:
                raise
            wait = delay * 2**attempt
            attempt += 1
            logger.warning("%s: %s; retry %d/%d in %.1f s", what, exc, attempt, retries, wait)
            time.sleep(wait)


def _worker_address() -> str:
    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):
        return f"pid {os.getpid()}"


_STRUCTURAL = {"SIMPLE", "BITPIX", "EXTEND", "PCOUNT", "GCOUNT", "EXTNAME", "XTENSION",
               "COMMENT", "HISTORY", "", "CHECKSUM", "DATASUM", "ZIMAGE", "ZBITPIX", "ZCMPTYPE"}


def output_header(path: str, info: Any, visit: int, detector: Detector) -> dict[str, Any]:
    """Primary-header cards of a corrected copy: the input's, minus structure and old
    amp-offset keys, plus the identity (``VISIT``, ``DETNAME``, ``DETECTOR``)."""
    from astropy.io import fits

    header: dict[str, Any] = {}
    try:
        primary = fits.getheader(path, 0)
        for key, value in primary.items():
            if key in _STRUCTURAL or key.startswith("NAXIS") or "AMPOFFSET" in key:
                continue
            header[key] = value
    except OSError:  # the selected keys inspect_file kept are enough
        header.update(getattr(info, "header", None) or {})
    header["VISIT"] = int(visit)
    header["DETNAME"] = detector.name
    if detector.id is not None:
        header["DETECTOR"] = int(detector.id)
    return header


def process_file(
    path: str | os.PathLike,
    detector: Detector | None = None,
    config: AmpOffsetConfig | None = None,
    *,
    visit: int | None = None,
    camera: Any = None,
    output: str | os.PathLike | None = None,
    in_place: bool = False,
    io_retries: int = 3,
    io_retry_delay: float = 0.5,
) -> DetectorResult:
    """Measure (and optionally correct) one detector file; never raises for a bad detector.

    Parameters
    ----------
    path : path-like
        The input FITS file, opened here (on the worker).
    detector : Detector, optional
        Its geometry (resolved from ``camera`` or the headers when omitted).
    config : AmpOffsetConfig, optional
        LSST defaults when omitted.
    visit : int, optional
        Visit number (from the header when omitted).
    camera : str or Camera, optional
        Camera used to resolve the geometry when ``detector`` is None.
    output : path-like, optional
        Write the corrected exposure here (atomically). Must differ from ``path`` unless
        ``in_place`` is True.
    in_place : bool
        Allow ``output == path``.
    io_retries, io_retry_delay : int, float
        Retries (exponential backoff from ``io_retry_delay`` seconds) on transient I/O errors.

    Returns
    -------
    DetectorResult
        ``status`` ``"ok"``, ``"flagged"`` (every pixel masked: pedestals are zero) or
        ``"failed"`` (``error`` says why).
    """
    from ..algorithm.measure import measure_detector
    from ..io.fits import open_lazy, read_exposure, write_exposure

    # Edges only and nothing to write: read just the edge strips from the file.
    edges_only = (output is None and config is not None
                  and not (config.do_background or config.do_detection))
    reader = open_lazy if edges_only else read_exposure

    t0 = time.perf_counter()
    c0 = time.thread_time()
    path = str(path)
    calls = [0]  # I/O attempts, retries included

    def counted(fn: Callable[[], T]) -> Callable[[], T]:
        def call() -> T:
            calls[0] += 1
            return fn()
        return call

    name = detector.name if detector is not None else None
    det_id = detector.id if detector is not None else None
    worker = _worker_address()

    def failed(message: str) -> DetectorResult:
        return DetectorResult.failure(
            message, visit=visit, detector=name, input=path, detector_id=det_id,
            worker=worker, seconds=time.perf_counter() - t0, attempts=max(1, calls[0]),
        )

    try:
        exp = with_io_retries(
            counted(lambda: reader(path, camera=camera, detector=detector)),
            retries=io_retries, delay=io_retry_delay, what=f"reading {path}",
        )
        geometry = detector if detector is not None else exp.detector
        name, det_id = geometry.name, geometry.id
        if visit is None:
            visit = exp.visit
        if visit is None:
            raise InputError(f"{path}: no visit number in the header")
        image = exp.image if edges_only else np.asarray(exp.image)
        if tuple(image.shape) != geometry.shape:
            raise InputError(
                f"{path}: image shape {image.shape} does not match detector {geometry.name} "
                f"({geometry.shape[0]} x {geometry.shape[1]} pixels, height x width)"
            )
        m = measure_detector(image, exp.mask, geometry, config, mask_planes=exp.mask_planes)
        status, note = "ok", ""
        if m.all_masked:
            status, note = "flagged", "all pixels masked; pedestals set to 0"
        out_path = ""
        if output is not None:
            if not in_place and Path(output).resolve() == Path(path).resolve():
                raise InputError(f"{path}: refusing to overwrite the input (in_place=False)")
            corrected = apply_pedestals(image, m.pedestals, geometry)
            Path(output).parent.mkdir(parents=True, exist_ok=True)
            with_io_retries(
                counted(lambda: write_exposure(
                    output, corrected, exp.mask, exp.variance, mask_planes=exp.mask_planes,
                    header=output_header(path, exp.info, visit, geometry),
                    metadata=lsst_metadata_comments(m, applied=True), overwrite=True,
                    detector=geometry,
                )),
                retries=io_retries, delay=io_retry_delay, what=f"writing {output}",
            )
            out_path = str(output)
        return DetectorResult(
            visit=int(visit),
            detector=geometry.name,
            status=status,
            error=note,
            detector_id=geometry.id,
            input=path,
            output=out_path,
            amp_names=list(m.amp_names),
            pedestals=[float(p) for p in m.pedestals],
            interfaces=[i.to_dict() for i in m.interfaces],
            applied=bool(out_path),
            masked_fraction=float(m.masked_fraction),
            all_masked=bool(m.all_masked),
            background=m.background,
            detection=m.detection,
            n_detected=int(m.n_detected),
            warnings=list(m.warnings),
            seconds=time.perf_counter() - t0,
            cpu_seconds=time.thread_time() - c0,
            worker=worker,
            attempts=calls[0],
        )
    except AmpOffsetError as exc:
        logger.warning("%s (%s): %s", name or path, type(exc).__name__, exc)
        return failed(f"{type(exc).__name__}: {exc}")
    except OSError as exc:
        logger.warning("%s: I/O error after %d retries: %s", path, io_retries, exc)
        return failed(f"I/O error after {io_retries} retries: {exc}")
    except Exception as exc:  # one bad detector never stops the run
        logger.exception("%s: unexpected error", name or path)
        return failed(f"{type(exc).__name__}: {exc}")
