"""The least-squares pedestal solve (LSST ``getAmpOffsets`` right-hand side + ``lstsq``)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ..geometry import AmpGrid

__all__ = ["right_hand_side", "solve_pedestals"]


def right_hand_side(grid: AmpGrid, offsets: Mapping[tuple[int, int], float]) -> np.ndarray:
    """``b[i] = sum_j w_ij * o_ij`` with ``o_ji = -o_ij``, accumulated in LSST's order."""
    n = grid.associations.shape[0]
    b = np.zeros(n)
    for i in range(n):
        for j in np.flatnonzero(grid.associations[i] < 0):
            w = -grid.associations[i, j]
            o = offsets[(i, j)] if i < j else -offsets[(j, i)]
            b[i] += w * o
    return b


def solve_pedestals(associations: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Minimum-norm least-squares pedestals, NaN replaced by 0 (numpy ``lstsq``)."""
    return np.nan_to_num(np.linalg.lstsq(associations, b, rcond=None)[0])
