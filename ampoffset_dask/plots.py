"""Diagnostic plots (matplotlib, headless): pedestal maps, interface offsets, before/after.

Every function builds a `matplotlib.figure.Figure` without pyplot (no display needed, safe in
threads and on workers), optionally saves it as PNG (atomically) and returns it. matplotlib is
an optional dependency: ``pip install "ampoffset-dask[plot]"``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import AmpOffsetError, InputError
from .geometry import Detector

__all__ = [
    "DPI",
    "amp_map",
    "before_after",
    "binned_image",
    "focal_plane_map",
    "interface_histogram",
    "plot_visit",
    "save_figure",
]

logger = logging.getLogger(__name__)

#: Resolution of saved figures (pixels per inch); sizes in inches are given per function.
DPI = 100


def _figure(size: tuple[float, float]):
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "plots need matplotlib: pip install 'ampoffset-dask[plot]'"
        ) from exc
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    # Whole tenths of an inch: the saved PNG is then exactly size x DPI pixels.
    size = (round(size[0], 1), round(size[1], 1))
    fig = Figure(figsize=size, dpi=DPI, layout="constrained")
    # An Agg canvas of its own: `save_figure` lays the figure out and renders the PNG with
    # one renderer, which keeps its text extents cached between the two.
    FigureCanvasAgg(fig)
    return fig


def _colorbar_axes(ax: Any) -> Any:
    """A colour-bar axes exactly as tall as ``ax``'s drawn box (also with an equal aspect,
    where a colour bar attached to the layout slot would overhang the plot)."""
    return ax.inset_axes([1.02, 0.0, 0.035, 1.0])


def save_figure(fig: Any, path: str | os.PathLike[str]) -> Path:
    """Save ``fig`` as PNG at `DPI` through a temporary file renamed into place."""
    from matplotlib import rc_context

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}.png")
    engine = fig.get_layout_engine()
    try:
        if engine is not None:
            # With a layout engine, savefig first draws the whole figure without rendering
            # (to lay it out), then again to render. Running the layout alone and saving
            # without the engine skips that first draw (about a fifth of the saving time)
            # and writes the same bytes; the engine is restored for later draws.
            engine.execute(fig)
            with rc_context({"figure.autolayout": False,
                             "figure.constrained_layout.use": False}):
                fig.set_layout_engine(None)  # "none" would leave a placeholder engine
        fig.savefig(tmp, dpi=DPI, format="png")
        os.replace(tmp, path)
    finally:
        if engine is not None:
            fig.set_layout_engine(engine)
        if tmp.exists():
            tmp.unlink()
    logger.info("wrote %s", path)
    return path


def _as_table(data: Any, columns: Sequence[str], what: str):
    import pandas as pd

    table = data if isinstance(data, pd.DataFrame) else pd.DataFrame(data)
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise InputError(f"{what}: missing column(s) {missing}; have {list(table.columns)}")
    return table


def _select_visit(table: Any, visit: int | None, what: str):
    if "visit" not in table.columns:
        return table
    visits = sorted(table["visit"].dropna().unique().tolist())
    if visit is None:
        if len(visits) > 1:
            raise InputError(f"{what}: several visits {visits[:10]}; choose one")
        return table
    out = table[table["visit"] == visit]
    if out.empty:
        raise InputError(f"{what}: no rows for visit {visit}; visits are {visits[:20]}")
    return out


def _symmetric_limit(values: np.ndarray, vmax: float | None) -> float:
    """``vmax``, else the largest absolute value (the 99.5th percentile for 200+ values, so
    that a few outliers do not wash out a whole focal plane)."""
    if vmax is not None:
        return float(vmax)
    finite = np.abs(values[np.isfinite(values)])
    if not finite.size:
        return 1.0
    top = np.percentile(finite, 99.5) if finite.size >= 200 else finite.max()
    return float(max(top, 1e-3))


def _affine(corners_mm: Sequence[Sequence[float]], width: int, height: int):
    c = np.asarray(corners_mm, dtype=float)[:, :2]
    origin, ex, ey = c[0], (c[1] - c[0]) / width, (c[3] - c[0]) / height

    def to_fp(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=float)[..., None]
        y = np.asarray(y, dtype=float)[..., None]
        return origin + ex * x + ey * y

    return to_fp


def _corners_mm(camera: Any, name: str) -> np.ndarray | None:
    """A detector's outer corners on the focal plane (mm): ``corners_mm`` if the camera
    gives them, else from ``offset_mm``, ``yaw_deg`` and ``pixel_size_mm``, else None."""
    info = camera.info(name)
    if info.get("corners_mm") is not None:
        return np.asarray(info["corners_mm"], dtype=float)[:, :2]
    offset, pixel = info.get("offset_mm"), info.get("pixel_size_mm")
    if offset is None or pixel is None:
        return None
    det = camera[name]
    px = np.broadcast_to(np.asarray(pixel, dtype=float), (2,))
    half = np.array([det.width * px[0], det.height * px[1]]) / 2.0
    local = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * half
    yaw = np.radians(float(info.get("yaw_deg", 0.0)))
    rot = np.array([[np.cos(yaw), -np.sin(yaw)], [np.sin(yaw), np.cos(yaw)]])
    return local @ rot.T + np.asarray(offset, dtype=float)[:2]


def _grid_corners(camera: Any, names: Sequence[str]) -> dict[str, np.ndarray]:
    """Corners (pixels) laying the detectors out side by side in a grid, when the camera
    gives no focal-plane positions."""
    dets = [camera[n] for n in names]
    ncol = int(np.ceil(np.sqrt(len(dets))))
    cell_w = 1.1 * max(d.width for d in dets)
    cell_h = 1.1 * max(d.height for d in dets)
    out = {}
    for k, det in enumerate(dets):
        x0, y0 = (k % ncol) * cell_w, -(k // ncol) * cell_h
        out[det.name] = np.array([[x0, y0], [x0 + det.width, y0],
                                  [x0 + det.width, y0 + det.height], [x0, y0 + det.height]])
    return out


# -- focal plane ------------------------------------------------------------
def focal_plane_map(
    pedestals: Any,
    camera: Any,
    *,
    visit: int | None = None,
    path: str | os.PathLike[str] | None = None,
    vmax: float | None = None,
    cmap: str = "RdBu_r",
    title: str | None = None,
    show_all: bool = True,
    label: bool = True,
    vmin: float | None = None,
    value_label: str = "amp pedestal (ADU)",
):
    """Map of pedestals over the focal plane: each amp a tile coloured by its pedestal.

    Parameters
    ----------
    pedestals : DataFrame or mapping of columns
        Columns ``detector, amp, pedestal`` (and ``visit`` when several visits are present).
    camera : Camera or str
        Camera (or built-in name) giving each detector's amp boxes and focal-plane corners.
    visit : int, optional
        Visit to draw (required when ``pedestals`` has several).
    path : path, optional
        Save the figure there as PNG.
    vmax : float, optional
        Colour-scale limit (symmetric around 0); the largest absolute pedestal by default.
    cmap : str
        Colour map (diverging for the symmetric pedestal scale).
    vmin : float, optional
        Lower end of a one-sided scale ``vmin..vmax`` (e.g. 0 for counts of flags, which
        get whole-number ticks); the scale is symmetric around 0 when omitted.
    value_label : str
        Colour-bar label: what the ``pedestal`` column holds.
    title : str, optional
        Figure title.
    show_all : bool
        Draw the outlines of the camera's other detectors in grey.
    label : bool
        Write detector names.

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib.collections import PolyCollection
    from matplotlib.colors import Normalize

    if isinstance(camera, str):
        from .cameras import get_camera

        camera = get_camera(camera)
    table = _select_visit(_as_table(pedestals, ("detector", "amp", "pedestal"), "pedestals"),
                          visit, "pedestals")
    values = {(str(d), str(a)): float(p) for d, a, p in
              zip(table["detector"], table["amp"], table["pedestal"], strict=True)}
    names = list(dict.fromkeys(str(d) for d in table["detector"]))
    unknown = [n for n in names if n not in set(camera.detector_names)]
    if unknown:
        raise InputError(f"camera {camera.name!r} has no detector(s) {unknown[:5]}")

    placed = {name: _corners_mm(camera, name) for name in names}
    on_focal_plane = all(c is not None for c in placed.values())
    if not on_focal_plane:  # a user camera without positions: detectors side by side
        placed = _grid_corners(camera, names)
        show_all = False
    tiles, colours, outlines, centres = [], [], [], []
    for name in names:
        det = camera[name]
        corners = placed[name]
        to_fp = _affine(corners, det.width, det.height)
        for amp in det.amplifiers:
            xs = np.array([amp.x0, amp.x1, amp.x1, amp.x0])
            ys = np.array([amp.y0, amp.y0, amp.y1, amp.y1])
            tiles.append(to_fp(xs, ys))
            colours.append(values.get((name, amp.name), np.nan))
        outlines.append(corners)
        centres.append((name, corners.mean(axis=0)))
        if len(det.amplifiers) <= 16 and len(names) <= 4:  # few amps: name them
            for amp in det.amplifiers:
                centre = to_fp(np.array([(amp.x0 + amp.x1) / 2]), np.array([(amp.y0 + amp.y1) / 2]))
                centres.append((amp.name, centre[0]))

    values = np.array(colours, dtype=float)
    finite = values[np.isfinite(values)]
    if vmin is None:
        limit = _symmetric_limit(values, vmax)
        low = -limit
    else:
        low = float(vmin)
        top = vmax if vmax is not None else (finite.max() if finite.size else low + 1.0)
        limit = max(float(top), low + 1e-3)
    fig = _figure((8.0, 7.0))
    ax = fig.add_subplot()
    others = []
    if show_all:
        others = [c for n in camera.detector_names if n not in set(names)
                  if (c := _corners_mm(camera, n)) is not None]
        if others:
            ax.add_collection(PolyCollection(others, facecolors="none", edgecolors="0.8",
                                             linewidths=0.4))
    norm = Normalize(low, limit)
    from matplotlib import colormaps

    cm = colormaps[cmap].with_extremes(bad="0.85")
    coll = PolyCollection(tiles, array=np.ma.masked_invalid(values), cmap=cm,
                          norm=norm, edgecolors="0.5", linewidths=0.15)
    ax.add_collection(coll)
    ax.add_collection(PolyCollection(outlines, facecolors="none", edgecolors="k",
                                     linewidths=0.8))
    pts = np.concatenate(outlines + ([np.concatenate(others)] if show_all and others else []))
    if len(names) < 30 and show_all:
        # A few detectors: zoom on them, the rest of the focal plane stays as context.
        pts = np.concatenate(outlines)
    span = np.ptp(pts, axis=0).max()
    pad = 0.04 * span
    ax.set_xlim(pts[:, 0].min() - pad, pts[:, 0].max() + pad)
    ax.set_ylim(pts[:, 1].min() - pad, pts[:, 1].max() + pad)
    ax.set_aspect("equal")
    if label:
        size = float(np.clip(220.0 / max(len(names), 1) ** 0.5 / 4.0, 4.0, 11.0))
        for name, (cx, cy) in centres:
            ax.text(cx, cy, name, ha="center", va="center", fontsize=size,
                    bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none",
                          "alpha": 0.6})
    if on_focal_plane:
        ax.set_xlabel("focal plane x (mm)")
        ax.set_ylabel("focal plane y (mm)")
    else:
        ax.set_xlabel("x (pixels; no focal-plane positions in the camera: detectors in a grid)")
        ax.set_ylabel("y (pixels)")
    above = bool(finite.size and finite.max() > limit)
    below = bool(finite.size and finite.min() < low)
    extend = {(True, True): "both", (True, False): "max", (False, True): "min"}.get(
        (above, below), "neither")
    cbar = fig.colorbar(coll, cax=_colorbar_axes(ax), extend=extend)
    cbar.set_label(value_label)
    if (vmin is not None and finite.size and np.all(finite == np.round(finite))
            and limit - low <= 10):  # counts: whole-number ticks
        cbar.set_ticks(np.arange(np.ceil(low), np.floor(limit) + 1))
    if title is None:
        title = f"{getattr(camera, 'instrument', None) or camera.name} amp pedestals"
        if visit is not None:
            title += f", visit {visit}"
        title += f" ({len(names)} detector{'s' if len(names) != 1 else ''})"
        if not np.isfinite(values).all():  # NaN and absent amps are drawn grey
            title += "; grey: no value"
    ax.set_title(title)
    if path is not None:
        save_figure(fig, path)
    return fig


# -- interfaces ------------------------------------------------------------
def interface_histogram(
    interfaces: Any,
    *,
    visit: int | None = None,
    max_offset: float | Sequence[float] = 5.0,
    min_frac: float | Sequence[float] = 0.5,
    path: str | os.PathLike[str] | None = None,
    bins: int = 60,
    title: str | None = None,
    unit: str = "ADU",
):
    """Histograms of raw interface offsets and good fractions, do-no-harm limits marked.

    Parameters
    ----------
    interfaces : DataFrame or mapping of columns
        Columns ``offset_raw`` and ``good_frac`` (the catalog's ``interfaces`` table);
        ``min_frac_fail`` / ``max_offset_fail`` are counted when present.
    visit : int, optional
        Restrict to one visit.
    max_offset, min_frac : float or sequence of float
        The do-no-harm limits (``ampEdgeMaxOffset``, ``ampEdgeMinFrac``) to mark: one each,
        or those of the several runs that measured the rows (each marked; without the
        ``*_fail`` columns the rows over the smallest offset limit / under the largest
        fraction limit are counted).
    path : path, optional
        Save the figure there as PNG.
    bins : int
        Histogram bins.
    title : str, optional
        Figure title.
    unit : str
        Unit of the offsets (``"e-"`` for ``gain="nominal"`` rows).

    Returns
    -------
    matplotlib.figure.Figure
    """
    table = _as_table(interfaces, ("offset_raw", "good_frac"), "interfaces")
    offsets = sorted({float(v) for v in np.atleast_1d(max_offset)})
    fracs = sorted({float(v) for v in np.atleast_1d(min_frac)})
    if visit is not None:
        table = _select_visit(table, visit, "interfaces")
    raw = np.asarray(table["offset_raw"], dtype=float)
    good = np.asarray(table["good_frac"], dtype=float)
    fig = _figure((10.0, 4.2))
    ax1, ax2 = fig.subplots(1, 2)
    finite = raw[np.isfinite(raw)]
    lim = max(1.5 * offsets[-1], float(np.abs(finite).max()) if finite.size else 1.0)
    edges = np.linspace(-lim, lim, bins + 1)
    # np.histogram + one filled step path draws the same pixels as Axes.hist's one
    # rectangle patch per bin, in about two thirds of the time.
    counts, _ = np.histogram(np.clip(finite, -lim, lim), bins=edges)
    ax1.stairs(counts, edges, fill=True, color="tab:blue", alpha=0.8)
    for k, limit in enumerate(offsets):
        for sign in (-1, 1):
            ax1.axvline(sign * limit, color="tab:red", ls=("--", ":", "-.")[k % 3], lw=1.2,
                        label=f"|offset| > {limit:g} is zeroed" if sign > 0 else None)
    if len(offsets) > 1:
        ax1.plot([], [], " ", label="(runs with different limits)")
    ax1.legend(loc="upper right", fontsize=8, framealpha=0.9)
    n_max = int(table["max_offset_fail"].sum()) if "max_offset_fail" in table else int(
        (np.abs(finite) > offsets[0]).sum())
    ax1.set_xlabel(f"raw interface offset ({unit})")
    ax1.set_ylabel("interfaces")
    ax1.set_title(f"{raw.size} interfaces, {n_max} over the offset limit")
    frac_edges = np.linspace(0, 1, 41)
    counts, _ = np.histogram(good[np.isfinite(good)], bins=frac_edges)
    ax2.stairs(counts, frac_edges, fill=True, color="tab:green", alpha=0.8)
    for k, limit in enumerate(fracs):
        ax2.axvline(limit, color="tab:red", ls=("--", ":", "-.")[k % 3], lw=1.2,
                    label=f"good fraction < {limit:g} is zeroed")
    ax2.legend(loc="upper left", fontsize=8, framealpha=0.9)
    n_min = int(table["min_frac_fail"].sum()) if "min_frac_fail" in table else int(
        (good < fracs[-1]).sum())
    ax2.set_xlabel("good fraction along the interface")
    ax2.set_title(f"{n_min} under the good-fraction limit")
    if title:
        fig.suptitle(title)
    if path is not None:
        save_figure(fig, path)
    return fig


# -- one detector ------------------------------------------------------------
def amp_map(
    pedestals: Mapping[str, float] | Sequence[float] | Any,
    detector: Detector,
    *,
    interfaces: Any = None,
    path: str | os.PathLike[str] | None = None,
    vmax: float | None = None,
    cmap: str = "RdBu_r",
    title: str | None = None,
    visit: int | None = None,
    unit: str = "ADU",
):
    """One detector's amps coloured by pedestal, with values and interface offsets written.

    Parameters
    ----------
    pedestals : mapping, sequence or DataFrame
        ``{amp: pedestal}``, pedestals in amp order, or a table with ``amp, pedestal``
        columns: one row per amp (a ``detector`` column selects ``detector``'s rows; a
        table of several visits needs ``visit``).
    detector : Detector
        Geometry.
    interfaces : DataFrame or sequence of InterfaceResult, optional
        Rows with ``amp_a, amp_b, offset`` to write at each boundary (and, when present,
        ``offset_raw, min_frac_fail, max_offset_fail``: an offset do-no-harm zeroed is
        written ``0 (raw)``, or ``no data`` for too few valid pixels); a table's ``visit``
        and ``detector`` columns select the rows, as for the pedestals.
    path : path, optional
        Save the figure there as PNG.
    vmax : float, optional
        Symmetric colour limit.
    cmap : str
        Colour map.
    title : str, optional
        Axes title (the detector name by default).
    visit : int, optional
        The visit to draw from a table of several.
    unit : str
        Unit of the pedestals for the colour bar (``"e-"`` for ``gain="nominal"`` rows).

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    InputError
        For a table with several visits and no ``visit``, several rows for one amp, or a
        table with a ``detector`` column and no row of ``detector`` (pedestals; interfaces
        when it has rows of other detectors).
    """
    from matplotlib.colors import Normalize
    from matplotlib.patches import Rectangle

    values = _pedestal_dict(pedestals, detector, visit)
    if interfaces is not None and hasattr(interfaces, "columns") and len(interfaces):
        # as the pedestals: this visit's and detector's rows, not another's at each boundary
        interfaces = _detector_rows(
            _select_visit(interfaces, visit, f"interfaces of {detector.name} (pass visit=V)"),
            detector, "interfaces")
    vals = np.array([values.get(a.name, np.nan) for a in detector.amplifiers])
    limit = _symmetric_limit(vals, vmax)
    norm = Normalize(-limit, limit)
    from matplotlib import colormaps

    cm = colormaps[cmap]
    aspect = detector.height / detector.width
    fig = _figure((8.0, float(np.clip(8.0 * aspect, 3.0, 9.0)) + 0.6))
    ax = fig.add_subplot()
    for amp, v in zip(detector.amplifiers, vals, strict=True):
        colour = "0.85" if not np.isfinite(v) else cm(norm(v))
        ax.add_patch(Rectangle((amp.x0, amp.y0), amp.width, amp.height, facecolor=colour,
                               edgecolor="k", lw=0.8))
        text = f"{amp.name}\n{v:+.2f}" if np.isfinite(v) else f"{amp.name}\n-"
        dark = np.isfinite(v) and abs(float(norm(v)) - 0.5) > 0.35
        ax.text(amp.x0 + amp.width / 2, amp.y0 + amp.height / 2, text, ha="center",
                va="center", fontsize=8, color="white" if dark else "black")
    if interfaces is not None:
        for a_name, b_name, text in _interface_rows(interfaces):
            try:
                a, b = detector[a_name], detector[b_name]
            except KeyError:
                continue
            xa, ya = a.x0 + a.width / 2, a.y0 + a.height / 2
            xb, yb = b.x0 + b.width / 2, b.y0 + b.height / 2
            # Horizontal, on a white box over the boundary line, so it stays readable.
            ax.text((xa + xb) / 2, (ya + yb) / 2, text, ha="center", va="center",
                    fontsize=8, color="black", zorder=5,
                    bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "0.5",
                          "lw": 0.5, "alpha": 0.9})
    ax.set_xlim(0, detector.width)
    ax.set_ylim(0, detector.height)
    ax.set_aspect("equal")
    ax.set_xlabel("x (pixel)")
    ax.set_ylabel("y (pixel)")
    from matplotlib.cm import ScalarMappable

    cbar = fig.colorbar(ScalarMappable(norm=norm, cmap=cm), cax=_colorbar_axes(ax))
    cbar.set_label(f"pedestal ({unit})")
    ax.set_title(title or f"{detector.name}: amp pedestals")
    if path is not None:
        save_figure(fig, path)
    return fig


def _pedestal_dict(pedestals: Any, detector: Detector,
                   visit: int | None = None) -> dict[str, float]:
    """``{amp: pedestal}`` of ``detector`` from a mapping, a sequence in amp order or a
    table (``amp, pedestal``; its ``visit`` / ``detector`` columns select the rows).

    Raises
    ------
    InputError
        For a table with several visits and no ``visit``, or several rows for one amp (a
        dict keeps the last: the plot would mix visits or runs without a word).
    """
    if isinstance(pedestals, Mapping):
        return {str(k): float(v) for k, v in pedestals.items()}
    if hasattr(pedestals, "columns"):
        table = _select_visit(_as_table(pedestals, ("amp", "pedestal"), "pedestals"),
                              visit, f"pedestals of {detector.name} (pass visit=V)")
        table = _detector_rows(table, detector, "pedestals")
        amps = table["amp"].astype(str)
        dup = sorted(set(amps[amps.duplicated()]))
        if dup:
            keys = [c for c in ("detector", "run_id", "recorded_at") if c in table.columns]
            where = (f" (distinct {', '.join(keys)}: "
                     + "; ".join(f"{c} {sorted(map(str, table[c].unique()))[:5]}"
                                 for c in keys) + ")") if keys else ""
            raise InputError(
                f"pedestals of {detector.name}: several rows for amp(s) {dup[:8]}"
                f"{' ...' if len(dup) > 8 else ''}{where}; select one row per amp (one "
                "visit, the latest rows: read_catalog without all_rows=True, one detector)")
        return {str(a): float(p) for a, p in
                zip(amps, table["pedestal"], strict=True)}
    vals = np.asarray(pedestals, dtype=float)
    if vals.shape != (len(detector),):
        raise InputError(
            f"detector {detector.name!r}: {vals.size} pedestals for {len(detector)} amps"
        )
    return dict(zip(detector.amp_names, vals.tolist(), strict=True))


def _detector_rows(table: Any, detector: Detector, what: str) -> Any:
    """The rows of ``table`` that are ``detector``'s (by its ``detector`` column, name in
    any case; a table without the column is taken as this detector's).

    Raises
    ------
    InputError
        When the table has a ``detector`` column and no row of ``detector``: its other
        detectors' values would be drawn under this one's name.
    """
    if "detector" not in table.columns:
        return table
    names = table["detector"].astype(str)
    mine = names.str.casefold() == detector.name.casefold()
    if not mine.any():
        held = sorted(set(names))
        raise InputError(
            f"{what} of {detector.name}: the table has no row of detector {detector.name} "
            f"(its detectors: {held[:8]}{' ...' if len(held) > 8 else ''}); pass this "
            "detector's rows (a failed detector has none)")
    return table[mine.to_numpy()]


def _interface_rows(interfaces: Any):
    """``(amp_a, amp_b, text)`` per interface: the offset used in the solve; for one that
    do-no-harm zeroed, ``"0 (raw)"`` when its offset was too large and ``"no data"`` when
    its edges had too few valid pixels (a bare 0 would read as equal levels)."""
    names = ("amp_a", "amp_b", "offset", "offset_raw", "min_frac_fail", "max_offset_fail")
    if hasattr(interfaces, "columns"):
        cols = [interfaces[c] if c in interfaces.columns else [None] * len(interfaces)
                for c in names]
        rows = zip(*cols, strict=True)
    else:
        rows = ((getattr(i, c, None) for c in names) for i in interfaces)
    for a, b, off, raw, few, big in rows:
        if few is not None and bool(few):
            text = "no data"
        elif big is not None and bool(big) and raw is not None:
            text = f"0 ({float(raw):+.2f})"
        else:
            text = f"{float(off):+.2f}"
        yield a, b, text


def binned_image(image: np.ndarray, mask: np.ndarray | None = None, bin_size: int = 32,
                 bad_bits: int = 0) -> np.ndarray:
    """Median of ``bin_size`` x ``bin_size`` blocks, ignoring masked and non-finite pixels.

    Partial blocks at the top and right edges are dropped.
    """
    image = np.asarray(image, dtype=np.float32)
    h, w = image.shape
    ny, nx = h // bin_size, w // bin_size
    if ny == 0 or nx == 0:
        raise InputError(f"image {image.shape} is smaller than one {bin_size}-pixel bin")
    block = image[: ny * bin_size, : nx * bin_size].copy()
    if mask is not None and bad_bits:
        block[(np.asarray(mask)[: ny * bin_size, : nx * bin_size] & bad_bits) != 0] = np.nan
    block = block.reshape(ny, bin_size, nx, bin_size).transpose(0, 2, 1, 3)
    block = block.reshape(ny, nx, bin_size * bin_size)
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.nanmedian(block, axis=2)


def _binned_after(image: np.ndarray, mask: np.ndarray | None, b_before: np.ndarray,
                  detector: Detector, values: Mapping[str, float], bin_size: int,
                  bad_bits: int) -> np.ndarray:
    """`binned_image` of the corrected image, from the uncorrected bins: a bin inside one amp
    just moves by that amp's pedestal; only bins that straddle amps are recomputed."""
    ny, nx = b_before.shape
    shift = np.full((ny, nx), np.nan)
    for amp in detector.amplifiers:
        r0, r1 = -(-amp.y0 // bin_size), min(amp.y1 // bin_size, ny)
        c0, c1 = -(-amp.x0 // bin_size), min(amp.x1 // bin_size, nx)
        if r1 > r0 and c1 > c0:
            shift[r0:r1, c0:c1] = values.get(amp.name, 0.0)
    out = b_before - shift.astype(np.float32)
    straddle = np.argwhere(np.isnan(shift))
    if straddle.size:
        peds = np.zeros(detector.shape, dtype=np.float32)
        for amp in detector.amplifiers:
            peds[amp.slices] = values.get(amp.name, 0.0)
        for r, c in straddle:
            sl = (slice(r * bin_size, (r + 1) * bin_size), slice(c * bin_size, (c + 1) * bin_size))
            block = np.asarray(image[sl], dtype=np.float32) - peds[sl]
            if mask is not None and bad_bits:
                block = block[(np.asarray(mask[sl]) & bad_bits) == 0]
            block = block[np.isfinite(block)]
            out[r, c] = np.median(block) if block.size else np.nan
    return out


def _smooth_model(binned: np.ndarray) -> np.ndarray:
    """Quadratic surface fitted to the finite bins (removes sky gradients for display)."""
    ny, nx = binned.shape
    yy, xx = np.mgrid[0:ny, 0:nx]
    u, v = (xx / max(nx - 1, 1)) - 0.5, (yy / max(ny - 1, 1)) - 0.5
    terms = np.stack([np.ones_like(u), u, v, u * u, u * v, v * v], axis=-1).reshape(-1, 6)
    z = binned.ravel()
    ok = np.isfinite(z)
    if ok.sum() < 6:
        return np.full_like(binned, np.nanmedian(binned) if ok.any() else 0.0)
    for _ in range(3):
        coef, *_ = np.linalg.lstsq(terms[ok], z[ok], rcond=None)
        resid = z - terms @ coef
        sigma = 1.4826 * np.nanmedian(np.abs(resid[ok]))
        keep = ok & (np.abs(resid) < 4 * max(sigma, 1e-6))
        if keep.sum() < 6 or keep.sum() == ok.sum():
            break
        ok = keep
    return (terms @ coef).reshape(ny, nx)


def before_after(
    image: np.ndarray,
    detector: Detector,
    pedestals: Mapping[str, float] | Sequence[float] | Any,
    *,
    mask: np.ndarray | None = None,
    bad_bits: int = 0x1FF,
    bin_size: int | None = None,
    path: str | os.PathLike[str] | None = None,
    vmax: float | None = None,
    title: str | None = None,
    visit: int | None = None,
    unit: str = "ADU",
    corrected: bool = False,
):
    """Binned image of one detector before and after subtracting the amp pedestals.

    A smooth quadratic surface (fitted to the corrected binned image) is removed from both
    panels so that steps of a fraction of an ADU between amps are visible over the sky.

    Parameters
    ----------
    image : ndarray, shape (height, width)
        The uncorrected detector image; with ``corrected``, the corrected one.
    detector : Detector
        Geometry.
    pedestals : mapping, sequence or DataFrame
        As in `amp_map` (one row per amp).
    mask : ndarray of int, optional
        Mask plane; pixels with any of ``bad_bits`` are ignored in the bins.
    bad_bits : int
        Mask bits to ignore (afw's BAD..NO_DATA by default).
    bin_size : int, optional
        Block size; chosen so the detector is about 128 bins wide by default.
    path : path, optional
        Save the figure there as PNG.
    vmax : float, optional
        Colour limit (``unit`` around the smooth model).
    title : str, optional
        Figure title.
    visit : int, optional
        The visit to use from a table of several.
    unit : str
        Unit of the image and pedestals (``"e-"`` for ``gain="nominal"``).
    corrected : bool
        ``image`` already has ``pedestals`` subtracted (corrected in place, or a file whose
        header says so): it is the "after" panel as it is, and "before" is rebuilt by adding
        each amp's pedestal back (said in the panel's title).

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    InputError
        For an image not of the detector's shape, a table with several visits and no
        ``visit``, or several rows for one amp.
    """
    image = np.asarray(image)
    if image.shape != detector.shape:
        raise InputError(
            f"detector {detector.name!r}: image shape {image.shape} does not match the "
            f"detector {detector.shape}"
        )
    values = _pedestal_dict(pedestals, detector, visit)
    if corrected:
        # Adding a constant per amp undoes the subtraction exactly (up to float32
        # rounding): the uncorrected pixels are no longer on disk to read.
        image = np.array(image, dtype=np.float32)
        for amp in detector.amplifiers:
            image[amp.slices] += np.float32(values.get(amp.name, 0.0))
    if bin_size is None:
        bin_size = int(max(4, min(detector.width, detector.height) // 128))
    b_before = binned_image(image, mask, bin_size, bad_bits)
    b_after = _binned_after(image, mask, b_before, detector, values, bin_size, bad_bits)
    model = _smooth_model(b_after)
    r_before, r_after = b_before - model, b_after - model
    if vmax is None:
        peds = np.abs(np.array(list(values.values()), dtype=float))
        spread = 1.4826 * np.nanmedian(np.abs(r_after - np.nanmedian(r_after)))
        vmax = float(max(peds.max() if peds.size else 0.0, 3.0 * spread, 0.1))
    extent = (0, b_before.shape[1] * bin_size, 0, b_before.shape[0] * bin_size)
    aspect = detector.height / detector.width
    fig = _figure((11.0, float(np.clip(5.2 * aspect, 2.5, 9.0)) + 0.9))
    axes = fig.subplots(1, 2, sharex=True, sharey=True)
    labels = (("before, rebuilt: image + pedestals", "after: the image as it is")
              if corrected else ("before", "after"))
    for ax, data, label in ((axes[0], r_before, labels[0]), (axes[1], r_after, labels[1])):
        im = ax.imshow(data, origin="lower", cmap="gray", vmin=-vmax, vmax=vmax, extent=extent,
                       interpolation="nearest")
        for amp in detector.amplifiers:
            ax.plot([amp.x0, amp.x1, amp.x1, amp.x0, amp.x0],
                    [amp.y0, amp.y0, amp.y1, amp.y1, amp.y0], color="tab:orange", lw=0.3,
                    alpha=0.6)
        ax.set_title(f"{label} ({bin_size}x{bin_size} median bins)")
        ax.set_xlabel("x (pixel)")
    # The detector, not the outlines' autoscale margins (a blank band above the image).
    axes[0].set_xlim(0, detector.width)
    axes[0].set_ylim(0, detector.height)
    axes[0].set_ylabel("y (pixel)")
    cbar = fig.colorbar(im, ax=list(axes), shrink=0.9)
    cbar.set_label(f"{unit} minus smooth sky")
    fig.suptitle(title or f"{detector.name}: amp pedestals removed")
    if path is not None:
        save_figure(fig, path)
    return fig


# -- a catalog ------------------------------------------------------------
def _camera_for_catalog(catalog: Any, det: Any, camera: Any):
    """The camera of a catalog's detectors: given, else the one the run was given, else from
    an input file's header, else the largest built-in camera that has every detector name."""
    from .cameras import get_camera, list_cameras

    if camera is not None:
        return get_camera(camera)
    names = set(map(str, det["detector"]))
    run_camera = _run_camera(catalog, _run_ids(det))
    if run_camera is not None:
        return run_camera
    if "input" in det.columns:
        from astropy.io import fits

        for path in det["input"].dropna():
            if not Path(path).is_file():
                continue
            try:
                header = fits.getheader(path, 0)
            except (OSError, ValueError):
                continue
            # SIMCAM: written by the simulator, whose shrunk detectors carry no CAMERA key.
            for key in ("CAMERA", "INSTRUME", "SIMCAM"):
                value = header.get(key)
                if value:
                    try:
                        return get_camera(str(value))
                    except AmpOffsetError:
                        continue
            break
    candidates = [get_camera(n) for n in list_cameras()]
    candidates = [c for c in candidates if names <= set(c.detector_names)]
    if not candidates:
        return None
    return max(candidates, key=len)


def _run_ids(rows: Any) -> list[str]:
    """The distinct ``run_id`` of catalog rows (none for a table without the column)."""
    if "run_id" not in rows.columns:
        return []
    return [str(r) for r in dict.fromkeys(rows["run_id"].dropna())]


def _runs_json(catalog: Any, column: str, run_ids: Sequence[str]) -> list[dict[str, Any]]:
    """A JSON column (``options``, ``config``) of the runs ``run_ids`` of ``catalog``, in
    the order they started; runs not in the table or with no readable value are left out.

    The runs that measured the rows drawn, not the catalog's latest run: a later run (with
    ``--new-run`` and other limits, or another camera) may not have touched them.
    """
    import json

    from .catalog import read_catalog

    if not run_ids:
        return []
    try:
        runs = read_catalog(catalog, "runs")
    except (AmpOffsetError, OSError):
        return []
    if not len(runs) or column not in runs.columns or "run_id" not in runs.columns:
        return []
    out = []
    for _, run in runs[runs["run_id"].isin(set(run_ids))].sort_values("started").iterrows():
        try:
            value = json.loads(run[column] or "{}")
        except (TypeError, ValueError):
            continue
        if isinstance(value, dict):
            out.append(value)
    return out


def _run_camera(catalog: Any, run_ids: Sequence[str]):
    """The camera given to the runs ``run_ids`` of ``catalog`` (their ``runs.options``; the
    latest of them that gave one), if any."""
    from .cameras import get_camera

    for options in reversed(_runs_json(catalog, "options", run_ids)):
        name = options.get("camera")
        if not isinstance(name, str) or not name:
            continue
        try:
            return get_camera(name)
        except AmpOffsetError:
            continue
    return None


def _pedestal_unit(rows: Any) -> str:
    """Unit of the pedestals of catalog ``detectors`` rows: ``"e-"`` when every row was
    measured with the camera's nominal gains (``gain == "nominal"``), ``"ADU"`` when none
    was, and ``"ADU and e- mixed"`` otherwise (failed rows, which hold none, left out)."""
    if "gain" not in rows.columns:  # a catalog older than the column: ADU
        return "ADU"
    if "status" in rows.columns:
        rows = rows[rows["status"] != "failed"]
    electrons = (rows["gain"] == "nominal").to_numpy()
    if electrons.size and electrons.all():
        return "e-"
    return "ADU and e- mixed" if electrons.any() else "ADU"


#: Values of the detectors table's ``overscan`` column that `read_exposure` takes back.
_OVERSCAN_MODES = ("per-row", "mean", "none")


def _recorded_stamp(catalog: Any, run_id: Any, path: str) -> tuple[int, float] | None:
    """``(size, mtime)`` of ``path`` as run ``run_id`` of ``catalog`` recorded it when it
    started (its ``runs.inputs``), or None when it recorded none."""
    import math

    import pandas as pd

    from .catalog import read_catalog
    from .catalog.writer import recorded_input_stamps

    if run_id is None or pd.isna(run_id):
        return None
    try:
        runs = read_catalog(catalog, "runs")
    except (AmpOffsetError, OSError):
        return None
    if "inputs" not in runs.columns or "run_id" not in runs.columns:
        return None
    for text in runs.loc[runs["run_id"] == str(run_id), "inputs"]:
        stamp = recorded_input_stamps(text).get(path)
        # (a store object's stamp may hold its ETag and no time: nothing to compare here)
        if stamp is not None and stamp[1] is not None and not math.isnan(stamp[1]):
            return stamp[0], stamp[1]
    return None


def _file_state(catalog: Any, row: Any, pedestals: Mapping[str, float], path: str
                ) -> tuple[str, str]:
    """How the file at ``path`` (the row's ``input``) relates to what the row measured.

    Returns ``(state, note)``: ``"corrected"`` when the file holds the row's pedestals
    subtracted (its run corrected it in place and the header still says so, with those
    pedestals and that run; or a header that says so with the row's pedestals: a flagged
    "already corrected" row records the header's); ``"as_is"`` when the file is the one
    the row measured (the note says when its header records another correction: an input
    measured anyway with ``--force``); ``"changed"`` when it is neither, the note saying
    why: the file was restored or corrected again after its run corrected it in place, or
    its size or time is not what the run recorded when it started (rewritten since).
    """
    import os

    import pandas as pd
    from astropy.io import fits

    from .algorithm.metadata import PEDESTAL_KEY, SUBTRACTED_KEY
    from .pipeline.inputs import RUN_KEY

    run_id = row.get("run_id")
    run_id = "" if run_id is None or pd.isna(run_id) else str(run_id)
    output, applied = row.get("output"), row.get("applied")
    output = "" if output is None or pd.isna(output) else str(output)
    in_place = False
    if not (applied is None or pd.isna(applied)) and bool(applied) and output:
        try:
            in_place = Path(output).resolve() == Path(path).resolve()
        except OSError:
            pass
    try:
        header = fits.getheader(path, 0)
    except (OSError, ValueError):
        return "as_is", ""  # the read for the plot reports what is wrong with it
    subtracted = header.get(SUBTRACTED_KEY) is True
    header_run = str(header.get(RUN_KEY) or "")
    recorded = {name: header.get(PEDESTAL_KEY.format(name)) for name in pedestals}
    same = bool(pedestals) and all(
        isinstance(v, int | float) and np.isclose(float(v), pedestals[name], rtol=1e-6,
                                                  atol=1e-9)
        for name, v in recorded.items())
    if subtracted:
        held = ("its header says pedestals were subtracted"
                + (f" by run {header_run}" if header_run else "")
                + ("" if same else ", other than the catalog's"))
    else:
        held = "its header says no pedestals are subtracted"
    # the stamp the run took before reading it: equal means the very file it measured
    stamp = _recorded_stamp(catalog, run_id, path)
    unchanged = None
    if stamp is not None:
        try:
            st = os.stat(path)
            unchanged = (st.st_size == stamp[0]
                         and abs(st.st_mtime - stamp[1]) < 1e-6)
        except OSError:
            unchanged = False
    if in_place:
        if subtracted and same and header_run in ("", run_id):
            return "corrected", ""
        if not subtracted and unchanged:
            # restored with its recorded size and time (e.g. `cp -p` of a backup)
            return "as_is", " (the file was restored to the input its run measured)"
        return "changed", (f"run {run_id} corrected it in place, but {held}: it was "
                           "restored or corrected again since")
    if subtracted and same:
        return "corrected", ""
    if unchanged is False:
        return "changed", (f"its size or modification time is not what run {run_id} "
                           f"recorded when it measured it ({held}): rewritten since")
    if subtracted:
        return "as_is", " (input header: already corrected; pedestals measured on it as it is)"
    return "as_is", ""


def _measured_pedestals(ped: Any, det: Any, camera: Any = None) -> Any:
    """The pedestals to map: NaN (grey) where nothing was measured.

    A detector whose every pixel was masked, or without interfaces (one amp), records
    pedestals of 0 that are no measurement; a failed detector records none. Both are drawn
    as amps without a value rather than as perfect amps or as detectors not processed
    (failed ones only with a ``camera`` to give their amps).
    """
    import pandas as pd

    ped = ped.copy()
    empty = np.zeros(len(det), dtype=bool)
    if "all_masked" in det:
        empty |= det["all_masked"].fillna(False).astype(bool).to_numpy()
    if "n_interfaces" in det:
        empty |= (det["n_interfaces"] == 0).to_numpy()
    unmeasured = set(map(str, det.loc[empty & (det["status"] != "failed").to_numpy(),
                                      "detector"]))
    ped["pedestal"] = ped["pedestal"].where(~ped["detector"].astype(str).isin(unmeasured))
    if camera is None:
        return ped
    names = set(camera.detector_names)
    failed = [str(d) for d in det.loc[det["status"] == "failed", "detector"]
              if str(d) in names and str(d) not in set(map(str, ped["detector"]))]
    visit = ped["visit"].iloc[0] if "visit" in ped and len(ped) else None
    rows = [{"visit": visit, "detector": d, "amp": a, "pedestal": np.nan}
            for d in dict.fromkeys(failed) for a in camera[d].amp_names]
    if rows:
        ped = pd.concat([ped, pd.DataFrame(rows)], ignore_index=True)
    return ped


def _catalog_detector(catalog: str | os.PathLike[str], visit: int, ok: Any,
                      detector: str | int) -> str:
    """The catalog's name of ``detector`` among the measured rows ``ok`` of ``visit``.

    Matched as `~ampoffset_dask.catalog.read_catalog` matches ``detectors=``: a name in any
    case, or the integer id (also as a string of digits).

    Raises
    ------
    InputError
        When no measured detector of the visit is ``detector`` (before any file is written).
    """
    from .catalog.read import _detector_keys, _detector_names

    names, ids = _detector_keys(detector) or ([], [])
    wanted = set(_detector_names(Path(catalog), names, ids, visits=[visit]))
    found = [str(d) for d in ok["detector"] if str(d) in wanted]
    if not found:
        raise InputError(f"{catalog}: visit {visit}: no measured detector {detector!r}")
    return found[0]


def _ccd_name(info: Any, camera: Any) -> str | None:
    """The camera's name of the detector whose headers ``info`` describes, as a run of the
    file names it (the header's own name when the camera cannot say)."""
    from .io.layout import resolve_detector

    try:
        return resolve_detector(info, camera=camera).name
    except AmpOffsetError:
        return info.detector


def _read_detector(path: str, name: str, camera: Any, isr: Mapping[str, Any]) -> Any:
    """Read detector ``name`` of the file ``path`` (a catalog row's ``input``) for its plots.

    A multi-CCD file is read at the HDU of that CCD, never its first one; a file whose
    header names no detector (a run given it by a manifest) is read as ``name``. The read
    detector is checked to be ``name``, so another CCD's pixels and layout are never drawn
    under its title.

    Raises
    ------
    InputError
        Naming the file and detector, when the file holds no CCD of that name, or any read
        error of `~ampoffset_dask.io.fits.read_exposure`.
    """
    from .io.fits import inspect_file, read_exposure

    info = inspect_file(path)
    kwargs: dict[str, Any] = dict(isr)
    if info.ccd_hdus:
        held = {k: _ccd_name(inspect_file(path, k), camera) for k in info.ccd_hdus}
        hdus = [k for k, n in held.items() if n is not None and n.casefold() == name.casefold()]
        if not hdus:
            raise InputError(
                f"{path}: detector {name}: no CCD HDU of the file is it (HDUs "
                + ", ".join(f"{k}: {n}" for k, n in list(held.items())[:10]) + ")")
        kwargs["hdu"] = hdus[0]
    elif info.detector is None and info.detector_id is None and not info.archive_hdus:
        kwargs["detector"] = name
    exposure = read_exposure(path, camera=camera, **kwargs)
    got = exposure.detector.name
    if str(got).casefold() != name.casefold():
        raise InputError(f"{path}: detector {name}: the file holds detector {got} "
                         f"(HDU {exposure.info.image_hdu}), not {name}")
    return exposure


def plot_visit(
    catalog: str | os.PathLike[str],
    visit: int | None = None,
    *,
    out: str | os.PathLike[str] | None = None,
    camera: Any = None,
    detector: str | int | None = None,
) -> list[Path]:
    """Write the standard PNG plots of one visit of a catalog.

    ``focal_plane_v<visit>.png`` (when the camera is known), ``interfaces_v<visit>.png``,
    and for one detector ``amps_v<visit>_<detector>.png`` and, when its input file is still
    readable and still the file the catalog measured (or corrected in place),
    ``before_after_v<visit>_<detector>.png``: a file restored or corrected again since,
    or whose size or time is not what its run recorded, gets none (a warning says why).

    Parameters
    ----------
    catalog : path
        Catalog folder written by `ampoffset_dask.process`.
    visit : int, optional
        The visit (needed when the catalog holds several).
    out : path, optional
        Output folder (default ``CATALOG/plots``).
    camera : str or Camera, optional
        Camera for the focal-plane map and to read the input file (default: the camera the
        run was given, else from the input files' headers, else the largest built-in camera
        with every detector name, e.g. LSSTCam rather than LSSTComCam for ``R22_S11``).
    detector : str or int, optional
        Detector for the per-detector plots, by name in any case or by integer id (default:
        the first measured one). In a multi-CCD file its own CCD is read; when the file
        holds no CCD of that name the before/after plot is skipped (a warning).

    Returns
    -------
    list of Path
        The written files.

    Raises
    ------
    InputError
        For a missing catalog, an unknown visit or detector, several visits and none chosen,
        or a visit whose every detector failed (nothing to plot).
    """
    from .catalog import UNKNOWN_VISIT, read_catalog

    det = read_catalog(catalog, "detectors")
    if not len(det):
        raise InputError(f"{catalog}: the catalog has no detectors")
    # UNKNOWN_VISIT only holds failed inputs whose identity could not be read: no visit
    n_lost = int((det["visit"] == UNKNOWN_VISIT).sum())
    lost = (f" (plus {n_lost} failed input(s) without a visit, which have nothing to plot)"
            if n_lost else "")
    visits = sorted(int(v) for v in det["visit"].unique() if int(v) != UNKNOWN_VISIT)
    if visit is not None and int(visit) == UNKNOWN_VISIT and n_lost:
        raise InputError(f"{catalog}: nothing to plot for visit {UNKNOWN_VISIT}: all "
                         f"{n_lost} detector(s) failed ({UNKNOWN_VISIT} is no visit: it "
                         "holds the failed inputs whose identity could not be read; "
                         "`ampoffset-dask catalog CATALOG` lists why); visits are "
                         f"{visits[:20]}")
    if not visits:
        raise InputError(f"{catalog}: no visit to plot: its {n_lost} detector row(s) are "
                         "failed inputs without a visit (`ampoffset-dask catalog CATALOG` "
                         "lists why)")
    if visit is None:
        if len(visits) > 1:
            raise InputError(f"{catalog}: several visits {visits[:20]}{lost}; choose one "
                             "(--visit V, or visit= in Python)")
        visit = visits[0]
    if visit not in visits:
        raise InputError(f"{catalog}: no visit {visit}; visits are {visits[:20]}{lost}")
    det = det[det["visit"] == visit]
    ok = det[det["status"] != "failed"]
    if not len(ok):  # failed rows have no pedestals or interfaces: every plot would be empty
        raise InputError(f"{catalog}: nothing to plot for visit {visit}: all {len(det)} "
                         "detector(s) failed (`ampoffset-dask catalog CATALOG --visit V` "
                         "lists why)")
    name = (_catalog_detector(catalog, visit, ok, detector) if detector is not None
            else str(ok["detector"].iloc[0]))
    ped = read_catalog(catalog, "pedestals", visits=[visit])
    itf = read_catalog(catalog, "interfaces", visits=[visit])
    out = Path(out) if out is not None else Path(catalog) / "plots"
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    cam = _camera_for_catalog(catalog, ok, camera)
    unit = _pedestal_unit(ok)
    if cam is None:
        logger.warning("no camera known for these detectors: skipping the focal-plane map")
    elif len(ped):
        unknown = sorted(set(map(str, ped["detector"])) - set(cam.detector_names))
        if unknown:
            logger.warning("camera %s has no detector(s) %s: skipping the focal-plane map",
                           cam.name, unknown[:5])
        else:
            written.append(save_figure(
                focal_plane_map(_measured_pedestals(ped, det, cam), cam, visit=visit,
                                value_label=f"amp pedestal ({unit})"),
                out / f"focal_plane_v{visit}.png"))
    if len(itf):
        # the limits of the runs that measured these rows, not of the catalog's latest run
        configs = _runs_json(catalog, "config", _run_ids(itf))
        limits = {}
        for key, field in (("max_offset", "amp_edge_max_offset"),
                           ("min_frac", "amp_edge_min_frac")):
            values = sorted({float(c[field]) for c in configs
                             if isinstance(c.get(field), int | float)})
            if values:
                limits[key] = values[0] if len(values) == 1 else values
        written.append(save_figure(
            interface_histogram(itf, title=f"visit {visit}: interface offsets", unit=unit,
                                **limits),
            out / f"interfaces_v{visit}.png"))
    row = ok[ok["detector"] == name]
    p_det = ped[ped["detector"] == name]
    i_det = itf[itf["detector"] == name]
    path = row["input"].iloc[0] if "input" in row.columns else None
    first = row.iloc[0]
    det_unit = _pedestal_unit(row)
    geometry = None
    exposure = None
    corrected, note, state = False, "", ""
    if path and Path(path).is_file():
        state, note = _file_state(
            catalog, first, {str(a): float(p) for a, p in zip(p_det["amp"], p_det["pedestal"],
                                                              strict=True)}, path)
        corrected = state == "corrected"
        if state == "changed":
            # its pixels are not the ones measured: a before/after from them would be false
            logger.warning("%s: detector %s: no before/after plot: the file is not the one "
                           "catalog %s measured: %s; run again to measure it as it is",
                           path, name, catalog, note)
        if corrected:
            # a corrected file holds the measured pixels (overscan and gains applied)
            isr = {}
        else:  # the ISR the run applied, so pixels and pedestals share their unit
            overscan = str(first.get("overscan") or "")
            isr = {"overscan": overscan if overscan in _OVERSCAN_MODES else "auto",
                   "gain": "nominal" if first.get("gain") == "nominal" else None}
        try:
            # the camera the run read the file with (else its header's), not a guessed one
            exposure = _read_detector(
                path, name, camera if camera is not None else _run_camera(
                    catalog, _run_ids(row)), isr)
            geometry = exposure.detector
        except AmpOffsetError as exc:
            logger.warning("cannot read %s for the before/after plot of %s (skipped): %s",
                           path, name, exc)
    if geometry is None and cam is not None and name in cam:
        geometry = cam[name]
    if geometry is not None and len(p_det):
        written.append(save_figure(
            amp_map(_measured_pedestals(p_det, row, None), geometry, interfaces=i_det,
                    title=f"visit {visit}, {name}: amp pedestals", unit=det_unit),
            out / f"amps_v{visit}_{name}.png"))
    if exposure is not None and state != "changed":
        from .masks import mask_bits

        bits = mask_bits(("BAD", "SAT", "INTRP", "CR", "EDGE", "SUSPECT", "NO_DATA"),
                         exposure.mask_planes)
        what = ("the file is corrected: 'before' rebuilt by adding the pedestals back"
                if corrected else "before / after" + note)
        written.append(save_figure(
            before_after(exposure.image, exposure.detector, p_det, mask=exposure.mask,
                         bad_bits=bits, title=f"visit {visit}, {name}: {what}",
                         unit=det_unit, corrected=corrected),
            out / f"before_after_v{visit}_{name}.png"))
    return written
