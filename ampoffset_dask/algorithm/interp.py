"""GSL's 1-D interpolants as afw's background uses them, vectorized over many curves.

Natural cubic spline, non-periodic Akima and linear interpolation are written from their
defining formulas (ALGORITHM.md section 3.5), plus afw's CONSTANT style and its quadratic
extrapolation outside the knots. Every curve in a batch shares the knot abscissae, which
is how the background evaluates columns and rows.
"""

from __future__ import annotations

import dataclasses

import numpy as np

__all__ = [
    "MIN_POINTS",
    "Piecewise",
    "evaluate",
    "interpolate_rows",
    "max_style",
    "piecewise",
    "piecewise_coefficients",
]

MIN_POINTS = {
    "CONSTANT": 1,
    "LINEAR": 2,
    "NATURAL_SPLINE": 3,
    "CUBIC_SPLINE": 3,
    "AKIMA_SPLINE": 5,
}


def max_style(n: int) -> str:
    """The richest style usable with ``n`` points (afw ``lookupMaxInterpStyle``)."""
    if n > 4:
        return "AKIMA_SPLINE"
    if n > 2:
        return "CUBIC_SPLINE"
    if n == 2:
        return "LINEAR"
    return "CONSTANT"


def _natural_spline(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, ...]:
    """GSL natural cubic spline coefficients ``(b, c, d)`` per interval, rows of ``y``."""
    n = x.shape[0]
    m = y.shape[0]
    h = np.diff(x)
    c = np.zeros((m, n))
    size = n - 2
    diag = 2.0 * (h[1:] + h[:-1])
    off = h[1:]
    g = 3.0 * ((y[:, 2:] - y[:, 1:-1]) * (1.0 / h[1:]) - (y[:, 1:-1] - y[:, :-2]) * (1.0 / h[:-1]))
    if size == 1:
        c[:, 1] = g[:, 0] / diag[0]
    else:
        # Symmetric tridiagonal LDL^T elimination; the factors depend only on x.
        alpha = np.empty(size)
        gamma = np.empty(size)
        alpha[0] = diag[0]
        gamma[0] = off[0] / alpha[0]
        for i in range(1, size - 1):
            alpha[i] = diag[i] - off[i - 1] * gamma[i - 1]
            gamma[i] = off[i] / alpha[i]
        alpha[size - 1] = diag[size - 1] - off[size - 2] * gamma[size - 2]
        z = np.empty((m, size))
        z[:, 0] = g[:, 0]
        for i in range(1, size):
            z[:, i] = g[:, i] - gamma[i - 1] * z[:, i - 1]
        cc = z / alpha
        sol = np.empty((m, size))
        sol[:, size - 1] = cc[:, size - 1]
        for i in range(size - 2, -1, -1):
            sol[:, i] = cc[:, i] - gamma[i] * sol[:, i + 1]
        c[:, 1:-1] = sol
    dy = np.diff(y, axis=1)
    ci, cip1 = c[:, :-1], c[:, 1:]
    b = dy / h - h * (cip1 + 2.0 * ci) / 3.0
    d = (cip1 - ci) / (3.0 * h)
    return b, ci.copy(), d


def _akima(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, ...]:
    """GSL non-periodic Akima coefficients ``(b, c, d)`` per interval, rows of ``y``.

    Computed knot by knot over all rows at once (the knot index is the outer axis, so the
    shifted slopes are contiguous views); returned as ``(rows, intervals)`` views.
    """
    n = x.shape[0]
    h = np.diff(x)[:, None]
    yt = np.ascontiguousarray(y.T)
    mm = np.empty((n + 3, y.shape[0]))
    # mm[k + 2] is the secant slope m_k, k = -2 .. n.
    mm[2 : n + 1] = np.diff(yt, axis=0) / h
    mm[1] = 2.0 * mm[2] - mm[3]
    mm[0] = 3.0 * mm[2] - 2.0 * mm[3]
    mm[n + 1] = 2.0 * mm[n] - mm[n - 1]
    mm[n + 2] = 3.0 * mm[n] - 2.0 * mm[n - 1]
    m_im2, m_im1, m_i, m_ip1, m_ip2 = (mm[k : k + n - 1] for k in range(5))
    ne = np.abs(m_ip1 - m_i) + np.abs(m_im1 - m_im2)
    ne_next = np.abs(m_ip2 - m_ip1) + np.abs(m_i - m_im1)
    with np.errstate(divide="ignore", invalid="ignore"):
        alpha = np.abs(m_im1 - m_im2) / ne
        alpha_next = np.abs(m_i - m_im1) / ne_next
        t_right = np.where(ne_next == 0.0, m_i, (1.0 - alpha_next) * m_i + alpha_next * m_ip1)
        b = (1.0 - alpha) * m_im1 + alpha * m_i
        c = (3.0 * m_i - 2.0 * b - t_right) / h
        d = (b + t_right - 2.0 * m_i) / (h * h)
    flat = ne == 0.0
    b = np.where(flat, m_i, b)
    c = np.where(flat, 0.0, c)
    d = np.where(flat, 0.0, d)
    return b.T, c.T, d.T


def _linear(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, ...]:
    b = np.diff(y, axis=1) / np.diff(x)
    zeros = np.zeros_like(b)
    return b, zeros, zeros


def piecewise_coefficients(style: str, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, ...]:
    """Cubic coefficients ``(b, c, d)`` of every interval for every row of ``y``.

    The value in interval ``i`` at ``t = x - x_i`` is ``y_i + t*(b + t*(c + t*d))``.
    """
    if style == "AKIMA_SPLINE":
        return _akima(x, y)
    if style in ("CUBIC_SPLINE", "NATURAL_SPLINE"):
        return _natural_spline(x, y)
    if style == "LINEAR":
        return _linear(x, y)
    raise ValueError(f"no piecewise coefficients for style {style!r}")


@dataclasses.dataclass(frozen=True)
class Piecewise:
    """The piecewise cubics of every row of ``y``, laid out for evaluation at ``xs``.

    ``xs[lo:hi]`` lie inside ``[x[0], x[-1]]``; ``xs[starts[i]:stops[i]]`` (absolute
    indices) lie in interval ``i``, where ``t`` (indexed from ``lo``) is their distance to
    ``x[i]``. Outside, afw's quadratic extrapolation uses GSL's first and second
    derivatives at the end knots (``d1_*``, ``d2_*``, one column per row of ``y``).
    """

    y: np.ndarray
    b: np.ndarray
    c: np.ndarray
    d: np.ndarray
    lo: int
    hi: int
    starts: np.ndarray
    stops: np.ndarray
    t: np.ndarray
    dx_left: np.ndarray
    dx_right: np.ndarray
    d1_left: np.ndarray
    d2_left: np.ndarray
    d1_right: np.ndarray
    d2_right: np.ndarray

    def segments(self):
        """``(i, a, e, t)`` of every non-empty interval: positions ``a:e``, offsets ``t``."""
        for i, (a, e) in enumerate(zip(self.starts.tolist(), self.stops.tolist(),
                                       strict=True)):
            if e > a:
                yield i, a, e, self.t[a - self.lo:e - self.lo]

    def horner(self, rows: slice, i: int, t: np.ndarray, out: np.ndarray,
               dest: np.ndarray | None = None) -> np.ndarray:
        """``y + t*(b + t*(c + t*d))`` of interval ``i`` for ``rows``, in ``out`` (double);
        ``t`` is the interval's offsets, one row or repeated for every row.

        With ``dest`` (e.g. float32), the last addition, still in double, is rounded once
        into ``dest`` instead, which is returned.
        """
        np.multiply(self.d[rows, i:i + 1], t, out=out)
        out += self.c[rows, i:i + 1]
        out *= t
        out += self.b[rows, i:i + 1]
        out *= t
        if dest is None:
            out += self.y[rows, i:i + 1]
            return out
        return np.add(out, self.y[rows, i:i + 1], out=dest, casting="unsafe")

    def left(self, rows: slice) -> np.ndarray:
        """The extrapolation at ``xs[:lo]`` for ``rows``."""
        dx = self.dx_left
        return self.y[rows, :1] + dx * self.d1_left[rows] + 0.5 * dx * dx * self.d2_left[rows]

    def right(self, rows: slice) -> np.ndarray:
        """The extrapolation at ``xs[hi:]`` for ``rows``."""
        dx = self.dx_right
        return (self.y[rows, -1:] + dx * self.d1_right[rows]
                + 0.5 * dx * dx * self.d2_right[rows])


def piecewise(style: str, x: np.ndarray, y: np.ndarray, xs: np.ndarray) -> Piecewise:
    """Fit the piecewise ``style`` through every row of ``y`` (knots ``x``) and lay it out
    for evaluation at the increasing positions ``xs`` (see `Piecewise`)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.ascontiguousarray(np.atleast_2d(y), dtype=np.float64)
    xs = np.asarray(xs, dtype=np.float64)
    b, c, d = piecewise_coefficients(style, x, y)
    n = x.shape[0]
    lo = int(np.searchsorted(xs, x[0], side="left"))
    hi = int(np.searchsorted(xs, x[-1], side="right"))
    # Interval of each inside position: largest i <= n-2 with x_i <= position.
    xin = xs[lo:hi]
    idx = np.minimum(np.searchsorted(x, xin, side="right") - 1, n - 2)
    intervals = np.arange(n - 1)
    h_last = x[-1] - x[-2]
    bl, cl, dl = b[:, -1:], c[:, -1:], d[:, -1:]
    return Piecewise(
        y=y, b=b, c=c, d=d, lo=lo, hi=hi,
        starts=lo + np.searchsorted(idx, intervals, side="left"),
        stops=lo + np.searchsorted(idx, intervals, side="right"),
        t=xin - x[idx], dx_left=xs[:lo] - x[0], dx_right=xs[hi:] - x[-1],
        d1_left=b[:, :1], d2_left=2.0 * c[:, :1],
        d1_right=bl + h_last * (2.0 * cl + 3.0 * dl * h_last),
        d2_right=2.0 * cl + 6.0 * dl * h_last,
    )


def _constant(x: np.ndarray, y: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """afw's CONSTANT style: a step function on re-centred knots."""
    if x.shape[0] == 1:
        return np.repeat(y[:, :1], xs.shape[0], axis=1)
    knots = np.concatenate(
        ([1.5 * x[0] - 0.5 * x[1]], 0.5 * (x[1:] + x[:-1]), [1.5 * x[-1] - 0.5 * x[-2]])
    )
    vals = np.concatenate((y[:, :1], 0.5 * (y[:, 1:] + y[:, :-1]), y[:, -1:]), axis=1)
    idx = np.clip(np.searchsorted(knots, xs, side="right") - 1, 0, knots.shape[0] - 1)
    return vals[:, idx]


def evaluate(
    style: str, x: np.ndarray, y: np.ndarray, xs: np.ndarray, out: np.ndarray | None = None
) -> np.ndarray:
    """Evaluate the interpolant of every row of ``y`` (knots ``x``) at positions ``xs``.

    Outside ``[x[0], x[-1]]`` the value is afw's quadratic extrapolation from the nearest
    end knot, using GSL's first and second derivatives there.

    Parameters
    ----------
    style : str
        ``CONSTANT``, ``LINEAR``, ``NATURAL_SPLINE``, ``CUBIC_SPLINE`` or ``AKIMA_SPLINE``.
    x : ndarray, shape (n,)
        Increasing knot abscissae.
    y : ndarray, shape (m, n)
        Knot values of ``m`` curves.
    xs : ndarray, shape (k,)
        Increasing evaluation positions.
    out : ndarray, shape (m, k), optional
        Destination (e.g. float32: each double value is rounded once when stored).

    Returns
    -------
    ndarray, shape (m, k)
        ``out``, or a new float64 array.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.atleast_2d(np.asarray(y, dtype=np.float64))
    xs = np.asarray(xs, dtype=np.float64)
    if style == "CONSTANT":
        values = _constant(x, y, xs)
        if out is None:
            return values
        out[...] = values
        return out
    if out is None:
        out = np.empty((y.shape[0], xs.shape[0]))
    p = piecewise(style, x, y, xs)
    every = slice(None)
    for i, a, e, t in p.segments():
        # Horner in a contiguous double buffer (strided in-place updates are several times
        # slower), same operation order as y + t*(b + t*(c + t*d)); stored once into out.
        out[:, a:e] = p.horner(every, i, t, np.empty((y.shape[0], e - a)))
    if p.lo > 0:
        out[:, :p.lo] = p.left(every)
    if p.hi < xs.shape[0]:
        out[:, p.hi:] = p.right(every)
    return out


def interpolate_rows(
    style: str, knots: np.ndarray, values: np.ndarray, out_len: int, dtype=np.float64
) -> np.ndarray:
    """Interpolate each row of ``values`` (knots along axis 1) at 0..out_len-1.

    Rows with NaN knots drop them and fall back to a poorer style (afw's rule); a row
    without knots is NaN. The result has ``dtype`` (each double value rounded once).
    """
    xs = np.arange(out_len, dtype=np.float64)
    finite = np.isfinite(values)
    out = np.empty((values.shape[0], out_len), dtype=dtype)
    clean = finite.all(axis=1)
    if clean.all():
        evaluate(style, knots, values, xs, out=out)
    elif clean.any():
        out[clean] = evaluate(style, knots, values[clean], xs)
    for r in np.flatnonzero(~clean):
        keep = finite[r]
        npts = int(np.count_nonzero(keep))
        if npts == 0:
            out[r] = np.nan
            continue
        st = style if npts >= MIN_POINTS[style] else max_style(npts)
        out[r] = evaluate(st, knots[keep], values[r, keep][None, :], xs)[0]
    return out
