"""Gain-step diagnosis: is an interface step additive (a pedestal) or multiplicative (a gain)?

An additive pedestal difference gives the same step ``A - B`` all along an interface; a
relative gain error ``g`` between the amps gives a step proportional to the local flux,
``A - B = g S + delta``. `interface_gain` regresses the step at each position against the
local flux ``S`` (the mean of the two un-background-subtracted strip line medians, smoothed along
the interface so that its noise does not dilute the slope) and reports the gain ratio
``gain_A / gain_B = (1 + g/2) / (1 - g/2)`` with its error. "Gain" here is the amp's
response, ADU per unit of signal: a ratio above 1 says A reads high, so A's gain in
electrons per ADU (a camera's ``amp_gain``, what ``gain='nominal'`` multiplies by) is the
lower one. The step is the difference of
the two strips' levels extrapolated to the boundary (a straight line across each strip),
so that a gradient across the gap, which on a flat also scales with the flux, is not
taken for a gain step; the fit clips positions beyond 4 standard errors. The leverage is
the flux range along the interface: large on flats with vignetting, small on sky images
(there, regressing each amp's pedestal on its level across visits is the sensitive test).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np

from .offsets import _window_bounds, _window_sums_rows, window_lengths
from .stats import _row_sums, _stack_rows
from .strips import StripStats, exact_median, strip_stats

__all__ = ["GAIN_LIKE_SIGMA", "GainStep", "amp_levels", "gain_step", "gain_steps",
           "interface_gain"]

#: ``gain_like`` needs the slope to differ from zero by this many standard errors.
GAIN_LIKE_SIGMA = 4.0
_SMOOTH = 31
_JACKKNIFE_BLOCKS = 10
#: Positions along the interfaces `gain_steps` fits together (at most; equal chunks):
#: the stacked temporaries stay in the processor's cache (8 x 2000 measured best, and
#: better than 4 or 14 x 2000 or 4 x 509).
_BATCH_VALUES = 16384
_sum = np.add.reduce


class GainStep(NamedTuple):
    """Result of `interface_gain` (NaN when the interface has too little flux range, or
    when the fitted step changes with the flux too fast to be a gain: see
    `_gain_result`)."""

    gain_ratio: float
    gain_ratio_err: float
    gain_like: bool


def _boundary_values(stats: StripStats) -> tuple[np.ndarray, np.ndarray, float, bool]:
    """Each strip line's level extrapolated to the amp boundary, its variance, the
    standard error this extrapolation adds to a slope against the level, and whether
    every line is usable.

    Each line (across the strip, at one position along the interface) gets its clipped
    (3 sigma about the line median) mean and the slope of its pixels against the distance
    to the boundary (`StripStats`); the slopes are modelled along the interface as linear
    in the line level, and the mean is extrapolated to the boundary with that model, so
    that a gradient across the gap, which scales with the flux as a gain step does, is
    removed without much extra noise. The model's own uncertainty is linear in the level,
    so it looks exactly like a gain error: it is returned separately (``xm * err(beta)``)
    for the slope's error budget. The last value is True when no line was set to NaN.
    (Call under ``np.errstate(invalid="ignore", divide="ignore")``.)
    """
    sigma = stats.sigma
    if not math.isfinite(sigma):  # fewer than two valid pixels
        nan = np.full(stats.profile.shape[0], np.nan)
        return nan, nan, math.nan, False
    n, xm, ym, sxx = stats.clip_count, stats.dist_mean, stats.clip_mean, stats.dist_sxx
    # (np.add.reduce is np.sum without its Python wrapper: the same pairwise sums.)
    # The gradient across the strip, modelled as alpha + beta * level along the
    # interface (an illumination pattern scales with the flux): two parameters from
    # every line, so the extrapolation adds almost no noise and no correlated error
    # between positions.
    slope, ok = _line_slopes(stats)
    n_ok = int(np.count_nonzero(ok))
    if n_ok >= 3:
        every = n_ok == ok.shape[0]
        # Every line usable (the usual case): the arrays themselves, not equal copies.
        w, lv, sl = (sxx, ym, slope) if every else (sxx[ok], ym[ok], slope[ok])
        sw = float(_sum(w))
        l0 = float(_sum(w * lv) / sw)
        s0 = float(_sum(w * sl) / sw)
        dl = lv - l0
        wdl = w * dl
        den = float(_sum(wdl * dl))
        beta = float(_sum(wdl * (sl - s0)) / den) if den > 0 else 0.0
        slope_fit = s0 + beta * (dl if every else ym - l0)  # (lv is ym when every)
        slope_var = sigma * sigma / sw
        # Scatter of the line slopes about the model (reduced chi-square, at least 1).
        if sigma > 0 and den > 0:
            r = sl - (slope_fit if every else slope_fit[ok])
            chi2 = float(_sum(w * (r * r))) / (sigma * sigma)
            chi2 = max(chi2 / max(n_ok - 2, 1), 1.0)
            beta_err = math.sqrt(chi2 * sigma * sigma / den)
        else:  # noiseless strips (or no level range): no model uncertainty
            beta_err = 0.0
        # The mean distance of the lines with one: a finite total has no NaN behind it.
        total = float(_sum(xm))
        if not math.isfinite(total):
            fx = xm[np.isfinite(xm)]
            total = float(_sum(fx) / fx.shape[0])
        else:
            total = total / xm.shape[0]
        gain_term = total * beta_err
    else:
        slope_fit = np.zeros_like(ym)
        slope_var = 0.0
        gain_term = 0.0
    value = ym - slope_fit * xm
    var = sigma * sigma / n + xm * xm * slope_var
    good = n > 0
    good &= np.isfinite(value)
    if int(np.count_nonzero(good)) < good.shape[0]:
        bad = ~good
        value[bad] = np.nan
        var[bad] = np.nan
        return value, var, gain_term, False
    return value, var, gain_term, True


def _line_slopes(stats: StripStats) -> tuple[np.ndarray, np.ndarray]:
    """Each line's slope against the distance to the boundary, and which lines the slope
    model uses: a positive ``dist_sxx`` (a NaN one gives a NaN slope), a finite slope and
    a finite mean. (Under ``np.errstate(invalid="ignore", divide="ignore")``.)"""
    sxx = stats.dist_sxx
    slope = stats.dist_sxy / sxx
    ok = sxx > 0
    ok &= np.isfinite(slope)
    ok &= np.isfinite(stats.clip_mean)
    return slope, ok


def _running_mean(v: np.ndarray, window: int) -> np.ndarray:
    """NaN-aware centred running mean (numpy's ``"same"`` convolution windows, from
    cumulative sums; call under ``np.errstate(invalid="ignore", divide="ignore")``)."""
    n = v.shape[0]
    window = max(1, min(window, n))
    lo, hi = _window_bounds(n, window)
    cs = np.zeros(n + 1)
    np.cumsum(v, out=cs[1:])
    # A NaN or an infinity would carry to the end of the cumulative sum: a finite total
    # means no masking, and the counts are the window lengths.
    if math.isfinite(cs[n]):
        return (cs[hi] - cs[lo]) / window_lengths(n, window)
    ok = np.isfinite(v)
    np.cumsum(np.where(ok, v, 0.0), out=cs[1:])
    cc = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(ok, out=cc[1:])
    out = (cs[hi] - cs[lo]) / (cc[hi] - cc[lo])
    out[~ok] = np.nan
    return out


@functools.lru_cache(maxsize=32)
def _block_starts(n: int, n_blocks: int) -> np.ndarray:
    """Starts of numpy.array_split's blocks (the first ``n % n_blocks`` one longer), empty
    blocks left out (read-only, cached)."""
    size, extra = divmod(n, n_blocks)
    lengths = np.full(n_blocks, size)
    lengths[:extra] += 1
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))[lengths > 0]
    starts.flags.writeable = False
    return starts


def _jackknife_slope_error(x: np.ndarray, y: np.ndarray, w: np.ndarray,
                           n_blocks: int = _JACKKNIFE_BLOCKS) -> float:
    """Delete-a-block jackknife standard error of the weighted slope of ``y`` on ``x``.

    Each block's deletion is the full sums minus the block's (moments about the full
    weighted means, so the differences lose no precision).
    """
    sw = float(_sum(w))
    if not sw > 0:
        return 0.0
    n = x.shape[0]
    xc = x - float(_sum(w * x) / sw)
    yc = y - float(_sum(w * y) / sw)
    parts = np.empty((5, n))  # w, w xc, w yc, w xc xc, w xc yc
    parts[0] = w
    np.multiply(w, xc, out=parts[1])
    np.multiply(w, yc, out=parts[2])
    np.multiply(parts[1], xc, out=parts[3])
    np.multiply(parts[1], yc, out=parts[4])
    return _jackknife_from_parts(parts, n_blocks)


def _jackknife_from_parts(parts: np.ndarray, n_blocks: int = _JACKKNIFE_BLOCKS) -> float:
    """`_jackknife_slope_error` from its ``(5, n)`` products ``w, w xc, w yc, w xc xc,
    w xc yc`` (moments about the weighted means; the weights sum to more than zero)."""
    blocks = np.add.reduceat(parts, _block_starts(parts.shape[1], n_blocks), axis=1)
    rest = np.add.reduce(parts, axis=1)[:, None] - blocks  # sums without each block
    return _jackknife_from_rest(rest.tolist())


def _jackknife_from_rest(rest: list[list[float]]) -> float:
    """The jackknife's error from the five sums without each block (``rest[j][b]``, sum
    ``j`` of `_jackknife_from_parts` without block ``b``)."""
    # Each deletion's slope from its five sums, in Python floats: the same double
    # operations as on the arrays, without a numpy call per operation for ten values.
    slopes = []
    for s0, s1, s2, s11, s12 in zip(*rest, strict=True):
        if not s0 > 0:
            continue
        sxx = s11 - s1 * s1 / s0
        if not sxx > 0:
            continue
        s = (s12 - s1 * s2 / s0) / sxx
        if math.isfinite(s):
            slopes.append(s)
    if len(slopes) < 3:
        return 0.0
    s = np.array(slopes)
    return math.sqrt((s.size - 1) / s.size * float(_sum((s - _sum(s) / s.size) ** 2)))


def interface_gain(
    strip_a: np.ndarray,
    strip_b: np.ndarray,
    raw_a: np.ndarray,
    raw_b: np.ndarray,
    side_a: int,
    inset: int = 0,
    threshold: float = GAIN_LIKE_SIGMA,
) -> GainStep:
    """Gain ratio ``A / B`` across one interface from the step's dependence on flux.

    `gain_step` of the two strips' `strip_stats`.

    Parameters
    ----------
    strip_a, strip_b : ndarray
        The masked edge strips the offsets use (background-subtracted if the background
        is on), A on ``side_a`` and B on the opposite side.
    raw_a, raw_b : ndarray
        The same strips before background subtraction (masked where the strips are).
    side_a : int
        Side of A on which B lies.
    inset : int
        ``ampEdgeInset``: the strips start this many pixels from the boundary.
    threshold : float
        ``gain_like`` when ``|ratio - 1| > threshold * err``.

    Returns
    -------
    GainStep
    """
    side_b = (side_a + 2) % 4
    return gain_step(strip_stats(strip_a, side_a, inset=inset, raw=raw_a),
                     strip_stats(strip_b, side_b, inset=inset, raw=raw_b), threshold)


def gain_step(stats_a: StripStats, stats_b: StripStats,
              threshold: float = GAIN_LIKE_SIGMA) -> GainStep:
    """`interface_gain` from the strips' shared statistics (A's strip, then B's).

    The local flux is the running mean of the two strips' raw line medians
    (``StripStats.level``); the step at each position is the difference of the two
    lines' levels extrapolated to the boundary (`_boundary_values`).
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        return _gain_step(stats_a, stats_b, threshold)


def _gain_step(stats_a: StripStats, stats_b: StripStats, threshold: float) -> GainStep:
    """`gain_step` (call under ``np.errstate(invalid="ignore", divide="ignore")``)."""
    mean_a, var_a, model_a, _ = _boundary_values(stats_a)
    mean_b, var_b, model_b, _ = _boundary_values(stats_b)
    level = np.add(stats_a.level, stats_b.level, dtype=np.float64)
    level = _running_mean(np.multiply(level, 0.5, out=level), _SMOOTH)
    return _fit_step(mean_a - mean_b, var_a + var_b, level, model_a, model_b, threshold)


def _fit_step(d: np.ndarray, var: np.ndarray, level: np.ndarray, model_a: float,
              model_b: float, threshold: float) -> GainStep:
    """The clipped fit of the step ``d`` (variance ``var``) against the smoothed ``level``,
    given the two strips' model terms (`_boundary_values`); under ``np.errstate(invalid=
    "ignore", divide="ignore")``."""
    # A finite sum has finite terms: one test for the usual case, the exact one otherwise.
    t = d + var
    t += level
    ok = np.isfinite(t)
    ok &= var > 0
    n = int(np.count_nonzero(ok))
    if n < ok.shape[0]:
        ok = np.isfinite(d)
        ok &= np.isfinite(var)
        ok &= var > 0
        ok &= np.isfinite(level)
        n = int(np.count_nonzero(ok))
    if n < 10:
        return GainStep(math.nan, math.nan, False)
    if n < ok.shape[0]:
        d, var, level = d[ok], var[ok], level[ok]
    w = 1.0 / var
    keep = None  # every position (w * keep is then w itself)
    limit = 4.0 * np.sqrt(var)
    # The last fit's products, kept for the jackknife: w, w dx, w dy, w dx dx, w dx dy.
    parts = np.empty((5, n))
    slope = err = math.nan
    settled = False
    k = n
    for _ in range(5):
        wk = w if keep is None else w * keep
        sw = _sum(wk)
        x0 = float(_sum(wk * level) / sw)
        y0 = float(_sum(wk * d) / sw)
        dx = level - x0
        sxx = float(_sum(wk * dx ** 2))
        if not sxx > 1e-12 * sw * max(x0 * x0, 1.0):  # no flux range along the interface
            return GainStep(math.nan, math.nan, False)
        dy = d - y0
        np.multiply(wk, dx, out=parts[1])
        slope = float(_sum(np.multiply(parts[1], dy, out=parts[4])) / sxx)
        resid = dy - slope * dx
        new = np.abs(resid) <= limit
        k_new = int(np.count_nonzero(new))
        changed = k_new < n if keep is None else bool(np.count_nonzero(new ^ keep))
        if not changed or k_new < 10:
            settled = True
            break
        keep = new
        k = k_new
    if not settled:  # five clips and still moving: the fit of the last keep
        wk = w * keep
    chi2 = float(_sum(wk * resid ** 2)) / max(k - 2, 1)
    err = math.sqrt(max(chi2, 1.0) / sxx)
    # Errors correlated along the interface (the gradient model, smooth residual
    # structure) are invisible to chi-square: a delete-a-block jackknife sees them.
    if settled:  # the last fit's moments are the jackknife's (same weights and means)
        parts[0] = wk
        np.multiply(wk, dy, out=parts[2])
        np.multiply(parts[1], dx, out=parts[3])
        jack = _jackknife_from_parts(parts) if float(sw) > 0 else 0.0
    else:
        jack = _jackknife_slope_error(level, d, wk)
    return _gain_result(slope, err, jack, model_a, model_b, threshold)


def _gain_result(slope: float, err: float, jack: float, model_a: float, model_b: float,
                 threshold: float) -> GainStep:
    """The gain ratio, its error and the flag from the fitted slope and its errors.

    A slope of 2 or more in size (a step that changes faster than twice the flux) has no
    gain ratio (it would be infinite or not positive): it comes from additive structure
    along the interface, such as the background model's response to a large step next to
    it, and gives NaN and no flag.
    """
    if not abs(slope) < 2.0:
        return GainStep(math.nan, math.nan, False)
    err = max(err, jack)
    err = math.sqrt(err * err + model_a * model_a + model_b * model_b)
    ratio = (1.0 + slope / 2.0) / (1.0 - slope / 2.0)
    ratio_err = err / (1.0 - slope / 2.0) ** 2
    return GainStep(ratio, ratio_err, bool(abs(slope) > threshold * err))


def gain_steps(pairs: Sequence[tuple[StripStats, StripStats]],
               threshold: float = GAIN_LIKE_SIGMA) -> list[GainStep]:
    """`gain_step` of several interfaces (A's strip, B's strip each), the same numbers.

    Equally long interfaces whose lines are all usable (the usual case) are processed a
    few at a time in one set of array operations on their stacked lines: numpy reduces
    each row of a 2-d array along its contiguous axis exactly as the 1-d row (the same
    pairwise sums), and every other step is element-wise or per row. An interface whose
    unusable lines are only a run at either end (the detector's masked border) joins them
    cut to its usable lines (`_usable_span`: the same numbers). The other interfaces
    (masked lines inside, too few usable positions) go through `gain_step` itself.
    """
    out: list[GainStep | None] = [None] * len(pairs)
    groups: dict[int, list[tuple[int, StripStats, StripStats]]] = {}
    with np.errstate(invalid="ignore", divide="ignore"):
        for i, (a, b) in enumerate(pairs):
            n = a.profile.shape[0]
            # Both strips with every line's slope defined (a NaN minimum fails too).
            if (n == b.profile.shape[0] and n >= 10 and math.isfinite(a.sigma)
                    and math.isfinite(b.sigma) and a.dist_sxx.min() > 0
                    and b.dist_sxx.min() > 0):
                groups.setdefault(n, []).append((i, a, b))
                continue
            span = _usable_span(a, b)
            if span is None:
                out[i] = _gain_step(a, b, threshold)
            else:
                cut = slice(*span)
                groups.setdefault(span[1] - span[0], []).append(
                    (i, _cut_lines(a, cut), _cut_lines(b, cut)))
        for n, members in groups.items():
            n_chunks = -(-len(members) // max(2, _BATCH_VALUES // n))
            size = -(-len(members) // n_chunks)
            for start in range(0, len(members), size):
                chunk = members[start:start + size]
                steps = _gain_batch([(a, b) for _, a, b in chunk], threshold)
                for (i, _, _), step in zip(chunk, steps, strict=True):
                    out[i] = step
    return out  # type: ignore[return-value]


def _usable_span(a: StripStats, b: StripStats) -> tuple[int, int] | None:
    """``(start, stop)`` when `gain_step` of ``a`` and ``b`` is the same computation on
    their lines ``start:stop`` alone, every one of them usable; None otherwise.

    That holds when, in both strips, the lines usable for the slope model (`_line_slopes`),
    those with a finite mean distance and those with a finite level are one run
    ``start:stop`` (at least ten lines, each with a kept pixel): `_boundary_values` then
    fits exactly those lines and NaNs the others, `_fit_step` drops the NaNs, and the
    NaN-aware running mean of the levels equals the plain running mean of the run, since
    windows cut at an end of the run hold the same values as windows cut at the NaNs
    (whose cumulative sums add exact zeros). The run's first level is nonzero, so the sign
    of a zero sum cannot differ either. (Under ``np.errstate(invalid="ignore",
    divide="ignore")``.)
    """
    n = a.profile.shape[0]
    if n != b.profile.shape[0] or not (math.isfinite(a.sigma) and math.isfinite(b.sigma)):
        return None
    ok = None
    for st in (a, b):
        usable = _line_slopes(st)[1]
        if ok is None:
            ok = usable
        elif not np.array_equal(ok, usable):
            return None
        if not (np.array_equal(ok, np.isfinite(st.dist_mean))
                and np.array_equal(ok, np.isfinite(st.level))):
            return None
    idx = np.flatnonzero(ok)
    if idx.shape[0] < 10:
        return None
    start, stop = int(idx[0]), int(idx[-1]) + 1
    if stop - start != idx.shape[0]:  # an unusable line inside the run
        return None
    if (a.clip_count[start:stop].min() <= 0 or b.clip_count[start:stop].min() <= 0
            or float(a.level[start]) + float(b.level[start]) == 0.0):
        return None
    return start, stop


def _cut_lines(st: StripStats, cut: slice) -> StripStats:
    """``st`` with its per-line arrays cut to the lines ``cut``."""
    return st._replace(profile=st.profile[cut], count=st.count[cut],
                       clip_count=st.clip_count[cut], clip_mean=st.clip_mean[cut],
                       dist_mean=st.dist_mean[cut], dist_sxx=st.dist_sxx[cut],
                       dist_sxy=st.dist_sxy[cut], level=st.level[cut])


def _boundary_rows(strips: list[StripStats]) -> tuple[np.ndarray, np.ndarray, list[float],
                                                      np.ndarray]:
    """`_boundary_values` of equally long strips as rows: values, variances, model terms,
    and which rows took its every-line path here (the others: NaN values, to be done by
    `_boundary_values` itself).

    Every strip has a finite ``sigma`` and ``dist_sxx > 0`` on every line. The same double
    operations as `_boundary_values` row by row (its every-line branch; products in
    either operand order, which IEEE multiplication does not distinguish), sums along the
    rows, per-row scalars as columns. (Under ``np.errstate(invalid="ignore",
    divide="ignore")``.)
    """
    n_lines = strips[0].profile.shape[0]
    sigma = np.array([st.sigma for st in strips], dtype=np.float64)
    w = _stack_rows([st.dist_sxx for st in strips])
    sl = _stack_rows([st.dist_sxy for st in strips])
    sl /= w
    ym = _stack_rows([st.clip_mean for st in strips])
    sw = _row_sums(w)
    tmp = np.multiply(w, ym)
    l0 = _row_sums(tmp)
    # Finite sums of positive finite weights times the slopes and the levels: every line
    # usable (the usual case; anything else is settled by `_boundary_values`).
    every = np.isfinite(l0)
    l0 /= sw
    np.multiply(w, sl, out=tmp)
    s0 = _row_sums(tmp)
    every &= np.isfinite(s0)
    every &= np.isfinite(sw)
    s0 /= sw
    dl = ym - l0[:, None]
    wdl = w * dl
    np.multiply(wdl, dl, out=tmp)
    den = _row_sums(tmp)
    np.subtract(sl, s0[:, None], out=tmp)
    tmp *= wdl
    beta = np.where(den > 0, _row_sums(tmp) / den, 0.0)
    fit = np.multiply(dl, beta[:, None], out=dl)  # the slope model
    fit += s0[:, None]
    sig2 = sigma * sigma
    slope_var = sig2 / sw
    np.subtract(sl, fit, out=tmp)
    tmp *= tmp
    tmp *= w
    chi2 = _row_sums(tmp) / sig2
    chi2 = np.maximum(chi2 / max(n_lines - 2, 1), 1.0)
    beta_err = np.where((sigma > 0) & (den > 0), np.sqrt(chi2 * sigma * sigma / den), 0.0)
    xm = _stack_rows([st.dist_mean for st in strips])
    total = _row_sums(xm)
    every &= np.isfinite(total)
    gain_term = (total / n_lines * beta_err).tolist()
    fit *= xm
    value = np.subtract(ym, fit, out=ym)
    var = np.divide(sig2[:, None], _stack_rows([st.clip_count for st in strips]), out=wdl)
    np.multiply(xm, xm, out=tmp)
    tmp *= slope_var[:, None]
    var += tmp
    return value, var, gain_term, every


def _running_mean_rows(v: np.ndarray, window: int) -> np.ndarray:
    """`_running_mean` of each row of ``v`` (rows with a non-finite value by
    `_running_mean` itself; under ``np.errstate(invalid="ignore", divide="ignore")``)."""
    n = v.shape[1]
    window = max(1, min(window, n))
    out, total = _window_sums_rows(v, window)
    out /= window_lengths(n, window)
    for i in np.flatnonzero(~np.isfinite(total)).tolist():
        out[i] = _running_mean(v[i], window)
    return out


def _gain_batch(pairs: list[tuple[StripStats, StripStats]],
                threshold: float) -> list[GainStep]:
    """`gain_steps` of equally long interfaces, at least ten positions long, whose strips
    pass its test (under ``np.errstate(invalid="ignore", divide="ignore")``)."""
    k = len(pairs)
    value, var, terms, every = _boundary_rows([a for a, _ in pairs] + [b for _, b in pairs])
    level = np.add(_stack_rows([a.level for a, _ in pairs]),
                   _stack_rows([b.level for _, b in pairs]), dtype=np.float64)
    level = _running_mean_rows(np.multiply(level, 0.5, out=level), _SMOOTH)
    d = value[:k] - value[k:]
    var = np.add(var[:k], var[k:], out=var[:k])
    # Every position usable (`_fit_step`'s first test; a finite total has finite terms) and
    # both strips on the every-line path: fitted together; the others by `_gain_step`.
    t = d + var
    t += level
    full = np.isfinite(_row_sums(t))
    full &= var.min(axis=1) > 0
    full &= every[:k]
    full &= every[k:]
    out: list[GainStep | None] = [None] * k
    for i in np.flatnonzero(~full).tolist():
        out[i] = _gain_step(*pairs[i], threshold)
    rows = np.flatnonzero(full)
    if rows.shape[0] == k:
        fits = _fit_rows(d, var, level)
    elif rows.shape[0]:
        fits = _fit_rows(d[rows], var[rows], level[rows])
    else:
        fits = []
    for i, fit in zip(rows.tolist(), fits, strict=True):
        if fit is None:
            out[i] = GainStep(math.nan, math.nan, False)
        else:
            out[i] = _gain_result(*fit, terms[i], terms[k + i], threshold)
    return out  # type: ignore[return-value]


def _fit_rows(d: np.ndarray, var: np.ndarray,
              level: np.ndarray) -> list[tuple[float, float, float] | None]:
    """`_fit_step`'s clipped fit of each row, every position usable: ``(slope, err,
    jackknife error)`` per row, None without flux range (under ``np.errstate``)."""
    rows, n = d.shape
    w = 1.0 / var
    limit = 4.0 * np.sqrt(var)
    out: list[tuple[float, float, float] | None] = [None] * rows
    idx = np.arange(rows)  # the rows still being clipped
    keep = None  # their kept positions (None: every one)
    k = np.full(rows, n)  # and how many
    for it in range(5):
        wk = w if keep is None else w * keep
        sw = _row_sums(wk)
        x0 = _row_sums(wk * level) / sw
        y0 = _row_sums(wk * d) / sw
        dx = level - x0[:, None]
        sxx = _row_sums(wk * dx ** 2)
        flux = sxx > 1e-12 * sw * np.maximum(x0 * x0, 1.0)
        dy = d - y0[:, None]
        parts = np.empty((idx.shape[0], 5, n))
        np.multiply(wk, dx, out=parts[:, 1])
        slope = _row_sums(np.multiply(parts[:, 1], dy, out=parts[:, 4])) / sxx
        resid = dy - slope[:, None] * dx
        new = np.abs(resid) <= limit
        k_new = np.count_nonzero(new, axis=1)
        if keep is None:
            changed = k_new < n
        else:
            changed = np.count_nonzero(new ^ keep, axis=1) > 0
        settled = ~changed | (k_new < 10)
        done = settled | ~flux if it < 4 else np.ones(idx.shape[0], dtype=bool)
        done_fit = done & flux
        sel = np.flatnonzero(done_fit)
        if sel.shape[0] == idx.shape[0]:  # (every row: no copies)
            wk_d, dy_d, dx_d, res_d = wk, dy, dx, resid
        elif sel.shape[0]:
            parts = parts[sel]
            wk_d, dy_d, dx_d, res_d = wk[sel], dy[sel], dx[sel], resid[sel]
        if sel.shape[0]:
            chi2 = _row_sums(wk_d * res_d ** 2).tolist()
            parts[:, 0] = wk_d
            np.multiply(wk_d, dy_d, out=parts[:, 2])
            np.multiply(parts[:, 1], dx_d, out=parts[:, 3])
            blocks = np.add.reduceat(parts, _block_starts(n, _JACKKNIFE_BLOCKS), axis=2)
            rest = _row_sums(parts)[:, :, None] - blocks
            jacks = _jackknife_rows(rest)
            for j, r in enumerate(sel.tolist()):
                if settled[r]:
                    c2 = chi2[j] / max(int(k[r]) - 2, 1)
                    if not float(sw[r]) > 0:
                        jack = 0.0
                    elif jacks[j] is None:
                        jack = _jackknife_from_rest(rest[j].tolist())
                    else:
                        jack = jacks[j]
                else:  # five clips and still moving: the fit of the last keep
                    wk_r = w[r] * new[r]
                    c2 = float(_sum(wk_r * resid[r] ** 2)) / max(int(k_new[r]) - 2, 1)
                    jack = _jackknife_slope_error(level[r], d[r], wk_r)
                out[int(idx[r])] = (float(slope[r]), math.sqrt(max(c2, 1.0) / float(sxx[r])),
                                    jack)
        go = np.flatnonzero(~done)
        if not go.shape[0]:
            break
        idx, keep, k = idx[go], new[go], k_new[go]
        w, limit, d, level = w[go], limit[go], d[go], level[go]
    return out


def _jackknife_rows(rest: np.ndarray) -> list[float | None]:
    """`_jackknife_from_rest` of each ``rest[r]`` (``(rows, 5, blocks)``) whose deletions
    all give a slope: the same double operations on the columns of all rows at once (the
    slopes' sums along C-ordered rows, as for each row's array); None for the others."""
    s0, s1, s2, s11, s12 = (rest[:, j] for j in range(5))
    sxx = s11 - s1 * s1 / s0
    slopes = (s12 - s1 * s2 / s0) / sxx
    ok = s0 > 0
    ok &= sxx > 0
    ok &= np.isfinite(slopes)
    m = slopes.shape[1]
    if m < 3:
        return [None] * slopes.shape[0]
    dev = slopes - (_row_sums(slopes) / m)[:, None]
    np.multiply(dev, dev, out=dev)
    jack = np.sqrt((m - 1) / m * _row_sums(dev))
    return [float(j) if a else None for j, a in zip(jack.tolist(), ok.all(axis=1).tolist(),
                                                     strict=True)]


def amp_levels(line_levels: Mapping[tuple[int, int], np.ndarray], n_amps: int) -> np.ndarray:
    """Each amp's signal level: the median of its edge strips' line levels.

    A line level is the median of one strip line (the pixels across the strip at one
    position along the interface) before any background subtraction, masked pixels left
    out (``StripStats.level``). Every line of a strip has the same number of pixels, so
    this is the median of the amp's strip pixels with each line summarised by its median
    first: as robust against stars and hot pixels (a contaminated line is an outlier
    either way) and far cheaper. NaN for an amp without a usable line.

    Parameters
    ----------
    line_levels : mapping
        ``{(amp id, side): line levels}`` for the strips `measure_detector` reads.
    n_amps : int
    """
    out = np.full(n_amps, np.nan)
    by_amp: dict[int, list[np.ndarray]] = {}
    for (amp, _side), lv in line_levels.items():
        # In the levels' own float dtype: the same order statistics, converted exactly.
        v = np.asarray(lv)
        if v.dtype.kind != "f":
            v = v.astype(np.float64)
        fin = np.isfinite(v)
        # (Every level finite, the usual case: the array itself; the concatenation
        # below copies it before the selection permutes the copy.)
        by_amp.setdefault(amp, []).append(
            v.ravel() if np.count_nonzero(fin) == fin.size else v[fin])
    for amp, parts in by_amp.items():
        v = np.concatenate(parts)
        if v.size:
            out[amp] = exact_median(v)
    return out
