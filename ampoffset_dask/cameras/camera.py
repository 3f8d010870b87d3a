"""Camera descriptions: detectors, their amp layouts, raw boxes and focal-plane positions.

A camera is read from a JSON (or YAML) document with the schema documented in
``docs/cameras.md``; the built-in cameras ship as JSON files next to this module.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import json
import logging
import pickle
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from ..config import load_document
from ..errors import GeometryError, InputError
from ..geometry import Amplifier, Detector

__all__ = ["Camera", "RawAmp", "get_camera", "list_cameras"]

logger = logging.getLogger(__name__)

_DATA_DIR = Path(__file__).resolve().parent

#: Built-in camera name -> JSON file in this folder.
_BUILTIN: dict[str, str] = {
    "lsstcam": "lsstcam.json",
    "lsstcomcam": "comcam.json",
    "latiss": "latiss.json",
    "hsc": "hsc.json",
    "decam": "decam.json",
}

#: Alternative spellings (lower case) -> built-in name, including INSTRUME header values.
_ALIASES: dict[str, str] = {
    "comcam": "lsstcomcam",
    "lsstcomcamsim": "lsstcomcam",
    "lsst_atiss": "latiss",
    "auxtel": "latiss",
    "hyper suprime-cam": "hsc",
    "hyper-suprime-cam": "hsc",
    "hypersuprimecam": "hsc",
    "lsstcamsim": "lsstcam",
}


@dataclasses.dataclass(frozen=True)
class RawAmp:
    """Where one amp's pixels sit in a raw file and how they map to the detector image.

    Boxes are ``(x0, y0, width, height)``, 0-based. ``raw_data_bbox`` and
    ``raw_serial_overscan_bbox`` are in the frame of the amp's own raw block: the amp's HDU
    when ``extname``/``hdu`` name one (LSST ``SegmentNN`` files), otherwise the single raw
    image that holds every amp.

    Attributes
    ----------
    name : str
        Amp name.
    bbox : tuple of int
        Destination box in the assembled detector image.
    raw_data_bbox : tuple of int
        Data pixels in the raw block.
    raw_serial_overscan_bbox : tuple of int or None
        Serial overscan in the raw block (for per-row overscan subtraction).
    flip_x, flip_y : bool
        Flips applied to the cut-out data before pasting it into ``bbox``.
    hdu : int or None
        HDU index of the amp's raw block (1-based FITS extension number), if per-amp HDUs.
    extname : str or None
        EXTNAME of the amp's raw HDU (``"Segment10"``), looked up before ``hdu``.
    """

    name: str
    bbox: tuple[int, int, int, int]
    raw_data_bbox: tuple[int, int, int, int]
    raw_serial_overscan_bbox: tuple[int, int, int, int] | None = None
    flip_x: bool = False
    flip_y: bool = False
    hdu: int | None = None
    extname: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe representation."""
        return dataclasses.asdict(self)


def _box(value: Any, what: str) -> tuple[int, int, int, int]:
    try:
        x0, y0, w, h = (int(v) for v in value)
    except (TypeError, ValueError) as exc:
        raise GeometryError(f"{what}: expected [x0, y0, width, height], got {value!r}") from exc
    return x0, y0, w, h


class Camera:
    """A camera: named detectors with ids, amp layouts, raw-assembly boxes and positions.

    Build one with `get_camera` (built-in), `Camera.from_file` (user JSON/YAML) or
    `Camera.from_dict`. Index it by detector name (case-insensitive) or integer id.

    Parameters
    ----------
    data : mapping
        The camera document (see ``docs/cameras.md``).
    name : str, optional
        Camera name; defaults to ``data["name"]`` or ``data["instrument"]`` (lower case).
    source : str, optional
        Where the document came from (used in error messages).
    """

    def __init__(self, data: Mapping[str, Any], name: str | None = None,
                 source: str | None = None) -> None:
        if not isinstance(data, Mapping):
            raise InputError(f"{source or 'camera'}: a camera description must be a mapping")
        self._source = source or "camera description"
        self._builtin: str | None = None  # the key of a built-in camera (`get_camera`)
        self._digest: str | None = None  # of the pickled document, computed when pickled
        self.instrument: str = str(data.get("instrument") or data.get("name") or name or "")
        self.name: str = (name or str(data.get("name") or self.instrument)).lower()
        if not self.name:
            raise InputError(f"{self._source}: the camera has no 'name' or 'instrument'")
        self._data = data
        layouts = data.get("amp_layouts")
        if not isinstance(layouts, Mapping) or not layouts:
            raise InputError(f"{self._source}: 'amp_layouts' must be a non-empty mapping")
        dets = data.get("detectors")
        if not isinstance(dets, list) or not dets:
            raise InputError(f"{self._source}: 'detectors' must be a non-empty list")
        self._layouts = {str(k): v for k, v in layouts.items()}
        self._info: dict[str, dict[str, Any]] = {}
        self._detectors: dict[str, Detector] = {}
        self._raw: dict[str, tuple[RawAmp, ...]] = {}
        self._by_id: dict[int, str] = {}
        self._by_lower: dict[str, str] = {}
        self._parsed: dict[Any, tuple[tuple[Amplifier, ...], tuple[RawAmp, ...]]] = {}
        for k, det in enumerate(dets):
            self._add_detector(det, k)

    # -- construction ----------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Mapping[str, Any], name: str | None = None) -> Camera:
        """Build a camera from a document with the ``docs/cameras.md`` schema."""
        return cls(data, name=name)

    @classmethod
    def from_file(cls, path: str | Path, name: str | None = None) -> Camera:
        """Read a camera description from a JSON file (or YAML, if PyYAML is installed).

        Raises
        ------
        InputError
            If the file cannot be read or parsed, naming the file and the reason.
        """
        path = Path(path)
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"{path}: cannot read camera file: {exc}") from exc
        data = load_document(path, text, "camera files")
        try:
            return cls(data, name=name, source=str(path))
        except GeometryError as exc:
            raise InputError(f"{path}: {exc}") from exc

    def _add_detector(self, det: Mapping[str, Any], k: int) -> None:
        where = f"{self._source}: detector #{k}"
        if not isinstance(det, Mapping) or "name" not in det:
            raise InputError(f"{where}: each detector needs a 'name'")
        name = str(det["name"])
        where = f"{self._source}: detector {name!r}"
        det_id = int(det.get("id", k))
        layout_key = det.get("physical_type", det.get("amp_layout"))
        if layout_key is None and len(self._layouts) == 1:
            layout_key = next(iter(self._layouts))
        if layout_key not in self._layouts:
            raise InputError(
                f"{where}: amp layout {layout_key!r} is not one of {sorted(self._layouts)}"
            )
        layout = self._layouts[layout_key]
        amps_doc = layout.get("amps") if isinstance(layout, Mapping) else None
        if not amps_doc:
            raise InputError(f"{where}: amp layout {layout_key!r} has no 'amps'")
        if "bbox" in det:
            _, _, width, height = _box(det["bbox"], f"{where} bbox")
        elif "detector_size" in layout:
            width, height = (int(v) for v in layout["detector_size"])
        else:
            width = max(_box(a["bbox"], where)[0] + _box(a["bbox"], where)[2] for a in amps_doc)
            height = max(_box(a["bbox"], where)[1] + _box(a["bbox"], where)[3] for a in amps_doc)
        if layout_key not in self._parsed:  # parsed with the first detector of the layout
            self._parsed[layout_key] = self._parse_amps(layout, amps_doc, where)
        amps, raws = self._parsed[layout_key]
        try:
            detector = Detector(name, width, height, amps, det_id)
        except GeometryError as exc:
            raise InputError(f"{where}: {exc}") from exc
        if name in self._detectors:
            raise InputError(f"{where}: duplicate detector name")
        if det_id in self._by_id:
            raise InputError(f"{where}: id {det_id} is also used by {self._by_id[det_id]!r}")
        self._detectors[name] = detector
        self._raw[name] = raws
        self._by_id[det_id] = name
        self._by_lower[name.lower()] = name
        info = {k: copy.deepcopy(v) for k, v in det.items()}
        info.update(name=name, id=det_id, physical_type=str(layout_key),
                    type=str(det.get("type", "SCIENCE")), width=width, height=height)
        if "raft" not in info and "_" in name and name.startswith("R"):
            info["raft"] = name.split("_")[0]
        self._info[name] = info

    @staticmethod
    def _parse_amps(layout: Mapping[str, Any], amps_doc: Any, where: str
                    ) -> tuple[tuple[Amplifier, ...], tuple[RawAmp, ...]]:
        """The amps and raw-assembly boxes (empty unless every amp has them) of an amp
        layout, parsed once per camera: the detectors sharing it (up to 189) get the same
        immutable amps. ``where`` names the first detector using it, in errors."""
        raw_default = layout.get("raw_amp_geometry", {})
        amps, raws = [], []
        for a in amps_doc:
            aname = str(a["name"])
            box = _box(a.get("bbox"), f"{where} amp {aname!r} bbox")
            amps.append(Amplifier(aname, *box))
            raw_data = a.get("raw_data_bbox", raw_default.get("rawDataBBox"))
            if raw_data is None:
                continue
            over = a.get("raw_serial_overscan_bbox", raw_default.get("rawSerialOverscanBBox"))
            hdu = a.get("hdu")
            extname = a.get("extname")
            if extname is None and hdu is not None and aname.startswith("C") and len(aname) == 3:
                extname = f"Segment{aname[1:]}"  # LSST raw files: one SegmentNN HDU per amp
            raws.append(RawAmp(
                aname, box, _box(raw_data, f"{where} amp {aname!r} raw_data_bbox"),
                None if over is None else _box(over, f"{where} amp {aname!r} overscan"),
                bool(a.get("raw_flip_x", False)), bool(a.get("raw_flip_y", False)),
                None if hdu is None else int(hdu), extname,
            ))
        # An HDU number several amps give (LSST's ITL_WF layout gives C13 and C14 hdu 4) says
        # nothing of which HDU is whose: such amps are found by EXTNAME only, never by
        # number (C14 read C13's pixels from a raw without EXTNAMEs).
        numbers = [r.hdu for r in raws if r.hdu is not None]
        shared = {n for n in numbers if numbers.count(n) > 1}
        if shared:
            raws = [dataclasses.replace(r, hdu=None) if r.hdu in shared else r for r in raws]
        return tuple(amps), (tuple(raws) if len(raws) == len(amps) else ())

    # -- queries -----------------------------------------------------------------------------
    @property
    def detector_names(self) -> list[str]:
        """Detector names in the order of the description."""
        return list(self._detectors)

    @property
    def detector_ids(self) -> list[int]:
        """Detector ids, in the same order as `detector_names`."""
        return [d.id for d in self._detectors.values()]

    def names(self, type: str | None = None) -> list[str]:
        """Detector names, optionally only those of one type (``"SCIENCE"``, ``"GUIDER"``...)."""
        if type is None:
            return self.detector_names
        return [n for n, i in self._info.items() if i["type"].upper() == type.upper()]

    def resolve(self, key: str | int) -> str:
        """The detector name for a name (case-insensitive) or integer id.

        Raises
        ------
        KeyError
            (an `InputError`) naming the camera and the unknown key.
        """
        if isinstance(key, bool):
            raise UnknownDetectorError(self.name, key)
        if isinstance(key, int) or (hasattr(key, "__index__") and not isinstance(key, str)):
            name = self._by_id.get(int(key))
        else:
            text = str(key).strip()
            name = self._by_lower.get(text.lower())
            if name is None and text.lstrip("-").isdigit():
                name = self._by_id.get(int(text))
        if name is None:
            raise UnknownDetectorError(self.name, key)
        return name

    def __getitem__(self, key: str | int) -> Detector:
        return self._detectors[self.resolve(key)]

    def __contains__(self, key: object) -> bool:
        try:
            self.resolve(key)  # type: ignore[arg-type]
        except KeyError:
            return False
        return True

    def __iter__(self) -> Iterator[Detector]:
        return iter(self._detectors.values())

    def __len__(self) -> int:
        return len(self._detectors)

    def __repr__(self) -> str:
        return f"Camera({self.name!r}, {len(self)} detectors)"

    def info(self, key: str | int) -> dict[str, Any]:
        """Facts about one detector: ``type``, ``physical_type``, ``raft``, ``serial``,
        ``offset_mm``, ``corners_mm``, ``yaw_deg``, per-amp gains ... (a copy)."""
        return copy.deepcopy(self._info[self.resolve(key)])

    def raw_amps(self, detector: str | int | Detector) -> tuple[RawAmp, ...]:
        """Raw-assembly boxes and flips per amp, in detector amp order.

        Raises
        ------
        InputError
            If the camera description has no raw boxes for this detector.
        """
        name = detector.name if isinstance(detector, Detector) else self.resolve(detector)
        name = self.resolve(name)
        raws = self._raw[name]
        if not raws:
            raise InputError(
                f"camera {self.name!r}, detector {name!r}: the description has no raw boxes "
                "(raw_data_bbox) for its amps"
            )
        return raws

    def to_dict(self) -> dict[str, Any]:
        """The camera document (a deep copy)."""
        out = copy.deepcopy(dict(self._data))
        out.setdefault("name", self.name)
        return out

    def __reduce__(self):
        if self._builtin is not None:
            # By name: a task carrying a built-in camera would otherwise ship its whole
            # document (160 KB for LSSTCam) and rebuild it in the worker (~17 ms a task).
            return (_load_builtin, (self._builtin,))
        if self._digest is None:
            try:
                self._digest = hashlib.sha256(pickle.dumps(
                    (self._data, self.name, self._source))).hexdigest()
            except (pickle.PicklingError, TypeError, AttributeError):
                return (Camera, (self._data, self.name, self._source))
        return (_unpickled_camera, (self._digest, self._data, self.name, self._source))


class UnknownDetectorError(InputError, KeyError):
    """A detector name or id that the camera does not have."""

    def __init__(self, camera: str, key: object) -> None:
        super().__init__(camera, key)
        self.camera = camera
        self.key = key

    def __str__(self) -> str:
        return f"camera {self.camera!r} has no detector {self.key!r}"


def list_cameras() -> list[str]:
    """Names of the built-in cameras."""
    return sorted(_BUILTIN)


def canonical_camera_name(name: str) -> str | None:
    """The built-in camera name for ``name`` (case-insensitive, aliases, INSTRUME values)."""
    key = str(name).strip().lower()
    key = _ALIASES.get(key, key)
    return key if key in _BUILTIN else None


def get_camera(name: str | Camera) -> Camera:
    """A built-in camera by name (case-insensitive): ``lsstcam``, ``lsstcomcam`` (``comcam``),
    ``latiss``, ``hsc``, ``decam``; a path to a JSON/YAML file is read with `Camera.from_file`.

    Raises
    ------
    InputError
        For an unknown name, listing the known ones.
    """
    if isinstance(name, Camera):
        return name
    key = canonical_camera_name(name)
    if key is not None:
        return _load_builtin(key)
    path = Path(str(name))
    if path.suffix.lower() in (".json", ".yaml", ".yml") and path.is_file():
        return Camera.from_file(path)
    raise InputError(
        f"unknown camera {name!r}; built-in cameras are {', '.join(list_cameras())} "
        "(or give the path of a camera JSON/YAML file)"
    )


_LOAD_LOCK = threading.Lock()

#: Cameras unpickled in this process, by their document's digest: the tasks of one run
#: carry the same user camera, built once per worker instead of once per task.
_UNPICKLED: dict[str, Camera] = {}
_UNPICKLED_MAX = 8


def _unpickled_camera(digest: str, data: Mapping[str, Any], name: str,
                      source: str) -> Camera:
    with _LOAD_LOCK:
        camera = _UNPICKLED.get(digest)
    if camera is None:
        camera = Camera(data, name, source)
        camera._digest = digest
        with _LOAD_LOCK:
            while len(_UNPICKLED) >= _UNPICKLED_MAX:
                del _UNPICKLED[next(iter(_UNPICKLED))]
            camera = _UNPICKLED.setdefault(digest, camera)
    return camera


def _load_builtin(key: str) -> Camera:
    """The built-in camera ``key``, built once per process. Under a lock: the header-reading
    threads of `~ampoffset_dask.pipeline.inputs.plan_tasks` all ask for the cameras at the
    same moment, and each would otherwise build its own copy of every camera (~0.1 s of CPU
    each: eight threads made a CLI run's planning ~0.8 s slower)."""
    with _LOAD_LOCK:
        return _build_builtin(key)


@functools.cache
def _build_builtin(key: str) -> Camera:
    path = _DATA_DIR / _BUILTIN[key]
    with path.open() as fh:
        data = json.load(fh)
    camera = Camera(data, name=key, source=str(path))
    camera._builtin = key
    return camera
