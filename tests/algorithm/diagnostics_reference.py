"""Plain reference implementations of the per-interface diagnostics, for the tests.

The package's versions skip masking, copies and recomputation where they would change
nothing (every line usable, no NaN in a difference, the last clip's moments reused); these
always take the general path, written as directly as the arithmetic allows, so the tests
can require the same numbers bit for bit (``==``, NaN in the same places).
"""

from __future__ import annotations

import math

import numpy as np

from ampoffset_dask.algorithm.stats import clipped_stats


def running_mean(v, window):
    """NaN-aware centred running mean: numpy ``"same"`` windows (exact integer counts)."""
    ok = np.isfinite(v)
    n = v.shape[0]
    window = max(1, min(window, n))
    start = np.arange(n) - window // 2
    lo = np.clip(start, 0, n)
    hi = np.clip(start + window, 0, n)
    cs = np.concatenate(([0.0], np.cumsum(np.where(ok, v, 0.0))))
    cc = np.concatenate(([0], np.cumsum(ok)))
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (cs[hi] - cs[lo]) / (cc[hi] - cc[lo])
    out[~ok] = np.nan
    return out


def boundary_values(st):
    """Line levels extrapolated to the boundary, their variance, the model's slope error."""
    sigma = st.sigma
    if not math.isfinite(sigma):
        nan = np.full(st.profile.shape[0], np.nan)
        return nan, nan, math.nan
    n, xm, ym, sxx = st.clip_count, st.dist_mean, st.clip_mean, st.dist_sxx
    s = np.add.reduce
    with np.errstate(invalid="ignore", divide="ignore"):
        slope = st.dist_sxy / sxx
        slope[sxx <= 0] = np.nan
        ok = np.isfinite(slope) & np.isfinite(ym)
        n_ok = int(ok.sum())
        if n_ok >= 3:
            w, lv, sl = sxx[ok], ym[ok], slope[ok]
            sw = float(s(w))
            l0 = float(s(w * lv) / sw)
            s0 = float(s(w * sl) / sw)
            dl = lv - l0
            den = float(s(w * dl * dl))
            beta = float(s(w * dl * (sl - s0)) / den) if den > 0 else 0.0
            slope_fit = s0 + beta * (ym - l0)
            slope_var = sigma * sigma / sw
            if sigma > 0 and den > 0:
                chi2 = float(s(w * (sl - slope_fit[ok]) ** 2)) / (sigma * sigma)
                chi2 = max(chi2 / max(n_ok - 2, 1), 1.0)
                beta_err = math.sqrt(chi2 * sigma * sigma / den)
            else:
                beta_err = 0.0
            fx = xm[np.isfinite(xm)]
            gain_term = float(s(fx) / fx.shape[0]) * beta_err
        else:
            slope_fit = np.zeros_like(ym)
            slope_var = 0.0
            gain_term = 0.0
        value = ym - slope_fit * xm
        var = sigma * sigma / n + xm * xm * slope_var
    bad = ~(n > 0) | ~np.isfinite(value)
    value[bad] = np.nan
    var[bad] = np.nan
    return value, var, gain_term


def jackknife(x, y, w, n_blocks=10):
    """Delete-a-block jackknife error of the weighted slope (numpy.array_split blocks)."""
    s = np.add.reduce
    sw = float(s(w))
    if not sw > 0:
        return 0.0
    xc = x - float(s(w * x) / sw)
    yc = y - float(s(w * y) / sw)
    parts = np.stack([w, w * xc, w * yc, w * xc * xc, w * xc * yc])
    sizes = [b.shape[0] for b in np.array_split(np.arange(x.shape[0]), n_blocks)]
    starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))[np.array(sizes) > 0]
    rest = parts.sum(axis=1)[:, None] - np.add.reduceat(parts, starts, axis=1)
    s0, s1, s2, s11, s12 = rest
    with np.errstate(invalid="ignore", divide="ignore"):
        sxx = s11 - s1 * s1 / s0
        sl = (s12 - s1 * s2 / s0) / sxx
    sl = sl[(s0 > 0) & (sxx > 0) & np.isfinite(sl)]
    if sl.size < 3:
        return 0.0
    return math.sqrt((sl.size - 1) / sl.size * float(s((sl - s(sl) / sl.size) ** 2)))


def gain_step(a, b, threshold=4.0):
    """(ratio, ratio error, gain_like) of `ampoffset_dask.algorithm.gain.gain_step`."""
    s = np.add.reduce
    mean_a, var_a, model_a = boundary_values(a)
    mean_b, var_b, model_b = boundary_values(b)
    d = mean_a - mean_b
    var = var_a + var_b
    level = running_mean(0.5 * (a.level.astype(np.float64) + b.level), 31)
    ok = np.isfinite(d) & np.isfinite(var) & (var > 0) & np.isfinite(level)
    if ok.sum() < 10:
        return math.nan, math.nan, False
    d, var, level = d[ok], var[ok], level[ok]
    w = 1.0 / var
    keep = np.ones(d.shape[0], dtype=bool)
    limit = 4.0 * np.sqrt(var)
    for _ in range(5):
        wk = w * keep
        sw = s(wk)
        x0 = float(s(wk * level) / sw)
        y0 = float(s(wk * d) / sw)
        dx = level - x0
        sxx = float(s(wk * dx ** 2))
        if not sxx > 1e-12 * sw * max(x0 * x0, 1.0):
            return math.nan, math.nan, False
        dy = d - y0
        slope = float(s(wk * dx * dy) / sxx)
        resid = dy - slope * dx
        new = np.abs(resid) <= limit
        if not (new ^ keep).any() or new.sum() < 10:
            break
        keep = new
    wk = w * keep
    chi2 = float(s(wk * resid ** 2)) / max(int(keep.sum()) - 2, 1)
    err = max(math.sqrt(max(chi2, 1.0) / sxx), jackknife(level, d, wk))
    err = math.sqrt(err * err + model_a * model_a + model_b * model_b)
    ratio = (1.0 + slope / 2.0) / (1.0 - slope / 2.0)
    return ratio, err / (1.0 - slope / 2.0) ** 2, bool(abs(slope) > threshold * err)


def smoothed_difference(edge_a, edge_b, window):
    """LSST's NaN-aware moving average of ``edge_a - edge_b`` with numpy's convolution."""
    diff = np.asarray(edge_a, np.float32) - np.asarray(edge_b, np.float32)
    nan = np.isnan(diff)
    if window is None:
        avg = diff.copy()
    else:
        total = np.convolve(np.nan_to_num(diff), np.ones(window), "same")
        count = np.convolve(~nan, np.ones(window), "same")
        avg = total / np.maximum(count, 1.0)
    avg[nan] = np.nan
    return avg


def offset_and_error(a, b, window_frac, n_sigma=3.0):
    """(avg, offset_raw, clip_std, good_frac, offset error) of one interface from its two
    strips' statistics: the moving average, LSST's clipped mean and the error of
    `ampoffset_dask.algorithm.uncertainty`, all on the general path."""
    n = a.profile.shape[0]
    window = None if window_frac is None else int(window_frac * n)
    avg = smoothed_difference(a.profile, b.profile, window)
    offset, clip_std = clipped_stats(avg)
    good_frac = 1.0 - float(np.isnan(avg).sum()) / n
    valid = ~np.isnan(avg)
    var = np.zeros(n)
    for st in (a, b):
        cnt = st.count.astype(np.float64)
        v = np.asarray(st.sigma, dtype=np.float64) ** 2 * math.pi / (2.0 * (cnt - 1.0) + math.pi)
        var = var + np.where(cnt > 0, v, np.nan)
    if not valid.any() or not math.isfinite(offset):
        return avg, offset, clip_std, good_frac, math.nan
    kept = valid.copy()
    if math.isfinite(clip_std):
        with np.errstate(invalid="ignore"):
            kept &= np.abs(avg - offset) <= n_sigma * clip_std
    if not kept.any():
        kept = valid
    m = int(kept.sum())
    if window is None:
        c = kept / float(m)
    else:
        start = np.arange(n) - window // 2
        lo, hi = np.clip(start, 0, n), np.clip(start + window, 0, n)
        cv = np.concatenate(([0], np.cumsum(valid)))
        u = np.where(kept, 1.0 / np.maximum(cv[hi] - cv[lo], 1), 0.0)
        cs = np.concatenate(([0.0], np.cumsum(u)))
        j = np.arange(n)
        flo = np.clip(j + window // 2 - window + 1, 0, n)
        fhi = np.clip(j + window // 2 + 1, 0, n)
        c = np.where(valid, (cs[fhi] - cs[flo]) / m, 0.0)
    used = c != 0
    if not np.isfinite(var[used]).all():
        return avg, offset, clip_std, good_frac, math.nan
    return avg, offset, clip_std, good_frac, math.sqrt(float(np.sum(c[used] ** 2 * var[used])))
