"""The numpy reference implementation of the kernels (always available).

Each function here defines the numbers: the compiled kernels
(`ampoffset_dask.algorithm.kernels._numba`) must reproduce them bit for bit (the clipped
sums up to their summation order).
"""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..buffers import ThreadBuffers
from ..interp import interpolate_rows, piecewise
from ..stats import _sample_bracket, clipped_mean_var_usable
from ..strips import CLIP_SIGMA, MAD_TO_SIGMA, exact_median

NAME = "numpy"


def smooth(image: np.ndarray, kernel: np.ndarray, out: np.ndarray | None = None,
           row_block: int = 16, groups: int = 8) -> np.ndarray:
    """afw's separable float32 convolution of ``image``, on the good box only.

    Bit-identical to afw: the horizontal pass accumulates ``img * k_i`` in float32 for
    i = 0..n-1; the vertical pass accumulates the rows of a ring buffer in slot order
    (slot = input row mod n), so the summation order depends on the output row's residue.
    Both passes compute each distinct product once (a symmetric kernel has r + 1 distinct
    weights: ``img * k_i`` and ``img * k_(n-1-i)`` are the same numbers). The horizontal
    pass runs on blocks of ``row_block`` rows and sums shifted products; the vertical one
    handles ``groups`` blocks of n output rows per step: each slot multiplies its input
    rows (those = slot mod n) by the distinct weights and adds views of the products in
    slot order. Products go to preallocated buffers and sums straight into the output, so
    no step allocates.

    Parameters
    ----------
    image : ndarray, float32, shape (H, W)
    kernel : ndarray
        Normalised 1-D weights (odd length n = 2r + 1), used as float32.
    out : ndarray, float32, shape (H - 2r, W - 2r), optional
        Where the result goes (a reused buffer has no fresh pages to fault in); default a
        new array.

    Returns
    -------
    ndarray, float32, shape (H - 2r, W - 2r)
        Element ``[y, x]`` is the smoothed value at image pixel ``(y + r, x + r)``;
        ``out`` when given.
    """
    k = np.asarray(kernel, dtype=np.float32)
    n = k.shape[0]
    r = n // 2
    h, w = image.shape
    oh, ow = h - 2 * r, w - 2 * r
    shape = (max(oh, 0), max(ow, 0))
    check_smooth_out(out, shape)
    if oh <= 0 or ow <= 0:
        return np.empty(shape, dtype=np.float32) if out is None else out
    image = np.ascontiguousarray(image, dtype=np.float32)
    span = n * groups
    # Output rows a..a+span-1 read input rows a..a+span+n-2: the horizontal pass fills a
    # band of that many full-width rows (columns >= ow are scratch), and the last n-1 rows
    # move to the top for the next band; rows past the image are zero (they only feed
    # output rows that are discarded). No full-size intermediate image is allocated.
    rows = span + n - 1
    band = _smooth_buffer("band", (rows, w))
    flat = image.ravel()
    # Equal weights (same bits) share their products: each block multiplies by every
    # distinct weight once, then sums the shifted products in tap order.
    bits = k.view(np.uint32).tolist()
    first: dict[int, int] = {}
    widx = [first.setdefault(b, len(first)) for b in bits]
    distinct = k[[bits.index(b) for b in first]][:, None]
    prods = _smooth_buffer("row products", (distinct.shape[0], row_block * w))

    def horizontal(src0: int, dst0: int, count: int) -> None:
        # Input rows src0.. into band rows dst0..; on the flattened rows, contiguous 1-D
        # operations are twice as fast as 2-D slices, and the last 2r outputs of each row
        # mix two rows and land in the scratch columns.
        real = max(0, min(count, h - src0))
        band[dst0 + real:dst0 + count] = 0
        dst = band.ravel()
        for a in range(0, real, row_block):
            b = min(real, a + row_block)
            full = (b - a) * w
            length = full - 2 * r
            p = prods[:, :full]
            np.multiply(distinct, flat[(src0 + a) * w:(src0 + b) * w], out=p)
            sm = dst[(dst0 + a) * w:(dst0 + a) * w + length]
            if n == 1:
                sm[...] = p[0, :length]
                continue
            np.add(p[widx[0], :length], p[widx[1], 1:1 + length], out=sm)
            for i in range(2, n):
                np.add(sm, p[widx[i], i:i + length], out=sm)

    # Vertical pass. Output row a + g*n + q (a a multiple of n) adds, in slot s, tap
    # j = (s - q) % n of input row a + g*n + q + j: rows q <= s read a + s + g*n, the others
    # the next block's. Slot s reads only the input rows = s mod n, so it multiplies them
    # by each distinct weight once; outputs whose weight index steps evenly with q then
    # add one strided view of those products (two such runs per row set when symmetric).
    plan = []
    for s in range(n):
        runs = []
        for nxt, qs in ((0, range(s + 1)), (1, range(s + 1, n))):
            ds = [widx[(s - q) % n] for q in qs]
            i = 0
            while i < len(ds):
                j = i + 1
                step = ds[j] - ds[i] if j < len(ds) else 1
                if step:
                    while j < len(ds) and ds[j] - ds[j - 1] == step:
                        j += 1
                else:
                    step = 1
                stop = ds[i] + step * (j - i)
                runs.append((nxt, qs[i], qs[i] + j - i,
                             slice(ds[i], stop if stop >= 0 else None, step)))
                i = j
        plan.append((s < n - 1, runs))
    if out is None:
        out = np.empty((oh, ow), dtype=np.float32)
    block = _smooth_buffer("block", (groups, n, ow))
    products = _smooth_buffer("column products", (groups + 1, distinct.shape[0], ow))
    weights = distinct[None]
    zero = np.float32(0.0)
    # The product views step backwards through the weights: with numpy's default buffer
    # such a view is copied through it first (`_short_buffers`).
    with _short_buffers():
        horizontal(0, 0, rows)
        for a in range(0, oh, span):
            if a:
                band[:n - 1] = band[span:]
                horizontal(a + n - 1, n - 1, span)
            m = min(groups, -(-(oh - a) // n))
            valid = min(m * n, oh - a)
            whole = valid == span
            acc = out[a:a + span].reshape(groups, n, ow) if whole else block[:m]
            for s, (more, runs) in enumerate(plan):
                cnt = m + 1 if more else m
                prod = products[:cnt]
                np.multiply(band[s:s + n * (cnt - 1) + 1:n, None, :ow], weights, out=prod)
                for nxt, lo, hi, which in runs:
                    view = prod[nxt:nxt + m, which]
                    if s == 0:
                        # afw's accumulator starts from zero: -0 becomes +0
                        np.add(view, zero, out=acc[:, lo:hi, :])
                    else:
                        acc[:, lo:hi, :] += view
            if not whole:
                out[a:a + valid] = block[:m].reshape(m * n, ow)[:valid]
    return out


#: `smooth`'s band and product buffers (a few MB for a full-size detector), reused by one
#: thread from call to call: fresh ones would be pages to fault in on every detector.
_SMOOTH_BUFFERS = ThreadBuffers(keep_max=1 << 24)


def _smooth_buffer(name: str, shape: tuple[int, ...]) -> np.ndarray:
    """This thread's uninitialised float32 ``shape`` array in `smooth`'s buffer ``name``."""
    return _SMOOTH_BUFFERS.view(name, shape, np.float32)


def out_buffer(out: np.ndarray | None, shape: tuple[int, ...], dtype, what: str
               ) -> np.ndarray:
    """``out`` checked to be a writable C-contiguous ``dtype`` array of ``shape`` (a
    caller's reused buffer: no fresh pages to fault in), or a new uninitialised one."""
    dtype = np.dtype(dtype)
    if out is None:
        return np.empty(shape, dtype=dtype)
    if (out.shape != tuple(shape) or out.dtype != dtype or not out.flags.c_contiguous
            or not out.flags.writeable):
        raise ValueError(f"{what}: the buffer must be a writable C-contiguous {dtype} array "
                         f"of shape {tuple(shape)}, not {out.dtype} {out.shape}")
    return out


def check_smooth_out(out: np.ndarray | None, shape: tuple[int, int]) -> None:
    """Raise `ValueError` unless ``out`` is None or a buffer `smooth` can write a result of
    ``shape`` into (float32, C-contiguous, writable)."""
    if out is not None:
        out_buffer(out, shape, np.float32, "smooth")


def usable_clipped_mean_var(
    values: np.ndarray, bad: np.ndarray | None, n_sigma: float = 3.0, n_iter: int = 3
) -> tuple[float, float, int]:
    """afw ``MEANCLIP`` and ``VARIANCECLIP`` of the finite values of ``values`` not ``bad``.

    Never sorted: a large array is read in place, its quartiles' order statistics
    bracketed from a sample and selected exactly inside the brackets, the values every clip
    iteration keeps summed once (`ampoffset_dask.algorithm.stats.clipped_mean_var_usable`);
    a small one is copied out (`ampoffset_dask.algorithm.stats.clipped_mean_var_selected`).
    Parameters and results are those of ``clipped_mean_var_usable``; ``values`` is one
    background bin or the smoothed image.
    """
    return clipped_mean_var_usable(values, bad, n_sigma, n_iter)


def binned_clipped_mean_var(
    values: np.ndarray, bad: np.ndarray | None, x_edges, y_edges, n_sigma: float = 3.0,
    n_iter: int = 3,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`usable_clipped_mean_var` of every bin of a grid (background bins; one bin for a
    whole image).

    Parameters
    ----------
    values : ndarray, shape (H, W)
    bad : ndarray of bool or None
        Same shape; True excludes a value.
    x_edges, y_edges : sequence of int
        Increasing bin edges: bin ``(j, i)`` is ``values[y_edges[j]:y_edges[j + 1],
        x_edges[i]:x_edges[i + 1]]``.

    Returns
    -------
    mean, variance : ndarray, float64, shape (ny, nx)
        NaN where nothing survives.
    n : ndarray, int64, shape (ny, nx)
        Number of usable values per bin.
    """
    ny, nx = len(y_edges) - 1, len(x_edges) - 1
    means = np.empty((max(ny, 0), max(nx, 0)))
    variances = np.empty(means.shape)
    counts = np.zeros(means.shape, dtype=np.int64)
    for j in range(ny):
        for i in range(nx):
            sl = (slice(y_edges[j], y_edges[j + 1]), slice(x_edges[i], x_edges[i + 1]))
            means[j, i], variances[j, i], counts[j, i] = usable_clipped_mean_var(
                values[sl], None if bad is None else bad[sl], n_sigma, n_iter)
    return means, variances, counts


def subtract_model_rows(image: np.ndarray, style: str, knots: np.ndarray,
                        values: np.ndarray, row_block: int = 64,
                        out: np.ndarray | None = None) -> None:
    """Subtract rows of a background model interpolated along x, in place or into ``out``.

    Row ``r`` of the model is the GSL interpolant of ``style`` through ``(knots,
    values[r])`` evaluated at x = 0..W-1 in double and rounded once to float32; it is then
    subtracted from the float32 ``image[r]`` (float32 minus float32, as afw's
    ``maskedImage -= bgImage``). The coefficients are computed once for all rows; blocks of
    ``row_block`` rows evaluate each interval into a float32 model block, then subtract it
    from the block's image rows (rows with NaN knots and the CONSTANT style go through
    `interp.interpolate_rows`).

    Parameters
    ----------
    image : ndarray, float32, shape (H, W)
    style : str
        Interpolation style (`ampoffset_dask.algorithm.interp`).
    knots : ndarray, shape (n,)
        Bin centres along x.
    values : ndarray, float64, shape (H, n)
        The column-interpolated model at each row and bin centre.
    out : ndarray, float32, shape (H, W), optional
        Where the result goes (``image`` is then only read); default ``image``.
    """
    h, w = image.shape
    dest = image if out is None else out
    if style == "CONSTANT" or not np.isfinite(values).all():
        for y0 in range(0, h, row_block):
            y1 = min(h, y0 + row_block)
            np.subtract(image[y0:y1],
                        interpolate_rows(style, knots, values[y0:y1], w, np.float32),
                        out=dest[y0:y1])
        return
    # The same double operations as `interp.evaluate`; each interval's last addition is
    # rounded into a float32 model block, subtracted from whole image rows at once.
    p = piecewise(style, knots, values, np.arange(w, dtype=np.float64))
    segments = list(p.segments())
    rb = max(min(row_block, h), 1)
    width = max([e - a for _, a, e, _ in segments] + [p.lo, w - p.hi])
    buf = np.empty((2, rb * width))
    model = np.empty((rb, w), dtype=np.float32)
    # Each interval's offsets repeated on every row of a block: the products by t are then
    # contiguous operations, twice as fast as a row broadcast over the block.
    tiles = [np.tile(t, (rb, 1)) for _, _, _, t in segments]
    # afw's quadratic extrapolation, y + dx*d1 + 0.5*dx*dx*d2 evaluated as `interp.evaluate`
    # writes it (left to right); its (0.5*dx)*dx does not depend on the row.
    ends = [(slice(0, p.lo), p.y[:, :1], p.dx_left, p.d1_left, p.d2_left),
            (slice(p.hi, w), p.y[:, -1:], p.dx_right, p.d1_right, p.d2_right)]
    ends = [(cols, y, dx, d1, d2, 0.5 * dx * dx) for cols, y, dx, d1, d2 in ends
            if cols.stop > cols.start]
    with _short_buffers():
        for y0 in range(0, h, rb):
            rows = slice(y0, min(h, y0 + rb))
            n = rows.stop - y0
            m = model[:n]
            for (i, a, e, _), tile in zip(segments, tiles, strict=True):
                p.horner(rows, i, tile[:n], buf[0, : n * (e - a)].reshape(n, e - a),
                         dest=m[:, a:e])
            for cols, y, dx, d1, d2, half_dx2 in ends:
                k = dx.shape[0]
                lin = buf[0, : n * k].reshape(n, k)
                quad = buf[1, : n * k].reshape(n, k)
                np.multiply(dx, d1[rows], out=lin)
                np.add(y[rows], lin, out=lin)
                np.multiply(half_dx2, d2[rows], out=quad)
                np.add(lin, quad, out=m[:, cols], casting="unsafe")
            # float32(model) subtracted in float32: afw's ``maskedImage -= bgImage``
            np.subtract(image[rows], m, out=dest[rows], dtype=np.float32, casting="unsafe")


@contextlib.contextmanager
def _short_buffers(size: int = 256):
    """Run elementwise ufuncs with a ``size``-element iteration buffer.

    numpy 2's iterator copies a broadcast operand (a row block times one coefficient
    per row) through its buffer whenever the rows are shorter than the buffer (8192
    elements by default), which doubles the cost of the operation; rows longer than the
    buffer are computed in place. Only elementwise operations may run inside (a sum's
    blocking follows the buffer): the values do not change.
    """
    old = np.setbufsize(size)
    try:
        yield
    finally:
        np.setbufsize(old)


def bad_pixels(image: np.ndarray, mask: np.ndarray | None, bits: int,
               row_block: int = 64, *, out: np.ndarray | None = None) -> np.ndarray:
    """Boolean array: the pixel is non-finite or its mask has one of ``bits`` (into
    ``out`` when given, a buffer of the image's shape)."""
    bad = out_buffer(out, np.shape(image), bool, "bad_pixels")
    if mask is None or not bits:
        np.isfinite(image, out=bad)
        np.logical_not(bad, out=bad)
        return bad
    # Blocks of rows keep the integer temporaries in cache (no full-size int copy).
    hit = np.empty((min(row_block, bad.shape[0]), bad.shape[1]), dtype=bool)
    word = np.empty(hit.shape, dtype=mask.dtype)
    for y0 in range(0, bad.shape[0], row_block):
        y1 = min(bad.shape[0], y0 + row_block)
        out = bad[y0:y1]
        np.isfinite(image[y0:y1], out=out)
        np.bitwise_and(mask[y0:y1], bits, out=word[: y1 - y0])
        np.not_equal(word[: y1 - y0], 0, out=hit[: y1 - y0])
        np.less_equal(out, hit[: y1 - y0], out=out)  # not finite, or a bit set
    return bad


def prepare_pixels(image, mask: np.ndarray | None, bits: int, det_bits: int,
                   stats_bits: int, copy: bool = True, row_block: int = 64, *,
                   bad_out: np.ndarray | None = None, stats_out: np.ndarray | None = None
                   ) -> tuple[np.ndarray, np.ndarray, bool, np.ndarray | None]:
    """The mask passes that start a detector, on ``image`` as float32.

    Parameters
    ----------
    image : array_like, shape (H, W)
        Read as float32 (never modified).
    mask : ndarray of int or None
        Same shape.
    bits : int
        Mask bits that make a pixel bad (`bad_pixels`).
    det_bits : int
        Mask bits whose presence anywhere is reported (0: none).
    stats_bits : int
        Mask bits of the detection's statistics mask (0: none).
    copy : bool
        Whether ``img`` must be a copy; if not, it is ``image`` itself (or a view of it)
        when that is already a float32 array, which the caller must then not modify.
    bad_out, stats_out : ndarray of bool, optional
        Buffers of the image's shape that ``bad`` and ``stats_bad`` are written into (the
        caller's reused buffers: no fresh pages to fault in); new arrays by default.

    Returns
    -------
    img : ndarray, float32
        The pixels (a copy unless ``copy`` is False).
    bad : ndarray of bool
        ``bad_pixels(img, mask, bits)``.
    any_det : bool
        Whether a pixel's mask has one of ``det_bits``.
    stats_bad : ndarray of bool or None
        Where the mask has one of ``stats_bits``; None when nowhere (or without a mask).
    """
    img = (np.array(image, dtype=np.float32, copy=True) if copy
           else np.asarray(image, dtype=np.float32))
    if mask is None or not (det_bits or stats_bits):
        return img, bad_pixels(img, mask, bits, out=bad_out), False, None
    # One pass over blocks of rows: each block of mask words is read once (masked with
    # every bit any test needs) and the tests then run on the few words that are set; a
    # block with many set words runs each test on the whole block instead.
    mask = np.asarray(mask)
    h, w = img.shape
    bad = out_buffer(bad_out, (h, w), bool, "prepare_pixels")
    stats = None
    if stats_out is not None:
        out_buffer(stats_out, (h, w), bool, "prepare_pixels")
    rb = max(min(row_block, h), 1)
    word = np.empty((rb, w), dtype=mask.dtype)
    hit = np.empty((rb, w), dtype=bool)
    union = bits | det_bits | stats_bits
    any_det = any_stats = False
    for y0 in range(0, h, rb):
        y1 = min(h, y0 + rb)
        m, wd, ht, out = mask[y0:y1], word[:y1 - y0], hit[:y1 - y0], bad[y0:y1]
        np.isfinite(img[y0:y1], out=out)
        np.logical_not(out, out=out)
        np.bitwise_and(m, union, out=wd)
        set_words = np.count_nonzero(np.not_equal(wd, 0, out=ht))
        if not set_words:
            continue
        if stats_bits and stats is None:
            if stats_out is None:
                stats = np.zeros((h, w), dtype=bool)
            else:
                stats = stats_out
                stats.fill(False)
        if set_words <= ht.size >> 4:
            where = np.flatnonzero(ht)
            words = wd.ravel()[where]
            if bits:
                out.ravel()[where[(words & bits) != 0]] = True
            if det_bits and not any_det:
                any_det = bool(np.count_nonzero(words & det_bits))
            if stats_bits:
                flagged = where[(words & stats_bits) != 0]
                stats[y0:y1].ravel()[flagged] = True
                any_stats |= flagged.shape[0] > 0
            continue
        if det_bits and not any_det:
            any_det = bool(np.bitwise_and(m, det_bits, out=wd).any())
        if stats_bits:
            np.bitwise_and(m, stats_bits, out=wd)
            any_stats |= bool(np.not_equal(wd, 0, out=stats[y0:y1]).any())
        if bits:
            np.bitwise_and(m, bits, out=wd)
            np.logical_or(out, np.not_equal(wd, 0, out=ht), out=out)
    return img, bad, any_det, stats if any_stats else None


def all_covered(a: np.ndarray, b: np.ndarray, row_block: int = 64) -> bool:
    """Whether every pixel is True in ``a`` or ``b`` (stops at the first block that is not)."""
    for y0 in range(0, a.shape[0], row_block):
        if not np.logical_or(a[y0:y0 + row_block], b[y0:y0 + row_block]).all():
            return False
    return True


def _or_window(a: np.ndarray, size: int, axis: int) -> np.ndarray:
    """OR over windows of ``size`` consecutive elements along ``axis`` (valid part only).

    Windows are doubled (1, 2, 4, ...) and the last step overlaps, so a 15-wide window
    costs four ORs of the array instead of fourteen.
    """
    a = np.moveaxis(a, axis, 0)
    width = 1
    cur = a
    while width * 2 <= size:
        cur = cur[:-width] | cur[width:]
        width *= 2
    if width < size:
        cur = cur[: a.shape[0] - size + 1] | cur[size - width : size - width + a.shape[0]
                                                 - size + 1]
    return np.moveaxis(cur, 0, axis)


def dilate_box(bad: np.ndarray, r: int, row_block: int = 256, *,
               out: np.ndarray | None = None) -> np.ndarray:
    """OR of ``bad`` over a ``(2r+1)^2`` square, kept where the square fits (the good box);
    into ``out`` when given (a buffer of the result's shape).

    Blocks of ``row_block`` output rows (each reading ``2r`` more input rows) keep the
    temporaries of the window ORs small. A sparse ``bad`` (a statistics mask often has a
    few hundred pixels) paints each pixel's square instead: work in proportion to the
    pixels set, not to the image.
    """
    size = 2 * r + 1
    h, w = bad.shape
    oh, ow = max(h - size + 1, 0), max(w - size + 1, 0)
    out = out_buffer(out, (oh, ow), bool, "dilate_box")
    if oh == 0 or ow == 0:
        return out
    if bad.size >= 1 << 16:
        rows = np.flatnonzero(bad.any(axis=1))
        if rows.shape[0] <= h >> 2:
            flat = np.flatnonzero(np.take(bad, rows, axis=0, out=_grow_buffer(
                "dilated rows", (rows.shape[0], w))))
            if flat.shape[0] <= bad.size >> 12:
                ys, xs = np.divmod(flat, w)
                out.fill(False)
                _dilate_sparse(rows[ys].tolist(), xs.tolist(), size, out)
                return out
    for y0 in range(0, oh, row_block):
        y1 = min(oh, y0 + row_block)
        out[y0:y1] = _or_window(_or_window(bad[y0:y1 + size - 1], size, 1), size, 0)
    return out


def _dilate_sparse(ys: list[int], xs: list[int], size: int, out: np.ndarray) -> np.ndarray:
    """`dilate_box` of the pixels ``(ys[i], xs[i])`` (row-major order) into the cleared
    ``out``: each sets the outputs ``[y - size + 1, y] x [x - size + 1, x]`` (clipped)."""
    oh, ow = out.shape
    i, n = 0, len(ys)
    while i < n:
        y = ys[i]
        j = i + 1
        while j < n and ys[j] == y:
            j += 1
        y0, y1 = max(y - size + 1, 0), min(y + 1, oh)
        if y0 < y1:
            # Squares of pixels of one row that overlap or touch are painted as one span.
            x0, x1 = xs[i] - size + 1, xs[i] + 1
            for x in xs[i + 1:j]:
                if x - size + 1 > x1:
                    out[y0:y1, max(x0, 0):min(x1, ow)] = True
                    x0 = x - size + 1
                x1 = x + 1
            out[y0:y1, max(x0, 0):min(x1, ow)] = True
        i = j
    return out


def grow(seeds: np.ndarray, radius: int, isotropic: bool = True) -> np.ndarray:
    """Dilate boolean ``seeds`` by a disk or a diamond (`ampoffset_dask.algorithm.detection.grow`).

    Only bands of rows around the seeds are dilated (detections are sparse and clustered);
    bands are separated by runs of rows farther than ``radius`` from any seed. In a
    band, horizontal dilations of every half width 0..radius are built incrementally, then
    each row offset ORs the one of its half width.
    """
    if radius <= 0:
        return seeds.copy()
    return _grow_into(seeds, radius, isotropic, np.zeros_like(seeds))


#: Boolean temporaries of `grow` and `grow_detections`, reused by one thread from call to
#: call: an edge window's (about 0.6 MB, a dozen of them) would otherwise be fresh pages
#: to fault in on every detector, which costs more than the ORs done on them. Larger ones
#: (a whole image's) are allocated for the one call.
_GROW_BUFFERS = ThreadBuffers(keep_max=1 << 23)


def _grow_buffer(name: Any, shape: tuple[int, ...], zero: bool = False) -> np.ndarray:
    """This thread's boolean ``shape`` array in buffer ``name``, cleared if ``zero``."""
    buf = _GROW_BUFFERS.view(name, shape, np.bool_)
    if zero:
        buf.fill(False)
    return buf


def _grow_into(seeds: np.ndarray, radius: int, isotropic: bool, out: np.ndarray
               ) -> np.ndarray:
    """`grow` (``radius > 0``) into ``out``, a cleared boolean array of the seeds' shape;
    returns ``out``."""
    h, w = seeds.shape
    count = int(np.count_nonzero(seeds))
    if count == 0:
        return out
    if count > seeds.size // 64:  # dense: one band
        _grow_band(seeds, out, radius, isotropic)
        return out
    if w >= 256:
        rows = np.flatnonzero(seeds.any(axis=1))
    else:  # a row reduction over few columns is slow: the rows of the few seeds instead
        rows = np.flatnonzero(seeds) // w
        rows = np.concatenate((rows[:1], rows[1:][rows[1:] != rows[:-1]]))
    # Bands: the rows within reach of a seed, split at runs of more than 2 * radius clear
    # rows. Stacked end to end they are grown in one call (a band costs a few dozen numpy
    # calls): a seed is more than ``radius`` rows from every other band's rows there too.
    cut = np.flatnonzero(np.diff(rows) > 2 * radius).tolist()
    r = rows.tolist()
    bands = [(max(a - radius, 0), min(b + 1 + radius, h))
             for a, b in zip([r[0]] + [r[i + 1] for i in cut], [r[i] for i in cut] + [r[-1]],
                             strict=True)]
    if len(bands) == 1:
        y0, y1 = bands[0]
        _grow_band(seeds[y0:y1], out[y0:y1], radius, isotropic)
        return out
    index = np.concatenate([np.arange(y0, y1) for y0, y1 in bands])
    shape = (index.shape[0], w)
    grown = _grow_buffer("band", shape, zero=True)
    _grow_band(np.take(seeds, index, axis=0, out=_grow_buffer("band seeds", shape)), grown,
               radius, isotropic)
    out[index] = grown
    return out


def footprint_halves(radius: int, isotropic: bool) -> np.ndarray:
    """Half widths of the footprint's rows ``-radius..radius`` (int64): a disk or a
    diamond (`ampoffset_dask.algorithm.detection.grow`)."""
    return np.array([int(math.sqrt(radius * radius - dy * dy)) if isotropic
                     else radius - abs(dy) for dy in range(-radius, radius + 1)],
                    dtype=np.int64)


def _grow_band(seeds: np.ndarray, out: np.ndarray, radius: int, isotropic: bool) -> None:
    """OR the dilation of ``seeds`` (clipped to the array) into ``out`` (same shape).

    The rows are laid end to end with ``radius`` zero columns before each, so every shift
    is one contiguous 1-D operation (a narrow band would otherwise cost one short inner
    loop per row): a pixel moves at most ``radius`` columns, so what spills past a row's
    end stays in the padding, which is dropped at the end. The horizontal dilation of
    half width k is the OR over windows of 2k + 1 elements, built from windows of powers
    of two (a window of s is two overlapping windows of the largest power of two <= s).
    """
    h, w = seeds.shape
    wp = w + radius
    size = h * wp
    padded = _grow_buffer("padded", (2 * radius + size,), zero=True)
    padded[radius:radius + size].reshape(h, wp)[:, radius:] = seeds
    flat = padded[radius:]  # element j + radius is pixel j of the row-major padded rows
    halves = footprint_halves(radius, isotropic)
    # windows[s][i] = OR of padded[i:i + s]
    windows = {1: padded}
    p = 1
    while 2 * p <= 2 * int(halves.max()) + 1:
        prev = windows[p]
        windows[2 * p] = np.bitwise_or(prev[:-p], prev[p:], out=_grow_buffer(
            ("window", 2 * p), (prev.shape[0] - p,)))
        p *= 2
    horiz = {}
    for k in sorted(set(halves.tolist())):
        s = 2 * k + 1
        q = 1 << (s.bit_length() - 1)
        win = windows[q] if q == s else np.bitwise_or(
            windows[q][:-(s - q)], windows[q][s - q:],
            out=_grow_buffer(("window", s), (windows[q].shape[0] - (s - q),)))
        # Centred on padded[radius + j]: the window starting at radius + j - k.
        horiz[k] = win[radius - k:radius - k + size] if k else flat[:size]
    reach = min(radius, h - 1)  # row offsets beyond the array add nothing
    grown = _grow_buffer("grown", (size,))
    np.copyto(grown, horiz[int(halves[radius])])
    for dy in range(-reach, reach + 1):
        if dy == 0:
            continue
        src = horiz[int(halves[dy + radius])]
        if dy > 0:
            grown[dy * wp:] |= src[: (h - dy) * wp]
        else:
            grown[: dy * wp] |= src[-dy * wp:]
    out |= grown.reshape(h, wp)[:, radius:]


def _threshold_tests(threshold: float, positive: bool, negative: bool, mark_positive: bool,
                     mark_negative: bool) -> list[tuple]:
    """``(compare, bound, marked)`` per detected polarity: ``>= threshold`` and
    ``<= -threshold``, compared in float32."""
    t = np.float32(threshold)
    tests = [(np.greater_equal, t, mark_positive)] if positive else []
    if negative:
        tests.append((np.less_equal, -t, mark_negative))
    return tests


def threshold_seeds(smoothed: np.ndarray, threshold: float, shape: tuple[int, int], r: int,
                    positive: bool, negative: bool, mark_positive: bool,
                    mark_negative: bool) -> tuple[np.ndarray, int, bool]:
    """Detection seeds of the smoothed good box, placed in a full-size mask.

    Parameters
    ----------
    smoothed : ndarray, float32, shape (H - 2r, W - 2r)
    threshold : float
        Pixels ``>= threshold`` (positive) and ``<= -threshold`` (negative) are detected;
        compared in float32, as numpy compares a float32 array with a Python float.
    shape : tuple
        ``(H, W)`` of the image.
    r : int
        The smoothing kernel's half width (offset of the good box).
    positive, negative : bool
        Which polarities are detected.
    mark_positive, mark_negative : bool
        Which polarities become seeds.

    Returns
    -------
    seeds : ndarray of bool, shape (H, W)
    n_detected : int
        Detected pixels of both polarities (marked or not).
    any_seed : bool
    """
    h, w = shape
    seeds = np.zeros(shape, dtype=bool)
    box = seeds[r:h - r, r:w - r]
    tests = _threshold_tests(threshold, positive, negative, mark_positive, mark_negative)
    n = 0
    any_seed = False
    core = None
    for compare, bound, mark in tests:
        if mark and not any_seed:  # the first marked polarity compares straight into seeds
            compare(smoothed, bound, out=box)
            found = int(np.count_nonzero(box))
            any_seed = found > 0
        else:
            core = compare(smoothed, bound, out=core)
            found = int(np.count_nonzero(core))
            if mark and found:
                box |= core
                any_seed = True
        n += found
    return seeds, n, any_seed


def grow_detections(smoothed: np.ndarray, threshold: float, r: int, positive: bool,
                    negative: bool, mark_positive: bool, mark_negative: bool, radius: int,
                    isotropic: bool, regions, out: np.ndarray) -> tuple[int, bool]:
    """`threshold_seeds`'s count, and its seeds grown into regions of ``out``, without a
    full-size seed mask.

    Parameters
    ----------
    smoothed, threshold, r, positive, negative, mark_positive, mark_negative
        As `threshold_seeds`.
    radius : int
    isotropic : bool
        The footprint (`grow`).
    regions : iterable of (slice, slice)
        Regions (rows, cols) of the image, steps of 1.
    out : ndarray of bool, shape (H, W)
        ``out[rows, cols] |= grow(seeds, radius, isotropic)[rows, cols]`` for each region
        (`grow_detected`), in place.

    Returns
    -------
    n_detected : int
        Detected pixels of both polarities (marked or not).
    any_seed : bool
    """
    h, w = out.shape
    reach = max(int(radius), 0)
    boxes = []
    for rows, cols in regions:
        y0, y1, _ = rows.indices(h)
        x0, x1, _ = cols.indices(w)
        if y0 < y1 and x0 < x1:
            boxes.append((y0, y1, x0, x1))
    windows = _shared_windows(boxes, reach, h, w)
    # Each window's seeds are copied out of the blocks the count thresholds anyway: the
    # windows are narrow, and thresholding their short strided rows again costs more.
    # (In one reused buffer: fresh arrays would be pages to fault in on every detector.)
    shapes = [(wy1 - wy0, wx1 - wx0) for (wy0, wy1, wx0, wx1), _ in windows]
    ends = list(itertools.accumulate((a * b for a, b in shapes), initial=0))
    pool = _grow_buffer("window seeds", (ends[-1],), zero=True)
    seeds = [pool[a:b].reshape(shape)
             for shape, a, b in zip(shapes, ends[:-1], ends[1:], strict=True)]
    places = []  # smoothed rows s0:s1 and columns, the window's seeds, row offset, columns
    for ((wy0, wy1, wx0, wx1), _), local in zip(windows, seeds, strict=True):
        gy0, gy1 = max(wy0, r), min(wy1, h - r)
        gx0, gx1 = max(wx0, r), min(wx1, w - r)
        if gy0 < gy1 and gx0 < gx1:
            places.append((gy0 - r, gy1 - r, slice(gx0 - r, gx1 - r), local, wy0 - r,
                           slice(gx0 - wx0, gx1 - wx0)))
    tests = _threshold_tests(threshold, positive, negative, mark_positive, mark_negative)
    n = 0
    any_seed = False
    for y0, flags, mark, found in _threshold_blocks(smoothed, tests):
        n += found
        if not (mark and found):
            continue
        any_seed = True
        y1 = y0 + flags.shape[0]
        for s0, s1, cols, local, off, local_cols in places:
            a, b = max(s0, y0), min(s1, y1)
            if a < b:
                local[a - off:b - off, local_cols] |= flags[a - y0:b - y0, cols]
    if any_seed:
        for ((wy0, _, wx0, _), members), local in zip(windows, seeds, strict=True):
            if not local.any():
                continue
            grown = (_grow_into(local, reach, isotropic,
                                _grow_buffer("window grown", local.shape, zero=True))
                     if reach > 0 else local)
            # Members that tile a larger box are ORed as one (fewer, longer rows).
            for (y0, y1, x0, x1), _ in _merge_boxes([(m, []) for m in members]):
                out[y0:y1, x0:x1] |= grown[y0 - wy0:y1 - wy0, x0 - wx0:x1 - wx0]
    return n, any_seed


def _shared_windows(boxes: list[tuple[int, int, int, int]], reach: int, h: int, w: int
                    ) -> list[tuple[tuple[int, int, int, int], list]]:
    """Group regions ``(y0, y1, x0, x1)`` whose seed windows (the region widened by
    ``reach``, clipped to ``h`` x ``w``) can be read and grown as one.

    Returns ``(window, members)`` pairs (`_merge_boxes` of the windows), members being the
    regions it serves: no pixel is read twice or in vain, and a few wide windows cost
    fewer numpy row loops than many narrow ones.
    """
    return _merge_boxes([((max(y0 - reach, 0), min(y1 + reach, h), max(x0 - reach, 0),
                           min(x1 + reach, w)), [(y0, y1, x0, x1)]) for y0, y1, x0, x1 in boxes])


def _merge_boxes(items: list) -> list:
    """Join the boxes ``(y0, y1, x0, x1)`` of ``(box, payload list)`` pairs into larger
    boxes where their union is one.

    Boxes with the same rows that overlap or touch along x merge, then boxes with the same
    columns that do along y; a merged box carries the concatenated payloads.
    """
    for along_x in (True, False):
        key = (lambda it: (it[0][0], it[0][1], it[0][2])) if along_x else (
            lambda it: (it[0][2], it[0][3], it[0][0]))
        merged: list = []
        for win, members in sorted(items, key=key):
            if merged:
                last, last_members = merged[-1]
                same = last[:2] == win[:2] if along_x else last[2:] == win[2:]
                lo, hi = (2, 3) if along_x else (0, 1)
                if same and win[lo] <= last[hi]:
                    grown = list(last)
                    grown[hi] = max(last[hi], win[hi])
                    merged[-1] = (tuple(grown), last_members + members)
                    continue
            merged.append((win, members))
        items = merged
    return items


def count_detected(smoothed: np.ndarray, threshold: float, positive: bool, negative: bool,
                   mark_positive: bool, mark_negative: bool,
                   row_block: int = 256) -> tuple[int, bool]:
    """`threshold_seeds`'s count and whether a seed exists, without the seed mask.

    Returns
    -------
    n_detected : int
        Detected pixels of both polarities (marked or not).
    any_seed : bool
    """
    tests = _threshold_tests(threshold, positive, negative, mark_positive, mark_negative)
    n = 0
    any_seed = False
    for _, _, mark, found in _threshold_blocks(smoothed, tests, row_block):
        n += found
        any_seed |= mark and found > 0
    return n, any_seed


def _threshold_blocks(smoothed: np.ndarray, tests: list[tuple], row_block: int = 256):
    """Each block of ``row_block`` rows of ``smoothed`` under each of `_threshold_tests`:
    ``(first row, hits, marked, number of hits)``. The hits live in one buffer, valid
    until the next item (blocks keep the boolean temporaries in cache)."""
    hit = _grow_buffer("hits", (min(row_block, smoothed.shape[0]), smoothed.shape[1]))
    for y0 in range(0, smoothed.shape[0], row_block):
        block = smoothed[y0:y0 + row_block]
        flags = hit[:block.shape[0]]
        for compare, bound, mark in tests:
            yield y0, flags, mark, int(np.count_nonzero(compare(block, bound, out=flags)))


def grow_detected(smoothed: np.ndarray, threshold: float, r: int, positive: bool,
                  negative: bool, radius: int, isotropic: bool, rows: slice, cols: slice,
                  out: np.ndarray) -> None:
    """OR the grown seeds into ``out[rows, cols]``, thresholding only what can reach there.

    The seeds are `threshold_seeds`'s marked pixels (``positive``: ``>= threshold``,
    ``negative``: ``<= -threshold``) of the full image (``out``'s shape); the pixels set
    are ``grow(seeds, radius, isotropic)[rows, cols]``, found from the seeds within
    ``radius`` of the region.

    Parameters
    ----------
    smoothed : ndarray, float32, shape (H - 2r, W - 2r)
    threshold : float
    r : int
        Offset of the smoothed good box in the image.
    positive, negative : bool
        Which polarities are seeds.
    radius : int
    isotropic : bool
        Disk or diamond footprint (`grow`).
    rows, cols : slice
        The region of the image (steps of 1).
    out : ndarray of bool, shape (H, W)
        Modified in place.
    """
    h, w = out.shape
    y0, y1, _ = rows.indices(h)
    x0, x1, _ = cols.indices(w)
    if y0 >= y1 or x0 >= x1:
        return
    reach = max(int(radius), 0)
    window = (max(y0 - reach, 0), min(y1 + reach, h), max(x0 - reach, 0), min(x1 + reach, w))
    _grow_window(smoothed, threshold, r, positive, negative, radius, isotropic, window,
                 [(y0, y1, x0, x1)], out)


def _grow_window(smoothed: np.ndarray, threshold: float, r: int, positive: bool,
                 negative: bool, radius: int, isotropic: bool,
                 window: tuple[int, int, int, int], members: list, out: np.ndarray) -> None:
    """`grow_detected` of each region ``(y0, y1, x0, x1)`` of ``members``, from the seeds of
    ``window`` (which holds every seed within ``radius`` of each member): thresholded and
    grown once for all of them."""
    if not (positive or negative):
        return
    h, w = out.shape
    wy0, wy1, wx0, wx1 = window
    reach = max(int(radius), 0)
    # The window's part of the smoothed good box.
    gy0, gy1 = max(wy0, r), min(wy1, h - r)
    gx0, gx1 = max(wx0, r), min(wx1, w - r)
    if gy0 >= gy1 or gx0 >= gx1:
        return
    local = np.zeros((wy1 - wy0, wx1 - wx0), dtype=bool)
    sub = smoothed[gy0 - r:gy1 - r, gx0 - r:gx1 - r]
    dst = local[gy0 - wy0:gy1 - wy0, gx0 - wx0:gx1 - wx0]
    t = np.float32(threshold)
    if positive:
        np.greater_equal(sub, t, out=dst)
    if negative:
        dst |= sub <= -t
    if local.any():
        grown = grow(local, reach, isotropic)
        for y0, y1, x0, x1 in members:
            out[y0:y1, x0:x1] |= grown[y0 - wy0:y1 - wy0, x0 - wx0:x1 - wx0]


# ------------------------------------------------------------------------------------------
# Edge strips: lines read from the image, line medians, scatter and clipped line sums
# (`ampoffset_dask.algorithm.strips.lines_stats`)
# ------------------------------------------------------------------------------------------
def put_lines(dest: np.ndarray, strip: np.ndarray, flip: bool, *,
              mask: np.ndarray | None = None, bits: int = 0, bad: np.ndarray | None = None,
              extra: np.ndarray | None = None, finite: bool = False) -> None:
    """Copy one edge strip into ``dest`` as float32 lines, NaN where masked.

    Parameters
    ----------
    dest : ndarray (along, across), float32
        The strip's lines (rows of a `strip_blocks` stack).
    strip : ndarray
        The strip in detector orientation; transposed into ``dest`` when ``flip`` (sides
        0/2, whose lines are the strip's columns).
    mask, bits : ndarray of int and int, optional
        Pixels with ``mask & bits`` set become NaN.
    bad, extra : ndarray of bool, optional
        Pixels True in either become NaN.
    finite : bool
        Non-finite pixels (after the float32 conversion) become NaN too.
    """
    v = np.asarray(strip)
    dest[...] = v.T if flip else v
    masked = None
    if mask is not None:
        masked = (np.asarray(mask) & bits) != 0
    for m in (bad, extra):
        if m is not None:
            masked = m if masked is None else masked | m
    if masked is not None and flip:
        masked = masked.T
    if finite:
        # One NaN pass for both tests: masked or not finite (``masked >= finite``).
        fin = np.isfinite(dest)
        masked = (np.logical_not(fin, out=fin) if masked is None
                  else np.greater_equal(masked, fin, out=fin))
    if masked is not None:
        np.copyto(dest, np.float32(np.nan), where=masked)


def put_strips(dests: Sequence[np.ndarray], source: Any, boxes: Sequence[tuple[slice, slice]],
               flips: Sequence[bool], *, mask: Any = None, bits: int = 0,
               bad: np.ndarray | None = None, extra: np.ndarray | None = None,
               finite: bool = False) -> None:
    """`put_lines` of several strips of one image: ``dests[k]`` gets ``source[boxes[k]]``.

    Parameters
    ----------
    dests : sequence of ndarray
        The strips' lines, as for `put_lines`.
    source : array_like (height, width)
        The image; only the strips are read (``np.asarray(source[box])``), so a lazy array
        (dask, xarray) is read strip by strip.
    boxes : sequence of (slice, slice)
        Each strip's rows and columns in ``source`` (unit steps).
    flips : sequence of bool
        Whether each strip is transposed into its lines (sides 0/2).
    mask, bits, bad, extra, finite
        As for `put_lines`, in ``source``'s frame (``mask`` may be lazy too).
    """
    use_mask = mask is not None and bits != 0
    for dest, box, flip in zip(dests, boxes, flips, strict=True):
        put_lines(dest, np.asarray(source[box]), flip,
                  mask=np.asarray(mask[box]) if use_mask else None, bits=bits,
                  bad=None if bad is None else bad[box],
                  extra=None if extra is None else extra[box], finite=finite)


def strip_line_stats(lines: np.ndarray, bounds, dist: np.ndarray, raw: np.ndarray | None = None,
                     profile: np.ndarray | None = None) -> tuple:
    """The per-line work of `ampoffset_dask.algorithm.strips.lines_stats`.

    Parameters
    ----------
    lines : ndarray (n_lines, n_across), float32, C-contiguous
        Strips stacked line after line, NaN where masked; strip ``k`` is
        ``lines[bounds[k]:bounds[k + 1]]``.
    bounds : sequence of int
    dist : ndarray (n_across,), float32
        Each pixel's distance to the amp boundary.
    raw : ndarray, optional
        The lines before background subtraction (``level``; masked where ``lines`` is NaN).
    profile : ndarray, optional
        The line medians if already known.

    Returns
    -------
    count : ndarray of int64
        Non-NaN pixels per line.
    profile, level : ndarray of float32
        Line medians of ``lines`` and of ``raw`` (``level is profile`` without ``raw``).
    sigmas : ndarray of float64
        Each strip's ``MAD_TO_SIGMA`` times the median absolute residual.
    n, sr, sd, sdd, sdr : ndarray of float64
        Per line, over the pixels within ``CLIP_SIGMA * sigma`` of the line median: their
        number and the float32 sums (numpy's pairwise order along each line, which does
        not depend on the processor) of residuals, distances, squared distances and
        residual times distance.
    """
    n_lines, n_across = lines.shape
    shape = lines.shape
    # The block-sized temporaries live in this thread's reused buffers (`_strip_buffer`).
    srt = _sorted_rows(lines, _strip_buffer(0, shape, lines.dtype))  # each line's count, medians
    nan_rows = (np.flatnonzero(np.isnan(srt[:, -1])) if n_across
                else np.zeros(0, dtype=np.intp))
    count = np.full(n_lines, n_across, dtype=np.int64)
    if nan_rows.size:
        count[nan_rows] = n_across - np.count_nonzero(np.isnan(srt[nan_rows]), axis=1)
    if profile is None:
        profile = _sorted_medians(srt, nan_rows, count)
    else:
        profile = np.asarray(profile, dtype=np.float32)
    del srt
    level = profile if raw is None else _raw_levels(lines, raw, nan_rows, count)
    with np.errstate(invalid="ignore"):  # infinities in a line give NaN residuals
        rtype = np.result_type(lines.dtype, profile.dtype)
        resid = np.subtract(lines, profile[:, None], out=_strip_buffer(1, shape, rtype))
        absr = np.abs(resid, out=_strip_buffer(2, shape, rtype))
        keep = _strip_buffer(3, shape, np.bool_)
        sigmas = np.empty(len(bounds) - 1)
        for k in range(len(bounds) - 1):
            a, b = bounds[k], bounds[k + 1]
            seg = absr[a:b]
            if np.isinf(profile[a:b]).any():  # a line of mostly infinities: finite residuals
                valid = seg[np.isfinite(seg)]
                sigma = (MAD_TO_SIGMA * exact_median(valid) if valid.shape[0] >= 2
                         else math.nan)
            else:
                sigma = MAD_TO_SIGMA * _median_ignoring_nan(seg, int(count[a:b].sum()))
            sigmas[k] = sigma
            # The clip compares in float32 (NaN compares False: masked pixels are never kept).
            np.less_equal(seg, np.float32(CLIP_SIGMA * sigma), out=keep[a:b])
        del absr
        # Kept residuals, zero elsewhere; float32 sums along each line (pairwise).
        np.copyto(resid, np.float32(0.0),
                  where=np.logical_not(keep, out=_strip_buffer(0, shape, np.bool_)))
        sr = resid.sum(axis=1).astype(np.float64)
        resid *= dist
        sdr = resid.sum(axis=1).astype(np.float64)
    del resid
    # Counts, and for strips up to ~150 pixels wide the distance sums, are exact in any
    # order: einsum's row sums (several times faster than reductions along short rows).
    if n_across and n_across % 8 == 0 and _exact_distance_sums(dist):
        # Most lines keep every pixel: they share the full line's sums; the others are
        # summed on their own.
        n, sd, sdd = (np.repeat(np.einsum("ij,j->i", np.ones((1, n_across), np.float32), w)
                                .astype(np.float64), n_lines)
                      for w in (np.ones(n_across, np.float32), dist, dist * dist))
        part = np.flatnonzero(~_all_rows(keep))
        if part.size:
            kf = keep[part].astype(np.float32)
            n[part] = np.einsum("ij->i", kf)
            sd[part] = np.einsum("ij,j->i", kf, dist)
            sdd[part] = np.einsum("ij,j->i", kf, dist * dist)
        return count, profile, level, sigmas, n, sr, sd, sdd, sdr
    kf = _strip_buffer(2, shape, np.float32)
    np.copyto(kf, keep)
    n = np.einsum("ij->i", kf).astype(np.float64)
    if _exact_distance_sums(dist):
        sd = np.einsum("ij,j->i", kf, dist).astype(np.float64)
        sdd = np.einsum("ij,j->i", kf, dist * dist).astype(np.float64)
    else:
        kf *= dist
        sd = kf.sum(axis=1).astype(np.float64)
        kf *= dist
        sdd = kf.sum(axis=1).astype(np.float64)
    return count, profile, level, sigmas, n, sr, sd, sdd, sdr


#: Byte buffers one thread reuses from one `strip_line_stats` call to the next: a fresh
#: block-sized temporary (a few MB) costs more in page faults when first written than the
#: arithmetic on it. Temporaries up to 8 MB are kept (a full-size detector's stacks are
#: 2 MB); larger ones are allocated for the one call.
_STRIP_BUFFERS = ThreadBuffers(keep_max=1 << 23, min_bytes=1 << 16)


def _strip_buffer(slot: int, shape: tuple[int, ...], dtype) -> np.ndarray:
    """This thread's uninitialised ``shape``/``dtype`` array in buffer ``slot`` (a view:
    valid until the slot is taken again)."""
    return _STRIP_BUFFERS.view(slot, shape, dtype)


def _raw_levels(lines: np.ndarray, raw: np.ndarray, nan_rows: np.ndarray,
                count: np.ndarray) -> np.ndarray:
    """Medians of the ``raw`` lines under the NaNs of ``lines`` (``nan_rows`` the lines
    holding NaN, ``count`` their non-NaN pixels): the lines' ``level``."""
    raw = np.asarray(raw)
    raw_sorted = _sorted_rows(raw, _strip_buffer(0, raw.shape, raw.dtype))
    if nan_rows.size:  # the strip's mask on the raw lines (few lines hold NaN)
        rows = raw[nan_rows]
        raw_sorted[nan_rows] = np.sort(
            np.where(np.isnan(lines[nan_rows]), np.float32(np.nan), rows), axis=1)
    return _sorted_medians(raw_sorted, nan_rows, count)


def _all_rows(mask: np.ndarray) -> np.ndarray:
    """``mask.all(axis=1)`` of a C-contiguous boolean array whose rows are a multiple of 8
    bytes, without a reduction along each short row: the rows as 8-byte words, each
    compared with eight True bytes (again while the comparisons fill whole words)."""
    words = mask.view(np.uint64) == _TRUE_BYTES
    while words.shape[1] > 1 and words.shape[1] % 8 == 0:
        words = words.view(np.uint64) == _TRUE_BYTES
    return words[:, 0] if words.shape[1] == 1 else words.all(axis=1)


_TRUE_BYTES = np.uint64(0x0101010101010101)


def _sorted_rows(a: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``np.sort(a, axis=1)`` of a float array, into ``out``.

    Lines whose values all have a clear sign bit (non-negative numbers, positive NaNs)
    order as the integers their bit patterns spell, the float order with NaN last, and
    numpy sorts integers about a third faster: when the lines' first values suggest so,
    every line is sorted as integers, and those that hold a set sign bit (their smallest
    key is negative) are sorted again as floats from ``a``. Every number lands where the
    float sort puts it (ties have equal bits); the NaNs fill each line's end, their
    payloads in either order (callers only count them).
    """
    np.copyto(out, a)
    key_type = _SAME_SIZE_INT.get(out.dtype.type)
    if key_type is None or 0 in out.shape or np.signbit(a[:, 0]).any():
        out.sort(axis=1)
        return out
    keys = out.view(key_type)
    keys.sort(axis=1)
    signed = np.flatnonzero(keys[:, 0] < 0)
    if signed.size:
        out[signed] = np.sort(a[signed], axis=1)
    return out


def _exact_distance_sums(dist: np.ndarray) -> bool:
    """Whether every float32 sum of some of ``dist`` and of their squares is exact, in any
    order (so equal to numpy's pairwise sums): non-negative multiples of 1/2 whose squares
    (multiples of 1/4) total less than 2**22 and which total less than 2**23."""
    d = np.asarray(dist, dtype=np.float64)
    return bool((d >= 0).all() and (d * 2 == np.round(d * 2)).all()
                and float(np.sum(d * d)) < 2.0**22 and float(np.sum(d)) < 2.0**23)


def _sorted_medians(srt: np.ndarray, nan_rows: np.ndarray, count: np.ndarray) -> np.ndarray:
    """`strips.line_medians` of lines already sorted along axis 1 (NaN last), in their dtype."""
    dtype = srt.dtype.type
    n_lines, n = srt.shape
    if n == 0:
        return np.full(n_lines, np.nan, dtype=srt.dtype)
    lo = srt[:, (n - 1) // 2].copy()
    hi = srt[:, n // 2].copy()
    if nan_rows.size:
        c = count[nan_rows]
        part = srt[nan_rows]
        rows = np.arange(nan_rows.size)
        lo[nan_rows] = np.where(c > 0, part[rows, np.maximum(c - 1, 0) // 2], dtype(np.nan))
        hi[nan_rows] = np.where(c > 0, part[rows, np.minimum(c // 2, n - 1)], dtype(np.nan))
    return ((lo + hi) / dtype(2)).astype(srt.dtype, copy=False)


def _median_ignoring_nan(a: np.ndarray, n_valid: int) -> float:
    """Exact median of the non-NaN values of ``a`` (exactly ``n_valid`` of them), for
    values that are all ``>= +0`` or NaN (absolute residuals); ``a`` is not modified.

    NaN orders after every number in numpy's partition, so the NaNs stay beyond the
    wanted ranks. Non-negative floats order as their bit patterns read as integers (NaNs
    with a cleared sign bit, as ``abs`` leaves them, after infinity), and numpy's integer
    selection is about twice as fast as its float one: the selection runs on the integer
    view and gives the same values. NaN for fewer than two values.
    """
    if n_valid < 2:
        return math.nan
    buf = a.reshape(-1)
    k = n_valid // 2
    ranks = (k - 1, k) if n_valid % 2 == 0 else (k,)
    got = _bracketed_ranks(buf, n_valid, ranks) if buf.shape[0] >= _BRACKET_MIN else None
    if got is not None:
        return got[0] if len(got) == 1 else 0.5 * (got[0] + got[1])
    buf = buf.copy()  # rare on full-size strips: the selection permutes what it selects in
    keys = buf.view(_SAME_SIZE_INT.get(buf.dtype.type, buf.dtype.type))
    keys.partition(k)
    hi = float(buf[k])
    if n_valid % 2 == 0:
        hi = 0.5 * (float(keys[:k].max().view(buf.dtype)) + hi)
    return hi


_SAME_SIZE_INT = {np.float32: np.int32, np.float64: np.int64}

#: `_median_ignoring_nan` brackets its ranks from a sample from this many values on (a
#: strip of a full-size detector holds ~40,000); below, one selection costs less.
_BRACKET_MIN = 8192
_BRACKET_STEP = 16  # one value in this many is sampled


def _bracketed_ranks(buf: np.ndarray, n_valid: int, ranks: tuple[int, ...]
                     ) -> list[float] | None:
    """The values of ascending order statistics ``ranks`` of the ``n_valid`` non-NaN
    values of 1-D ``buf``, from the values between two bounds a sorted sample places
    around them (NaN compares False: outside every bound); None when the bounds miss a
    rank (the caller then selects among all values). ``buf`` is not modified.

    Two compares, a count and a copy of a few percent of the values cost a fraction of
    a selection among all of them.
    """
    s = np.sort(buf[::_BRACKET_STEP])  # NaN sorts last
    m = s.shape[0] - int(np.count_nonzero(np.isnan(s)))
    if m < 64:
        return None
    lo = s[_sample_bracket(m, (ranks[0] + 0.5) / n_valid)[0]]
    hi = np.nextafter(s[_sample_bracket(m, (ranks[-1] + 0.5) / n_valid)[1]],
                      s.dtype.type(np.inf))
    if not lo < hi:
        return None
    below = int(np.count_nonzero(buf < lo))
    if below > ranks[0]:
        return None
    inside = np.greater_equal(buf, lo)
    np.logical_and(inside, np.less(buf, hi), out=inside)
    vals = buf.compress(inside)
    if ranks[-1] - below >= vals.shape[0]:
        return None
    wanted = [k - below for k in ranks]
    vals.partition(wanted)
    return [float(vals[k]) for k in wanted]
