"""Camera-health trends: per-amp pedestal time series over visits, change points and gain drifts.

For each (detector, amp) the pedestals of a catalog's visits are modelled as

    pedestal(v) = level of the current segment + gamma * (sky(v) - mean sky) + drift * i(v)

where a new segment starts at every change point and ``i(v)`` is the visit's rank among the
catalog's visits (visit ids need not be consecutive). ``gamma`` is the amp's relative gain
error with respect to its detector (a gain error ``e`` makes the measured pedestal grow by
about ``e * sky``, minus the detector mean), so the regression of pedestals on the amp's
level across visits is the sensitive gain test on sky images. Change points are found on
the series with the gain term removed: a visit is a jump when it and the next visit both
differ, in the same direction, by more than ``k`` sigma from the robust (median) level of
the preceding visits of the segment; sigma is the larger of the series' robust
point-to-point scatter and the typical pedestal error. The first scan removes the gain
term of the visit-to-visit differences (a step moves only one of them; a gain fitted to the
levels before the jumps are known would absorb part of a step and hide it); then model and
change points are refined together a few times (the fit uses Tukey weights, so a jump does
not bias ``gamma``). A jump near the threshold can be seen with one gain estimate and not
with the next: such a cycle keeps the jumps of both, and the summary's coefficients are
always those of the fit with the reported jumps.

`read_series` reads a catalog, `find_trends` analyses a table, `write_trends` writes the
Parquet tables and plots; ``ampoffset-dask trends CATALOG`` does all three.

The measured pedestals of a detector sum to zero (LSST's gauge), so a jump ``J`` of one
of its ``N`` amps also moves every other amp by ``-J/N``: with 16 amps that is far below
the threshold for the others, but on detectors with few amps one jump can show on all of
them. (Re-referencing to the median amp removes that cross-talk but adds the median's
noise to every series; it was not adopted.)
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError

__all__ = ["TrendsResult", "amp_trend", "find_trends", "read_series", "write_trends"]

logger = logging.getLogger(__name__)

_MAD = 1.482602218505602


@dataclasses.dataclass(frozen=True)
class AmpTrend:
    """The analysis of one amp's series (see `amp_trend`)."""

    jumps: np.ndarray
    gain_slope: float
    gain_slope_err: float
    drift: float
    drift_err: float
    sigma: float
    model: np.ndarray


@dataclasses.dataclass(frozen=True)
class TrendsResult:
    """Output of `find_trends`.

    Attributes
    ----------
    series : pandas.DataFrame
        One row per (visit, detector, amp): ``pedestal``, ``pedestal_err``, ``level``,
        ``model`` (the fitted value) and ``jump`` (True at the first visit of a new level).
    summary : pandas.DataFrame
        One row per (detector, amp): ``n_visits``, ``n_jumps``, ``jump_visits`` (comma
        separated), ``gain_slope`` (relative response error: pedestal change per unit of sky
        level; positive when the amp reads high, its e-/ADU gain too low) with
        ``gain_slope_err`` and the ``gain_like`` flag, ``drift`` (ADU per
        visit: per step in the table's sorted visits, whatever their numbers) with
        ``drift_err``, and ``sigma`` (the robust visit-to-visit scatter).
    """

    series: Any
    summary: Any

    @property
    def flagged(self) -> Any:
        """Summary rows with a jump or a gain-like drift."""
        s = self.summary
        return s[(s["n_jumps"] > 0) | s["gain_like"]]


def _wls(design: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted least squares: coefficients and their covariance (unit-variance weights)."""
    aw = design * w[:, None]
    normal = design.T @ aw
    cov = np.linalg.pinv(normal)
    return cov @ (aw.T @ y), cov


def _change_points(r: np.ndarray, sigma: float, k: float, window: int) -> list[int]:
    """Indices starting a new level (confirmed by the next point), see the module docstring.

    Scanning from the start of the current segment, a visit ``i`` at least 3 visits in is
    a jump when it and visit ``i + 1`` both differ, in the same direction, by more than
    ``k * sigma`` from the median of the up to ``window`` preceding visits of the segment.
    Once a segment is ``window`` visits long that median no longer depends on where the
    segment started, so it is computed once for the whole series (a sliding window); only
    the first few visits of each segment are tested one by one.
    """
    n = r.shape[0]
    thr = k * sigma
    full = None
    if n - 1 > window:  # visits window .. n-2 against the median of the window before them
        level = np.median(np.lib.stride_tricks.sliding_window_view(r[:n - 2], window), axis=1)
        d0, d1 = r[window:n - 1] - level, r[window + 1:n] - level
        full = (np.abs(d0) > thr) & (np.abs(d1) > thr) & (d0 * d1 > 0)
    jumps: list[int] = []
    start = 0
    while True:
        found = None
        for i in range(start + 3, min(start + window, n - 1)):
            level0 = float(np.median(r[start:i]))
            d0, d1 = r[i] - level0, r[i + 1] - level0
            if abs(d0) > thr and abs(d1) > thr and d0 * d1 > 0:
                found = i
                break
        first = start + max(window, 3)
        if found is None and full is not None and first <= n - 2:
            hits = np.flatnonzero(full[first - window:])
            if hits.size:
                found = first + int(hits[0])
        if found is None:
            return jumps
        jumps.append(found)
        start = found


def amp_trend(visits: np.ndarray, pedestal: np.ndarray, level: np.ndarray | None = None,
              err: np.ndarray | None = None, *, k: float = 4.0, window: int = 8,
              iterations: int = 4) -> AmpTrend:
    """Change points, gain slope and drift of one amp's pedestal series.

    Parameters
    ----------
    visits : ndarray
        The time axis, ascending: ``drift`` is per unit of it (`find_trends` passes each
        visit's rank among the catalog's visits, so that its drift is per visit).
    pedestal : ndarray
        Measured pedestals.
    level : ndarray, optional
        The amp's signal level per visit (sky); without it (or without a spread of
        levels) the gain slope is NaN. Visits whose level is NaN (an amp whose edges were
        all masked, rows of catalogs older than the column) are left out when at least
        half of the visits have one (their pedestals hold a gain term that cannot be
        removed), else the levels are not used.
    err : ndarray, optional
        Pedestal errors (the floor of the scatter).
    k : float
        Jump threshold in sigma.
    window : int
        Visits of the running level.
    iterations : int
        Model / change-point refinements.

    Returns
    -------
    AmpTrend
        Visits with a NaN pedestal take no part: their ``model`` is NaN, no jump.
    """
    t = np.asarray(visits, dtype=np.float64)
    p = np.asarray(pedestal, dtype=np.float64)
    ok = np.isfinite(p) & np.isfinite(t)
    if level is not None:
        known = np.isfinite(np.asarray(level, dtype=np.float64))
        use = ok & known
        n_use = int(np.count_nonzero(use))
        if n_use >= max(3, np.count_nonzero(ok) / 2) and np.ptp(np.asarray(level)[use]) > 0:
            ok = use
        else:
            level = None
    if not ok.all():
        # Unmeasured visits must not turn the whole series' fit into NaN.
        sub = amp_trend(t[ok], p[ok], None if level is None else np.asarray(level)[ok],
                        None if err is None else np.asarray(err)[ok], k=k, window=window,
                        iterations=iterations) if ok.any() else None
        jumps = np.zeros(p.shape[0], dtype=bool)
        model = np.full(p.shape[0], np.nan)
        if sub is None:
            nan = math.nan
            return AmpTrend(jumps, nan, nan, nan, nan, nan, model)
        jumps[ok] = sub.jumps
        model[ok] = sub.model
        return dataclasses.replace(sub, jumps=jumps, model=model)
    n = p.shape[0]
    floor = float(np.nanmedian(err)) if err is not None and np.isfinite(err).any() else 0.0
    use_level = level is not None and np.ptp(level) > 0
    lev = (np.asarray(level, dtype=np.float64) - np.mean(level)) if use_level else None
    tc = t - t.mean()
    # First scan: a gain fitted before the jumps are known absorbs part of a step (sky
    # levels are random over visits), hiding it; the gain of the visit-to-visit
    # differences is not biased by a step (one difference, down-weighted as an outlier).
    gamma = _difference_gain(p, lev, floor) if use_level else None
    r = p if gamma is None else p - lev * gamma
    sigma = _scatter(r, floor)
    new = _change_points(r, sigma, k, window)
    w = np.ones(n)
    fitted: list[list[int]] = []
    for _ in range(iterations):
        cycle = new in fitted
        if cycle:
            # A jump near the threshold, seen with one gain estimate and not with the
            # other: keep every jump of the cycle (each was found at k sigma), fit once more.
            new = sorted(set().union(*fitted[fitted.index(new):]))
        jumps = new
        fitted.append(jumps)
        design, coef, cov, w = _fit_segments(p, tc, lev, jumps, w, floor)
        n_seg = len(jumps) + 1
        has_gain = design.shape[1] > n_seg + 1
        # Change points on the series minus the gain term only: a drift term fitted
        # before the jumps are known would absorb part of them; the running level
        # follows a slow drift anyway.
        r = p - lev * coef[-1] if has_gain else p
        sigma = _scatter(r, floor)
        new = _change_points(r, sigma, k, window)
        if new == jumps or cycle:
            break
    # Unsettled after ``iterations`` passes, ``jumps`` are still those of the last fit, so
    # the coefficients read below are the columns they name.
    kept = w > 0
    dof = max(int(kept.sum()) - design.shape[1], 1)
    chi2 = float(np.sum(w * (p - design @ coef) ** 2)) / dof / max(sigma, 1e-12) ** 2
    cov = cov * max(sigma, 1e-12) ** 2 * max(chi2, 1.0)
    names = ["seg"] * n_seg + (["drift"] if design.shape[1] > n_seg else [])
    if has_gain:
        names.append("gain")
    idx = {name: i for i, name in enumerate(names) if name != "seg"}
    drift = float(coef[idx["drift"]]) if "drift" in idx else math.nan
    drift_err = math.sqrt(cov[idx["drift"], idx["drift"]]) if "drift" in idx else math.nan
    gain = float(coef[idx["gain"]]) if "gain" in idx else math.nan
    gain_err = math.sqrt(cov[idx["gain"], idx["gain"]]) if "gain" in idx else math.nan
    flags = np.zeros(n, dtype=bool)
    flags[jumps] = True
    return AmpTrend(flags, gain, gain_err, drift, drift_err, sigma, design @ coef)


def _tukey_fit(design: np.ndarray, y: np.ndarray, w: np.ndarray, floor: float
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tukey-reweighted least squares from weights ``w``: coefficients, covariance (unit
    variance) and the final weights; ``floor`` bounds the robust scale from below."""
    coef = cov = None
    for _ in range(5):
        coef, cov = _wls(design, y, w)
        resid = y - design @ coef
        scale = max(_MAD * float(np.median(np.abs(resid))), floor, 1e-12)
        u = resid / (4.685 * scale)
        w = np.where(np.abs(u) < 1, (1 - u * u) ** 2, 0.0)
    return coef, cov, w


def _fit_segments(p: np.ndarray, tc: np.ndarray, lev: np.ndarray | None, jumps: list[int],
                  w: np.ndarray, floor: float
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Fit one level per segment (a segment starts at each of ``jumps``), then a drift
    along ``tc`` and a gain along ``lev`` while the visits outnumber the columns by more
    than 2: the design, coefficients, covariance and Tukey weights."""
    n = p.shape[0]
    seg = np.searchsorted(np.asarray(jumps, dtype=int), np.arange(n), side="right")
    cols = [(seg == s).astype(np.float64) for s in range(len(jumps) + 1)]
    if n > len(cols) + 2:
        cols.append(tc)
    if lev is not None and n > len(cols) + 2:
        cols.append(lev)
    design = np.column_stack(cols)
    coef, cov, w = _tukey_fit(design, p, w, floor)
    return design, coef, cov, w


def _difference_gain(p: np.ndarray, lev: np.ndarray, floor: float) -> float | None:
    """The gain slope of the visit-to-visit differences (a drift is their constant): a step
    moves one difference only, which the Tukey weights drop. None with too few visits."""
    dp, dl = np.diff(p), np.diff(lev)
    if dp.shape[0] < 5 or np.ptp(dl) <= 0:
        return None
    design = np.column_stack([np.ones_like(dl), dl])
    # A difference holds two visits' noise.
    coef, _, _ = _tukey_fit(design, dp, np.ones_like(dp), floor * math.sqrt(2.0))
    return float(coef[1])


def _scatter(r: np.ndarray, floor: float) -> float:
    """Robust point-to-point scatter of ``r`` (blind to level changes: one jump moves one
    difference), at least ``floor``."""
    n = r.shape[0]
    return max(_MAD * float(np.median(np.abs(np.diff(r)))) / math.sqrt(2.0) if n > 2 else 0.0,
               floor)


def _series_order(table: Any) -> np.ndarray:
    """Row order by detector, amp, visit (stable), like ``sort_values``: one integer key
    of the three columns' ranks, radix-sorted (large tables sort several times faster)."""
    import pandas as pd

    key = np.zeros(len(table), dtype=np.int64)
    span = 1
    for column in ("detector", "amp", "visit"):
        codes, uniques = pd.factorize(table[column], sort=True)
        if (codes < 0).any() or span * max(len(uniques), 1) >= 2**62:
            return np.asarray(table.reset_index(drop=True).sort_values(
                ["detector", "amp", "visit"], kind="stable").index)
        key = key * max(len(uniques), 1) + codes
        span *= max(len(uniques), 1)
    return np.argsort(key, kind="stable")


def _numeric_visits(visits: Any) -> Any:
    """The ``visit`` column as numbers (categories holding numbers, or numeric strings, are
    converted), so that the series follow the visits' order, not their category's."""
    import pandas as pd

    if isinstance(visits.dtype, pd.CategoricalDtype):
        visits = visits.astype(visits.cat.categories.dtype)
    if pd.api.types.is_numeric_dtype(visits):
        return visits
    try:
        return pd.to_numeric(visits)
    except (ValueError, TypeError) as exc:
        raise InputError(f"trends: the pedestal table's visit column is not numeric: {exc}"
                         ) from exc


def _refuse_repeated_rows(df: Any) -> None:
    """Refuse a sorted table with several rows of one (visit, detector, amp): each would be a
    separate point of its series (a catalog's history rows, ``all_rows=True``)."""
    same = np.zeros(len(df), dtype=bool)
    if len(df) > 1:
        same[1:] = True
        for column in ("detector", "amp", "visit"):
            values = df[column].to_numpy()
            same[1:] &= values[1:] == values[:-1]
    if same.any():
        row = df.iloc[int(np.flatnonzero(same)[0])]
        raise InputError(
            f"trends: the pedestal table has {int(same.sum())} repeated (visit, detector, amp) "
            f"row(s), e.g. visit {row['visit']} {row['detector']} {row['amp']}: each would be a "
            "separate point of the series; pass the current rows (read_catalog's default, "
            "not all_rows=True)")


def _match_amp(names: Any, amp: str, where: str) -> str:
    """The amp of ``names`` called ``amp``: the same name, else the one name equal to it
    ignoring case (``c10`` for ``C10``, as detector names are matched); ``amp`` itself when
    none is. Raises InputError, naming ``where``, when several names match ignoring case."""
    names = [str(n) for n in names if n is not None]
    if amp in names:
        return amp
    folded = sorted({n for n in names if n.casefold() == amp.casefold()})
    if len(folded) > 1:
        raise InputError(f"{where}: amp {amp!r} is ambiguous: it matches {folded} ignoring "
                         "case; give the exact name")
    return folded[0] if folded else amp


def find_trends(table: Any, *, k: float = 4.0, window: int = 8,
                gain_sigma: float = 5.0, min_gain: float = 2e-4,
                amp: str | None = None) -> TrendsResult:
    """Analyse every amp of a pedestal table over its visits.

    Parameters
    ----------
    table : pandas.DataFrame
        Columns ``visit, detector, amp, pedestal`` and optionally ``pedestal_err`` and
        ``level`` (the catalog's pedestals table).
    k, window : float, int
        Change-point threshold (sigma) and running-level length (visits).
    gain_sigma : float
        ``gain_like`` needs ``|gain_slope| > gain_sigma * gain_slope_err`` ...
    min_gain : float
        ... and ``|gain_slope| > min_gain`` (a relative gain error that matters).
    amp : str, optional
        Analyse only this amp.

    Returns
    -------
    TrendsResult
    """
    import pandas as pd

    need = {"visit", "detector", "amp", "pedestal"}
    missing = need - set(table.columns)
    if missing:
        raise InputError(f"trends: the pedestal table lacks column(s) {sorted(missing)}")
    # The visit axis in number order: a table read with pandas.read_parquet holds the
    # hive-partition visit as a category in string order (1, 10, 11, ..., 2).
    table = table.assign(visit=_numeric_visits(table["visit"]))
    df = table.take(_series_order(table)).reset_index(drop=True)
    _refuse_repeated_rows(df)
    if "pedestal_err" not in df:
        df["pedestal_err"] = np.nan
    if "level" not in df:
        df["level"] = np.nan
    if amp is not None:
        name = _match_amp(df["amp"].unique(), amp, "trends: the pedestal table")
        df = df[df["amp"] == name].reset_index(drop=True)
        if df.empty:
            raise InputError(f"trends: no amp {amp!r} in the pedestal table")
    # Sorted, so each amp's series is one slice: no per-group pandas indexing.
    n = len(df)
    dets, amps = df["detector"].to_numpy(), df["amp"].to_numpy()
    starts = np.flatnonzero((dets[1:] != dets[:-1]) | (amps[1:] != amps[:-1])) + 1
    bounds = np.concatenate([[0], starts, [n]]) if n else np.zeros(1, dtype=int)
    visits = df["visit"].to_numpy()
    # The drift's time axis: each visit's rank among the table's visits. Visit ids are not
    # consecutive (LSST's are YYYYMMDD * 1e5 + a sequence number: a night is ~1e5 ids).
    order = np.unique(visits, return_inverse=True)[1].astype(np.float64) if n else visits
    peds, levels = df["pedestal"].to_numpy(), df["level"].to_numpy()
    errs = df["pedestal_err"].to_numpy()
    model = np.full(n, np.nan)
    jump = np.zeros(n, dtype=bool)
    rows = []
    for a, b in itertools.pairwise(bounds):
        tr = amp_trend(order[a:b], peds[a:b], levels[a:b], errs[a:b], k=k, window=window)
        model[a:b] = tr.model
        jump[a:b] = tr.jumps
        jump_visits = visits[a:b][tr.jumps]
        gain_like = bool(math.isfinite(tr.gain_slope) and abs(tr.gain_slope) > min_gain
                         and abs(tr.gain_slope) > gain_sigma * tr.gain_slope_err)
        rows.append({
            "detector": dets[a], "amp": amps[a], "n_visits": int(b - a),
            "n_jumps": int(tr.jumps.sum()),
            "jump_visits": ",".join(str(int(v)) for v in jump_visits),
            "gain_slope": tr.gain_slope, "gain_slope_err": tr.gain_slope_err,
            "gain_like": gain_like, "drift": tr.drift, "drift_err": tr.drift_err,
            "sigma": tr.sigma,
        })
    df["model"] = model
    df["jump"] = jump
    summary = pd.DataFrame(rows, columns=[
        "detector", "amp", "n_visits", "n_jumps", "jump_visits", "gain_slope",
        "gain_slope_err", "gain_like", "drift", "drift_err", "sigma"])
    return TrendsResult(df, summary)


def read_series(catalog: str | os.PathLike, detector: str | None = None,
                amp: str | None = None):
    """The pedestal series of a catalog (latest row per visit, detector and amp).

    Reads only the columns the analysis needs, and with ``detector`` only that detector's
    files or row groups (see `~ampoffset_dask.catalog.compact_catalog`); ``pedestal_err``
    and ``level`` are NaN for catalogs written before those columns existed.

    Parameters
    ----------
    catalog : path-like
        The catalog directory.
    detector, amp : str, optional
        Only this detector; only this amp.

    Returns
    -------
    pandas.DataFrame
        ``visit, detector, amp, pedestal, pedestal_err, level``, in storage order.

    Raises
    ------
    InputError
        Without a pedestals table, when nothing matches, or when the pedestals were not all
        measured the same way: in two units (some with the camera's nominal gains, in
        electrons, others in ADU), by runs of different configurations, or with different
        overscan modes (`_check_one_measurement`); the message names a detector-visit of
        each and says to run again with ``--new-run`` over all the inputs.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    from .catalog import read_catalog

    root = Path(catalog)
    if not (root / "pedestals").is_dir():
        if (root / "detectors").is_dir():  # a catalog whose every detector failed
            n = read_catalog(root, "detectors", columns=["status"])["status"].value_counts()
            raise InputError(f"{root}: no pedestals: the catalog's {int(n.sum())} detector "
                             f"row(s) are {', '.join(f'{v} {k}' for k, v in n.items())} "
                             "(see 'ampoffset-dask catalog')")
        raise InputError(f"{root}: no catalog pedestals table here")
    # Unsorted: find_trends sorts by detector, amp and visit anyway.
    tab = read_catalog(root, "pedestals", format="arrow", sort=False,
                       columns=["visit", "detector", "amp", "pedestal", "pedestal_err", "level"],
                       detectors=None if detector is None else [detector])
    if amp is not None:
        amp = _match_amp(pc.unique(tab["amp"]).to_pylist(), amp, str(root))
        tab = tab.filter(pc.equal(tab["amp"], amp))
    what = " ".join(str(x) for x in (detector, amp) if x is not None)
    what = f" for {what}" if what else ""
    unit, unmeasured = _check_one_measurement(root, detector)
    if unmeasured:
        # header pedestals of already corrected files: not their row's run's measurement
        # (another configuration's, another catalog's), no point of this series
        keys = pc.binary_join_element_wise(pc.cast(tab["visit"], "string"), tab["detector"],
                                           "\t")
        header = pc.is_in(keys, value_set=pa.array(
            [f"{v}\t{d}" for v, d in sorted(unmeasured)]))
        n_left = len(set(zip(tab["visit"].filter(header).to_pylist(),
                             tab["detector"].filter(header).to_pylist(), strict=True)))
        kept = tab.filter(pc.invert(header))
        if kept.num_rows == 0 and n_left:
            raise InputError(
                f"{root}: no measured pedestals{what}: all {n_left} detector-visit(s) were left "
                "out as already-corrected header pedestals (flagged: the files were already "
                "corrected when the run read them, their headers' pedestals were recorded, "
                "not measured); measure the original, uncorrected files to follow them")
        tab = kept
        logger.info("%s: %d already corrected detector-visit(s) left out (header pedestals, "
                    "not measured)", root, n_left)
    if tab.num_rows == 0:
        raise InputError(f"{root}: no pedestals{what}")
    df = tab.to_pandas()
    df.attrs["unit"] = unit  # pandas carries it to find_trends' series (the plot's axis)
    return df


def _check_one_measurement(root: Path, detector: str | None
                           ) -> tuple[str, set[tuple[int, str]]]:
    """Refuse a series whose pedestals were not all measured the same way; return their
    unit, ``"e-"`` or ``"ADU"``, and the (visit, detector) of the rows not measured at all:
    flagged already corrected inputs, whose pedestals are their header's.

    The current rows of one catalog can come from runs that measured differently: a run
    with ``--new-run`` over some inputs only leaves the other inputs' rows of earlier runs
    current. A series changing meaning at some visit shows false jumps and gain errors, so
    it is refused, naming a detector-visit of each way, when its measured (not failed) rows
    differ in

    - unit: measured with the camera's nominal gains (``gain="nominal"``: electrons) or
      without (ADU); resume compares configurations, not that option;
    - configuration: their runs' ``config_digest`` (as resume compares them, see
      `~ampoffset_dask.catalog.config_digest`); rows whose run is not in the ``runs``
      table have no known configuration and are not compared;
    - overscan mode (``per-row``, ``mean``, ``none``), where the rows record one.
    """
    from .catalog import read_catalog

    try:
        det = read_catalog(root, "detectors", sort=False,
                           columns=["visit", "detector", "gain", "overscan", "status",
                                    "run_id", "n_interfaces"],
                           detectors=None if detector is None else [detector])
    except (KeyError, ValueError) as exc:  # a catalog older than the columns
        logger.debug("%s: no columns to check how the pedestals were measured: %s", root, exc)
        return "ADU", set()
    # a flagged row without interfaces holds an already corrected file's header pedestals
    # (or, a single amp, none to follow)
    header = (det["status"] == "flagged") & (det["n_interfaces"].fillna(0) == 0)
    unmeasured = {(int(v), str(d)) for v, d in zip(det.loc[header, "visit"],
                                                   det.loc[header, "detector"], strict=True)}
    det = det[(det["status"] != "failed") & ~header]
    electrons = (det["gain"] == "nominal").to_numpy()
    if electrons.any() and not electrons.all():
        raise InputError(
            f"{root}: pedestals in two units: {int(electrons.sum())} detector-visit(s) measured "
            f"with nominal gains (electrons; {_first(det[electrons])}) and "
            f"{int((~electrons).sum())} without (ADU; {_first(det[~electrons])}); a series "
            "changing unit shows false jumps and gain errors: measure them all the same way "
            "(run again with --new-run, with or without --gain nominal)")
    _check_one_config(root, det)
    modes = det[det["overscan"].fillna("") != ""]
    if modes["overscan"].nunique() > 1:
        said = " and ".join(f"{n} detector-visit(s) with {mode!r} ({_first(rows)})"
                            for mode, n, rows in _groups(modes, "overscan"))
        raise InputError(
            f"{root}: pedestals measured with {modes['overscan'].nunique()} overscan modes: "
            f"{said}; a series whose overscan correction changes shows false jumps: measure "
            "them all the same way (the same kind of input, one --overscan: run again with "
            "--new-run over all the inputs)")
    return ("e-" if electrons.any() else "ADU"), unmeasured


def _check_one_config(root: Path, det: Any) -> None:
    """Refuse measured ``detectors`` rows ``det`` whose runs used different configurations
    (see `_check_one_measurement`), naming the settings that differ."""
    import json

    from .catalog import read_catalog

    if det.empty:
        return
    runs = read_catalog(root, "runs", columns=["run_id", "config", "config_digest"])
    runs = runs.drop_duplicates("run_id", keep="last").set_index("run_id")
    rows = det.assign(_digest=det["run_id"].map(runs["config_digest"]))
    rows = rows[rows["_digest"].notna()]
    if rows["_digest"].nunique() <= 1:
        return
    groups = _groups(rows, "_digest")
    said = " and ".join(
        f"{n}{' detector-visit(s) measured' if i == 0 else ''} with config {digest} "
        f"(run {sub['run_id'].iloc[0]}; {_first(sub)})"
        for i, (digest, n, sub) in enumerate(groups))

    def config(run_id: str) -> dict[str, Any]:
        try:
            out = json.loads(runs.at[run_id, "config"] or "{}")
        except (ValueError, TypeError):
            return {}
        return out if isinstance(out, dict) else {}

    first = config(groups[0][2]["run_id"].iloc[0])
    changed = []
    for _, _, sub in groups[1:]:
        other = config(sub["run_id"].iloc[0])
        changed += [f"{k} {first.get(k)!r} -> {other.get(k)!r}"
                    for k in sorted(first.keys() | other.keys())
                    if first.get(k) != other.get(k) and k not in _NOT_MEASURED]
    differ = f" ({', '.join(dict.fromkeys(changed))})" if changed else ""
    raise InputError(
        f"{root}: pedestals of {len(groups)} configurations{differ}: {said}; a series "
        "changing configuration shows false jumps and gain errors: measure them all with "
        "one configuration (run again with --new-run over all the inputs, not only some; "
        "files corrected in place keep their earlier rows until their originals are "
        "restored)")


#: Config keys that change no pedestal (`~ampoffset_dask.catalog.config_digest` ignores them).
_NOT_MEASURED = ("doApplyAmpOffset", "do_apply_amp_offset")


def _groups(rows: Any, column: str) -> list[tuple[Any, int, Any]]:
    """``(value, number of rows, its rows)`` of each value of ``column`` in ``rows``, the
    values in the order of their first visit (for error messages: ``rows`` need not be
    sorted)."""
    rows = rows.sort_values(["visit", "detector"], kind="stable")
    return [(value, len(sub), sub) for value, sub in rows.groupby(column, sort=False)]


def _first(rows: Any) -> str:
    """``visit V DETECTOR`` of the row of ``rows`` with the first visit."""
    row = rows.loc[rows["visit"].idxmin()]
    return f"visit {int(row['visit'])} {row['detector']}"


def write_trends(result: TrendsResult, out_dir: str | os.PathLike, *,
                 camera: Any = None, max_plots: int = 12) -> list[Path]:
    """Write ``trends.parquet`` (series), ``trends_summary.parquet`` and plots.

    Plots: ``trends_series.png`` (the flagged amps' series with model and jumps, else the
    first amps) and, with a ``camera``, ``trends_flags.png`` (focal-plane map of the number
    of flags per amp).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, frame in (("trends.parquet", result.series),
                        ("trends_summary.parquet", result.summary)):
        path = out / name
        tmp = path.with_name(f".{name}.tmp{os.getpid()}")
        frame.to_parquet(tmp, index=False)
        os.replace(tmp, path)
        paths.append(path)
    paths.append(_plot_series(result, out / "trends_series.png", max_plots))
    if camera is not None:
        from .plots import focal_plane_map, save_figure

        s = result.summary
        flags = s.assign(pedestal=s["n_jumps"] + s["gain_like"].astype(int))
        top = max(1, int(flags["pedestal"].max()))
        fig = focal_plane_map(flags[["detector", "amp", "pedestal"]], camera, vmin=0,
                              vmax=top, cmap="Reds", value_label="flags (jumps + gain-like)",
                              title="trend flags per amp (jumps + gain-like)")
        paths.append(save_figure(fig, out / "trends_flags.png"))
    return paths


def _plot_series(result: TrendsResult, path: Path, max_plots: int) -> Path:
    # A plain Figure (no pyplot): the caller's matplotlib backend is left alone.
    from matplotlib.ticker import MaxNLocator

    from .plots import _figure, save_figure

    flagged = result.flagged
    keys = list(zip(flagged["detector"], flagged["amp"], strict=True))
    if not keys:
        keys = list(zip(result.summary["detector"], result.summary["amp"], strict=True))
    keys = keys[:max_plots]
    n = max(len(keys), 1)
    fig = _figure((7.0, 1.8 * n + 0.6))
    axes = fig.subplots(n, 1, sharex=True, squeeze=False)
    series = result.series
    summary = result.summary.set_index(["detector", "amp"])
    for ax, (det, amp) in zip(axes[:, 0], keys, strict=False):
        g = series[(series["detector"] == det) & (series["amp"] == amp)]
        ax.errorbar(g["visit"], g["pedestal"], yerr=g["pedestal_err"].fillna(0),
                    fmt="o", ms=3, lw=0.8, label="pedestal")
        ax.plot(g["visit"], g["model"], "-", lw=1, label="model")
        for v in g["visit"][g["jump"]]:
            ax.axvline(v, color="C3", lw=1, ls="--")
        row = summary.loc[(det, amp)]
        note = f"{det} {amp}: {int(row['n_jumps'])} jump(s)"
        if row["gain_like"]:
            note += f", gain-like slope {row['gain_slope']:.2e}"
        ax.set_title(note, fontsize=9, loc="left")
        ax.set_ylabel(f"pedestal ({series.attrs.get('unit', 'ADU')})")
    axes[-1, 0].set_xlabel("visit")
    axes[-1, 0].xaxis.set_major_locator(MaxNLocator(integer=True))
    return save_figure(fig, path)

