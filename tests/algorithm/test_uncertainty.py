"""Interface-offset and pedestal uncertainties (algorithm/uncertainty.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ampoffset_dask import AmpOffsetConfig, get_camera, measure_detector
from ampoffset_dask.algorithm.edges import edge_profile
from ampoffset_dask.algorithm.solve import right_hand_side, solve_pedestals
from ampoffset_dask.algorithm.uncertainty import (
    median_variance,
    pedestal_errors,
    profile_variance,
    smoothing_coefficients,
)
from ampoffset_dask.simulate import scale_detector, simulate_detector


def _moving_average(diff: np.ndarray, window: int) -> np.ndarray:
    """LSST's NaN-aware moving average, written out position by position."""
    n = diff.shape[0]
    h = window // 2
    out = np.full(n, np.nan)
    for k in range(n):
        part = diff[max(k - h, 0): max(min(k - h + window, n), 0)]
        part = part[np.isfinite(part)]
        if np.isfinite(diff[k]):
            out[k] = part.sum() / max(part.size, 1)
    return out


@pytest.mark.parametrize("window", [None, 1, 2, 7, 62, 245])
def test_smoothing_coefficients_reproduce_the_mean_of_the_moving_average(window):
    rng = np.random.default_rng(3)
    diff = rng.normal(0.0, 1.0, 300)
    diff[rng.uniform(size=300) < 0.2] = np.nan
    diff[:15] = np.nan  # a masked end
    valid = np.isfinite(diff)
    kept = valid & (rng.uniform(size=300) < 0.9)
    avg = diff if window is None else _moving_average(diff, window)
    for subset in (None, kept):
        c = smoothing_coefficients(valid, window, subset)
        use = valid if subset is None else kept
        assert np.sum(c * np.nan_to_num(diff)) == pytest.approx(np.mean(avg[use]), abs=1e-12)
        assert np.all(c[~valid] == 0)


def test_median_variance_of_counts_matches_the_formula_bit_for_bit():
    # Integer counts take a table of the per-count values; any other input the formula.
    rng = np.random.default_rng(11)
    for k in range(300):
        sigma = float(rng.lognormal(0.0, 4.0)) if k % 5 else [0.0, np.nan, 1e-170][k % 3]
        n = rng.integers(0, 70, size=int(rng.integers(1, 40)))
        plain = np.float64(sigma) ** 2 * math.pi / (2.0 * (n.astype(np.float64) - 1.0)
                                                    + math.pi)
        want = np.where(n > 0, plain, np.nan)
        for counts in (n, n.astype(np.int32), n.astype(np.float64)):
            got = median_variance(sigma, counts)
            assert got.dtype == np.float64 and got.tobytes() == want.tobytes()


def test_median_variance_small_and_large_samples():
    assert median_variance(2.0, np.array([1]))[0] == pytest.approx(4.0)
    assert math.isnan(median_variance(2.0, np.array([0]))[0])
    big = median_variance(1.0, np.array([10_000]))[0]
    assert big == pytest.approx(math.pi / 2 / 10_000, rel=1e-3)


def test_profile_variance_matches_the_scatter_of_medians():
    rng = np.random.default_rng(5)
    strips = rng.normal(100.0, 7.0, size=(400, 64, 50)).astype(np.float32)
    strips[:, :16, :] = np.nan  # a quarter of each line masked
    profiles = np.array([edge_profile(s, 2) for s in strips])
    predicted = profile_variance(strips[0], profiles[0], 2)
    assert predicted.shape == (50,)
    empirical = profiles.var(axis=0).mean()
    assert predicted.mean() == pytest.approx(empirical, rel=0.1)


def test_pedestal_errors_match_monte_carlo_of_the_solve():
    camera = get_camera("lsstcam")
    det = scale_detector(camera["R02_S02"], 0.25)
    grid = det.grid(True)
    rng = np.random.default_rng(11)
    errs = rng.uniform(0.1, 0.5, len(grid.interfaces))
    used = np.ones(len(grid.interfaces), dtype=bool)
    used[3] = False  # a do-no-harm interface: fixed at 0, no noise
    draws = []
    for _ in range(4000):
        o = np.where(used, rng.normal(0.0, errs), 0.0)
        offsets = {(i.a, i.b): v for i, v in zip(grid.interfaces, o, strict=True)}
        draws.append(solve_pedestals(grid.associations, right_hand_side(grid, offsets)))
    predicted = pedestal_errors(grid, errs, used)
    np.testing.assert_allclose(np.std(draws, axis=0), predicted, rtol=0.06)


def test_unconstrained_amp_has_no_error():
    det = scale_detector(get_camera("lsstcam")["R02_S02"], 0.25)
    grid = det.grid(True)
    used = np.array([0 not in (i.a, i.b) for i in grid.interfaces])
    errs = pedestal_errors(grid, np.full(len(used), 0.2), used)
    assert math.isnan(errs[0]) and np.isfinite(errs[1:]).all()


def _pulls(config, n_seeds, **sim_options):
    camera = get_camera("lsstcam")
    info = camera.info("R22_S11")
    det = scale_detector(camera["R22_S11"], 0.25)
    ped_pulls, itf_pulls = [], []
    for seed in range(n_seeds):
        sim = simulate_detector(det, seed=[seed, 7], sky=800.0, gain=info["amp_gain"],
                                read_noise=info["amp_read_noise"], **sim_options)
        m = measure_detector(sim.image, sim.mask, det, config)
        ped_pulls.extend((m.pedestals - sim.pedestals) / m.pedestal_errors)
        truth = dict(zip(det.amp_names, sim.pedestals, strict=True))
        itf_pulls.extend((i.offset_raw - (truth[i.amp_a] - truth[i.amp_b])) / i.offset_err
                         for i in m.interfaces)
    return np.asarray(ped_pulls), np.asarray(itf_pulls)


def test_lsst_estimator_pulls_are_calibrated_without_background():
    """Flat-field style (cp-flat preset: no background, no detection): the pulls of the
    interface offsets and the pedestals have unit width."""
    config = AmpOffsetConfig.from_preset("cp-flat")
    peds, itfs = _pulls(config, 8, n_stars=0, n_saturated=0, n_cosmic_rays=0,
                        n_bad_columns=0, sky_gradient=0.0)
    assert np.isfinite(peds).all() and np.isfinite(itfs).all()
    assert 0.8 <= np.std(peds) <= 1.25
    assert 0.8 <= np.std(itfs) <= 1.25
    assert abs(np.mean(itfs)) < 0.3


def test_errors_are_nan_where_undefined():
    camera = get_camera("lsstcam")
    det = scale_detector(camera["R22_S11"], 0.25)
    sim = simulate_detector(det, seed=1, n_stars=0, n_saturated=0, n_cosmic_rays=0,
                            n_bad_columns=0)
    mask = np.zeros(det.shape, dtype=np.int32)
    mask[det.amplifiers[0].slices] = 1  # BAD: amp 0 entirely masked
    config = AmpOffsetConfig(do_background=False, do_detection=False)
    m = measure_detector(sim.image, mask, det, config)
    by_id = {i.id: i for i in m.interfaces}
    touching = [i for i in m.interfaces if det.amp_names[0] in (i.amp_a, i.amp_b)]
    assert touching and all(math.isnan(i.offset_err) for i in touching)
    assert all(math.isfinite(i.offset_err) for i in by_id.values() if i not in touching)
    assert math.isnan(m.pedestal_errors[0]) and np.isfinite(m.pedestal_errors[1:]).all()
    everything = measure_detector(sim.image, np.ones(det.shape, np.int32), det, config)
    assert everything.all_masked and np.isnan(everything.pedestal_errors).all()


def _interface_case(rng, kind: str, n: int = 240):
    """Two strips' statistics (vertical boundary, A then B) for one path of the offset
    and its error."""
    from ampoffset_dask.algorithm.strips import strip_stats

    a = rng.normal(10.0, 3.0, (n, 8)).astype(np.float32)
    b = rng.normal(0.0, 3.0, (n, 8)).astype(np.float32)
    if kind == "integers":  # exact window sums (cumulative sums)
        a, b = np.round(a), np.round(b)
    elif kind == "wide_range":  # magnitudes spanning more than float64 sums keep exactly
        a[5] = np.float32(3e7)
        a[9] = np.float32(1e-7) + a[9] * np.float32(1e-12)
    elif kind == "masked_lines":
        a[30:80] = np.nan
        b[[0, 1, n - 1]] = np.nan
    elif kind == "valid_run_shorter_than_window":
        a[:] = np.nan
        a[100:104] = np.float32(12.0)
    elif kind == "all_masked":
        b[:] = np.nan
    elif kind == "zeros":  # equal strips: every difference zero (some negative zeros)
        a = np.zeros((n, 8), np.float32)
        b = np.zeros((n, 8), np.float32)
        a[::3] = np.float32(-0.0)
    elif kind == "outliers":
        a[rng.choice(n, 20, replace=False)] += np.float32(100.0)
    elif kind == "infinite":  # a line of infinities (NaN-free profiles: nothing counted)
        a[17] = np.float32(np.inf)
    elif kind == "ramp":  # a uniform spread of differences: the clip keeps every sample
        a += np.linspace(0.0, 40.0, n, dtype=np.float32)[:, None]
    elif kind in ("border_start", "border_ramp"):  # the detector's masked border
        a[:7] = b[:7] = np.nan
        if kind == "border_ramp":
            a = np.round(a + np.linspace(0.0, 40.0, n, dtype=np.float32)[:, None])
            b = np.round(b)
    elif kind == "border_ends":  # NaN runs at both ends, from either strip
        a[:3] = np.nan
        b[n - 9:] = np.nan
    return strip_stats(a, 1), strip_stats(b, 3)


_BORDER_KINDS = ["border_start", "border_ramp", "border_ends"]


@pytest.mark.parametrize("kind", ["plain", "integers", "wide_range", "masked_lines",
                                  "valid_run_shorter_than_window", "all_masked", "zeros",
                                  "outliers", "infinite", "ramp", *_BORDER_KINDS])
@pytest.mark.parametrize("window_frac", [None, 512 / 4176, 0.5, 1.0])
def test_offset_and_error_match_the_plain_computation_bit_for_bit(kind, window_frac):
    # measure_interface and interface_offset_error skip the masking, copies and counts
    # that change nothing; the plain computation (numpy's convolution, every mask
    # applied) gives the same numbers.
    from diagnostics_reference import offset_and_error

    from ampoffset_dask.algorithm.offsets import measure_interface
    from ampoffset_dask.algorithm.uncertainty import interface_offset_error

    for seed in range(3):
        sa, sb = _interface_case(np.random.default_rng(seed), kind)
        res, smoothed = measure_interface("A-B", sa.profile, sb.profile,
                                          window_frac=window_frac, min_frac=0.1,
                                          max_offset=1e9)
        err = interface_offset_error(sa, sb, smoothed, res.offset_raw)
        avg, offset_raw, clip_std, good_frac, want_err = offset_and_error(sa, sb, window_frac)
        if kind == "all_masked":
            assert smoothed is None and res.good_frac == 0.0 and res.min_frac_fail
            assert math.isnan(err)
            continue
        assert np.array_equal(smoothed.avg, avg, equal_nan=True)
        assert res.offset_raw == offset_raw or (math.isnan(offset_raw)
                                                and math.isnan(res.offset_raw))
        assert smoothed.clip_std == clip_std or math.isnan(clip_std)
        assert res.good_frac == good_frac
        assert err == want_err or (math.isnan(err) and math.isnan(want_err))
        if kind in ("plain", "integers", "outliers", "infinite"):
            assert res.good_frac == 1.0 and 0.0 < err < 1.0
        if kind == "ramp":  # every sample in the final band (the error's cached path)
            assert np.all(np.abs(avg - offset_raw) <= 3.0 * clip_std) and 0.0 < err < 1.0
        if kind == "valid_run_shorter_than_window" and window_frac:
            assert np.isfinite(avg).sum() == 4 and res.offset_raw == pytest.approx(
                12.0 - float(np.mean(sb.profile[100:104])), abs=1e-4)


@pytest.mark.parametrize("window_frac", [None, 512 / 4176, 0.5])
def test_offsets_of_many_interfaces_and_their_errors_equal_one_by_one(window_frac,
                                                                       monkeypatch):
    # measure_interfaces and interface_offset_errors (equally long interfaces stacked)
    # give measure_interface's offsets and smoothed differences and interface_offset_error's
    # errors on every path.
    import ampoffset_dask.algorithm.offsets as offsets
    import ampoffset_dask.algorithm.uncertainty as uncertainty

    interface_offset_error = uncertainty.interface_offset_error

    kinds = ["plain", "integers", "wide_range", "masked_lines",
             "valid_run_shorter_than_window", "all_masked", "zeros", "outliers",
             "infinite", "ramp", *_BORDER_KINDS]
    cases = [(seed, kind, n) for seed in range(2) for kind in [*kinds, "ramp", "plain"]
             for n in (240, 96)]
    pairs = [_interface_case(np.random.default_rng(seed), kind, n) for seed, kind, n in cases]
    alone, errors_alone = [], []
    single = offsets.measure_interface
    monkeypatch.setattr(offsets, "measure_interface",
                        lambda i, *a, **k: alone.append(i) or single(i, *a, **k))
    monkeypatch.setattr(uncertainty, "interface_offset_error",
                        lambda *a: errors_alone.append(1) or interface_offset_error(*a))
    ids = [str(k) for k in range(len(pairs))]
    with np.errstate(invalid="ignore", over="ignore"):
        got = offsets.measure_interfaces(ids, [a.profile for a, _ in pairs],
                                         [b.profile for _, b in pairs],
                                         window_frac=window_frac, min_frac=0.1,
                                         max_offset=1e9)
        errors = uncertainty.interface_offset_errors(pairs, [sm for _, sm in got],
                                                     [res.offset_raw for res, _ in got])
        for (sa, sb), (res, sm), err, i in zip(pairs, got, errors, ids, strict=True):
            want_res, want_sm = single(i, sa.profile, sb.profile, window_frac=window_frac,
                                       min_frac=0.1, max_offset=1e9)
            assert repr(tuple(res)) == repr(tuple(want_res))
            assert (sm is None) == (want_sm is None)
            if sm is not None:
                assert np.array_equal(sm.avg, want_sm.avg, equal_nan=True)
                assert repr(sm.clip_std) == repr(want_sm.clip_std)
            assert repr(err) == repr(interface_offset_error(sa, sb, want_sm,
                                                            want_res.offset_raw))
    if window_frac is None:
        assert len(alone) == len(errors_alone) == len(pairs)
    else:  # the finite, exactly summed ones (and those keeping every value) went together
        assert 0 < len(alone) < len(pairs) - 8
        assert 0 < len(errors_alone) < len(pairs) - 8
        # NaN lines only at the ends: cut to the finite run, with the others (the errors
        # too where every value is kept: the ramp of integers)
        border = [str(k) for k, (_, kind, _) in enumerate(cases) if kind in _BORDER_KINDS]
        assert not set(border) & set(alone)
        for k, (_, kind, n) in enumerate(cases):
            if kind == "border_ramp":
                assert uncertainty._kept_run(got[k][1], got[k][0].offset_raw) == (7, n)


@pytest.mark.parametrize("name", ["R02_S02", "R22_S11", "R00_SG0"])
@pytest.mark.parametrize("weighted", [False, True])
def test_solve_map_is_the_solves_pinv_times_incidence_cached(name, weighted):
    from ampoffset_dask.algorithm.uncertainty import (
        incidence_matrix,
        map_covariance,
        pedestal_covariance,
        solve_map,
    )

    grid = get_camera("lsstcam")[name].grid(weighted)
    m = solve_map(grid)
    want = np.linalg.pinv(grid.associations.astype(np.float64)) @ incidence_matrix(grid)
    assert np.array_equal(m, want)
    assert solve_map(grid) is m and not m.flags.writeable
    # Pedestals p = M o solve LSST's system for any offsets (gauge: they sum to zero).
    o = np.random.default_rng(1).normal(0.0, 3.0, len(grid.interfaces))
    p = m @ o
    b = incidence_matrix(grid) @ o
    assert np.allclose(grid.associations @ p, b) and abs(p.sum()) < 1e-9
    e = np.abs(o)
    assert np.array_equal(map_covariance(m, e),
                          pedestal_covariance(grid.associations, incidence_matrix(grid), e))
