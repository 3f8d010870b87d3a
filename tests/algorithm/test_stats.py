"""afw's MEANCLIP / STDEVCLIP (ALGORITHM.md section 2) on hand-checked and random inputs."""

from __future__ import annotations

import contextlib
import math
import signal
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from ampoffset_dask.algorithm.stats import (
    _BRACKET_MIN,
    _FAR,
    _SELECT_MIN,
    IQ_TO_STDEV,
    _Bracketed,
    _kept_interval,
    _kept_interval_near,
    _kept_interval_searched,
    _quantile_ranks,
    _sample,
    clipped_mean_var,
    clipped_mean_var_selected,
    clipped_mean_var_usable,
    clipped_stats,
    quantiles_sorted,
    usable_values,
)


def reference_clip(values, n_sigma: float = 3.0, n_iter: int = 3) -> tuple[float, float]:
    """Literal, element-wise port of the section 2.3 loop (sequential double sums)."""
    vals = [float(v) for v in values if math.isfinite(float(np.float32(v)))]
    n = len(vals)
    s = sorted(vals)

    def quantile(p: float) -> float:
        if n == 0:
            return math.nan
        if n == 1:
            return s[0]
        idx = p * (n - 1)
        lo = int(idx)
        hi = lo + 1
        return (hi - idx) * s[lo] + (idx - lo) * s[hi]

    median, q1, q3 = quantile(0.5), quantile(0.25), quantile(0.75)
    iqr = q3 - q1
    meanclip = math.nan
    varclip = math.nan
    for it in range(n_iter):
        if varclip < 0:
            varclip = 0.0
        center = median if it == 0 else meanclip
        if it == 0 or n <= 1:
            half = (n_sigma * IQ_TO_STDEV) * iqr
        else:
            half = n_sigma * math.sqrt(varclip) if varclip >= 0 else math.nan
        if math.isnan(center) or math.isnan(half):
            meanclip = varclip = math.nan
            continue
        s1 = 0.0
        s2 = 0.0
        m = 0
        for v in vals:
            if abs(v - center) <= half:
                d = v - center
                s1 += d
                s2 += d * d
                m += 1
        if m == 0:
            meanclip = varclip = math.nan
            continue
        mean_d = s1 / m
        var = (s2 / m - mean_d**2) * (m * m / (m * m - m)) if m > 1 else math.nan
        meanclip = mean_d + center
        varclip = var
    return meanclip, varclip


def test_iq_to_stdev_constant():
    assert IQ_TO_STDEV == 0.741301109252802


def test_one_outlier_by_hand():
    # n=5: median s[2]=3, q1 s[1]=2, q3 s[3]=4, IQR=2, half=3*0.7413*2=4.45 -> 100 is clipped.
    # Survivors 1,2,3,4 around centre 3: d=-2,-1,0,1, s1=-2, s2=6, mean_d=-0.5,
    # var=(6/4-0.25)*(16/12)=5/3; later iterations (centre 2.5, half 3*sqrt(5/3)=3.87)
    # keep the same four values.
    mean, std = clipped_stats(np.array([1.0, 2.0, 3.0, 4.0, 100.0]))
    assert mean == 2.5
    assert std == pytest.approx(math.sqrt(5.0 / 3.0), rel=1e-15)


def test_interpolated_quartiles_by_hand():
    # n=10: median idx 4.5 -> 5.5, q1 idx 2.25 -> 0.75*3+0.25*4=3.25, q3 idx 6.75 -> 7.75.
    values = np.array([1, 2, 3, 4, 5, 6, 7, 8, 9, 30], dtype=float)
    assert quantiles_sorted(np.sort(values)) == (5.5, 3.25, 7.75)
    # half = 3*0.7413*4.5 = 10.01 around 5.5 keeps 1..9 (30 out); mean 5, unbiased var 7.5;
    # iteration 2: centre 5, half 3*sqrt(7.5) = 8.2 keeps 1..9 again.
    mean, std = clipped_stats(values)
    assert mean == pytest.approx(5.0, rel=1e-15)
    assert std == pytest.approx(math.sqrt(7.5), rel=1e-15)


def test_second_iteration_clips_more():
    # sorted: ten 0s, ten 10s, 32 (n=21). median s[10]=10, q1 s[5]=0, q3 s[15]=10, IQR=10,
    # half=3*0.7413*10=22.24 around 10 keeps everything.
    # Iteration 1: mean=132/21=6.286, var=(2024-21*6.286^2)/20=59.7, 3*sigma=23.2 -> 32 is
    # 25.7 away and is dropped. Iteration 2 and 3: mean 5, var=20*25/19, half 15.4 keeps 0s, 10s.
    values = np.array([0.0] * 10 + [10.0] * 10 + [32.0])
    assert quantiles_sorted(values) == (10.0, 0.0, 10.0)
    mean, std = clipped_stats(values)
    assert mean == 5.0
    assert std == pytest.approx(math.sqrt(500.0 / 19.0), rel=1e-15)
    # one iteration only: the IQR pass keeps 32
    mean1, var1 = clipped_mean_var(values, n_iter=1)
    assert mean1 == pytest.approx(132.0 / 21.0, rel=1e-15)
    assert var1 == pytest.approx((2024.0 - 132.0**2 / 21.0) / 20.0, rel=1e-13)


def test_ties_zero_iqr():
    # median=q1=q3=0, half-width 0 keeps exactly the zeros: mean 0, stdev 0.
    mean, std = clipped_stats(np.array([0.0, 0.0, 0.0, 0.0, 10.0]))
    assert mean == 0.0
    assert std == 0.0


def test_empty_gives_nan():
    mean, std = clipped_stats(np.array([], dtype=np.float64))
    assert math.isnan(mean) and math.isnan(std)
    mean, std = clipped_stats(np.array([np.nan, np.nan], dtype=np.float32))
    assert math.isnan(mean) and math.isnan(std)


def test_single_value():
    mean, std = clipped_stats(np.array([3.25]))
    assert mean == 3.25
    assert math.isnan(std)  # one survivor: variance 0 * inf = NaN
    mean, var = clipped_mean_var(np.array([np.float32(-7.5)]))
    assert mean == -7.5 and math.isnan(var)


def test_two_values():
    # median 2, q1 1.5, q3 2.5, half 2.22 keeps both: mean 2, var (1-0)*(4/2) = 2.
    mean, std = clipped_stats(np.array([3.0, 1.0]))
    assert mean == 2.0
    assert std == pytest.approx(math.sqrt(2.0), rel=1e-15)


def test_nan_and_inf_ignored():
    base = np.array([1.0, 2.0, 3.0, 4.0, 100.0])
    with_nan = np.array([np.nan, 1.0, 2.0, np.inf, 3.0, 4.0, -np.inf, 100.0, np.nan])
    assert clipped_stats(with_nan) == clipped_stats(base)
    as32 = with_nan.astype(np.float32)
    assert clipped_stats(as32) == clipped_stats(base)


def test_beyond_float32_range_is_not_finite():
    # afw tests finiteness after a cast to float32: 1e300 is dropped.
    values = np.array([1.0, 2.0, 3.0, 4.0, 1e300])
    assert clipped_stats(values) == clipped_stats(values[:4])


def test_quantiles_small():
    assert math.isnan(quantiles_sorted(np.array([]))[0])
    assert quantiles_sorted(np.array([4.0])) == (4.0, 4.0, 4.0)
    assert quantiles_sorted(np.array([1.0, 2.0, 3.0, 4.0, 5.0])) == (3.0, 2.0, 4.0)


def _cases():
    rng = np.random.default_rng(12345)
    cases = []
    for n in (2, 3, 4, 5, 7, 10, 31, 100, 1001):
        cases.append(rng.normal(10.0, 2.0, n))
    for n in (20, 200, 2000):
        v = rng.normal(0.0, 1.0, n)
        v[rng.choice(n, n // 10, replace=False)] += rng.uniform(5, 50, n // 10)
        cases.append(v)
    # heavy ties
    cases.append(rng.integers(0, 4, 500).astype(np.float64))
    cases.append(np.repeat([1.0, 2.0, 2.0, 3.0, 50.0], 40))
    # float32 data, including values that sit on clip boundaries
    cases.append(rng.normal(100.0, 3.0, 777).astype(np.float32))
    cases.append((rng.standard_cauchy(999) * 0.1).astype(np.float32))
    cases.append(np.round(rng.normal(0, 5, 400)).astype(np.float32))
    # constant, and everything but one value equal
    cases.append(np.full(17, 2.5))
    cases.append(np.r_[np.full(9, 1.0), 1.5])
    return cases


@pytest.mark.parametrize("values", _cases(), ids=lambda v: f"{v.dtype}-{v.size}")
def test_matches_elementwise_port(values):
    s = np.sort(values)
    mean, var = clipped_mean_var(s)
    ref_mean, ref_var = reference_clip(values)
    if math.isnan(ref_mean):
        assert math.isnan(mean)
    else:
        assert mean == pytest.approx(ref_mean, rel=1e-12, abs=1e-12)
    if math.isnan(ref_var):
        assert math.isnan(var)
    else:
        assert var == pytest.approx(ref_var, rel=1e-12, abs=1e-24)
    # the unsorted, NaN-carrying entry point gives the same numbers
    noisy = np.concatenate([values, np.array([np.nan], dtype=values.dtype)])
    m2, sd2 = clipped_stats(noisy[::-1])
    assert m2 == mean or (math.isnan(m2) and math.isnan(mean))
    if var >= 0:
        assert sd2 == math.sqrt(var)
    else:
        assert math.isnan(sd2)


def test_custom_sigma_and_iterations():
    rng = np.random.default_rng(7)
    values = np.r_[rng.normal(0, 1, 300), rng.uniform(3, 6, 30)]
    for n_sigma, n_iter in ((2.0, 1), (2.5, 5), (4.0, 2)):
        mean, var = clipped_mean_var(np.sort(values), n_sigma, n_iter)
        ref = reference_clip(values, n_sigma, n_iter)
        assert mean == pytest.approx(ref[0], rel=1e-12)
        assert var == pytest.approx(ref[1], rel=1e-12)


@contextlib.contextmanager
def _hang_guard(seconds: int):
    """Turn an endless computation into a TimeoutError (the computation takes microseconds)."""

    def handler(signum, frame):
        raise TimeoutError(f"did not finish within {seconds} s")

    previous = signal.signal(signal.SIGALRM, handler)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_clip_bound_at_zero_terminates(dtype):
    # iteration 0: median 1.5, IQR 0.5 -> keeps all; mean 1.5, var (0.5/3)*(9/6) = 0.25;
    # iterations 1, 2: centre 1.5, half 3*0.5 = 1.5, so the lower bound is exactly 0.0.
    with _hang_guard(5):
        mean, var = clipped_mean_var(np.array([1.0, 1.5, 2.0], dtype=dtype))
    assert (mean, var) == (1.5, 0.25)


# ------------------------------------------------------------------------------------------
# Without sorting: exact selection and value-ordered pieces
# ------------------------------------------------------------------------------------------
def _selection_cases():
    rng = np.random.default_rng(2024)
    n = _SELECT_MIN + 1003
    out = {"normal": rng.normal(100.0, 3.0, n)}
    v = rng.normal(0.0, 1.0, n)
    v[rng.choice(n, n // 10, replace=False)] += rng.uniform(5, 5000, n // 10)
    out["outliers"] = v
    out["ties"] = rng.integers(0, 4, n).astype(np.float64)
    out["rounded"] = np.round(rng.normal(0, 5, n))
    out["cauchy"] = rng.standard_cauchy(n) * 0.1
    out["bimodal"] = np.r_[rng.normal(0, 1, n // 2), rng.normal(40, 1, n - n // 2)]
    out["constant"] = np.full(n, 2.5)
    out["one-off"] = np.r_[np.full(n - 1, 1.0), 1.5]
    out["tiny"] = rng.normal(0.0, 1e-30, n)
    out["offset"] = rng.normal(1e6, 0.1, n)
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", list(_selection_cases()))
def test_selection_matches_elementwise_port(name, dtype):
    values = _selection_cases()[name].astype(dtype)
    for n_sigma, n_iter in ((3.0, 3), (2.0, 4)):
        buf = values.copy()
        mean, var = clipped_mean_var_selected(buf, n_sigma, n_iter)
        ref_mean, ref_var = reference_clip(values, n_sigma, n_iter)
        for got, want in ((mean, ref_mean), (var, ref_var)):
            if math.isnan(want):
                assert math.isnan(got)
            else:
                assert got == pytest.approx(want, rel=1e-12, abs=1e-12 * abs(ref_mean) + 1e-300)
        np.testing.assert_array_equal(np.sort(buf), np.sort(values))  # only permuted


def test_selection_sums_never_see_the_outliers():
    # Heavy tails: the sorted path's block prefix sums carry the outliers and cancel them;
    # the pieces sum only kept values, so the variance is right to ~1e-15 (math.fsum).
    rng = np.random.default_rng(5)
    values = rng.standard_cauchy(300_000) * 0.1
    mean, var = clipped_mean_var_selected(values.copy(), 1.0, 4)
    s = np.sort(values)
    median, q1, q3 = quantiles_sorted(s)
    c, v = median, math.nan
    for it in range(4):
        half = (1.0 * IQ_TO_STDEV) * (q3 - q1) if it == 0 else math.sqrt(v)
        d = s - c
        d = d[np.abs(d) <= half]
        m = d.shape[0]
        md = math.fsum(d) / m
        v = (math.fsum(d * d) / m - md**2) * (m * m / (m * m - m))
        c = md + c
    assert mean == pytest.approx(c, rel=1e-13)
    assert var == pytest.approx(v, rel=1e-13)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kept_interval_is_exact(dtype):
    rng = np.random.default_rng(11)
    t = dtype
    for _ in range(300):
        center = float(rng.normal(0, 10) * 10.0 ** rng.integers(-3, 4))
        half = float(abs(rng.normal(0, 1)) * 10.0 ** rng.integers(-8, 3))

        def keep(x, center=center, half=half):
            return abs(float(x) - center) <= half

        got = _kept_interval(t, center, half)
        assert got is not None
        if got == ():  # no representable value that close to the centre
            c = t(center)
            assert not any(keep(x) for x in (np.nextafter(c, t(-np.inf)), c,
                                             np.nextafter(c, t(np.inf))))
            continue
        lo, hi = got
        assert keep(lo) and keep(hi) and lo <= hi
        assert not keep(np.nextafter(lo, t(-np.inf)))
        assert not keep(np.nextafter(hi, t(np.inf)))
    # nothing representable within the bounds
    assert _kept_interval(np.float32, 1.0 + 2.0**-30, 2.0**-40) == ()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kept_interval_near_its_guesses_is_the_searched_one(dtype):
    # The Python-float search near the rounded guesses and the numpy-scalar search from
    # anywhere give the same interval (or the first declines).
    rng = np.random.default_rng(12)
    big = float(np.finfo(dtype).max)
    tiny = float(np.finfo(dtype).smallest_subnormal)
    cases = [(0.0, 0.0), (-0.0, tiny), (tiny, tiny), (1.0, 0.0), (1.0 + 2.0**-30, 2.0**-40),
             (big, 1.0), (-big, big / 4), (big / 2, big / 4), (3.0, 1e-300), (1e-30, 1e-38)]
    for _ in range(3000):
        center = float(rng.normal(0, 10) * 10.0 ** rng.integers(-40, 40))
        half = float(abs(rng.normal(0, 1)) * 10.0 ** rng.integers(-45, 40))
        with np.errstate(over="ignore"):  # beyond float32: infinities, skipped
            if rng.random() < 0.3:
                center = float(dtype(center))  # a centre on a value of the dtype
            if rng.random() < 0.3:
                half = abs(float(dtype(center + half)) - center)  # a bound on a value
        if math.isfinite(center) and math.isfinite(half):
            cases.append((center, half))
    near_found = 0
    for center, half in cases:
        with np.errstate(over="ignore"):
            want = _kept_interval_searched(dtype, center, half)
        got = _kept_interval_near(dtype, center, half)
        if got is _FAR:
            continue
        near_found += 1
        assert got == want, (center, half)
        if got:
            assert all(type(b) is dtype for b in got)
    assert near_found > len(cases) // 2


def test_usable_values_drop_non_finite_and_bad():
    v = np.array([[1.0, np.nan, 3.0], [np.inf, 5.0, -np.inf]], dtype=np.float32)
    bad = np.array([[False, False, True], [False, False, False]])
    np.testing.assert_array_equal(usable_values(v, bad), [1.0, 5.0])
    np.testing.assert_array_equal(usable_values(v, None), [1.0, 3.0, 5.0])
    clean = np.arange(6.0).reshape(2, 3)
    out = usable_values(clean[:, ::2], None)
    np.testing.assert_array_equal(out, [0.0, 2.0, 3.0, 5.0])
    out[0] = 9.0
    assert clean[0, 0] == 0.0  # a copy: the caller's array is never permuted


def test_usable_values_of_a_large_image_in_row_blocks():
    rng = np.random.default_rng(8)
    v = rng.normal(0.0, 1.0, (1100, 1000)).astype(np.float32)  # > 2**20: the blocked path
    v[rng.random(v.shape) < 0.01] = np.nan
    v[5, :] = np.inf
    bad = rng.random(v.shape) < 0.05
    bad[7:70] = False  # whole blocks without a dropped value
    v[100:164] = np.nan  # a whole block dropped
    for b in (None, bad):
        keep = np.isfinite(v) if b is None else np.isfinite(v) & ~b
        np.testing.assert_array_equal(usable_values(v, b), v[keep])


# ------------------------------------------------------------------------------------------
# Large arrays read in place (`clipped_mean_var_usable`, `_Bracketed`)
# ------------------------------------------------------------------------------------------
_H, _W = 200, 230  # 46_000 values: above _BRACKET_MIN


def _sampled(shape):
    """Flat indices of the values `_sample` reads (as `clipped_mean_var_usable` calls it)."""
    pos = np.arange(math.prod(shape), dtype=np.float64).reshape(shape)
    return _sample(pos, None, 2048).astype(np.int64)


def _usable_cases():
    """(values, bad) pairs of shape (_H, _W): awkward content for the one-pass statistics."""
    rng = np.random.default_rng(77)
    shape = (_H, _W)
    out = {}
    out["normal"] = (rng.normal(1200.0, 14.0, shape), None)
    v = rng.normal(1200.0, 14.0, shape)
    v[rng.random(shape) < 0.003] = np.nan
    v[3, :7] = np.inf
    v[9, 40:45] = -np.inf
    bad = rng.random(shape) < 0.01
    bad[50:60] = True  # whole rows
    out["nan-inf-bad"] = (v, bad)
    v = rng.normal(-3.0, 2.0, shape)
    v[rng.random(shape) < 0.002] = np.nan  # no mask: blocks read in place, then filled
    v[150:, 7] = -np.inf
    out["nan-no-mask"] = (v, None)
    v = rng.normal(0.0, 1.0, shape)
    v[rng.random(shape) < 0.05] += rng.uniform(5, 5e4, shape)[rng.random(shape) < 0.05][:1]
    src = rng.random(shape) < 0.04
    v[src] += rng.uniform(5.0, 5e4, int(src.sum()))  # sources: a long upper tail
    out["sources"] = (v, None)
    out["cauchy"] = (rng.standard_cauchy(shape) * 0.1, None)  # heavy tails both sides
    v = rng.normal(0.0, 1.0, shape)
    v[rng.random(shape) < 0.001] = 1e200  # squares beyond float64 (float32: infinities)
    out["huge"] = (v, None)
    out["ties"] = (np.round(rng.normal(0.0, 4.0, shape)), None)  # long runs at every cut
    out["two-values"] = (rng.integers(0, 2, shape).astype(np.float64), None)
    out["constant"] = (np.full(shape, 2.5), rng.random(shape) < 0.5)
    out["bimodal"] = (np.where(rng.random(shape) < 0.7, rng.normal(0, 1, shape),
                               rng.normal(6, 1, shape)), None)
    # The sampled grid drawn from another distribution: the brackets miss their ranks and
    # the core is far too wide.
    v = rng.normal(0.0, 1.0, shape)
    grid = _sampled(shape)
    v.reshape(-1)[grid] = rng.normal(3.0, 20.0, grid.shape[0])
    out["misleading-sample"] = (v, None)
    v = rng.normal(5.0, 1.0, shape)
    bad = np.ones(shape, dtype=bool)
    bad[::3, ::3] = False  # a sparse usable grid, most of the sample unusable
    out["mostly-masked"] = (v, bad)
    out["all-masked"] = (v, np.ones(shape, dtype=bool))
    out["all-nan"] = (np.full(shape, np.nan), None)
    return out


def _usable_reference(values, bad):
    keep = np.isfinite(values)
    if bad is not None:
        keep &= ~bad
    return np.sort(values[keep])


def _fsum_clip(s, n_sigma=3.0, n_iter=3):
    """The section 2.3 loop on sorted ``s`` with correctly rounded sums (math.fsum)."""
    n = s.shape[0]
    median, q1, q3 = quantiles_sorted(s)
    d0 = s.astype(np.float64)
    center, var, mean = median, math.nan, math.nan
    for it in range(n_iter):
        if var < 0:
            var = 0.0
        half = (n_sigma * IQ_TO_STDEV) * (q3 - q1) if (it == 0 or n <= 1) else (
            n_sigma * math.sqrt(var))
        if it:
            center = mean
        if math.isnan(center) or math.isnan(half):
            mean = var = math.nan
            continue
        d = d0[np.abs(d0 - center) <= half] - center
        m = d.shape[0]
        if m == 0:
            mean = var = math.nan
            continue
        md = math.fsum(d) / m
        var = (math.fsum(d * d) / m - md**2) * (m * m / (m * m - m)) if m > 1 else math.nan
        mean = md + center
    return mean, var


def _usable_case(name, dtype):
    """Case ``name`` of `_usable_cases` as ``dtype``, with its sorted usable values."""
    values, bad = _usable_cases()[name]
    with np.errstate(over="ignore"):  # the "huge" case in float32
        values = values.astype(dtype)
    return values, bad, _usable_reference(values, bad)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", list(_usable_cases()))
def test_usable_statistics_match_sorting_and_the_elementwise_port(name, dtype):
    values, bad, s = _usable_case(name, dtype)
    before = values.copy()
    for n_sigma, n_iter in ((3.0, 3), (2.0, 4)):
        mean, var, n = clipped_mean_var_usable(values, bad, n_sigma, n_iter)
        assert n == s.shape[0]
        ref_mean, ref_var = _fsum_clip(s, n_sigma, n_iter)
        scale = abs(ref_mean) + math.sqrt(ref_var) if ref_var >= 0 else abs(ref_mean)
        for got, want in ((mean, ref_mean), (var, ref_var)):
            if math.isnan(want):
                assert math.isnan(got)
            else:
                assert got == pytest.approx(want, rel=1e-12, abs=1e-13 * scale + 1e-300)
    np.testing.assert_array_equal(values, before)  # read in place, never written


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", list(_usable_cases()))
def test_bracketed_order_statistics_counts_and_kept_sets_are_exact(name, dtype):
    values, bad, s = _usable_case(name, dtype)
    sample = _sample(values, bad, 2048)
    if sample.shape[0] < 2:  # nothing to bracket from: the callers copy the values out
        assert name in ("all-masked", "all-nan")
        return
    b = _Bracketed(values, bad, sample, 3.0)
    if not b.ok:  # no spread in the sample (constant, two values): the callers copy
        assert name in ("constant", "two-values")
        return
    assert b.n == s.shape[0] >= 2
    ranks = _quantile_ranks(b.n)
    got = b.order_statistics(ranks)
    assert got == {k: float(s[k]) for k in ranks}
    rng = np.random.default_rng(3)
    d = s.astype(np.float64)
    for _ in range(12):  # clip windows near and far from the predicted ones
        center = float(rng.choice(s)) * (1.0 + float(rng.choice([0.0, 1e-7])))
        spread = float(np.subtract(*np.percentile(d, [75, 25])))
        half = float(rng.choice([0.0, 0.1, 1.0, 3.0, 40.0])) * (1 + spread)
        if rng.random() < 0.3:
            half = abs(float(rng.choice(s)) - center)  # a bound exactly on a value
        with np.errstate(over="ignore", invalid="ignore"):  # the "huge" case
            m, s1, s2 = b.clip_sums(center, half)
            kept = d[np.abs(d - center) <= half] - center
            want2 = math.fsum(kept * kept)
        assert m == kept.shape[0]
        if m:
            assert s1 == pytest.approx(math.fsum(kept), rel=1e-12, abs=1e-12 * math.fsum(abs(kept)))
            assert s2 == pytest.approx(want2, rel=1e-12)


def test_bracketed_pass_count_shows_which_path_ran():
    cases = _usable_cases()
    for name in ("normal", "nan-inf-bad", "nan-no-mask"):
        values, bad = cases[name]
        b = _Bracketed(values.astype(np.float32), bad, _sample(values, bad, 2048), 3.0)
        b.order_statistics(_quantile_ranks(b.n))
        assert b.passes == 1, name  # the predictions held: one pass over the values
    for name in ("sources", "cauchy", "huge"):  # heavy tails: the core summed by itself
        values, bad = cases[name]
        b = _Bracketed(values, bad, _sample(values, bad, 2048), 3.0)
        b.order_statistics(_quantile_ranks(b.n))
        assert b.passes == 1, name  # while the block is in cache, not in another pass
    values, _ = cases["misleading-sample"]
    b = _Bracketed(values, None, _sample(values, None, 2048), 3.0)
    assert b.passes == 1
    b.order_statistics(_quantile_ranks(b.n))
    assert b.passes > 1  # ranks outside their brackets: another pass each
    passes = b.passes
    b.clip_sums(0.0, 3.0)  # a clip bound inside the (far too wide) core
    assert b.passes == passes + 1


@pytest.mark.parametrize("shape", [(1, 70_000), (70_000,), (7, 20, 500)])
def test_usable_statistics_of_any_shape_and_layout(shape):
    rng = np.random.default_rng(9)
    values = rng.normal(10.0, 2.0, shape).astype(np.float32)
    bad = rng.random(shape) < 0.02
    s = _usable_reference(values, bad)
    assert s.shape[0] >= _BRACKET_MIN
    ref_mean, ref_var = _fsum_clip(s)
    mean, var, n = clipped_mean_var_usable(values, bad)
    assert n == s.shape[0]
    assert mean == pytest.approx(ref_mean, rel=1e-12)
    assert var == pytest.approx(ref_var, rel=1e-12)
    if len(shape) == 2:  # a strided view of a wider image, and a non-native byte order
        wide = np.zeros((shape[0], shape[1] * 2), dtype=np.float32)
        wide[:, ::2] = values
        assert clipped_mean_var_usable(wide[:, ::2], bad) == (mean, var, n)
        wide_bad = np.ones(wide.shape, dtype=bool)  # the mask a strided view as well
        wide_bad[:, ::2] = bad
        assert clipped_mean_var_usable(wide[:, ::2], wide_bad[:, ::2]) == (mean, var, n)
        swapped = values.astype(">f4")
        got = clipped_mean_var_usable(swapped, bad)
        assert got[2] == n and got[0] == pytest.approx(mean, rel=1e-13)


def test_usable_statistics_are_the_same_from_concurrent_threads():
    # Each thread reuses its own block buffers: calls running at once (numpy releases
    # the GIL in the passes) must not see each other's blocks.
    cases = _usable_cases()
    inputs = [(cases[name][0].astype(dtype), cases[name][1])
              for name in ("normal", "nan-inf-bad", "sources", "cauchy")
              for dtype in (np.float32, np.float64)]
    want = [clipped_mean_var_usable(v, b) for v, b in inputs]

    def run(order):
        return {i: clipped_mean_var_usable(*inputs[i]) for i in order for _ in range(3)}

    with ThreadPoolExecutor(2) as pool:
        got = list(pool.map(run, [range(len(inputs)), reversed(range(len(inputs)))]))
    for results in got:
        for i, res in results.items():
            np.testing.assert_equal(res, want[i])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_usable_statistics_with_heavy_tails_in_some_blocks_only(dtype):
    # Several blocks of the pass; bright sources in one block, a masked one in another:
    # each block's core sums are taken the way its own tails allow.
    rng = np.random.default_rng(21)
    shape = (900, 400)
    values = rng.normal(1500.0, 20.0, shape)
    src = np.zeros(shape, dtype=bool)
    src[400:420, 100:140] = True
    values[src] += rng.uniform(1e3, 1e5, int(src.sum()))
    bad = np.zeros(shape, dtype=bool)
    bad[650:700] = True
    values[660, 3] = np.nan
    values = values.astype(dtype)
    s = _usable_reference(values, bad)
    mean, var, n = clipped_mean_var_usable(values, bad)
    assert n == s.shape[0]
    ref_mean, ref_var = _fsum_clip(s)
    assert mean == pytest.approx(ref_mean, rel=1e-13)
    assert var == pytest.approx(ref_var, rel=1e-12)
    b = _Bracketed(values, bad, _sample(values, bad, 2048), 3.0)
    assert b.passes == 1
    m, s1, s2 = b.clip_sums(float(s[s.shape[0] // 2]), 90.0)
    d = s.astype(np.float64) - float(s[s.shape[0] // 2])
    kept = d[np.abs(d) <= 90.0]
    assert m == kept.shape[0]
    assert s1 == pytest.approx(math.fsum(kept), rel=1e-12, abs=1e-9)
    assert s2 == pytest.approx(math.fsum(kept * kept), rel=1e-12)


def test_clipped_mean_var_rows_equal_clipped_mean_var_bit_for_bit():
    # Rows whose clip keeps everything share row sums; the others are clipped one by
    # one; constant, two-valued and outlier rows take the NaN, zero-variance and
    # clipping branches.
    from ampoffset_dask.algorithm.stats import clipped_mean_var, clipped_mean_var_rows

    rng = np.random.default_rng(8)
    n = 2000
    rows = [np.cumsum(rng.normal(0.0, 0.05, n)) + 3.0,  # smooth: every value kept
            rng.normal(3.0, 1.0, n),  # Gaussian: the tails clipped
            np.full(n, 2.5),  # constant: zero IQR
            np.where(np.arange(n) < 3, 1e6, 1.0),  # a few huge values
            rng.standard_cauchy(n)]
    s = np.sort(np.array(rows), axis=1)
    got = clipped_mean_var_rows(s)
    for row, (mean, var) in zip(s, got, strict=True):
        assert repr((mean, var)) == repr(clipped_mean_var(row.copy()))
    # Mostly rows that keep everything (summed all together, the others picked out).
    mostly = s[[0, 2, 0, 1]]
    assert [repr(x) for x in clipped_mean_var_rows(mostly)] == [
        repr(clipped_mean_var(r.copy())) for r in mostly]
    assert got[2] == (2.5, 0.0)
    assert got[0][1] > 0 and math.isfinite(got[1][0]) and abs(got[3][0] - 1.0) < 1e-12
    # float32 rows (and too few values) go one by one, with the same numbers.
    s32 = s[:2].astype(np.float32)
    assert [repr(x) for x in clipped_mean_var_rows(s32)] == [
        repr(clipped_mean_var(r.copy())) for r in s32]
