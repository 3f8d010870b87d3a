"""Mask-plane dictionaries (plane name -> bit number), as LSST's afw uses them."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

from .errors import ConfigError

__all__ = ["DEFAULT_MASK_PLANES", "mask_bits"]

logger = logging.getLogger(__name__)

#: afw's default mask dictionary.
DEFAULT_MASK_PLANES: dict[str, int] = {
    "BAD": 0,
    "SAT": 1,
    "INTRP": 2,
    "CR": 3,
    "EDGE": 4,
    "DETECTED": 5,
    "DETECTED_NEGATIVE": 6,
    "SUSPECT": 7,
    "NO_DATA": 8,
    "VIGNETTED": 9,
    "STREAK": 10,
}


def mask_bits(planes: Iterable[str], mask_planes: Mapping[str, int] | None = None,
              field: str = "") -> int:
    """OR of the bits of ``planes`` in ``mask_planes`` (afw's ``getPlaneBitMask``).

    A plane of afw's default dictionary that the mask does not define contributes nothing
    (no pixel can carry it). Any other name is an error, as in afw: a misspelt plane
    (``SATURATED`` for ``SAT``) would otherwise leave those pixels in silently.

    Raises
    ------
    ConfigError
        For a plane name neither the mask nor afw's defaults define (``field``, the
        config field the names come from, is named in the message).
    """
    mask_planes = DEFAULT_MASK_PLANES if mask_planes is None else mask_planes
    bits = 0
    for plane in planes:
        bit = mask_planes.get(plane)
        if bit is None:
            if plane in DEFAULT_MASK_PLANES:
                continue
            known = sorted(set(mask_planes) | set(DEFAULT_MASK_PLANES))
            raise ConfigError(f"{field + ': ' if field else ''}unknown mask plane {plane!r}; "
                              f"the mask's planes are {', '.join(known)}")
        if not 0 <= int(bit) < 31:
            raise ConfigError(f"mask plane {plane!r} has invalid bit {bit!r}")
        bits |= 1 << int(bit)
    return bits


def plane_bit(name: str, mask_planes: Mapping[str, int]) -> tuple[dict[str, int], int]:
    """Return ``(planes, bit)`` for ``name``, adding the plane at the first free bit if absent."""
    planes = dict(mask_planes)
    if name not in planes:
        used = set(planes.values())
        planes[name] = next(b for b in range(31) if b not in used)
    return planes, planes[name]
