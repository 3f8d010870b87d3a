"""Is a measurement believable? Detectors whose interfaces mostly fail the do-no-harm checks.

The do-no-harm checks zero an interface whose offset exceeds ``ampEdgeMaxOffset`` or whose edge
has too few valid pixels. When that happens to at least half of a detector's interfaces the
pedestals are mostly zeros by construction, not a measurement: the usual causes are raw pixels
(bias not subtracted), amps in different units (gains), or an image masked almost everywhere.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from .edges import INSET_ZERO

__all__ = ["harm_check", "undefined_cause"]


def _get(itf: Any, name: str) -> Any:
    return itf[name] if isinstance(itf, dict) else getattr(itf, name)


def harm_check(interfaces: Sequence[Any], max_offset: float, min_frac: float,
               threshold: float = 0.5, inset: int | None = None) -> str | None:
    """A warning naming the likely cause when at least ``threshold`` of the interfaces failed.

    Parameters
    ----------
    interfaces : sequence of InterfaceResult or dict
        With ``max_offset_fail``, ``min_frac_fail``, ``offset_raw`` and ``good_frac``.
    max_offset, min_frac : float
        The config's ``ampEdgeMaxOffset`` and ``ampEdgeMinFrac`` (named in the message).
    threshold : float
        Fraction of failed interfaces from which the detector is flagged.
    inset : int, optional
        The config's ``ampEdgeInset``: 0 empties every interface's strip on its lower amp
        (LSST's slice ``-ampEdgeWidth:-0``), which the message then names as the cause.

    Returns
    -------
    str or None
        None when the measurement is usable (no interfaces, or fewer failures).
    """
    n = len(interfaces)
    if n == 0:
        return None
    too_big = sum(bool(_get(i, "max_offset_fail")) for i in interfaces)
    too_few = sum(bool(_get(i, "min_frac_fail")) and not bool(_get(i, "max_offset_fail"))
                  for i in interfaces)
    # passed do-no-harm, but no clipped mean: set to 0 as well (`undefined_cause`)
    undefined = [i for i in interfaces
                 if not (_get(i, "min_frac_fail") or _get(i, "max_offset_fail"))
                 and math.isnan(float(_get(i, "offset_raw")))]
    if too_big + too_few + len(undefined) < threshold * n:
        return None
    if len(undefined) >= too_big + too_few:
        unshared = sum(float(_get(i, "good_frac")) == 0.0 for i in undefined)
        if 2 * unshared > len(undefined):
            return (f"{len(undefined)} of {n} interfaces have no position where both edges "
                    f"hold data (ampEdgeMinFrac={min_frac:g} let them through): image mostly "
                    "masked?")
        return (f"{len(undefined)} of {n} interfaces have edge differences without a clipped "
                "mean (every one clipped): edges without noise, a synthetic or constant image?")
    if inset == 0 and too_few:
        return f"{too_few} of {n} interfaces unmeasured: {INSET_ZERO}; use ampEdgeInset >= 1"
    if too_big >= too_few:
        return (f"{too_big} of {n} interfaces exceed ampEdgeMaxOffset={max_offset:g}: "
                "not bias/overscan corrected, or gains differ?")
    return (f"{too_few} of {n} interfaces have fewer valid pixels than "
            f"ampEdgeMinFrac={min_frac:g}: image mostly masked?")


def undefined_cause(good_frac: float) -> str:
    """Why an interface that passed the do-no-harm checks has no clipped mean (a NaN raw
    offset, which is then set to 0), from its fraction of valid positions."""
    if good_frac == 0.0:
        return ("its edges have no position where both hold data (ampEdgeMinFrac 0 let it "
                "through)")
    return "its edge differences have no clipped mean (every one clipped: edges without noise?)"
