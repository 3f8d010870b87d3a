"""The compiled strip statistics return the numpy reference's numbers bit for bit.

`kernels._numba.strip_line_stats` (line medians, the strip scatter, the clipped line sums)
against `kernels._numpy.strip_line_stats`, on small stacks with every kind of awkward line,
and whole detectors measured on both paths. (Named ``*_numba``: these tests share the test
process that compiles the kernels.)
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest
from golden import full_size_simulation

from ampoffset_dask import AmpOffsetConfig, get_camera, measure_detector
from ampoffset_dask.algorithm.kernels import get_kernels, use_kernels
from ampoffset_dask.algorithm.strips import StripStats, lines_stats, strip_stats

NUMPY = get_kernels("numpy")


class _CompiledKernels:
    """The compiled kernels, imported on first use: every test process collects this module,
    and importing numba costs ~0.5 s; only the process running the numba-kernels group
    needs it."""

    def __getattr__(self, name: str):
        # pytest probes module attributes at collection (``__test__``, ``pytestmark``,
        # ``_pytestfixturefunction``, ...): those must not import numba.
        if name.startswith("__") or "pytest" in name:
            raise AttributeError(name)
        return getattr(get_kernels("numba"), name)


NUMBA = _CompiledKernels()
OUTPUTS = ("count", "profile", "level", "sigmas", "n", "sr", "sd", "sdd", "sdr")


def _same(a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and np.array_equal(a, b, equal_nan=a.dtype.kind == "f")


def test_pairwise_sum_numba_equals_numpy_row_sums():
    """numpy's float32 ``.sum(axis=1)`` along contiguous lines, bit for bit, for every
    width the compiled strips take (up to 128: a plain loop below 8, then 8 interleaved
    partial sums and the remainder; wider lines are left to the numpy reference), two
    lines at once as the clipped sums take them."""
    rng = np.random.default_rng(5)
    for width in range(1, 129):
        a = rng.normal(0.0, 1.0, (6, width)) * rng.uniform(1.0, 1e5, (6, 1))
        a[0] = np.round(a[0])  # integers: ties and exact partial sums
        a[1, ::3] = 0.0
        a = a.astype(np.float32)
        expected = a.sum(axis=1)
        got = np.array([NUMBA._pairwise_sums(a[i], a[(i + 1) % 6], width)
                        for i in range(a.shape[0])], dtype=np.float32)
        np.testing.assert_array_equal(got[:, 0].view(np.uint32), expected.view(np.uint32),
                                      err_msg=f"width {width}")
        np.testing.assert_array_equal(got[:, 1].view(np.uint32),
                                      np.roll(expected, -1).view(np.uint32),
                                      err_msg=f"width {width}")


def _stack(rng, n_lines: int, width: int, *, nan_frac: float = 0.05, ints: bool = False,
           inf: bool = False, scatter: float = 9.0) -> np.ndarray:
    lines = rng.normal(500.0, scatter, (n_lines, width)).astype(np.float32)
    if ints:
        lines = np.round(lines)  # many equal values and residuals
    lines[rng.uniform(size=lines.shape) < nan_frac] = np.nan
    lines[min(3, n_lines - 1)] = np.nan  # a fully masked line
    if n_lines > 5 and width > 1:
        lines[5, :-1] = np.nan  # one valid pixel
    if n_lines > 9 and width > 2:
        lines[8, 1] += 900.0  # an outlier, clipped
    if inf and n_lines > 12:
        lines[10, : width // 2 + 1] = np.inf  # a line whose median is infinite
        lines[12, 0] = -np.inf
    return lines


CASES = {
    "w64": dict(n_lines=300, width=64),
    "w64_no_nan": dict(n_lines=300, width=64, nan_frac=0.0),
    "w64_integers": dict(n_lines=400, width=64, nan_frac=0.0, ints=True),
    # residuals of a few integer values: the scatter's window holds most of each line
    "w64_ties": dict(n_lines=300, width=64, ints=True, scatter=1.0),
    "w72_ties": dict(n_lines=300, width=72, nan_frac=0.0, ints=True, scatter=0.7),
    "w64_inf": dict(n_lines=300, width=64, inf=True),
    "w1": dict(n_lines=50, width=1),
    "w2": dict(n_lines=50, width=2),
    "w7": dict(n_lines=120, width=7, ints=True),
    "w65_integers": dict(n_lines=300, width=65, ints=True),  # the window's masks: 64 + 1
    "w100": dict(n_lines=500, width=100),
    "w128_inf": dict(n_lines=200, width=128, inf=True),
    "w130": dict(n_lines=90, width=130),
    "w300": dict(n_lines=60, width=300, inf=True),
}


@pytest.mark.parametrize("raw", [False, True])
@pytest.mark.parametrize("case", sorted(CASES))
def test_strip_line_stats_numba_equals_numpy(case, raw):
    rng = np.random.default_rng(len(case))
    lines = _stack(rng, **CASES[case])
    n_lines, width = lines.shape
    raw_lines = None
    if raw:
        raw_lines = lines + np.float32(1000.0)
        raw_lines[np.isnan(lines)] = 77.0  # masked by the lines' NaNs
        raw_lines[min(20, n_lines - 1), 0] = np.nan  # a raw NaN the lines do not have
    bounds = [0, n_lines // 3, n_lines // 3 + 1, n_lines]  # one strip of one line
    for dist in (np.arange(width, dtype=np.float32) + np.float32(5.5),  # exact sums
                 rng.uniform(0.0, 70.0, width).astype(np.float32)):  # rounded sums
        ref = NUMPY.strip_line_stats(lines, bounds, dist, raw_lines)
        got = NUMBA.strip_line_stats(lines, bounds, dist, raw_lines)
        for name, a, b in zip(OUTPUTS, ref, got, strict=True):
            assert _same(a, b), f"{case}: {name}"
        assert np.isfinite(ref[3][0])  # the scatter was measured
        # A given profile (LSST's edge profile, as profile_variance passes it).
        ref = NUMPY.strip_line_stats(lines, bounds, dist, None, ref[1])
        got = NUMBA.strip_line_stats(lines, bounds, dist, None, ref[1])
        for name, a, b in zip(OUTPUTS, ref, got, strict=True):
            assert _same(a, b), f"{case} (given profile): {name}"


def test_almost_empty_strips_numba_equals_numpy():
    lines = np.full((12, 4), np.nan, dtype=np.float32)
    lines[2, 1] = 5.0  # one value: no scatter
    lines[7:, :] = 3.0  # a strip of equal values: zero scatter
    dist = np.arange(4, dtype=np.float32) + np.float32(0.5)
    for bounds in ([0, 7, 12], [0, 12], [0, 0, 12]):
        ref = NUMPY.strip_line_stats(lines, bounds, dist)
        got = NUMBA.strip_line_stats(lines, bounds, dist)
        for name, a, b in zip(OUTPUTS, ref, got, strict=True):
            assert _same(a, b), f"{bounds}: {name}"
    assert np.isnan(NUMBA.strip_line_stats(lines, [0, 7], dist)[3][0])


def test_strip_of_mostly_infinite_residuals_numba_equals_numpy():
    """Finite line medians between as many -inf as +inf pixels, NaN beside them: the
    strip's median absolute residual is infinite, and the NaNs (whose bit patterns follow
    infinity's) stay out of its selection."""
    rng = np.random.default_rng(8)
    lines = rng.normal(100.0, 3.0, (40, 64)).astype(np.float32)
    lines[:, :20] = np.nan
    lines[:, 20:41] = -np.inf
    lines[:, 41:62] = np.inf
    lines[::7, 20] = 1e30  # huge residuals below infinity
    dist = np.arange(64, dtype=np.float32) + np.float32(0.5)
    for bounds in ([0, 40], [0, 13, 40]):
        ref = NUMPY.strip_line_stats(lines, bounds, dist)
        got = NUMBA.strip_line_stats(lines, bounds, dist)
        for name, a, b in zip(OUTPUTS, ref, got, strict=True):
            assert _same(a, b), f"{bounds}: {name}"
        assert np.isinf(ref[3]).all() and np.isfinite(ref[1]).all()


def test_distance_sums_at_the_exactness_limit():
    """The kept count and the distance sums share one integer per pixel (count, twice the
    distances, four times their squares, in separate bit fields): distances whose squares
    total just below the exact limit (2**22) give numpy's sums, every pixel kept or not;
    just above it the numpy reference runs."""
    rng = np.random.default_rng(17)
    lines = rng.normal(50.0, 4.0, (300, 128)).astype(np.float32)
    lines[::5, ::3] = np.float32(1e4)  # clipped pixels
    lines[7] = np.nan
    dist = (np.float32(180.5) - (np.arange(128) % 2) * np.float32(0.5)).astype(np.float32)
    d = dist.astype(np.float64)
    assert NUMPY._exact_distance_sums(dist) and 4 * (d * d).sum() > 2**23
    for probe in (dist, dist + np.float32(1.0)):  # the second beyond the limit
        ref = NUMPY.strip_line_stats(lines, [0, 150, 300], probe)
        got = NUMBA.strip_line_stats(lines, [0, 150, 300], probe)
        for name, a, b in zip(OUTPUTS, ref, got, strict=True):
            assert _same(a, b), name
        assert (ref[4] < 128).any() and (ref[4] == 128).any()


@pytest.mark.parametrize("sampled_wider", [False, True])
def test_strip_scatter_when_the_sampled_lines_mislead(sampled_wider):
    """The strip's scatter is selected within a window placed by a sample of its lines
    (every other line of a strip of ``2 * _SAMPLE_LINES``); lines whose scatter differs
    from the others' put the middle ranks outside that window (below or above it), and
    the selection falls back to every residual. Also with integers (ties at the window's
    bounds), an odd count of values, and a large strip (the window narrowed by bins)."""
    rng = np.random.default_rng(13 + sampled_wider)
    rows = 2 * NUMBA._SAMPLE_LINES
    lines = rng.normal(100.0, 1.0, (3 * rows, 64)).astype(np.float32)
    wide = slice(0 if sampled_wider else 1, rows, 2)
    lines[wide] = rng.normal(100.0, 80.0, lines[wide].shape).astype(np.float32)
    lines[rows : 2 * rows] = np.round(lines[rows : 2 * rows] * np.float32(3.0))
    lines[rows + 1, 7] = np.nan  # an odd count in the second strip
    lines[2 * rows :] = rng.normal(0.0, 5.0, (rows, 64)).astype(np.float32)
    dist = np.arange(64, dtype=np.float32) + np.float32(0.5)
    first = np.abs(lines[:rows] - np.median(lines[:rows], axis=1)[:, None])
    sampled, strip = np.median(first[::2]), np.median(first)
    assert (sampled > 3 * strip) if sampled_wider else (strip > 3 * sampled)
    for bounds in ([0, rows, 2 * rows, 3 * rows], [0, 3 * rows]):
        ref = NUMPY.strip_line_stats(lines, bounds, dist)
        got = NUMBA.strip_line_stats(lines, bounds, dist)
        for name, a, b in zip(OUTPUTS, ref, got, strict=True):
            assert _same(a, b), f"{bounds}: {name}"
        assert np.isfinite(ref[3]).all()


def test_lines_stats_numba_equals_numpy():
    """Every `StripStats` field of stacked strips, through `lines_stats` and `strip_stats`."""
    rng = np.random.default_rng(21)
    lines = _stack(rng, 500, 64, inf=True)
    raw = lines + np.float32(300.0)
    bounds, sides = [0, 200, 210, 500], [1, 0, 1]
    with use_kernels("numpy"):
        ref = lines_stats(lines, bounds, sides, inset=5, raw=raw)
        one = strip_stats(lines[:200], 1, inset=5)
    with use_kernels("numba"):
        got = lines_stats(lines, bounds, sides, inset=5, raw=raw)
        one_got = strip_stats(lines[:200], 1, inset=5)
    for a, b in zip([*ref, one], [*got, one_got], strict=True):
        for name in StripStats._fields:
            assert _same(getattr(a, name), getattr(b, name)), name


def _fields(m) -> dict:
    out = {f.name: getattr(m, f.name) for f in dataclasses.fields(m)}
    out["interfaces"] = [dataclasses.asdict(i) for i in m.interfaces]
    return out


def _assert_same_measurement(ref, got, skip=()):
    a, b = _fields(ref), _fields(got)
    for name in a:
        if name in skip:
            continue
        if name == "interfaces":
            for ia, ib in zip(a[name], b[name], strict=True):
                for key in ia:
                    assert _same(ia[key], ib[key]) if isinstance(ia[key], float) \
                        else ia[key] == ib[key], f"{ia['id']} {key}"
        elif isinstance(a[name], (np.ndarray, float)):
            assert _same(a[name], b[name]), name
        else:
            assert a[name] == b[name], name


@pytest.mark.slow
@pytest.mark.parametrize("name", ["R02_S02", "R22_S11"])  # ITL 4072x4000, e2v 4096x4004
def test_full_size_edges_only_numba_equals_numpy(name):
    """Edges-only measurements of full-size detectors, every field equal, also with NaN,
    infinite and huge pixels and masked blocks on the strips."""
    detector = get_camera("lsstcam")[name]
    sim = full_size_simulation(name)  # also test_kernels.py's
    image, mask = sim.image.copy(), sim.mask.copy()
    image[:, 505:509] = np.nan
    image[100:103, :] = np.inf
    image[1995:2003, 30:80] = -np.inf
    image[3000, 2000:2100] = 3e38
    mask[2500:2600, 480:540] |= 1
    config = AmpOffsetConfig(do_background=False, do_detection=False)
    for img, msk in ((sim.image, sim.mask), (image, mask), (sim.image, None)):
        with use_kernels("numpy"), np.errstate(over="ignore", invalid="ignore"):
            ref = measure_detector(img, msk, detector, config)
        with use_kernels("numba"), np.errstate(over="ignore", invalid="ignore"):
            got = measure_detector(img, msk, detector, config)
        _assert_same_measurement(ref, got)
        assert np.isfinite(ref.pedestals).all()


def test_compiled_accessor_leaves_pytest_probes_alone(monkeypatch):
    """Collecting this module must not import numba (every test process collects it)."""
    import sys

    asked = []

    def get_kernels(name):
        asked.append(name)
        return NUMPY

    monkeypatch.setattr(sys.modules[__name__], "get_kernels", get_kernels)
    for probe in ("__test__", "pytestmark", "_pytestfixturefunction", "__wrapped__"):
        assert not hasattr(NUMBA, probe)
    assert asked == []
    assert NUMBA.smooth is NUMPY.smooth  # any other name goes to the kernels
    assert asked == ["numba"]


# ------------------------------------------------------------------------------------------
# The line medians' sorting network
# ------------------------------------------------------------------------------------------
def _apply(net: np.ndarray, a: np.ndarray) -> np.ndarray:
    """The network's comparators applied to every row of ``a`` (a copy)."""
    a = a.copy()
    for i, j in net:
        lo, hi = np.minimum(a[:, i], a[:, j]), np.maximum(a[:, i], a[:, j])
        a[:, i], a[:, j] = lo, hi
    return a


def test_sorting_network_sorts_every_width():
    """Batcher's network sorts every 0/1 input for widths up to 12 (the 0-1 principle:
    then it sorts anything) and random values for every width the compiled strips take."""
    rng = np.random.default_rng(2)
    for n in range(1, 13):
        net = NUMBA._network(n)
        assert ((net[:, 0] < net[:, 1]) & (net[:, 1] < n)).all()
        bits = (np.arange(1 << n)[:, None] >> np.arange(n)) & 1
        assert (np.diff(_apply(net, bits), axis=1) >= 0).all(), n
    for n in range(13, 129):
        v = rng.normal(size=(40, n)).astype(np.float32)
        np.testing.assert_array_equal(_apply(NUMBA._network(n), v), np.sort(v, axis=1))
    assert len(NUMBA._network(64)) == 543 and NUMBA._network(64) is NUMBA._network(64)


@pytest.mark.parametrize("width", [1, 2, 3, 8, 31, 64, 65, 128])
def test_pruned_networks_leave_the_wanted_ranks_sorted(width):
    """The lower half's part of the network (what lines with NaN, sorted last, need) and
    the middle's (full lines) leave those wires as the whole network does, with fewer
    comparators."""
    rng = np.random.default_rng(width + 7)
    v = np.round(rng.normal(0.0, 3.0, (300, width))).astype(np.float32)  # ties
    srt = np.sort(v, axis=1)
    low, mid = NUMBA._median_network(width, 0), NUMBA._median_network(width)
    np.testing.assert_array_equal(_apply(low, v)[:, : width // 2 + 1], srt[:, : width // 2 + 1])
    middle = [(width - 1) // 2, width // 2]
    np.testing.assert_array_equal(_apply(mid, v)[:, middle], srt[:, middle])
    assert len(mid) <= len(low) <= len(NUMBA._network(width))
    if width == 64:
        assert (len(mid), len(low)) == (445, 494)


@pytest.mark.parametrize("width", [1, 2, 3, 16, 17, 31, 33, 64, 65, 127, 128])
def test_line_medians_are_numpys_sorted_middle_values(width):
    """Counts and medians as read from numpy's row sort (NaN last), over a number of lines
    that is not a multiple of the 64 sorted together; the raw levels take the lines'
    counts and mask, and a rank on a raw NaN gives NaN, as in the sorted raw line."""
    rng = np.random.default_rng(width)
    n_lines = 150
    lines = np.round(rng.normal(0.0, 4.0, (n_lines, width))).astype(np.float32)
    lines[rng.uniform(size=lines.shape) < 0.2] = np.nan
    lines[0] = np.nan
    lines[1] = np.inf
    lines[2, ::2] = -np.inf
    raw = rng.normal(9.0, 1.0, (n_lines, width)).astype(np.float32)
    raw[4:9, : width // 2 + 1] = np.nan
    srt = np.sort(lines, axis=1)
    count = np.count_nonzero(~np.isnan(lines), axis=1)
    raw_srt = np.sort(np.where(np.isnan(lines), np.float32(np.nan), raw), axis=1)
    rows = np.arange(n_lines)
    lo, hi = np.maximum(count - 1, 0) // 2, count // 2
    with np.errstate(invalid="ignore"):
        want = np.where(count > 0, (srt[rows, lo] + srt[rows, np.minimum(hi, width - 1)])
                        / np.float32(2), np.float32(np.nan))
        want_raw = np.where(count > 0, (raw_srt[rows, lo]
                                        + raw_srt[rows, np.minimum(hi, width - 1)])
                            / np.float32(2), np.float32(np.nan))
    plan = NUMBA._median_plan(width)
    got_count = np.empty(n_lines, dtype=np.int64)
    got = np.empty(n_lines, dtype=np.float32)
    NUMBA._line_medians(lines, lines, False, *plan, got_count, False, got)
    np.testing.assert_array_equal(got_count, count)
    assert _same(got, want.astype(np.float32))
    got_raw = np.empty(n_lines, dtype=np.float32)
    NUMBA._line_medians(raw, lines, True, *plan, got_count, True, got_raw)
    assert _same(got_raw, want_raw.astype(np.float32))
    assert np.isnan(got_raw[4:9]).any() and np.isfinite(got_raw).sum() > n_lines // 2


@pytest.mark.parametrize("width", [1, 2, 5, 16, 47, 64, 65, 128])
def test_line_medians_of_full_lines_take_the_middle_of_the_network(width):
    """Groups of 64 lines without NaN run only the comparators the middle ranks depend on
    (fewer than the network's for 64 wires) and give numpy's medians, integers with many
    ties included; a NaN in a group (here in the last line of the second) runs the whole
    network for that group."""
    rng = np.random.default_rng(width + 1)
    lines = np.round(rng.normal(0.0, 2.0, (200, width))).astype(np.float32)
    lines[127, 0] = np.nan
    lines[130:140] *= np.float32(1e-3)
    middle = NUMBA._median_network(width)
    if width == 64:
        assert len(middle) == 445 < len(NUMBA._network(64))
    count = np.empty(200, dtype=np.int64)
    got = np.empty(200, dtype=np.float32)
    NUMBA._line_medians(lines, lines, False, *NUMBA._median_plan(width), count, False, got)
    assert _same(got, np.nanmedian(lines, axis=1).astype(np.float32))
    np.testing.assert_array_equal(count, width - np.isnan(lines).sum(axis=1))
    # The middle part alone on full lines: the two middle wires are sorted ones.
    full = lines[:64]
    srt = np.sort(full, axis=1)
    mid = _apply(middle, full)
    for r in ((width - 1) // 2, width // 2):
        np.testing.assert_array_equal(mid[:, r], srt[:, r])


@pytest.mark.parametrize("width", [1, 15, 16, 17, 32, 47, 64, 65, 100, 128])
def test_median_plan_sorts_16_wire_blocks_then_the_rest(width):
    """The plan of the line medians: every full 16-wire block sorted (Batcher's 16-wire
    network), then the rest of the pruned networks, leaves the wanted ranks as the whole
    network does, on lines with ties and infinities; 64 wires: 4 blocks, 252 of the
    network's comparators taken out of the memory passes."""
    rng = np.random.default_rng(width + 11)
    v = np.round(rng.normal(0.0, 3.0, (300, width))).astype(np.float32)
    v[::5, : width // 3] = np.inf
    blocks, low, mid = NUMBA._median_plan(width)
    assert blocks == width // 16
    sorted_blocks = v.copy()
    for b in range(blocks):
        sorted_blocks[:, 16 * b:16 * b + 16] = np.sort(v[:, 16 * b:16 * b + 16], axis=1)
    srt = np.sort(v, axis=1)
    np.testing.assert_array_equal(_apply(low, sorted_blocks)[:, : width // 2 + 1],
                                  srt[:, : width // 2 + 1])
    middle = [(width - 1) // 2, width // 2]
    np.testing.assert_array_equal(_apply(mid, sorted_blocks)[:, middle], srt[:, middle])
    if width == 64:
        assert (len(low), len(mid)) == (494 - 252, 445 - 252)
    assert NUMBA._median_plan(width) is NUMBA._median_plan(width)


def test_line_medians_sort_blocks_of_lines_with_nan_in_registers():
    """Lines with NaN in one 16-wire block only, or spread over all, odd numbers of lines
    and flipped (column-read) strips: the compiled medians equal numpy's nanmedian."""
    rng = np.random.default_rng(23)
    lines = rng.normal(100.0, 5.0, (131, 64)).astype(np.float32)
    lines[3, 16:32] = np.nan
    lines[70, ::3] = np.nan
    lines[71] = np.nan
    lines[130, 63] = np.nan
    flipped = np.ascontiguousarray(rng.normal(0.0, 1.0, (64, 77)).astype(np.float32).T)
    for a in (lines, flipped, lines[:1], lines[1:66]):
        a = np.ascontiguousarray(a)
        count = np.empty(a.shape[0], dtype=np.int64)
        got = np.empty(a.shape[0], dtype=np.float32)
        NUMBA._line_medians(a, a, False, *NUMBA._median_plan(a.shape[1]), count, False, got)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # the all-NaN line
            want = np.nanmedian(a, axis=1).astype(np.float32)
        assert _same(got, want)
        np.testing.assert_array_equal(count, np.count_nonzero(~np.isnan(a), axis=1))


def test_network_comparator_is_the_scalar_one_on_every_lane():
    """`_minmax_rows` (8-wide vector code) leaves in row ``i`` ``u if u < v else v`` and
    in row ``j`` ``v if u < v else u`` on each of the 64 lanes, bit for bit: on ties the
    first value stays first (signed zeros included), NaN and infinities as the scalar
    comparison takes them; the other rows are untouched."""
    from numba import njit

    minmax = NUMBA._minmax_rows

    @njit
    def apply(x, i, j):
        minmax(x, i, j)

    rng = np.random.default_rng(31)
    x = np.round(rng.normal(0.0, 2.0, (5, 64))).astype(np.float32)  # ties, -0.0
    x[1, :8] = [-0.0, 0.0, np.inf, -np.inf, np.nan, 1.0, np.nan, 0.0]
    x[3, :8] = [0.0, -0.0, np.inf, 5.0, 2.0, np.nan, np.nan, -0.0]
    u, v = x[1].copy(), x[3].copy()
    rest = x[[0, 2, 4]].copy()
    apply(x, 1, 3)
    with np.errstate(invalid="ignore"):
        less = u < v
    np.testing.assert_array_equal(x[1].view(np.uint32), np.where(less, u, v).view(np.uint32))
    np.testing.assert_array_equal(x[3].view(np.uint32), np.where(less, v, u).view(np.uint32))
    np.testing.assert_array_equal(x[[0, 2, 4]].view(np.uint32), rest.view(np.uint32))


def test_sixteen_wire_sorts_are_the_networks_comparators_on_every_lane():
    """`_sort16_rows` (vector code) leaves rows ``w0`` to ``w0 + 15`` of every lane as
    Batcher's 16-wire network of scalar comparators does, bit for bit (ties, signed zeros,
    infinities); the other rows are untouched."""
    from numba import njit

    sort16 = NUMBA._sort16_rows

    @njit
    def apply(x, w0):
        sort16(x, w0)

    rng = np.random.default_rng(37)
    x = np.round(rng.normal(0.0, 1.5, (40, 64))).astype(np.float32)
    x[17:20, ::3] = -0.0
    x[21, ::5] = np.inf
    x[22, ::7] = -np.inf
    want = x.copy()
    for i, j in NUMBA._network(16):
        u, v = want[16 + i].copy(), want[16 + j].copy()
        less = u < v
        want[16 + i], want[16 + j] = np.where(less, u, v), np.where(less, v, u)
    apply(x, 16)
    np.testing.assert_array_equal(x.view(np.uint32), want.view(np.uint32))
