"""Input discovery and planning on the client: files, folders, globs, manifests -> tasks.

Planning reads only FITS headers (`~ampoffset_dask.io.fits.inspect_file`) to learn each
file's visit, detector and geometry; pixels are read by the tasks, on the workers.
"""

from __future__ import annotations

import contextvars
import dataclasses
import glob
import logging
import os
import urllib.parse
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from ..algorithm.metadata import SUBTRACTED_KEY
from ..catalog.schema import check_identity
from ..errors import AmpOffsetError, InputError
from ..geometry import Detector
from ..io.paths import entry_problem, is_fits_name, on_network_filesystem, walk_fits
from ..io.remote import is_url, list_url, localize, redact, url_stamp

__all__ = ["InputItem", "PlannedTask", "discover_inputs", "plan_tasks"]

logger = logging.getLogger(__name__)

MANIFEST_SUFFIXES = (".csv", ".parquet", ".pq", ".ecsv", ".tsv")


@dataclasses.dataclass(frozen=True)
class InputItem:
    """One input file (a path or a URL), with the identity a manifest gave it (if any).

    ``instrument`` (a Butler manifest's) selects the built-in camera; ``dataset_id`` is
    recorded in the catalog. ``problem`` is set for an entry that cannot be an input (a
    dangling symlink, a directory named ``x.fits``...): it becomes a failed row naming the
    reason.
    """

    path: str
    visit: int | None = None
    detector: str | None = None
    detector_id: int | None = None
    instrument: str | None = None
    dataset_id: str | None = None
    problem: str = ""


@dataclasses.dataclass
class PlannedTask:
    """A (visit, detector) to measure, or an input that already failed planning.

    ``flag`` is set for an input planning recognised but that is not to be processed (an
    exposure already corrected): it becomes a ``flagged`` row with that message.
    ``hdu`` is the CCD's HDU in a multi-CCD file (None: the file's only detector); ``raw``
    says the pixels come from raw boxes (a raw or untrimmed file). ``applied`` holds, for a
    flagged already-corrected input, the pedestals its header says were subtracted (LSST's
    ``LSST ISR AMPOFFSET PEDESTAL <amp>`` keys; empty when any is missing). ``stamp`` is the local
    file's ``(size, mtime_ns)`` before its headers were read (`~ampoffset_dask.io.sections.
    file_stamp`), or the object's size and time in its store (`~ampoffset_dask.io.remote.
    url_stamp`): the task refuses an input changed since it was planned. ``keeps`` names what
    the file holds that a corrected exposure (plain IMAGE, MASK, VARIANCE) would not keep
    (tile compression, afw archive tables, a CCDData uncertainty): such a file is not
    corrected in place. ``corrected`` says the header marks the input as already corrected
    (``LSST ISR AMPOFFSET PEDESTAL SUBTRACTED = T``), whether or not ``force`` lets it run.
    ``visit_from`` says where ``visit`` came from: ``"manifest"``, ``"keyword"`` (the header
    keyword ``--visit KEYWORD`` names), ``"header"`` (the header's own visit keywords),
    ``"option"`` (``--visit N``); empty when there is none. ``corrected_by`` is, for a
    corrected local input, the catalog run id its header names (`RUN_KEY`: the run that wrote
    it), empty when it names none; ``applied`` is then filled in with or without ``force``.
    """

    path: str
    visit: int | None
    detector: Detector | None
    name: str | None
    error: str = ""
    dataset_id: str | None = None
    flag: str = ""
    hdu: int | None = None
    raw: bool = False
    stamp: tuple[int, Any] | None = None
    applied: tuple[float, ...] = ()
    keeps: str = ""
    corrected: bool = False
    detector_id: int | None = None  # a failed input's, when its manifest gives it
    visit_from: str = ""
    camera: str | None = None  # the camera named (given or in the header), when one is
    unnamed: bool = False  # no header, manifest or option named the detector
    corrected_by: str = ""

    def key(self, run_token: str) -> str:
        """Dask key ``ampoffset-<run token>-<visit>-<detector>``: unique per run, so runs
        sharing a scheduler never share (or swap) results."""
        return f"ampoffset-{run_token}-{self.visit}-{self.name}"


def _local_path(text: str) -> str:
    """``text`` with a ``file://`` URI turned into the local path it names (a zip member keeps
    its ``#zip-path=`` fragment, as `ampoffset_dask.io.butler.uri_to_input` gives it); any
    other text unchanged. Readers take such URIs (`~ampoffset_dask.io.remote.localize`):
    the inputs must name the same files, as the catalog records them."""
    if text[:7].lower() != "file://":
        return text
    head, sep, fragment = text.partition("#")
    return os.fspath(localize("file://" + head[7:])) + (
        sep + urllib.parse.unquote(fragment) if sep else "")


def _manifest_int(value: Any, column: str, where: str) -> int | None:
    """An integer cell (``visit``, ``detector_id``) of a manifest, None for an empty one.

    Raises
    ------
    InputError
        Naming ``where`` (the manifest, row and path) and the value when it is not an
        integer.
    """
    import pandas as pd

    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    try:
        if isinstance(value, (bool, np.bool_)):
            raise TypeError
        if hasattr(value, "__index__"):  # int, numpy integers: exact, whatever their size
            return int(value)
        text = value.strip() if isinstance(value, str) else value
        if isinstance(text, str) and text.lstrip("+-").isdigit():
            return int(text)
        number = float(text)  # 12.0: a CSV column with an empty cell reads as floats
        if number.is_integer():
            return int(number)
    except (TypeError, ValueError, OverflowError):
        pass
    raise InputError(f"{where}: {column} {value!r} is not an integer")


def _manifest_items(table: Any, base: Path | None, where: str = "manifest"
                    ) -> list[InputItem]:
    """The inputs a manifest table lists; ``where`` names it in errors (its file)."""
    import pandas as pd

    if not isinstance(table, pd.DataFrame):
        table = table.to_pandas() if hasattr(table, "to_pandas") else pd.DataFrame(table)
    column = "path" if "path" in table.columns else "uri"
    if column not in table.columns:
        raise InputError(f"{where}: a manifest needs a 'path' column (or 'uri'; optionally "
                         f"visit, detector, ...); it has {list(table.columns)}")

    def value(row: dict, key: str) -> Any:
        v = row.get(key)
        return None if v is None or (not isinstance(v, str) and pd.isna(v)) else v

    items = []
    for number, row in enumerate(table.to_dict("records"), start=1):
        text = _local_path(str(row[column]))
        if is_url(text):
            path = text
        else:
            p = Path(text).expanduser()
            if base is not None and not p.is_absolute():
                p = base / p
            path = str(p)
        items.append(InputItem(
            path,
            _manifest_int(row.get("visit"), "visit", f"{where}: row {number} ({text})"),
            None if value(row, "detector") is None else str(row["detector"]),
            _manifest_int(row.get("detector_id"), "detector_id",
                          f"{where}: row {number} ({text})"),
            None if value(row, "instrument") is None else str(row["instrument"]),
            None if value(row, "dataset_id") is None else str(row["dataset_id"]),
        ))
    return items


def _read_manifest(path: Path) -> list[InputItem]:
    import pandas as pd

    name = path.name.lower()
    try:
        if name.endswith((".parquet", ".pq")):
            table = pd.read_parquet(path)
        elif name.endswith(".ecsv"):
            from astropy.table import Table

            table = Table.read(path, format="ascii.ecsv").to_pandas()
        else:
            table = pd.read_csv(path, sep="\t" if name.endswith(".tsv") else ",")
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read the manifest: {exc}") from exc
    return _manifest_items(table, path.parent, str(path))


def _folder_items(folder: Path, exclude: Iterable[str | os.PathLike]) -> list[InputItem]:
    found = walk_fits(folder, exclude=exclude)
    if not found:
        logger.info("%s: no FITS files in this folder", folder)
    return [InputItem(f.path, problem=f.problem) for f in found]


def _entry_item(path: Path) -> InputItem:
    """An explicitly named entry that is neither a folder nor a regular file."""
    return InputItem(str(path), problem=entry_problem(path))


def discover_inputs(inputs: Any, *, exclude: Iterable[str | os.PathLike] = ()
                    ) -> list[InputItem]:
    """Expand ``inputs`` into a sorted, de-duplicated list of input files.

    A file named more than once (through a folder and a manifest, twice in a manifest...)
    is one input, with the identity a manifest gives it whatever the order.

    Parameters
    ----------
    inputs : path, URL, glob, folder, manifest or a list of them
        A FITS file (a path or a ``file://`` URI); a folder (searched recursively for FITS
        files by `~ampoffset_dask.io.paths.walk_fits`); a glob pattern (``**`` allowed; folders it
        matches are searched like folders); a URL (``s3://bucket/prefix/`` is listed like a folder,
        ``s3://.../file.fits``, ``gs://``, ``https://``: see `ampoffset_dask.io.remote`); a
        manifest table with columns ``path`` (or ``uri``) and optionally ``visit``,
        ``detector``, ``detector_id``, ``instrument``, ``dataset_id`` (pandas DataFrame,
        astropy Table, or a .csv/.parquet/.ecsv file; relative paths are relative to the
        manifest file), such as `ampoffset_dask.io.butler.find_inputs` returns.
    exclude : iterable of path-like
        Folders not searched (the run's own output folders).

    Returns
    -------
    list of InputItem
        FITS-named entries that are not regular files (dangling symlinks, symlink loops,
        directories named ``*.fits``) come back with ``problem`` set: they become failed
        rows instead of vanishing.

    Raises
    ------
    InputError
        For a path that does not exist, a folder given by name that holds no FITS file
        (corrected-image folders left out) or a glob that matches nothing; for a manifest
        visit or detector_id that is not an integer; for a file given two different
        identities (visit, detector, detector_id).
    """
    if inputs is None:
        raise InputError("no inputs given")
    if isinstance(inputs, (str, os.PathLike)) or hasattr(inputs, "columns") or hasattr(
            inputs, "colnames"):
        inputs = [inputs]
    exclude = list(exclude)
    local_exclude = [e for e in exclude if not is_url(os.fspath(e))]
    items: list[InputItem] = []
    for entry in inputs:
        if hasattr(entry, "columns") or hasattr(entry, "colnames"):
            items.extend(_manifest_items(entry, None, "manifest table"))
            continue
        text = _local_path(os.fspath(entry))
        if is_url(text):
            items.extend(InputItem(u) for u in list_url(
                text, exclude=[os.fspath(e) for e in exclude if is_url(os.fspath(e))]))
            continue
        path = Path(text).expanduser()
        if path.is_dir():
            found = _folder_items(path, local_exclude)
            if not found:  # an empty mount point, data not yet copied: say so, as for a glob
                raise InputError(f"{text}: no FITS files in this folder")
            items.extend(found)
        elif path.is_file():
            if path.name.lower().endswith(MANIFEST_SUFFIXES):
                items.extend(_read_manifest(path))
            else:
                items.append(InputItem(str(path)))
        elif os.path.lexists(path):  # dangling symlink, loop, FIFO...
            items.append(_entry_item(path))
        elif glob.has_magic(text):
            matches = sorted(glob.glob(os.path.expanduser(text), recursive=True))
            if not matches:
                raise InputError(f"{text}: the pattern matches no file")
            for m in matches:
                p = Path(m)
                if p.is_dir() and not is_fits_name(p.name):
                    items.extend(_folder_items(p, local_exclude))
                elif p.is_file():
                    items.append(InputItem(str(p)))
                else:
                    items.append(_entry_item(p))
        else:
            raise InputError(f"{text}: no such file or folder")
    seen: dict[str, InputItem] = {}
    for item in items:
        where = item.path if is_url(item.path) else os.path.abspath(item.path)
        seen[where] = _merged(seen[where], item, redact(where)) if where in seen else item
    return [dataclasses.replace(i, path=p) for p, i in seen.items()]


#: The fields of `InputItem` that say which (visit, detector) a file is.
_IDENTITY = ("visit", "detector", "detector_id")


def _identity_text(item: InputItem) -> str:
    said = [f"{field} {getattr(item, field)}" for field in _IDENTITY
            if getattr(item, field) is not None]
    return ", ".join(said) or "the header's identity"


def _merged(first: InputItem, other: InputItem, where: str) -> InputItem:
    """One input named twice (a folder and a manifest row, two manifest rows...): what a
    manifest says of it is kept whichever came first.

    Raises
    ------
    InputError
        When the two give it different identities (a file is one (visit, detector) in a
        run: keeping either would record the other silently wrong).
    """
    def same(a: Any, b: Any) -> bool:
        if a is None or b is None:
            return True
        if isinstance(a, str) and isinstance(b, str):  # the camera's names ignore case
            return a.casefold() == b.casefold()
        return a == b

    if not all(same(getattr(first, f), getattr(other, f)) for f in _IDENTITY):
        raise InputError(f"{where}: given twice with different identities ("
                         f"{_identity_text(first)}; {_identity_text(other)}): one file is "
                         "one (visit, detector) in a run")
    fields = {f.name: getattr(first, f.name) for f in dataclasses.fields(InputItem)}
    for name, value in fields.items():
        if value in (None, "") and name != "path":
            fields[name] = getattr(other, name)
    return InputItem(**fields)


#: The primary-header key (``HIERARCH AMPOFFSET RUN``) naming the catalog run that wrote a
#: corrected image: a run stopped after its workers corrected files in place, before their
#: results were recorded, leaves files its catalog can still recognise as its own.
RUN_KEY = "AMPOFFSET RUN"


def _plan_one(item: InputItem, camera: Any, visit_default: int | str | None = None,
              detector_default: str | None = None, force: bool = False) -> list[PlannedTask]:
    """The tasks of one input: one, or one per CCD of a multi-CCD file."""
    from ..io.file_info import header_identity, inspect_file
    from ..io.sections import file_stamp

    # the camera's spelling from the start: a row failing before the geometry is known is
    # recorded under the name the measurement's row would have
    item = dataclasses.replace(item, detector=_camera_name(item, camera))
    if item.problem:
        return [PlannedTask(item.path, item.visit, None, item.detector,
                            f"InputError: {item.path}: {item.problem}",
                            detector_id=item.detector_id)]
    # before the headers: a change while reading them shows (objects of a store: the size
    # and time the store gives)
    stamp = url_stamp(item.path) if is_url(item.path) else file_stamp(item.path)
    try:
        info = inspect_file(item.path, keys=_keys(visit_default))
    except Exception as exc:  # a header we cannot parse must not stop the run
        message = (f"{type(exc).__name__}: {exc}" if isinstance(exc, AmpOffsetError)
                   else f"InputError: {item.path}: cannot read the header: {exc}")
        # the failed row names the visit and detector the primary header gives, if it can
        visit, name = (None, None) if is_url(item.path) else header_identity(item.path)
        return [PlannedTask(item.path, item.visit if item.visit is not None else visit, None,
                            item.detector or name, message, dataset_id=item.dataset_id,
                            detector_id=item.detector_id)]
    said = _said_visit(info, visit_default)
    if item.visit is not None and said is not None and int(item.visit) != said:
        # The manifest's visit is recorded: a Butler manifest gives the Butler's visit,
        # which may differ from the exposure id a raw's header gives. Said once per input.
        logger.warning("%s: the manifest says visit %s, the header says %s; recording the "
                       "manifest's", item.path, item.visit, said)
    if not info.ccd_hdus:
        tasks = [_plan_hdu(item, camera, info, None, visit_default, detector_default, force)]
    else:
        tasks = [_plan_hdu(item, camera, info, k, visit_default, None, force)
                 for k in info.ccd_hdus]
    return [dataclasses.replace(t, stamp=stamp) for t in tasks]


def _camera_name(item: InputItem, camera: Any) -> str | None:
    """The name the camera (``camera``, else the item's instrument's) gives the detector the
    item names (``r22_s11``, ``94`` -> ``R22_S11``); the name as given when no camera knows
    it (planning then says why)."""
    from ..cameras import get_camera

    if item.detector is None:
        return None
    try:
        if camera is None and item.instrument is not None:
            camera = _instrument_camera(item.instrument)
        if camera is None:
            return item.detector
        cam = get_camera(camera) if isinstance(camera, (str, os.PathLike)) else camera
        return cam[item.detector].name
    except (KeyError, AmpOffsetError):
        return item.detector


_LOCAL_ONLY: Any = object()


def _applied_pedestals(path: str, detector: Detector, storage: Any = _LOCAL_ONLY
                       ) -> tuple[float, ...]:
    """The pedestals a corrected file's primary header says were subtracted, in amp order
    (LSST's keys, which LSST's task and this package write); () unless every amp has one,
    or when the header cannot be read. A run interrupted after correcting a file in place,
    before recording it, loses nothing: the next run records these. URLs are read only when
    ``storage`` (their storage options, None for the defaults) is given."""
    return _correction_header(path, detector, storage)[0]


def _correction_header(path: str, detector: Detector, storage: Any = _LOCAL_ONLY
                       ) -> tuple[tuple[float, ...], str]:
    """`_applied_pedestals` of a corrected file, and the catalog run its header says wrote
    it (`RUN_KEY`; empty when none, or when the header cannot be read), from one read of
    its primary header."""
    from astropy.io import fits

    from ..algorithm.metadata import PEDESTAL_KEY

    try:
        if is_url(path):
            if storage is _LOCAL_ONLY:
                return (), ""
            from ..io.remote import filesystem

            # a small block: only the primary header is read, not a store's default 50 MiB
            with filesystem(path, storage).open(path, "rb", block_size=1 << 16) as fh:
                header = fits.getheader(fh, 0)
        else:
            header = fits.getheader(path, 0)
        values = [header.get(PEDESTAL_KEY.format(amp.name)) for amp in detector]
        run = header.get(RUN_KEY)
    except (OSError, ValueError, InputError):
        return (), ""
    run = run.strip() if isinstance(run, str) else ""
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return (), run
    return tuple(float(v) for v in values), run


def _keys(visit_default: int | str | None) -> tuple[str, ...]:
    """The header keywords `inspect_file` is to read besides its own: ``--visit KEYWORD``'s."""
    return (visit_default,) if isinstance(visit_default, str) else ()


def _keyword_visit(info: Any, key: str, where: str) -> int | None:
    """The visit header keyword ``key`` holds (``info.keywords``: the image HDU's value,
    else the primary's), None when neither header has it.

    Raises
    ------
    InputError
        Naming ``where`` when the keyword holds no integer (the user named it: its value
        is no visit, and no other keyword is taken instead).
    """
    value = info.keywords.get(key)
    if value is None:
        return None
    try:
        if isinstance(value, bool):
            raise ValueError
        return int(str(value).strip())
    except ValueError:
        raise InputError(f"{where}: header keyword {key} = {value!r} is not a visit number "
                         f"(--visit {key})") from None


def _said_visit(info: Any, visit_default: int | str | None) -> int | None:
    """The visit the headers of ``info`` give: ``--visit KEYWORD``'s value when they hold an
    integer in it, else their own visit keywords'."""
    if isinstance(visit_default, str):
        try:
            visit = _keyword_visit(info, visit_default, "")
        except InputError:
            visit = None
        if visit is not None:
            return visit
    return info.visit


def _plan_hdu(item: InputItem, camera: Any, info: Any, hdu: int | None,
              visit_default: int | str | None, detector_default: str | None,
              force: bool = False) -> PlannedTask:
    from ..io.fits import inspect_file, resolve_detector

    visit, name = item.visit, item.detector
    visit_from = "manifest" if visit is not None else ""
    where = item.path if hdu is None else f"{item.path}[{hdu}]"
    known = info if hdu is None else None  # this CCD's headers, once read
    try:
        if camera is None and item.instrument is not None:
            camera = _instrument_camera(item.instrument)
        if hdu is not None:
            info = inspect_file(item.path, hdu, keys=_keys(visit_default))
            known = info
        if visit is None and isinstance(visit_default, str):
            # the user says where the visit is: over the header's own visit keywords
            visit = _keyword_visit(info, visit_default, where)
            visit_from = "keyword" if visit is not None else ""
        if visit is None and info.visit is not None:
            # a file without that keyword (or no keyword given) keeps the header's own
            visit, visit_from = info.visit, "header"
        if visit is None and isinstance(visit_default, str):
            raise InputError(f"{where}: no header keyword {visit_default} (--visit "
                             f"{visit_default})" + (f"; {info.visit_problem}"
                                                    if info.visit_problem else ""))
        if visit is None and visit_default is not None:
            visit, visit_from = visit_default, "option"
        if name is None and info.detector is None and info.detector_id is None:
            name = detector_default
        detector = None
        if name is not None and camera is not None:
            from ..cameras import get_camera

            cam = get_camera(camera) if isinstance(camera, (str, os.PathLike)) else camera
            detector = cam[name]
            # recorded under the camera's name (``r22_s11`` or ``94`` given): the result
            # comes back under it, and the catalog has one name per detector
            name = detector.name
        if detector is None:
            detector = resolve_detector(info, camera=camera)
        if name is None:
            name = detector.name
        if item.detector is not None:
            # the planned geometry is the manifest's detector (a camera given) or the
            # header's (none given): either way the other's pixels would be measured
            said = _header_detector(info, camera)
            meant = detector.name if camera is not None else item.detector
            if said is not None and said.casefold() == meant.casefold():
                name = said  # no camera: the header's spelling, as a run without manifest
            elif said is not None:
                raise InputError(f"{where}: the manifest says detector {item.detector}, the "
                                 f"header says {said}")
        if visit is None:
            problem = info.visit_problem or "no visit number in the header"
            raise InputError(
                f"{where}: {problem}; give it with --visit N (visit=) or in a manifest "
                "(columns path, visit, detector)"
            )
        try:  # identities the catalog cannot hold would brick it: refuse them here
            check_identity(visit, detector.id, what=item.path, unknown_ok=False)
        except ValueError as exc:
            raise InputError(str(exc)) from None
        flag, applied, corrected_by = "", (), ""
        corrected = info.header.get(SUBTRACTED_KEY) is True
        if corrected:
            # read with force too: a file the catalog's own stopped run corrected in place is
            # recorded from these, never corrected again (`~ampoffset_dask.pipeline.run`)
            applied, corrected_by = _correction_header(item.path, detector)
        if corrected and not force:
            flag = (f"already corrected ({SUBTRACTED_KEY} = T in {item.path}); not "
                    "corrected again (--force / force=True measures it anyway, and in place "
                    "corrects it a second time)"
                    + ("; the pedestals its header says were subtracted are recorded"
                       if applied else ""))
        raw = info.kind == "raw" or tuple(info.shape) != detector.shape
        named = camera if isinstance(camera, str) else getattr(camera, "name", None)
        return PlannedTask(item.path, int(visit), detector, name, dataset_id=item.dataset_id,
                           flag=flag, hdu=hdu, raw=raw, applied=applied, keeps=_keeps(info),
                           corrected=corrected, corrected_by=corrected_by,
                           visit_from=visit_from,
                           camera=named or info.camera,
                           unnamed=item.detector is None and info.detector is None
                           and detector_default is None)
    except AmpOffsetError as exc:
        if name is None and known is not None:
            # The failed row names the detector the header names: it then supersedes that
            # detector's current row (a file replaced by a damaged one kept its old ok row
            # current beside a nameless failure).
            name = _named_in_header(known, camera)
        if name is None and hdu is not None:
            # a CCD of a multi-CCD file naming no detector: keyed by its HDU, so that several
            # failing CCDs of one file keep a row each (keyed by the input alone they
            # replaced one another, and a measured CCD of the file hid them)
            name = f"HDU {hdu}"
        det_id = item.detector_id
        if (det_id is None and known is not None and name == known.detector
                and not _foreign_id(known, camera)):
            det_id = _usable_detector_id(known.detector_id)
        return PlannedTask(item.path, _usable_visit(visit), None, name,
                           f"{type(exc).__name__}: {exc}", dataset_id=item.dataset_id, hdu=hdu,
                           detector_id=det_id)
    except Exception as exc:  # a header we cannot parse must not stop the run
        return PlannedTask(item.path, _usable_visit(visit), None, name,
                           f"InputError: {where}: cannot read the header: {exc}",
                           dataset_id=item.dataset_id, hdu=hdu, detector_id=item.detector_id)


def _named_in_header(info: Any, camera: Any) -> str | None:
    """`_header_detector`, or the header's name as it is when the camera cannot say or has
    no such detector (a DECam guide CCD ``GS1``, a LATISS raw read with LSSTCam): a failed
    CCD keeps the name its header gives, and a row of its own."""
    try:
        name = _header_detector(info, camera)
    except (AmpOffsetError, KeyError, OSError):
        name = None
    return name if name is not None else info.detector


def _foreign_id(info: Any, camera: Any) -> bool:
    """Whether the detector id of ``info`` is one its header's camera filled in for the
    header's name (the header states none) while another camera is used: it numbers
    another detector there."""
    from ..cameras import canonical_camera_name

    filled = getattr(info, "detector_id_from", None)
    if filled is None or camera is None:
        return False
    given = camera if isinstance(camera, str) else getattr(camera, "name", None)
    return given is None or canonical_camera_name(str(given)) != filled


def _header_detector(info: Any, camera: Any) -> str | None:
    """The name of the detector the header of ``info`` names: in ``camera`` (default: the
    header's own camera), None when it names none that camera has (a manifest then says
    which detector the file is); the header's name as it is when no camera is known."""
    from ..cameras import get_camera

    cam = camera if camera is not None else info.camera
    if cam is None:
        return info.detector
    if isinstance(cam, (str, os.PathLike)):
        cam = get_camera(cam)
    # an id the header's camera filled in for the name means nothing in another camera
    own_id = None if getattr(info, "detector_id_from", None) else info.detector_id
    for key in (info.detector, own_id):
        if key is not None and key in cam:
            return cam[key].name
    return None


def _keeps(info: Any) -> str:
    """What of the file a corrected exposure would lose if it replaced it (`PlannedTask`)."""
    kept = []
    if info.compressed:
        kept.append("tile-compressed image extensions")
    if info.archive_hdus:
        kept.append(f"{len(info.archive_hdus)} afw archive table(s) (its persisted Detector "
                    "among them)")
    if info.kind == "ccddata":
        kept.append("CCDData layout (its uncertainty extension and primary-HDU image)")
        return ", ".join(kept)
    if info.image_hdu == 0:
        kept.append("image in the primary HDU (the copy has it in an IMAGE extension)")
    if info.image_bitpix != -32:
        kept.append(f"{_PIXEL_TYPES.get(info.image_bitpix, f'BITPIX={info.image_bitpix}')} "
                    "pixels (the copy's are float32)")
    missing = [name for name, hdu in (("MASK", info.mask_hdu), ("VARIANCE", info.variance_hdu))
               if hdu is None]
    if missing:
        kept.append(f"layout without {' and '.join(missing)} (the copy would add zeros)")
    if info.other_hdus:
        kept.append(f"other extension(s) {', '.join(info.other_hdus)}")
    return ", ".join(kept)


_PIXEL_TYPES = {8: "8-bit integer", 16: "16-bit integer", 32: "32-bit integer",
                64: "64-bit integer", -64: "float64"}


def _instrument_camera(instrument: str) -> Any:
    """The built-in camera of a Butler instrument name (``LSSTCam`` -> ``lsstcam``)."""
    from ..cameras import canonical_camera_name

    name = canonical_camera_name(instrument)
    if name is None:
        raise InputError(f"instrument {instrument!r} has no built-in camera; pass camera=")
    return name


def _usable_detector_id(detector_id: Any) -> int | None:
    """``detector_id`` when the catalog can record it (the header's may be out of range:
    that is then the failure itself), else None."""
    try:
        check_identity(0, detector_id)
    except ValueError:
        return None
    return detector_id


def _usable_visit(visit: Any) -> int | None:
    """``visit`` when the catalog can record it, else None (the unknown visit)."""
    try:
        check_identity(visit)
    except ValueError:
        return None
    return visit


def _plan_all(items: list[InputItem], plan: Callable[[InputItem], list[PlannedTask]],
              threads: int) -> list[list[PlannedTask]]:
    """``plan`` of every item, in order: in this thread when the files are on local file
    systems, else in up to ``threads`` threads.

    Reading and parsing a header holds the GIL but for the reads themselves: on a local disk
    or the page cache, threads only hand the GIL to each other at every read (~40% slower
    for 64 files here, see ``benchmarks/bench_plan.py``); on a network file system or an
    object store the reads wait and threads overlap the waits. Files whose file system is
    unknown (not Linux) go to the threads too.
    """
    local = threads <= 1 or (
        not any(is_url(i.path) for i in items)
        and all(net is False for net in on_network_filesystem([i.path for i in items])))
    if local:
        return [plan(i) for i in items]
    with ThreadPoolExecutor(max(1, min(threads, len(items) or 1))) as pool:
        # each header read in a copy of this thread's context (the run's storage options)
        return [f.result() for f in [
            pool.submit(contextvars.copy_context().run, plan, i) for i in items]]


def _unclaimed_failures(planned: list[PlannedTask],
                        items: dict[str, InputItem]) -> list[PlannedTask]:
    """Inputs that failed planning keep the visit and detector their header gave only when
    no other input of the run claims them (a damaged copy beside its good original must not
    make a failed row of the original's detector): else the identity the input was given."""
    claimed = {(task.visit, str(task.name).casefold()) for task in planned if not task.error}
    out = []
    for task in planned:
        item = items.get(task.path)
        if task.error and item is not None and (
                task.visit, str(task.name).casefold()) in claimed:
            task = dataclasses.replace(task, visit=item.visit, name=item.detector)
        out.append(task)
    return out


def _clash(first: PlannedTask, other: PlannedTask) -> str:
    """What two planned inputs of one (visit, detector) share, and their files (the HDUs of
    one multi-CCD file: naming the file twice did not say where the two CCDs were)."""
    if first.path == other.path and first.hdu is not None and other.hdu is not None:
        files = f"HDU {first.hdu} and HDU {other.hdu} of {first.path}"
    else:
        files = " and ".join(p if t.hdu is None else f"{p} (HDU {t.hdu})"
                             for t, p in ((first, first.path), (other, other.path)))
    if first.name == other.name:
        return f"visit {other.visit} detector {other.name}: {files}"
    if str(first.name).casefold() == str(other.name).casefold():
        return (f"visit {other.visit} detector {first.name} and {other.name} (one name "
                f"but for case): {files}")
    return (f"visit {other.visit} detectors {first.name} and {other.name} (both detector id "
            f"{other.detector.id if other.detector is not None else None}): {files}")


def plan_tasks(items: Iterable[InputItem], camera: Any = None, threads: int = 8, *,
               force: bool = False, visit: int | str | None = None,
               detector: str | None = None) -> list[PlannedTask]:
    """Read headers and resolve the identity and geometry of each input.

    Inputs that cannot be planned come back with ``error`` set (they become failed rows);
    inputs already corrected, unless ``force``, with ``flag`` set (flagged rows). A multi-CCD
    file (``FileInfo.ccd_hdus``) becomes one task per CCD.

    Parameters
    ----------
    items : iterable of InputItem
    camera : str, path or Camera, optional
    threads : int
        Header-reading threads, for URLs and files on network file systems (`_plan_all`).
    force : bool
        Plan already corrected inputs like any other.
    visit, detector : optional
        Identity of the inputs whose headers and manifest give none (``--visit``,
        ``--detector``). ``visit`` may name the header keyword holding it (``"OBSNUM"``,
        as `RunOptions` reads it): the visit of every input whose headers have it (image
        HDU, else primary), over their own visit keywords; the others keep their headers'
        visit (``PlannedTask.visit_from`` says which), or fail when they give none.

    Raises
    ------
    InputError
        When two inputs claim the same (visit, detector): the same name, names equal but
        for case, or the same detector id.
    ConfigError
        For a ``visit`` string that is neither digits nor a header keyword.
    """
    from .options import _visit_value

    items = list(items)
    if isinstance(visit, str):  # the spelling the headers are searched by
        visit = _visit_value(visit)

    def plan(item: InputItem) -> list[PlannedTask]:
        return _plan_one(item, camera, visit, detector, force)

    planned = [task for tasks in _plan_all(items, plan, threads) for task in tasks]
    planned = _unclaimed_failures(planned, {i.path: i for i in items})
    # one detector of a visit is one input: by name, whatever its case, and by id (without a
    # camera, names come from the headers, or the file names when they give none)
    owners: dict[tuple[Any, ...], PlannedTask] = {}
    clashes = []
    for task in planned:
        if task.error:
            continue
        keys: list[tuple[Any, ...]] = [(task.visit, "name", str(task.name).casefold())]
        if (task.detector is not None and task.detector.id is not None
                and (task.camera is not None or task.unnamed)):
            # ids are per camera (LATISS's detector 0 is not LSSTCam's, and one night's
            # visit numbers may coincide): compared within a known camera, or for detectors
            # named after their files (no name said which detector they are)
            keys.append((task.visit, "id", task.camera, task.detector.id))
        other = next((owners[k] for k in keys if k in owners), None)
        if other is not None:
            clashes.append(_clash(other, task))
        owners.update(dict.fromkeys(keys, task))
    if clashes:
        raise InputError("several inputs are the same (visit, detector): " + "; ".join(clashes[:5])
                         + (f" and {len(clashes) - 5} more" if len(clashes) > 5 else ""))
    return planned
