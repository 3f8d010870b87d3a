"""Small, picklable results of measuring one detector."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

__all__ = ["DetectorMeasurement", "InterfaceResult"]


@dataclasses.dataclass(frozen=True)
class InterfaceResult:
    """The measured offset across one amp-amp interface.

    Attributes
    ----------
    id : str
        ``"<amp_a>-<amp_b>"`` (``amp_a`` has the lower amp id), LSST's interface name.
    amp_a, amp_b : str
        Amp names.
    side : int
        Side of ``amp_a`` on which ``amp_b`` lies (0: +y, 1: +x, 2: -y, 3: -x).
    length : int
        Interface length in pixels.
    offset_raw : float
        Clipped mean of the (smoothed) edge difference, A minus B, before the do-no-harm
        checks (NaN when no valid sample exists). LSST's ``INTERFACEOFFSET`` metadata value.
    offset : float
        The value used in the solve (0 when a do-no-harm check failed, or when
        ``offset_raw`` is NaN).
    good_frac : float
        Fraction of valid positions along the interface.
    min_frac_fail : bool
        ``good_frac < ampEdgeMinFrac`` (or an edge is fully masked).
    max_offset_fail : bool
        ``abs(offset_raw) > ampEdgeMaxOffset``.
    offset_err : float
        Statistical standard error of ``offset_raw`` from the strips' pixel scatter, masked
        pixels and the smoothing window (NaN when no position is valid); with LSST's
        estimator and ``doBackground``, the step the background absorbed is added in
        quadrature (`ampoffset_dask.algorithm.background_bias`).
    weight : float
        Robust weight factor in [0, 1] of the ``"robust"`` estimator (0: rejected as
        inconsistent with the other interfaces); always 1 for LSST's estimator.
    gain_ratio, gain_ratio_err : float
        Response of A over response of B (ADU per unit signal: above 1, A reads high and
        its e-/ADU gain is the lower) from the step's dependence on the local flux along the
        interface (`algorithm.gain`), with its error; NaN without flux range, or when the
        step changes faster than twice the flux (no gain does that: additive structure).
    gain_like : bool
        The step scales with flux (its slope against the flux, about ``gain_ratio - 1``,
        beyond 4 of its standard errors).
    """

    id: str
    amp_a: str
    amp_b: str
    side: int
    length: int
    offset_raw: float
    offset: float
    good_frac: float
    min_frac_fail: bool
    max_offset_fail: bool
    offset_err: float = math.nan
    weight: float = 1.0
    gain_ratio: float = math.nan
    gain_ratio_err: float = math.nan
    gain_like: bool = False

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python dictionary (`dataclasses.asdict`'s, which deep-copies every
        scalar: ~10x slower, for every interface of every catalog record)."""
        return {name: getattr(self, name) for name in _INTERFACE_FIELDS}

    def __eq__(self, other: object) -> bool:
        # NaN equals NaN: a result equals its own copy (an unpickled one, say).
        if type(other) is not type(self):
            return NotImplemented
        return all(_same(getattr(self, n), getattr(other, n)) for n in _INTERFACE_FIELDS)

    def __hash__(self) -> int:
        return hash(tuple(_hashable(getattr(self, n)) for n in _INTERFACE_FIELDS))


#: Every field of `InterfaceResult` holds an immutable scalar.
_INTERFACE_FIELDS = tuple(f.name for f in dataclasses.fields(InterfaceResult))


def _same(a: Any, b: Any) -> bool:
    """Equal values, NaN equal to NaN; arrays element by element (shape and values)."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        if a is None or b is None:
            return False
        a, b = np.asarray(a), np.asarray(b)
        nan_ok = a.dtype.kind in "fc" and b.dtype.kind in "fc"
        return bool(np.array_equal(a, b, equal_nan=nan_ok))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, tuple) and isinstance(b, tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _hashable(value: Any) -> Any:
    # Every NaN hashes alike (Python hashes NaN objects by identity).
    return "nan" if isinstance(value, float) and math.isnan(value) else value


@dataclasses.dataclass(frozen=True, eq=False)  # its own __eq__; unhashable (arrays)
class DetectorMeasurement:
    """Everything `measure_detector` found for one detector.

    Attributes
    ----------
    detector : str
        Detector name.
    amp_names : tuple of str
        Amp names in detector order.
    pedestals : ndarray of float64
        One pedestal per amp, in amp order; positive means the amp is too bright.
    interfaces : tuple of InterfaceResult
        In LSST's order (by lower amp id, then neighbour id).
    background : str
        ``"ok"``, ``"off"`` or ``"skipped: <reason>"``.
    detection : str
        ``"ok"``, ``"off"`` or ``"skipped: <reason>"``.
    threshold : float
        Detection threshold in image units (NaN when detection did not run).
    n_detected : int
        Pixels flagged DETECTED by the detection step.
    masked_fraction : float
        Fraction of pixels excluded from the edges (any ignored plane, NaN, EDGE, DETECTED);
        NaN for a detector without edge strips (a single amp).
    all_masked : bool
        Every pixel was masked, so all pedestals are zero (with background and detection
        off, every pixel of the edge strips: the only pixels read; LSST's zeros all the same).
    warnings : tuple of str
        Human-readable warnings (fully masked edges, skipped background, ...).
    pedestal_errors : ndarray of float64 or None
        Standard error of each pedestal propagated through the solve, including the
        background's absorbed steps where they apply (NaN for an amp no used interface
        constrains, or when every pixel is masked).
    amp_levels : ndarray of float64 or None
        Each amp's signal level before background subtraction, e.g. the sky level, for
        the pedestal-vs-level gain regression: the median of its edge strips' line
        medians (each the median of the unmasked pixels across a strip at one position).
    """

    detector: str
    amp_names: tuple[str, ...]
    pedestals: np.ndarray
    interfaces: tuple[InterfaceResult, ...]
    background: str = "off"
    detection: str = "off"
    threshold: float = float("nan")
    n_detected: int = 0
    masked_fraction: float = 0.0
    all_masked: bool = False
    warnings: tuple[str, ...] = ()
    pedestal_errors: np.ndarray | None = None
    amp_levels: np.ndarray | None = None

    def __eq__(self, other: object) -> bool:
        # The generated comparison raised on the array fields; NaN equals NaN here, so a
        # measurement equals its own copy.
        if type(other) is not type(self):
            return NotImplemented
        return all(_same(getattr(self, f.name), getattr(other, f.name))
                   for f in dataclasses.fields(self))

    @property
    def pedestal_by_amp(self) -> dict[str, float]:
        """``{amp name: pedestal}``."""
        return {name: float(p) for name, p in zip(self.amp_names, self.pedestals, strict=True)}

    @property
    def interface_offsets_raw(self) -> dict[str, float]:
        """``{interface id: raw offset}`` (LSST's ``INTERFACEOFFSET`` metadata)."""
        return {i.id: i.offset_raw for i in self.interfaces}

    @property
    def background_ok(self) -> bool:
        """The background was fitted and subtracted."""
        return self.background == "ok"

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python dictionary (lists instead of arrays)."""
        out = dataclasses.asdict(self)
        out["pedestals"] = [float(p) for p in self.pedestals]
        for name in ("pedestal_errors", "amp_levels"):
            if getattr(self, name) is not None:
                out[name] = [float(e) for e in getattr(self, name)]
        out["interfaces"] = [i.to_dict() for i in self.interfaces]
        out["amp_names"] = list(self.amp_names)
        out["warnings"] = list(self.warnings)
        return out
