"""Amplifier and detector geometry, and the amp grid the algorithm works on.

Boxes are in the assembled, trimmed detector frame: ``x`` is the column (numpy axis 1),
``y`` the row (numpy axis 0), origins 0-based, so an amp's pixels are
``image[y0:y0 + height, x0:x0 + width]``.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from .errors import GeometryError

__all__ = ["AmpGrid", "Amplifier", "Detector", "Interface", "check_overlaps"]

@dataclasses.dataclass(frozen=True)
class Amplifier:
    """One amplifier's data region in the assembled detector image.

    Parameters
    ----------
    name : str
        Amplifier name (``"C10"``).
    x0, y0 : int
        Lower-left corner (0-based column and row).
    width, height : int
        Size in pixels.
    """

    name: str
    x0: int
    y0: int
    width: int
    height: int

    def __post_init__(self) -> None:
        for f in ("x0", "y0", "width", "height"):
            value = getattr(self, f)
            if isinstance(value, bool) or int(value) != value:
                raise GeometryError(f"amp {self.name!r}: {f}={value!r} is not an integer")
            object.__setattr__(self, f, int(value))
        if self.width <= 0 or self.height <= 0:
            raise GeometryError(
                f"amp {self.name!r}: size {self.width}x{self.height} must be positive"
            )
        if self.x0 < 0 or self.y0 < 0:
            raise GeometryError(f"amp {self.name!r}: origin ({self.x0}, {self.y0}) is negative")

    @property
    def slices(self) -> tuple[slice, slice]:
        """``(rows, columns)`` slices of this amp in a detector array."""
        return slice(self.y0, self.y0 + self.height), slice(self.x0, self.x0 + self.width)

    @property
    def x1(self) -> int:
        """One past the last column."""
        return self.x0 + self.width

    @property
    def y1(self) -> int:
        """One past the last row."""
        return self.y0 + self.height

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe representation."""
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Interface:
    """A boundary between two neighbouring amps (``a`` has the lower amp id).

    Attributes
    ----------
    a, b : int
        Amp ids (``a < b``).
    side : int
        Side of ``a`` on which ``b`` lies (0: larger y, 1: larger x, 2: smaller y, 3: smaller x).
    length : int
        Number of pixels along the boundary.
    id : str
        ``"<name a>-<name b>"``, LSST's interface name.
    """

    a: int
    b: int
    side: int
    length: int
    id: str


@dataclasses.dataclass(frozen=True)
class AmpGrid:
    """The amp grid of a detector and LSST's association and side matrices.

    Attributes
    ----------
    amp_ids : ndarray of int, shape (n_y, n_x)
        ``amp_ids[row, col]`` is the amp id at that grid cell (row = y index).
    associations : ndarray of int, shape (n_amps, n_amps)
        The (optionally length-weighted) graph Laplacian of the amp grid.
    sides : ndarray of int, shape (n_amps, n_amps)
        ``sides[i, j]``: side of amp ``j`` as seen from amp ``i``; -1 if not neighbours.
    interfaces : tuple of Interface
        In LSST's evaluation order: by lower amp id, then by neighbour id.
    """

    amp_ids: np.ndarray
    associations: np.ndarray
    sides: np.ndarray
    interfaces: tuple[Interface, ...]


@dataclasses.dataclass(frozen=True)
class Detector:
    """A detector: its size and its amplifiers in detector (LSST cameraGeom) order.

    The amp order defines amp ids 0..N-1, the order of pedestals and the interface names.

    Parameters
    ----------
    name : str
        Detector name (``"R22_S11"``).
    width, height : int
        Size of the assembled detector image.
    amplifiers : sequence of Amplifier
        In detector order.
    id : int, optional
        Integer detector id.
    """

    name: str
    width: int
    height: int
    amplifiers: tuple[Amplifier, ...]
    id: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "amplifiers", tuple(self.amplifiers))
        object.__setattr__(self, "width", int(self.width))
        object.__setattr__(self, "height", int(self.height))
        if self.id is not None:
            object.__setattr__(self, "id", int(self.id))
        if not self.amplifiers:
            raise GeometryError(f"detector {self.name!r} has no amplifiers")
        names = [a.name for a in self.amplifiers]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise GeometryError(f"detector {self.name!r}: duplicate amp names {dupes}")
        for amp in self.amplifiers:
            if amp.x1 > self.width or amp.y1 > self.height:
                raise GeometryError(
                    f"detector {self.name!r}: amp {amp.name!r} box x[{amp.x0}:{amp.x1}] "
                    f"y[{amp.y0}:{amp.y1}] lies outside the {self.width}x{self.height} image"
                )

    # -- construction helpers -------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Detector:
        """Build from ``{"name", "width", "height", "amplifiers": [{name, x0, y0, width,
        height} | {name, bbox: [x0, y0, w, h]}], "id"}``."""
        amps = []
        for amp in data.get("amplifiers", data.get("amps", ())):
            if "bbox" in amp:
                x0, y0, w, h = amp["bbox"]
                amps.append(Amplifier(amp["name"], x0, y0, w, h))
            else:
                amps.append(Amplifier(amp["name"], amp["x0"], amp["y0"], amp["width"],
                                      amp["height"]))
        return cls(data["name"], data["width"], data["height"], tuple(amps), data.get("id"))

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe representation (inverse of `from_dict`)."""
        return {
            "name": self.name,
            "id": self.id,
            "width": self.width,
            "height": self.height,
            "amplifiers": [a.to_dict() for a in self.amplifiers],
        }

    # -- queries ----------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int]:
        """``(height, width)``, the numpy shape of the detector image."""
        return self.height, self.width

    @property
    def amp_names(self) -> tuple[str, ...]:
        """Amp names in detector order."""
        return tuple(a.name for a in self.amplifiers)

    def __len__(self) -> int:
        return len(self.amplifiers)

    def __iter__(self):
        return iter(self.amplifiers)

    def __getitem__(self, key: int | str) -> Amplifier:
        if isinstance(key, str):
            for amp in self.amplifiers:
                if amp.name == key:
                    return amp
            raise KeyError(f"detector {self.name!r} has no amp {key!r}")
        return self.amplifiers[key]

    def with_amp_order(self, names: Sequence[str]) -> Detector:
        """Return the same detector with its amps re-ordered by ``names``."""
        return dataclasses.replace(self, amplifiers=tuple(self[n] for n in names))

    def check(self) -> None:
        """Validate that the amps tile the detector as the algorithm needs.

        Raises
        ------
        GeometryError
            For unequal amp sizes, overlaps, holes or a non-rectangular tiling, naming the amps.
        """
        self.grid(True)

    def grid(self, apply_weights: bool = True) -> AmpGrid:
        """The amp grid and the association/side matrices (validated, cached).

        Parameters
        ----------
        apply_weights : bool
            Weight each interface by its length (LSST ``applyWeights``).
        """
        return _grid(self, bool(apply_weights))


@functools.lru_cache(maxsize=256)
def _grid(detector: Detector, apply_weights: bool) -> AmpGrid:
    amps = detector.amplifiers
    first = amps[0]
    for amp in amps[1:]:
        if (amp.width, amp.height) != (first.width, first.height):
            raise GeometryError(
                f"detector {detector.name!r}: amps must all have the same size; "
                f"{first.name!r} is {first.width}x{first.height} but {amp.name!r} is "
                f"{amp.width}x{amp.height}"
            )
    w, h = first.width, first.height
    check_overlaps(detector)
    gx0 = min(a.x0 for a in amps)
    gy0 = min(a.y0 for a in amps)
    cells: dict[tuple[int, int], int] = {}
    for i, amp in enumerate(amps):
        dx, dy = amp.x0 - gx0, amp.y0 - gy0
        if dx % w or dy % h:
            raise GeometryError(
                f"detector {detector.name!r}: amp {amp.name!r} at ({amp.x0}, {amp.y0}) is not on "
                f"the {w}x{h} grid started by the other amps (non-rectangular tiling)"
            )
        cells[(dy // h, dx // w)] = i
    ny = 1 + max(r for r, _ in cells)
    nx = 1 + max(c for _, c in cells)
    if ny * nx != len(amps):
        missing = [(c, r) for r in range(ny) for c in range(nx) if (r, c) not in cells]
        holes = ", ".join(
            f"x[{gx0 + c * w}:{gx0 + (c + 1) * w}] y[{gy0 + r * h}:{gy0 + (r + 1) * h}]"
            for c, r in missing
        )
        raise GeometryError(
            f"detector {detector.name!r}: the {len(amps)} amps do not fill a rectangular "
            f"{nx}x{ny} grid; hole(s) at {holes}"
        )
    amp_ids = np.zeros((ny, nx), dtype=int)
    for (r, c), i in cells.items():
        amp_ids[r, c] = i
    n = len(amps)
    assoc = np.zeros((n, n), dtype=int)
    sides = np.full((n, n), -1, dtype=int)
    lengths = (w, h, w, h)
    steps = ((1, 0), (0, 1), (-1, 0), (0, -1))
    for (r, c), i in cells.items():
        for side, (dr, dc) in enumerate(steps):
            rr, cc = r + dr, c + dc
            if 0 <= rr < ny and 0 <= cc < nx:
                j = amp_ids[rr, cc]
                weight = lengths[side] if apply_weights else 1
                assoc[i, j] = -weight
                sides[i, j] = side
    assoc[np.diag_indices(n)] = -assoc.sum(axis=1)
    interfaces = []
    for i in range(n):
        for j in np.flatnonzero(assoc[i] < 0):
            if i < j:
                side = int(sides[i, j])
                interfaces.append(
                    Interface(i, int(j), side, lengths[side], f"{amps[i].name}-{amps[j].name}")
                )
    for arr in (amp_ids, assoc, sides):
        arr.setflags(write=False)
    return AmpGrid(amp_ids, assoc, sides, tuple(interfaces))


def check_overlaps(detector: Detector) -> None:
    """`GeometryError` naming the first two amps of ``detector`` whose boxes overlap."""
    amps = sorted(detector.amplifiers, key=lambda a: (a.x0, a.y0))
    for k, a in enumerate(amps):
        for b in amps[k + 1:]:
            if b.x0 >= a.x1:
                break
            if a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1:
                raise GeometryError(
                    f"detector {detector.name!r}: amps {a.name!r} and {b.name!r} overlap"
                )


def detector_from_boxes(
    name: str,
    width: int,
    height: int,
    boxes: Iterable[tuple[str, int, int, int, int]],
    id: int | None = None,
) -> Detector:
    """Build a `Detector` from ``(name, x0, y0, width, height)`` tuples."""
    return Detector(name, width, height, tuple(Amplifier(*b) for b in boxes), id)
