"""GSL interpolation rules as afw's background uses them (ALGORITHM.md section 3.4-3.5)."""

from __future__ import annotations

import numpy as np
import pytest

from ampoffset_dask.algorithm.interp import (
    MIN_POINTS,
    evaluate,
    max_style,
    piecewise_coefficients,
)


def gsl_akima_reference(x, y, xv: float) -> float:
    """Scalar port of the section 3.5 Akima formulas (non-periodic), inside the knots."""
    n = len(x)
    m = {i: (y[i + 1] - y[i]) / (x[i + 1] - x[i]) for i in range(n - 1)}
    m[-1] = 2 * m[0] - m[1]
    m[-2] = 3 * m[0] - 2 * m[1]
    m[n - 1] = 2 * m[n - 2] - m[n - 3]
    m[n] = 3 * m[n - 2] - 2 * m[n - 3]
    i = max(k for k in range(n - 1) if x[k] <= xv)
    h = x[i + 1] - x[i]
    ne = abs(m[i + 1] - m[i]) + abs(m[i - 1] - m[i - 2])
    if ne == 0:
        b, c, d = m[i], 0.0, 0.0
    else:
        a = abs(m[i - 1] - m[i - 2]) / ne
        b = (1 - a) * m[i - 1] + a * m[i]
        ne2 = abs(m[i + 2] - m[i + 1]) + abs(m[i] - m[i - 1])
        if ne2 == 0:
            t = m[i]
        else:
            a2 = abs(m[i] - m[i - 1]) / ne2
            t = (1 - a2) * m[i] + a2 * m[i + 1]
        c = (3 * m[i] - 2 * b - t) / h
        d = (b + t - 2 * m[i]) / h**2
    dt = xv - x[i]
    return y[i] + dt * (b + dt * (c + dt * d))


def test_akima_ne_zero_example():
    from scipy.interpolate import Akima1DInterpolator  # the product does not import scipy

    # y = 0,0,0,1,2,3,4 at x = 0..6: secants m0..m5 = 0,0,1,1,1,1; m_-1 = m_-2 = 0.
    # Interval 2 ([2, 3]): NE = |m3 - m2| + |m1 - m0| = 0, so GSL uses the straight line of
    # slope m2 = 1 through (2, 0): value 0.25 at x = 2.25.
    x = np.arange(7.0)
    y = np.array([0, 0, 0, 1, 2, 3, 4], dtype=float)
    value = evaluate("AKIMA_SPLINE", x, y, np.array([2.25]))[0, 0]
    assert value == 0.25
    assert gsl_akima_reference(x, y, 2.25) == 0.25
    # scipy instead averages the two secants at knot 2 (tangent (m1 + m2)/2 = 0.5) and uses
    # the Akima tangent 1 at knot 3: Hermite on [2, 3] with c = 3 - 1 - 1 = 1, d = 0.5 + 1 - 2:
    # 0.5*0.25 + 0.25**2 - 0.5*0.25**3 = 0.1796875.
    scipy_value = float(Akima1DInterpolator(x, y)(2.25))
    assert scipy_value == 0.1796875
    assert scipy_value != value
    # Interval 1 ([1, 2]): NE = |m2-m1| + |m0-m_-1| = 1, alpha = 0 -> b = m0 = 0; NE' = 0 ->
    # right tangent m1 = 0; c = d = 0: flat.
    np.testing.assert_array_equal(
        evaluate("AKIMA_SPLINE", x, y, np.array([1.0, 1.25, 1.5, 1.99]))[0], 0.0
    )
    b, c, d = piecewise_coefficients("AKIMA_SPLINE", x, y[None, :])
    np.testing.assert_array_equal(b[0], [0, 0, 1, 1, 1, 1])
    np.testing.assert_array_equal(c[0], 0)
    np.testing.assert_array_equal(d[0], 0)


def test_akima_non_degenerate_by_hand():
    # y = 0,0,1,3,3 at x = 0..4: m0..m3 = 0,1,2,0; m_-1 = -1, m_-2 = -2, m4 = -2, m5 = -4.
    # Interval 1: NE = |m2-m1| + |m0-m_-1| = 2, alpha = 1/2 -> b = 0.5*m0 + 0.5*m1 = 0.5;
    # NE' = |m3-m2| + |m1-m0| = 3, alpha' = 1/3 -> t = 2/3*m1 + 1/3*m2 = 4/3;
    # c = 3*1 - 2*0.5 - 4/3 = 2/3; d = 0.5 + 4/3 - 2 = -1/6.
    # At x = 1.5: 0 + 0.5*(0.5 + 0.5*(2/3 - 0.5/6)) = 19/48.
    x = np.arange(5.0)
    y = np.array([0, 0, 1, 3, 3], dtype=float)
    b, c, d = piecewise_coefficients("AKIMA_SPLINE", x, y[None, :])
    assert b[0, 1] == pytest.approx(0.5, abs=1e-15)
    assert c[0, 1] == pytest.approx(2 / 3, abs=1e-15)
    assert d[0, 1] == pytest.approx(-1 / 6, abs=1e-15)
    assert evaluate("AKIMA_SPLINE", x, y, np.array([1.5]))[0, 0] == pytest.approx(
        19 / 48, abs=1e-15
    )


def test_akima_matches_scalar_port_random():
    rng = np.random.default_rng(3)
    for n in (5, 6, 9, 12):
        x = np.cumsum(rng.uniform(0.5, 3.0, n))
        ys = rng.normal(0, 5, (4, n))
        ys[1, 2:5] = ys[1, 2]  # a flat stretch triggers NE == 0 somewhere
        xs = np.linspace(x[0], x[-1], 57)
        got = evaluate("AKIMA_SPLINE", x, ys, xs)
        for row, yrow in enumerate(ys):
            ref = [gsl_akima_reference(x, yrow, v) for v in xs]
            np.testing.assert_allclose(got[row], ref, rtol=1e-12, atol=1e-12)
        # passes through the knots
        np.testing.assert_allclose(evaluate("AKIMA_SPLINE", x, ys, x), ys, rtol=0, atol=1e-12)


@pytest.mark.parametrize("style", ["CUBIC_SPLINE", "NATURAL_SPLINE"])
@pytest.mark.parametrize("n", [3, 4, 5, 8, 13])
def test_natural_spline_equals_scipy(style, n):
    from scipy.interpolate import CubicSpline

    rng = np.random.default_rng(n)
    x = np.cumsum(rng.uniform(0.3, 4.0, n))
    ys = rng.normal(0, 10, (3, n))
    xs = np.linspace(x[0], x[-1], 101)
    got = evaluate(style, x, ys, xs)
    for row, yrow in enumerate(ys):
        cs = CubicSpline(x, yrow, bc_type="natural")
        np.testing.assert_allclose(got[row], cs(xs), rtol=1e-12, atol=1e-12)
        # coefficients: b = first derivative, c = half the second derivative at each knot
        b, c, d = piecewise_coefficients(style, x, yrow[None, :])
        np.testing.assert_allclose(b[0], cs(x[:-1], 1), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(2 * c[0], cs(x[:-1], 2), rtol=1e-12, atol=1e-10)
        np.testing.assert_allclose(6 * d[0], cs(x[:-1], 3), rtol=1e-12, atol=1e-10)


def test_natural_spline_three_points_by_hand():
    # x = 0,1,2, y = 0,1,0: one unknown c1 = 3*((0-1)/1 - (1-0)/1) / (2*(1+1)) = -1.5.
    # b0 = 1 - 1/3*(2*0 + c1) = 1.5, d0 = c1/3 = -0.5 -> f(0.5) = 0.75 - 0.0625 = 0.6875.
    x = np.array([0.0, 1.0, 2.0])
    y = np.array([0.0, 1.0, 0.0])
    b, c, d = piecewise_coefficients("CUBIC_SPLINE", x, y[None, :])
    np.testing.assert_allclose(c[0], [0.0, -1.5])
    np.testing.assert_allclose(b[0], [1.5, 0.0])
    np.testing.assert_allclose(d[0], [-0.5, 0.5])
    assert evaluate("CUBIC_SPLINE", x, y, np.array([0.5]))[0, 0] == pytest.approx(0.6875)


@pytest.mark.parametrize("style", ["AKIMA_SPLINE", "CUBIC_SPLINE", "LINEAR"])
def test_quadratic_extrapolation(style):
    rng = np.random.default_rng(11)
    x = np.array([2.0, 5.0, 7.5, 11.0, 12.0, 16.0])
    y = rng.normal(0, 3, (2, x.size))
    left = np.array([-3.0, 0.0, 1.5])
    right = np.array([16.5, 20.0, 31.0])
    xs = np.concatenate([left, right])
    got = evaluate(style, x, y, xs)
    b, c, d = piecewise_coefficients(style, x, y)
    h = x[-1] - x[-2]
    for row in range(2):
        # left end: derivatives of interval 0 at its start
        d1, d2 = b[row, 0], 2 * c[row, 0]
        dx = left - x[0]
        np.testing.assert_allclose(got[row, :3], y[row, 0] + dx * d1 + 0.5 * dx * dx * d2,
                                   rtol=1e-13, atol=1e-12)
        # right end: derivatives of the last interval at its end
        d1 = b[row, -1] + h * (2 * c[row, -1] + 3 * d[row, -1] * h)
        d2 = 2 * c[row, -1] + 6 * d[row, -1] * h
        dx = right - x[-1]
        np.testing.assert_allclose(got[row, 3:], y[row, -1] + dx * d1 + 0.5 * dx * dx * d2,
                                   rtol=1e-13, atol=1e-12)
    if style == "CUBIC_SPLINE":
        from scipy.interpolate import CubicSpline

        # natural spline: second derivative zero at the ends -> linear extrapolation
        cs = CubicSpline(x, y[0], bc_type="natural")
        np.testing.assert_allclose(got[0, :3], y[0, 0] + (left - x[0]) * cs(x[0], 1),
                                   rtol=1e-12, atol=1e-11)
        np.testing.assert_allclose(got[0, 3:], y[0, -1] + (right - x[-1]) * cs(x[-1], 1),
                                   rtol=1e-12, atol=1e-10)


def test_akima_extrapolation_is_genuinely_quadratic():
    x = np.arange(6.0)
    y = np.array([0.0, 1.0, 4.0, 9.0, 16.0, 25.0])  # x^2
    b, c, _ = piecewise_coefficients("AKIMA_SPLINE", x, y[None, :])
    assert c[0, 0] != 0
    got = evaluate("AKIMA_SPLINE", x, y, np.array([-2.0]))[0, 0]
    assert got == pytest.approx(0 + (-2) * b[0, 0] + 0.5 * 4 * 2 * c[0, 0], abs=1e-12)


def test_linear_values():
    x = np.array([0.0, 2.0, 6.0])
    y = np.array([1.0, 5.0, 3.0])
    got = evaluate("LINEAR", x, y, np.array([-1.0, 0.0, 1.0, 2.0, 4.0, 6.0, 8.0]))[0]
    np.testing.assert_allclose(got, [-1.0, 1.0, 3.0, 5.0, 4.0, 3.0, 2.0])


def test_last_knot_uses_last_interval():
    x = np.arange(5.0)
    y = np.array([[0.0, 2.0, -1.0, 4.0, 3.0]])
    for style in ("AKIMA_SPLINE", "CUBIC_SPLINE", "LINEAR"):
        assert evaluate(style, x, y, np.array([4.0]))[0, 0] == pytest.approx(3.0, abs=1e-14)


def test_constant_single_point():
    got = evaluate("CONSTANT", np.array([7.0]), np.array([2.5]), np.arange(-3.0, 20.0))
    np.testing.assert_array_equal(got, 2.5)


def test_constant_recentres():
    # knots 0, 10, 20 with 1, 3, 7 -> new knots -5, 5, 15, 25 carrying 1, 2, 5, 7;
    # step function: value of the last knot <= x, first/last value outside.
    x = np.array([0.0, 10.0, 20.0])
    y = np.array([1.0, 3.0, 7.0])
    xs = np.array([-10.0, -5.0, 0.0, 4.9, 5.0, 14.9, 15.0, 24.9, 25.0, 100.0])
    got = evaluate("CONSTANT", x, y, xs)[0]
    np.testing.assert_array_equal(got, [1, 1, 1, 1, 2, 2, 5, 5, 7, 7])


def test_max_style_and_min_points():
    assert [max_style(n) for n in (1, 2, 3, 4, 5, 9)] == [
        "CONSTANT", "LINEAR", "CUBIC_SPLINE", "CUBIC_SPLINE", "AKIMA_SPLINE", "AKIMA_SPLINE",
    ]
    assert MIN_POINTS == {
        "CONSTANT": 1, "LINEAR": 2, "NATURAL_SPLINE": 3, "CUBIC_SPLINE": 3, "AKIMA_SPLINE": 5,
    }
    for n in range(1, 8):
        assert MIN_POINTS[max_style(n)] <= n


def test_batch_rows_are_independent():
    rng = np.random.default_rng(5)
    x = np.array([0.0, 1.0, 3.0, 4.0, 7.0, 9.0])
    ys = rng.normal(0, 1, (5, 6))
    xs = np.linspace(-2, 11, 40)
    for style in ("AKIMA_SPLINE", "CUBIC_SPLINE", "LINEAR", "CONSTANT"):
        batch = evaluate(style, x, ys, xs)
        for row in range(5):
            np.testing.assert_array_equal(batch[row], evaluate(style, x, ys[row], xs)[0])
