"""The per-detector job: open a file on the worker, measure, optionally write, report.

`process_file` is what `process` submits once per (visit, detector). It receives a path, the
detector geometry and the config - never pixels - and returns a small
`~ampoffset_dask.catalog.DetectorResult`. It is two parts:

- `DetectorJob.run`: open -> measure -> apply/write -> record, each step a call into the layer
  that owns it; it raises for a bad detector (`AmpOffsetError`) or a lasting I/O error;
- `DetectorJob.run_safely` (what `process_file` calls): never raises for a bad detector:
  input, geometry and config errors (and anything unexpected) become a ``failed`` result with
  the message.

Transient I/O errors are retried inside `run`, with exponential backoff, before giving up.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import logging
import os
import re
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import numpy as np

from ..algorithm.apply import apply_pedestals
from ..algorithm.metadata import header_metadata_comments
from ..algorithm.quality import harm_check
from ..catalog import DetectorResult
from ..config import AmpOffsetConfig
from ..errors import AmpOffsetError, InputError
from ..geometry import Detector
from ..io.overscan import isr_header
from . import _config

__all__ = [
    "DetectorJob", "check_shape", "failure_message", "identified_job", "output_header",
    "planning_failure", "process_file", "with_io_retries",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: OSErrors that retrying cannot fix.
_PERMANENT = (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)
#: errno values that retrying cannot fix (read-only file system, disk full, no permission).
_PERMANENT_ERRNO = {errno.EROFS, errno.ENOSPC, errno.EACCES, errno.EPERM, errno.EDQUOT}


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
            if exc.errno in _PERMANENT_ERRNO:
                raise InputError(f"{what}: {exc.strerror or exc}") from exc
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
               "COMMENT", "HISTORY", "", "CHECKSUM", "DATASUM", "ZIMAGE", "ZBITPIX", "ZCMPTYPE",
               # afw's pointers into archive tables a corrected copy does not have
               "AR_HDU", "DETECTOR_ID"}
#: Tile-compression keywords (the copy is not compressed).
_COMPRESSION = re.compile(r"Z(SIMPLE|EXTEND|TENSION|BLOCKED|PCOUNT|GCOUNT|HECKSUM|DATASUM|"
                          r"QUANTIZ|DITHER0|TILE\d+|NAME\d+|VAL\d+|NAXIS\d*)$")


def _structural(key: str) -> bool:
    """Whether a card describes its HDU's structure, compression or archive pointers, or is
    an old amp-offset key: a corrected copy writes its own."""
    return (key in _STRUCTURAL or key.startswith("NAXIS") or "AMPOFFSET" in key
            or _COMPRESSION.match(key) is not None)


#: Keywords describing a primary HDU's own pixels: they do not describe the copy's empty
#: primary (its pixels are in IMAGE, laid out as the detector).
_PRIMARY_DATA = re.compile(r"(BZERO|BSCALE|BLANK|BUNIT|(DATA|BIAS|TRIM|DET|CCD)SEC\w*|"
                           r"LTV\d|LTM\d_\d|DETSIZE|"
                           # its WCS (the copy's IMAGE takes it: `image_header_cards`)
                           r"(WCSAXES|CTYPE\d|CRPIX\d|CRVAL\d|CDELT\d|CUNIT\d|CROTA\d|"
                           r"CD\d_\d|PC\d_\d|PV\d_\d+|PS\d_\d+|RADESYS|EQUINOX|LONPOLE|"
                           r"LATPOLE|WCSNAME|[AB]P?_(ORDER|\d+_\d+))[A-Z]?)$")


def output_header(path: str, info: Any, visit: int, detector: Detector) -> dict[str, Any]:
    """Primary-header cards of a corrected copy: the input's, minus structure, compression,
    afw archive pointers, old amp-offset keys and (when the input's primary HDU held the
    pixels) the keys describing those pixels, plus the identity (``VISIT``, ``DETNAME``,
    ``DETECTOR``)."""
    from astropy.io import fits

    from ..io.remote import is_url

    header: dict[str, Any] = {}
    try:
        if is_url(path):  # the header cards inspect_file kept are enough
            raise OSError("remote input")
        primary = fits.getheader(path, 0)
        has_data = int(primary.get("NAXIS", 0) or 0) > 0
        for key, value in primary.items():
            if _structural(key) or (has_data and _PRIMARY_DATA.match(key)):
                continue
            header[key] = value
    except OSError:  # the selected keys inspect_file kept are enough
        header.update(getattr(info, "header", None) or {})
    header["VISIT"] = int(visit)
    header["DETNAME"] = detector.name
    if detector.id is not None:
        header["DETECTOR"] = int(detector.id)
    return header


#: Image-HDU cards a corrected copy's IMAGE extension does not take over besides the
#: `_structural` ones: the scaling of the input's pixels, the extension's type and
#: inheritance, and the amp boxes the writer records.
_IMAGE_OWN = re.compile(r"(EXTTYPE|INHERIT|BZERO|BSCALE|BLANK|AMPNAM\w*|DATASEC\w*)$")


def image_header_cards(path: str, info: Any, detector: Detector,
                       camera: Any = None) -> dict[str, Any]:
    """Cards of the input's image HDU for the corrected copy's IMAGE extension (its WCS,
    ``BUNIT``, ``LTV``...): only when the copy's pixels are that HDU's pixels where they were
    (an exposure or image read in place), since a raw's or a reordered image's coordinates
    would describe other pixels. Empty otherwise, and for URLs."""
    from astropy.io import fits

    from ..io.fits import amp_sources
    from ..io.remote import is_url

    if is_url(path) or getattr(info, "kind", None) not in ("exposure", "image", "ccddata"):
        return {}
    if tuple(info.shape) != detector.shape:
        return {}
    try:
        sources = amp_sources(info, detector, camera, overscan="none")
    except (AmpOffsetError, OSError):
        return {}
    if not all(s.hdu == info.image_hdu and s.src == s.dest and not (s.flip_x or s.flip_y)
               for s in sources):
        return {}
    try:
        header = fits.getheader(path, info.image_hdu)
    except (OSError, ValueError):
        return {}
    return {key: value for key, value in header.items()
            if not (_structural(key) or _IMAGE_OWN.match(key))}


#: MASK-HDU cards the writer makes itself: the plane bits and the extension's type.
_PLANE_OWN = re.compile(r"(EXTTYPE|INHERIT|BZERO|BSCALE|BLANK|MP_\w+)$")


def plane_header_cards(path: str, info: Any, hdu: int | None) -> dict[str, Any]:
    """Cards of the input's MASK or VARIANCE extension (``hdu``) for the copy's (its
    ``BUNIT``, the user's own cards): an exposure's planes are copied as they are, so their
    cards still describe them. Empty for other kinds, a missing plane, URLs and
    gzip/bzip2-wrapped files (whose planes' headers lie behind the whole decompressed
    image: a second decompression for a few cards)."""
    from astropy.io import fits

    from ..io.remote import is_url
    from ..io.sections import _is_wrapped

    if (hdu is None or is_url(path) or getattr(info, "kind", None) != "exposure"
            or _is_wrapped(Path(path))):
        return {}
    try:
        header = fits.getheader(path, hdu)
    except (OSError, ValueError):
        return {}
    return {key: value for key, value in header.items()
            if not (_structural(key) or _PLANE_OWN.match(key))}


class CopyCards(NamedTuple):
    """The header cards of a corrected copy, per HDU (`corrected_cards`)."""

    primary: dict[str, Any]
    image: dict[str, Any]
    mask: dict[str, Any]
    variance: dict[str, Any]


def corrected_cards(path: str, exposure: Any, visit: int, detector: Detector,
                    camera: Any = None) -> CopyCards:
    """The header cards of the corrected copy of input ``path`` (`output_header` with
    ``exposure``'s ISR steps, `image_header_cards`, `plane_header_cards`): read from the
    input's headers, so taken before the input is known unchanged (`check_read_unchanged`)."""
    info = exposure.info
    return CopyCards(
        {**output_header(path, info, visit, detector), **isr_header(exposure.isr)},
        image_header_cards(path, info, detector, camera),
        plane_header_cards(path, info, getattr(info, "mask_hdu", None)),
        plane_header_cards(path, info, getattr(info, "variance_hdu", None)))


def write_corrected(target: Any, path: str, exposure: Any, corrected: np.ndarray,
                    measurement: Any, visit: int, detector: Detector,
                    camera: Any = None, *,
                    cards: CopyCards | None = None, run_id: str = "") -> Any:
    """Write the corrected copy of input ``path`` to ``target``: the ``corrected`` image with
    ``exposure``'s mask and variance, the input's identity and ISR steps in the primary
    header, its image HDU's WCS and units where they still describe the pixels, and LSST's
    metadata of ``measurement`` (pedestals applied). ``cards``: `corrected_cards`, when
    already read. ``run_id``: the catalog run writing it, recorded in the primary header
    (``HIERARCH AMPOFFSET RUN``, `~ampoffset_dask.pipeline.inputs.RUN_KEY`) so that the
    catalog recognises a file its run corrected in place but stopped before recording.
    Returns what `write_exposure` returns."""
    from ..io.writer import write_exposure
    from .inputs import RUN_KEY

    if cards is None:
        cards = corrected_cards(path, exposure, visit, detector, camera)
    metadata = header_metadata_comments(measurement, applied=True)
    if run_id:
        metadata[RUN_KEY] = (str(run_id), "catalog run that wrote this corrected image")
    return write_exposure(
        target, corrected, exposure.mask, exposure.variance,
        mask_planes=exposure.mask_planes, header=cards.primary,
        metadata=metadata, overwrite=True,
        detector=detector, image_header=cards.image, mask_header=cards.mask,
        variance_header=cards.variance,
    )


def flag_unwritten(result: DetectorResult, write_error: str) -> DetectorResult:
    """Flag ``result`` when its corrected image could not be written (``write_error``, the
    reason; empty: written): the measurement stands, the image is missing."""
    if write_error:
        result.status = "flagged"
        result.error = "; ".join(e for e in (result.error, write_error) if e)
    return result


def flag_harm(result: DetectorResult, measurement: Any,
              config: AmpOffsetConfig | None) -> DetectorResult:
    """Flag an ``ok`` result whose interfaces mostly failed the do-no-harm checks
    (`~ampoffset_dask.algorithm.quality.harm_check`), or of a single amp: numbers, but not a
    measurement."""
    cfg = config if config is not None else AmpOffsetConfig()
    harm = harm_check(measurement.interfaces, cfg.amp_edge_max_offset, cfg.amp_edge_min_frac,
                      inset=cfg.amp_edge_inset)
    if harm is None and len(measurement.pedestals) == 1:
        # nothing was measured: say so, since a file read with too few amps looks like this
        harm = ("a single amp: no interface to measure (pedestal 0); if the detector has "
                "more amps, describe them with a camera (docs/cameras.md)")
    if harm is not None and result.status == "ok":
        logger.warning("%s visit %s: %s", result.detector, result.visit, harm)
        result.status, result.error = "flagged", harm
        result.warnings = [*result.warnings, harm]
    return result


@dataclasses.dataclass
class DetectorJob:
    """One detector file to measure (and optionally correct) on a worker.

    Attributes
    ----------
    path : str
        The input FITS file, opened on the worker.
    detector : Detector, optional
        Its geometry (resolved from ``camera`` or the headers when omitted).
    config : AmpOffsetConfig, optional
        LSST defaults when omitted.
    visit : int, optional
        Visit number (from the header when omitted).
    camera : str or Camera, optional
        Camera used to resolve the geometry when ``detector`` is None.
    output : path-like or URL, optional
        Write the corrected exposure here (atomically: a local temporary file renamed, or
        uploaded as one object to a URL). Must differ from ``path`` unless ``in_place`` is
        True.
    in_place : bool
        Allow ``output == path``.
    io_retries, io_retry_delay : int, float
        Retries (exponential backoff from ``io_retry_delay`` seconds) on transient I/O errors.
    overscan, gain : str
        Raw ISR while reading (`ampoffset_dask.io.overscan`); recorded in the result and in
        the corrected file's header.
    hdu : int, optional
        The CCD's HDU in a multi-CCD file.
    attempts : int
        Tries of its most retried I/O step so far (1: none retried; filled in by `run`).
    storage_options : mapping, optional
        fsspec storage options for URL inputs and outputs (see `ampoffset_dask.io.remote`).
    fetched_fraction : float
        URL inputs: bytes fetched by this job / the object's size (filled in by `run`; NaN for
        local files).
    planned_stamp : tuple, optional
        The input's ``(size, mtime_ns)`` when it was planned (an object's size and time in
        its store): a file or object changed since fails (its planned visit and detector
        may no longer be its own).
    run_id : str
        The catalog run this job belongs to (its id in the ``runs`` table), written into the
        corrected image's primary header (`write_corrected`); empty: none.
    """

    path: str
    detector: Detector | None = None
    config: AmpOffsetConfig | None = None
    visit: int | None = None
    camera: Any = None
    output: str | os.PathLike | None = None
    in_place: bool = False
    io_retries: int = 3
    io_retry_delay: float = 0.5
    overscan: str = "auto"
    gain: str | None = None
    hdu: int | None = None
    attempts: int = 0
    storage_options: Mapping[str, Any] | None = None
    fetched_fraction: float = float("nan")
    planned_stamp: tuple[int, int] | None = None
    run_id: str = ""

    def __post_init__(self) -> None:
        self.path = str(self.path)
        self._t0 = time.perf_counter()
        self._worker = _worker_address()

    def _io(self, fn: Callable[[], T], what: str) -> T:
        tries = 0

        def counted() -> T:
            nonlocal tries
            tries += 1
            # the tries of the most retried step: a read and a write are two steps, not a
            # retry (every applying run recorded 2 attempts)
            self.attempts = max(self.attempts, tries)
            return fn()
        return with_io_retries(counted, retries=self.io_retries, delay=self.io_retry_delay,
                               what=what)

    def run(self) -> DetectorResult:
        """Open, measure, optionally write; the record of an ok or flagged detector.

        Raises
        ------
        AmpOffsetError
            For a bad input, geometry or config (the message names the file).
        OSError
            When an I/O error outlasts the retries.
        """
        from ..io import remote
        from ..io.writer import correction_lock

        # An in-place correction holds the file from its plan check to its replacement: a
        # run of another catalog correcting the same file then finds it changed, instead of
        # each catalog recording a correction the file holds only one of.
        held = (correction_lock(self.path)
                if self.in_place and self.output is not None and not remote.is_url(self.path)
                else contextlib.nullcontext())
        # this run's storage options for this task's reads only (other runs share workers)
        with remote.scoped_storage_options(self.storage_options), held:
            return self._run()

    def _run(self) -> DetectorResult:
        from ..algorithm.measure import measure_detector
        from ..io import remote
        from ..io.fits import open_lazy, read_exposure
        from ..io.sections import check_stamp, file_stamp, map_once

        config, output, path = self.config, self.output, self.path
        url_input = remote.is_url(path)
        if url_input:  # nothing kept from an earlier task: the object may have changed
            remote.forget(path)
        fetched0 = remote.bytes_fetched(path) if url_input else 0
        requests0 = remote.requests_made(path) if url_input else 0
        # Edges only and nothing to write: read just the edge strips from the file.
        edges_only = (output is None and config is not None
                      and not (config.do_background or config.do_detection))
        reader = open_lazy if edges_only else read_exposure
        self._t0 = time.perf_counter()
        c0 = time.thread_time()
        try:
            check_stamp(path, self.planned_stamp, "it was planned", "run again to plan it anew")
        except InputError:
            corrected_by = (_corrected_by(path) if self.in_place and not url_input
                            else None)
            if corrected_by is not None:
                by = ("by this run (an earlier attempt of this task, whose worker was lost "
                      "after writing it?)" if corrected_by in ("", self.run_id)
                      else f"by run {corrected_by}, not this one (another catalog's run "
                           "correcting the same files?)")
                raise InputError(
                    f"{path}: corrected in place since it was planned, {by}; not corrected "
                    "again: the next run records the pedestals its header holds") from None
            raise
        # What the input must still be once read: as planned, else as this task found it
        # (a local stat; an object with no planned stamp is not asked for one more time).
        stamp = self.planned_stamp if self.planned_stamp is not None else file_stamp(path)

        _config.apply_kernels()
        # VARIANCE is read only to be written back with the corrected image.
        options = {} if edges_only else {"variance": output is not None}
        exp = self._io(lambda: reader(path, camera=self.camera, detector=self.detector,
                                      overscan=self.overscan, gain=self.gain,
                                      hdu=self.hdu, **options), f"reading {path}")
        geometry = self.detector if self.detector is not None else exp.detector
        self.detector = geometry  # the failure record names it from now on
        if self.visit is None:
            self.visit = exp.visit
        if self.visit is None:
            problem = getattr(exp.info, "visit_problem", "")
            raise InputError(f"{path}: {problem or 'no visit number in the header'}")
        visit = self.visit
        image = exp.image if edges_only else np.asarray(exp.image)
        check_shape(path, image, geometry)
        with map_once():  # edges only: each plane mapped once for all its strips
            m = measure_detector(image, exp.mask, geometry, config,
                                 mask_planes=exp.mask_planes)
        # the copy's header cards are the input's too: read them before the check below
        cards = (corrected_cards(path, exp, visit, geometry, self.camera)
                 if output is not None else None)
        # Every pixel is read now (edges only: by the measurement). A file replaced or
        # rewritten meanwhile (an in-place correction by another run) may have given some
        # pixels of each version: nothing measured from them is recorded or written.
        check_read_unchanged(path, stamp)
        out_path = write_error = ""
        if output is not None:
            to_url = remote.is_url(str(output))
            same = (str(output) == path if to_url
                    else Path(output).resolve() == Path(path).resolve())
            if same and not self.in_place:
                raise InputError(f"{path}: refusing to overwrite the input (in_place=False)")
            corrected = apply_pedestals(image, m.pedestals, geometry)

            def write(target: Any) -> Any:
                return write_corrected(target, path, exp, corrected, m, visit, geometry,
                                       self.camera, cards=cards, run_id=self.run_id)

            try:
                if to_url:  # written locally, then uploaded as one object
                    with tempfile.TemporaryDirectory(prefix="ampoffset-out-") as tmp:
                        local = write(Path(tmp) / "corrected.fits")
                        self._io(lambda: remote.put_file(local, str(output)),
                                 f"writing {remote.redact(str(output))}")
                else:
                    Path(output).parent.mkdir(parents=True, exist_ok=True)
                    self._io(lambda: write(output), f"writing {output}")
                out_path = str(output)
            except (OSError, AmpOffsetError) as exc:
                # The measurement stands; only the image is missing: keep it, flagged.
                write_error = f"corrected image not written: {exc}"
                logger.warning("%s: %s", remote.redact(path), write_error)
        if url_input:
            self.fetched_fraction = ((remote.bytes_fetched(path) - fetched0)
                                     / max(1, remote.object_size(path)))
            logger.info("%s: fetched %.1f%% of the object in %d requests",
                        remote.redact(path), 100 * self.fetched_fraction,
                        remote.requests_made(path) - requests0)
        result = DetectorResult.from_measurement(
            m, visit=visit, detector=geometry, input=path, output=out_path,
            seconds=time.perf_counter() - self._t0, cpu_seconds=time.thread_time() - c0,
            worker=self._worker, attempts=self.attempts, overscan=exp.isr.overscan,
            gain=exp.isr.gain,
        )
        result.fetched_fraction = self.fetched_fraction
        flag_harm(result, m, config)
        return flag_unwritten(result, write_error)

    def _name(self) -> str:
        return self.detector.name if self.detector is not None else self.path

    def failure(self, message: str) -> DetectorResult:
        """The ``failed`` record of this job, with what is known of its identity."""
        det = self.detector
        return DetectorResult.failure(
            message, visit=self.visit,
            detector=det.name if det is not None else self._unresolved_name(),
            input=self.path, detector_id=det.id if det is not None else None,
            worker=self._worker, seconds=time.perf_counter() - self._t0,
            attempts=max(1, self.attempts),
        )

    def _unresolved_name(self) -> str | None:
        """The name of a CCD of a multi-CCD file whose detector was not resolved: its
        header's (``DETPOS``...), else ``HDU k``; None for a file's only detector (its row
        is then keyed by its input). Keyed by the input alone, several failing CCDs of one
        file replaced one another's rows, and a measured CCD of it hid them."""
        if self.hdu is None:
            return None
        from ..io import remote

        name = None
        if not remote.is_url(self.path):  # (an object is not fetched again for a name)
            from ..io.fits import inspect_file

            try:
                name = inspect_file(self.path, self.hdu).detector
            except Exception:  # the failure being recorded may be this very read's
                name = None
        return name or f"HDU {self.hdu}"

    def run_safely(self) -> DetectorResult:
        """`run`, with every error of this detector turned into a ``failed`` record."""
        try:
            return self.run()
        except Exception as exc:  # one bad detector never stops the run
            return self.failure(failure_message(exc, self._name(), self.path, self.io_retries))


def check_shape(path: str, image: Any, detector: Detector) -> None:
    """Refuse pixels whose shape is not the planned detector's (`InputError`)."""
    if tuple(image.shape) != detector.shape:
        raise InputError(
            f"{path}: image shape {tuple(image.shape)} does not match detector "
            f"{detector.name} ({detector.shape[0]} x {detector.shape[1]} pixels, height x "
            "width)"
        )


def check_read_unchanged(path: str, stamp: tuple[int, Any] | None) -> None:
    """Refuse what was read of input ``path`` (`InputError`) when it no longer has ``stamp``,
    the `~ampoffset_dask.io.sections.file_stamp` (an object's store stamp) it had before the
    reads: replaced or rewritten while it was read, its pixels may be of two versions (the
    checks before each read cannot see a change during or after the last one).

    One `os.stat` for a local file, one request to the store for an object; nothing with no
    ``stamp`` (or a store that cannot tell now).
    """
    from ..io.remote import is_url, redact
    from ..io.sections import stamp_changed

    if stamp_changed(path, stamp):
        what = "object changed in the store" if is_url(path) else "file changed"
        raise InputError(f"{redact(path)}: the {what} while it was read (its size or "
                         "modification time differ), so what was read may mix two versions "
                         "of it; not measured: run again")


def failure_message(exc: Exception, name: str, path: str, io_retries: int) -> str:
    """The message of the ``failed`` record of a detector whose job raised ``exc`` (logged
    here): the error's type and text; an I/O error says it outlasted ``io_retries``.

    Parameters
    ----------
    exc : Exception
        What the job raised.
    name, path : str
        The detector's name (or its input, when unknown) and its input, for the log.
    io_retries : int
        Retries the job made of transient I/O errors.
    """
    if isinstance(exc, AmpOffsetError):
        logger.warning("%s (%s): %s", name, type(exc).__name__, exc)
        return f"{type(exc).__name__}: {exc}"
    if isinstance(exc, OSError):
        logger.warning("%s: I/O error after %d retries: %s", path, io_retries, exc)
        return f"I/O error after {io_retries} retries: {exc}"
    logger.error("%s: unexpected error", name, exc_info=exc)
    return f"{type(exc).__name__}: {exc}"


def planning_failure(task: Any) -> DetectorResult:
    """The ``failed`` record of an input that could not be planned (``task.error``: its
    header unreadable, its geometry unknown...), with what planning learnt of its identity."""
    return dataclasses.replace(
        DetectorResult.failure(task.error, visit=task.visit, detector=task.name,
                               input=task.path,
                               detector_id=getattr(task, "detector_id", None)),
        dataset_id=task.dataset_id or "")


def _corrected_by(path: str) -> str | None:
    """The catalog run id a local file's primary header names as having corrected it
    (``""`` when it carries LSST's mark of a correction but no run id), or None when it
    carries no such mark."""
    from astropy.io import fits

    from .inputs import RUN_KEY, SUBTRACTED_KEY

    try:
        header = fits.getheader(path, 0)
    except (OSError, ValueError):
        return None
    if header.get(SUBTRACTED_KEY) is not True:
        return None
    return str(header.get(RUN_KEY, "") or "")


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
    storage_options: Mapping[str, Any] | None = None,
    overscan: str = "auto",
    gain: str | None = None,
    hdu: int | None = None,
    planned_stamp: tuple[int, int] | None = None,
    run_id: str = "",
) -> DetectorResult:
    """Measure (and optionally correct) one detector file; never raises for a bad detector.

    The task `process` submits: ``DetectorJob(...).run_safely()``; see `DetectorJob` for the
    parameters.

    Returns
    -------
    DetectorResult
        ``status`` ``"ok"``, ``"flagged"`` (every pixel masked, or at least half of the
        interfaces failed the do-no-harm checks: ``error`` names the likely cause) or
        ``"failed"`` (``error`` says why).
    """
    return DetectorJob(path, detector, config, visit=visit, camera=camera, output=output,
                       in_place=in_place, io_retries=io_retries,
                       io_retry_delay=io_retry_delay, overscan=overscan, gain=gain,
                       hdu=hdu, storage_options=storage_options,
                       planned_stamp=planned_stamp, run_id=run_id).run_safely()


def identified_job(*, log_run: str = "", **kwargs: Any) -> tuple[str, DetectorResult]:
    """`process_file`, also returning the digest of the config the worker really used, so
    the client can check that a result is the one it asked for (``process`` submits this).

    ``log_run``: the run token its log records are marked with, so that they reach the
    client of that run only (`ampoffset_dask.pipeline.worker_logs`).
    """
    from ..catalog import config_digest
    from .worker_logs import tagged

    config = kwargs.get("config")
    with tagged(log_run):
        result = process_file(**kwargs)
    return config_digest(config if config is not None else AmpOffsetConfig()), result
