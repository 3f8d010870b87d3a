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


def mask_bits(planes: Iterable[str], mask_planes: Mapping[str, int] | None = None) -> int:
    """OR of the bits of ``planes`` in ``mask_planes`` (afw's ``getPlaneBitMask``).

    Planes absent from the dictionary contribute nothing (as in LSST, where a plane
    that does not exist cannot be set).
    """
    mask_planes = DEFAULT_MASK_PLANES if mask_planes is None else mask_planes
    bits = 0
    for plane in planes:
        bit = mask_planes.get(plane)
        if bit is None:
            continue
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
