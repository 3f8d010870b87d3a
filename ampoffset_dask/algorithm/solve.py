"""The least-squares pedestal solve (LSST ``getAmpOffsets`` right-hand side + ``lstsq``)."""

from __future__ import annotations

import functools
from collections.abc import Mapping

import numpy as np

from ..geometry import AmpGrid

__all__ = ["right_hand_side", "solve_pedestals"]


def right_hand_side(grid: AmpGrid, offsets: Mapping[tuple[int, int], float]) -> np.ndarray:
    """``b[i] = sum_j w_ij * o_ij`` with ``o_ji = -o_ij``, accumulated in LSST's order."""
    a = grid.associations
    terms = _terms(a.tobytes(), a.dtype.str, a.shape)
    b = np.zeros(a.shape[0])
    # Python floats: the same double products and sums as numpy's, one per neighbour.
    for i, row in enumerate(terms):
        total = 0.0
        for j, w in row:
            total += w * (float(offsets[(i, j)]) if i < j else -float(offsets[(j, i)]))
        b[i] = total
    return b


@functools.lru_cache(maxsize=64)
def _terms(buffer: bytes, dtype: str, shape: tuple[int, int]) -> tuple[tuple, ...]:
    """Per amp, its neighbours ``j`` (ascending) and weights ``-a[i, j]`` as floats."""
    a = np.frombuffer(buffer, dtype=dtype).reshape(shape)
    return tuple(tuple((int(j), float(-a[i, j])) for j in np.flatnonzero(a[i] < 0))
                 for i in range(shape[0]))


def solve_pedestals(associations: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Minimum-norm least-squares pedestals, NaN replaced by 0 (numpy ``lstsq``)."""
    return np.nan_to_num(np.linalg.lstsq(associations, b, rcond=None)[0])
