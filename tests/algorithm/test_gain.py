"""Gain-step diagnosis per interface (algorithm/gain.py) and per-amp levels."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ampoffset_dask import AmpOffsetConfig, get_camera, measure_detector
from ampoffset_dask.algorithm.gain import amp_levels, interface_gain
from ampoffset_dask.algorithm.strips import strip_stats
from ampoffset_dask.simulate import scale_detector, simulate_detector


def _strips(rng, gain_a: float, step: float, level_range=(5000.0, 15000.0)):
    """Vertical-boundary strips (side 1 of A): 1000 rows, 64 columns; flux varies along y."""
    level = np.linspace(*level_range, 1000)[:, None]
    noise = np.sqrt(level)
    a = level * gain_a + step + rng.normal(0.0, 1.0, (1000, 64)) * noise
    b = level + rng.normal(0.0, 1.0, (1000, 64)) * noise
    a = a.astype(np.float32)
    b = b.astype(np.float32)
    a[100:120, :40] = np.nan  # some masked pixels
    return a, b


@pytest.mark.parametrize("gain_a", [1.0, 1.003, 0.98])
def test_interface_gain_recovers_the_ratio(gain_a):
    rng = np.random.default_rng(2)
    a, b = _strips(rng, gain_a, step=7.0)
    res = interface_gain(a, b, a, b, 1)
    assert res.gain_ratio == pytest.approx(gain_a, abs=4 * res.gain_ratio_err)
    assert 1e-5 < res.gain_ratio_err < 1e-3
    assert res.gain_like == (gain_a != 1.0)


def test_interface_gain_without_flux_range_is_undefined():
    rng = np.random.default_rng(3)
    a, b = _strips(rng, 1.0, 3.0, level_range=(1000.0, 1000.0))
    flat = np.full_like(a, 1000.0)
    res = interface_gain(a, b, flat, flat, 1)
    assert math.isnan(res.gain_ratio) and not res.gain_like


def test_amp_levels_are_medians_of_strip_line_medians():
    strips = {(0, 1): np.full((4, 3), 10.0), (1, 3): np.array([[1.0, np.nan], [3.0, 5.0]]),
              (0, 0): np.full((2, 2), 30.0)}
    levels = {key: strip_stats(a, key[1]).level for key, a in strips.items()}
    # Side 3 lines are rows (medians 1 and 4); side 0 lines are columns.
    np.testing.assert_array_equal(levels[(1, 3)], [1.0, 4.0])
    np.testing.assert_array_equal(levels[(0, 0)], [30.0, 30.0])
    np.testing.assert_allclose(amp_levels(levels, 3), [10.0, 2.5, np.nan])


@pytest.fixture(scope="module")
def itl_quarter():
    camera = get_camera("lsstcam")
    return scale_detector(camera["R02_S02"], 0.25), camera.info("R02_S02")


def _flat(det, level=10000.0, gradient=0.2):
    h, w = det.shape

    def sky(y, x):
        return (level * (1 + gradient * (x / w - 0.5)) * (1 + gradient * (y / h - 0.5))
                ).astype(np.float32)

    return sky


def test_a_gain_mismatched_amp_is_flagged_on_a_flat(itl_quarter):
    det, info = itl_quarter
    errors = np.zeros(len(det))
    target = det.amp_names.index("C15")
    errors[target] = 0.05
    sim = simulate_detector(det, seed=[1, 5], sky=_flat(det), gain=info["amp_gain"],
                            read_noise=info["amp_read_noise"], gain_errors=errors,
                            n_stars=0, n_saturated=0)
    m = measure_detector(sim.image, sim.mask, det, AmpOffsetConfig.from_preset("cp-flat"))
    for itf in m.interfaces:
        touches = "C15" in (itf.amp_a, itf.amp_b)
        if not touches:
            assert not itf.gain_like, itf
        elif itf.length == det.amplifiers[0].height:
            # The long (vertical) interfaces have the flux range; the 127-pixel
            # horizontal one is too short to tell at this size.
            assert itf.gain_like, itf
        if touches:
            ratio = itf.gain_ratio if itf.amp_a == "C15" else 1.0 / itf.gain_ratio
            assert ratio == pytest.approx(1.05, abs=4 * itf.gain_ratio_err)
    assert np.nanmax(m.amp_levels) > 9000


def test_purely_additive_simulations_give_few_false_positives(itl_quarter):
    det, info = itl_quarter
    flagged, total = 0, 0
    for seed in range(6):
        sim = simulate_detector(det, seed=[seed, 6], sky=1200.0, gain=info["amp_gain"],
                                read_noise=info["amp_read_noise"])
        m = measure_detector(sim.image, sim.mask, det, AmpOffsetConfig())
        flagged += sum(i.gain_like for i in m.interfaces)
        total += len(m.interfaces)
        levels = m.amp_levels
        assert np.all(np.abs(levels - 1200.0) < 150.0)
    assert flagged <= 0.01 * total


def _same(x, y) -> bool:
    """Equal bit for bit as floats (NaN equal to NaN), or equal."""
    if isinstance(x, float):
        return (math.isnan(x) and math.isnan(y)) or (x == y and math.copysign(1, x)
                                                      == math.copysign(1, y))
    return x == y


def _gain_case(rng, kind: str):
    """Two strips' statistics (vertical boundary, A then B) exercising one path of gain_step."""
    n = 300
    level = np.linspace(2000.0, 9000.0, n)[:, None]
    a = (level * 1.004 + 5.0 + rng.normal(0.0, 30.0, (n, 16))).astype(np.float32)
    b = (level + rng.normal(0.0, 30.0, (n, 16))).astype(np.float32)
    if kind == "outliers":  # lines far off the fit: the clip drops them
        a[rng.choice(n, 25, replace=False)] += np.float32(400.0)
    elif kind == "masked":  # lines without a pixel, and scattered masked pixels
        a[40:90] = np.nan
        b[200:230] = np.nan
        a[rng.uniform(size=a.shape) < 0.1] = np.nan
    elif kind == "drifting":  # heavy-tailed steps: the clip keeps moving for five rounds
        a += (rng.standard_cauchy((n, 1)) * 40.0).astype(np.float32)
    elif kind == "all_masked":
        a[:] = np.nan
    elif kind == "few_lines":  # fewer than ten usable positions
        a[8:] = np.nan
    elif kind == "border_start":  # the detector's masked border across both strips
        a[:7] = b[:7] = np.nan
    elif kind == "border_ends":
        a[:3] = b[:3] = np.nan
        a[-11:] = b[-11:] = np.nan
    elif kind == "border_one_strip":  # only A's lines: not the same run in both
        a[-7:] = np.nan
    elif kind == "border_and_inside":  # a masked line inside the run as well
        a[-7:] = b[-7:] = np.nan
        b[150] = np.nan
    return strip_stats(a, 1, raw=a), strip_stats(b, 3, raw=b)


_KINDS = ["clean", "outliers", "masked", "drifting", "all_masked", "few_lines",
          "border_start", "border_ends", "border_one_strip", "border_and_inside"]


@pytest.mark.parametrize("kind", _KINDS)
def test_gain_step_matches_the_plain_computation_bit_for_bit(kind):
    # gain_step skips copies and recomputation where they change nothing; the plain
    # computation (always masking, the jackknife from scratch) gives the same numbers.
    from diagnostics_reference import gain_step as reference

    from ampoffset_dask.algorithm.gain import gain_step

    for seed in range(4):
        sa, sb = _gain_case(np.random.default_rng(seed), kind)
        got = tuple(gain_step(sa, sb))
        want = reference(sa, sb)
        assert all(_same(g, w) for g, w in zip(got, want, strict=True)), (seed, got, want)
        if kind in ("all_masked", "few_lines"):
            assert math.isnan(got[0]) and not got[2]
        else:
            assert math.isfinite(got[0]) and got[1] > 0


def test_gain_steps_of_many_interfaces_equal_gain_step_bit_for_bit():
    # The batched path (equally long interfaces fitted together) and the per-interface
    # fall-backs it mixes in give gain_step's numbers exactly, in order.
    from ampoffset_dask.algorithm.gain import _usable_span, gain_step, gain_steps

    pairs = [_gain_case(np.random.default_rng(seed), kind)
             for seed in range(3) for kind in [*_KINDS, "clean", "outliers"]]
    # Lines masked only at the ends of both strips: fitted with the others, cut to the
    # usable run (the batches then hold several lengths); anything else is not.
    with np.errstate(invalid="ignore", divide="ignore"):
        spans = {kind: _usable_span(*_gain_case(np.random.default_rng(0), kind))
                 for kind in _KINDS}
    assert spans["border_start"] == (7, 300) and spans["border_ends"] == (3, 289)
    assert spans["border_one_strip"] is None and spans["border_and_inside"] is None
    assert spans["masked"] is None and spans["all_masked"] is None
    rng = np.random.default_rng(9)
    level = np.linspace(3000.0, 6000.0, 120)[:, None]
    for _ in range(3):  # a second, shorter length
        a = (level * 0.997 + rng.normal(0.0, 20.0, (120, 8))).astype(np.float32)
        b = (level + rng.normal(0.0, 20.0, (120, 8))).astype(np.float32)
        pairs.insert(5, (strip_stats(a, 3, raw=a), strip_stats(b, 1, raw=b)))
    got = gain_steps(pairs)
    assert len(got) == len(pairs)
    n_finite = 0
    for (sa, sb), g in zip(pairs, got, strict=True):
        want = gain_step(sa, sb)
        assert all(_same(x, y) for x, y in zip(g, want, strict=True)), (g, want)
        n_finite += math.isfinite(g.gain_ratio)
    assert n_finite >= len(pairs) // 2


def test_row_sums_are_the_rows_own_sums():
    # Wide-range values: any other summation order would change the last bits.
    from ampoffset_dask.algorithm.stats import _row_sums

    rng = np.random.default_rng(4)
    a = rng.normal(size=(6, 2000)) * np.exp(rng.normal(size=(6, 2000)) * 8)
    want = [np.add.reduce(row) for row in a]
    for arr in (a, np.asfortranarray(a), np.stack([a, a], axis=1)[:, 0]):
        assert [float(x) for x in _row_sums(arr)] == [float(x) for x in want]


def test_gain_step_clip_paths_are_exercised(monkeypatch):
    # The cases above reach the settled clip (moments reused) and the unsettled one
    # (jackknife recomputed): count the latter so the comparison covers both.
    import ampoffset_dask.algorithm.gain as gain

    calls = []
    original = gain._jackknife_slope_error

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(gain, "_jackknife_slope_error", counted)
    for seed in range(4):
        gain.gain_step(*_gain_case(np.random.default_rng(seed), "drifting"))
    assert calls, "no drifting case ran five clips without settling"
    calls.clear()
    for seed in range(4):
        gain.gain_step(*_gain_case(np.random.default_rng(seed), "outliers"))
    assert not calls


def test_running_mean_all_valid_and_masked_agree_with_counts():
    from diagnostics_reference import running_mean as reference

    from ampoffset_dask.algorithm.gain import _running_mean

    v = np.random.default_rng(5).normal(100.0, 5.0, 200)
    with np.errstate(invalid="ignore", divide="ignore"):
        for window in (1, 31, 200, 500):
            assert np.array_equal(_running_mean(v, window), reference(v, window))
        v[[0, 7, 8, 150]] = np.nan
        v[60:120] = np.nan  # a gap longer than the window
        for window in (1, 31, 200, 500):
            got = _running_mean(v, window)
            assert np.array_equal(got, reference(v, window), equal_nan=True)
    assert np.isnan(got[60:120]).all() and np.isfinite(got[1:7]).all()
    # Finite values whose cumulative sum overflows: the masked path, the same numbers.
    big = np.full(100, 1.0e308)
    big[50:] = -1.0e308
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        for window in (1, 31):
            assert np.array_equal(_running_mean(big, window), reference(big, window),
                                  equal_nan=True)
