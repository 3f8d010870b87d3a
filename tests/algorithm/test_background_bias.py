"""The background's absorbed amp steps as an error term (algorithm/background_bias.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ampoffset_dask import AmpOffsetConfig, get_camera, measure_detector
from ampoffset_dask.algorithm.background import background_bins, background_model
from ampoffset_dask.algorithm.background_bias import (
    absorbed_steps,
    pedestal_bin_means,
    step_response,
)
from ampoffset_dask.algorithm.edges import strip_slices
from ampoffset_dask.algorithm.uncertainty import pedestal_errors
from ampoffset_dask.geometry import Amplifier, Detector
from ampoffset_dask.simulate import scale_detector, simulate_detector


@pytest.fixture(scope="module")
def camera():
    return get_camera("lsstcam")


def _pattern(det, seed: int) -> np.ndarray:
    # Steps within the do-no-harm limit (5 ADU), as the simulator draws them.
    p = np.clip(np.random.default_rng(seed).normal(0.0, 1.5, len(det)), -2.4, 2.4)
    return p - p.mean()


def _pedestal_image(det, p: np.ndarray) -> np.ndarray:
    img = np.zeros(det.shape)
    for amp, v in zip(det.amplifiers, p, strict=True):
        img[amp.slices] = v
    return img


def _short(det) -> int:
    return min(det.amplifiers[0].width, det.amplifiers[0].height)


@pytest.mark.parametrize("name", ["R02_S02", "R22_S11"])
def test_bin_means_are_the_means_of_the_pedestal_image(camera, name):
    det = scale_detector(camera[name], 0.25)
    p = _pattern(det, 1)
    img = _pedestal_image(det, p)
    nx, ny = 7, 5  # bins that straddle amp boundaries
    xo, xs, _ = background_bins(det.width, nx)
    yo, ys, _ = background_bins(det.height, ny)
    want = np.array([[img[yo[j]:yo[j] + ys[j], xo[i]:xo[i] + xs[i]].mean() for i in range(nx)]
                     for j in range(ny)])
    np.testing.assert_allclose(pedestal_bin_means(det, nx, ny) @ p, want, atol=1e-12)


@pytest.mark.parametrize(("name", "style"), [("R02_S02", "AKIMA_SPLINE"),
                                             ("R22_S11", "NATURAL_SPLINE")])
def test_step_response_is_the_strip_step_of_the_full_background_model(camera, name, style):
    """Against the project's full-image model of the pedestal pattern's bin means."""
    det = scale_detector(camera[name], 0.25)
    p = _pattern(det, 2)
    short = _short(det)
    nx, ny = int(det.width // short + 1), int(det.height // short + 1)
    model = background_model((pedestal_bin_means(det, nx, ny) @ p).astype(np.float32),
                             det.shape, style).astype(np.float64)
    want = []
    for itf in det.grid().interfaces:
        a = strip_slices(det.amplifiers[itf.a], itf.side, 5, 64)
        b = strip_slices(det.amplifiers[itf.b], (itf.side + 2) % 4, 5, 64)
        want.append(model[a].mean() - model[b].mean())
    want = np.array(want)
    got = step_response(det, p, short, 1.0, 5, 64, style)
    assert np.abs(want).max() > 0.3  # the model does absorb a good part of the steps
    np.testing.assert_allclose(got, want, atol=0.01 * np.abs(want).max())
    # Several patterns at once give the same rows.
    both = step_response(det, np.vstack([p, -2.0 * p]), short, 1.0, 5, 64, style)
    np.testing.assert_allclose(both, [got, step_response(det, -2.0 * p, short, 1.0, 5, 64,
                                                          style)], atol=1e-12)


def test_absorbed_steps_predict_the_bias_of_a_measurement(camera):
    """A flat, star-free image with a sky gradient: LSST's pedestals differ from the
    injected ones by what the background absorbed, and `absorbed_steps` predicts it."""
    det = scale_detector(camera["R22_S11"], 0.3)
    p = _pattern(det, 3)
    rng = np.random.default_rng(4)
    img = rng.normal(1000.0, 10.0, det.shape).astype(np.float32)
    img += (0.01 * np.arange(det.width, dtype=np.float32))[None, :]
    img -= (0.02 * np.arange(det.height, dtype=np.float32))[:, None]
    img += _pedestal_image(det, p).astype(np.float32)
    config = AmpOffsetConfig(do_detection=False)
    m = measure_detector(img, None, det, config)
    used = np.array([not (i.min_frac_fail or i.max_offset_fail) for i in m.interfaces])
    res = absorbed_steps(det, m.pedestals, used, _short(det), 1.0, 5, 64)
    actual = m.pedestals - p
    rms = float(np.sqrt(np.mean(actual ** 2)))
    assert rms > 0.15  # a bias well above the noise (~0.03 ADU here)
    assert np.sqrt(np.mean((actual - res.bias) ** 2)) < 0.25 * rms
    # The steps are those of the recovered pattern (to the one Newton step's linearised
    # Akima response), and zero-sum pedestals stay zero-sum.
    true = m.pedestals - res.bias
    direct = step_response(det, true, _short(det), 1.0, 5, 64)
    np.testing.assert_allclose(res.steps, direct, atol=0.05 * np.abs(direct).max())
    assert abs(true.sum()) < 1e-9
    # The error model carries it: offset errors include |s|, pedestal errors |bias|.
    errs = np.array([i.offset_err for i in m.interfaces])
    assert np.all(errs >= np.abs(res.steps) - 1e-12)
    assert np.all(m.pedestal_errors >= np.abs(res.bias))


def _pulls(det, info, seeds: int, sky: float):
    """Pulls of LSST's default measurement, and those of the statistical errors alone."""
    config = AmpOffsetConfig()
    new, stat_only = [], []
    grid = det.grid(config.apply_weights)
    for seed in range(seeds):
        sim = simulate_detector(det, seed=[seed, 11], sky=sky, gain=info["amp_gain"],
                                read_noise=info["amp_read_noise"],
                                saturation=info["amp_saturation"])
        m = measure_detector(sim.image, sim.mask, det, config)
        used = np.array([not (i.min_frac_fail or i.max_offset_fail) for i in m.interfaces])
        steps = absorbed_steps(det, m.pedestals, used, _short(det), 1.0, 5, 64).steps
        stat = np.sqrt(np.array([i.offset_err for i in m.interfaces]) ** 2 - steps ** 2)
        err = m.pedestals - sim.pedestals
        new.append(err / m.pedestal_errors)
        stat_only.append(err / pedestal_errors(grid, stat, used))
    return np.concatenate(new), np.concatenate(stat_only)


def test_lsst_pulls_are_calibrated_with_the_background_fit(camera):
    """Faint sky (the absorbed steps dominate the noise), 0.4-size ITL and e2v
    detectors with stars, cosmic rays and bad columns: unit pull width with the term,
    far above without it (3.4)."""
    new, stat_only = [], []
    for name in ("R02_S02", "R22_S11"):
        det = scale_detector(camera[name], 0.4)
        a, b = _pulls(det, camera.info(name), 4, 300.0)
        new.append(a)
        stat_only.append(b)
    new, stat_only = np.concatenate(new), np.concatenate(stat_only)
    assert np.isfinite(new).all() and new.size == 128
    assert 0.8 <= np.std(new) <= 1.25
    assert np.std(stat_only) > 2.0


def test_masked_amp_keeps_a_nan_error_with_the_background_fit(camera):
    det = scale_detector(camera["R22_S11"], 0.25)
    sim = simulate_detector(det, seed=1, n_stars=0, n_saturated=0, n_cosmic_rays=0,
                            n_bad_columns=0)
    mask = np.zeros(det.shape, dtype=np.int32)
    mask[det.amplifiers[0].slices] = 1  # BAD: amp 0 entirely masked
    m = measure_detector(sim.image, mask, det, AmpOffsetConfig(do_detection=False))
    assert m.background == "ok"
    assert math.isnan(m.pedestal_errors[0]) and np.isfinite(m.pedestal_errors[1:]).all()
    touching = [i for i in m.interfaces if det.amp_names[0] in (i.amp_a, i.amp_b)]
    assert touching and all(math.isnan(i.offset_err) for i in touching)


def test_errors_stay_calibrated_where_akima_weights_switch(tmp_path):
    """A quarter-size e2v detector whose pedestals put two background bin slopes on an
    Akima weight switch: a Jacobian from a 1e-3 ADU difference made (I - G S) nearly
    singular and the pedestal errors 10-20 ADU for true errors of 0.5."""
    from ampoffset_dask.io.fits import read_exposure
    from ampoffset_dask.simulate import simulate_focal_plane

    sim = simulate_focal_plane(tmp_path / "sim", "lsstcam", detectors=["R22_S11"], scale=0.25,
                               seed=1)
    data = read_exposure(sim.paths[0])
    result = measure_detector(data, config=AmpOffsetConfig())
    truth = sim.truth.set_index("amp").loc[list(data.detector.amp_names), "pedestal"]
    error = (result.pedestals - result.pedestals.mean()) - (truth - truth.mean()).to_numpy()
    rms = float(np.sqrt(np.mean(error ** 2)))
    assert 0.2 < rms < 1.0
    assert np.median(result.pedestal_errors) < 3 * rms
    assert np.max(result.pedestal_errors) < 5 * rms


def test_an_edge_inset_of_zero_gives_lsst_result_not_a_crash():
    """ampEdgeInset=0 empties one strip of every interface (LSST's slicing): the background
    bias term adds nothing for it instead of failing (IndexError in the sums)."""
    det = scale_detector(get_camera("lsstcam")["R22_S11"], 0.25)
    sim = simulate_detector(det, seed=5)
    res = measure_detector(sim.image, sim.mask, det, AmpOffsetConfig(amp_edge_inset=0))
    edges = measure_detector(sim.image, sim.mask, det,
                             AmpOffsetConfig(amp_edge_inset=0, do_background=False,
                                             do_detection=False))
    np.testing.assert_array_equal(res.pedestals, 0.0)
    np.testing.assert_array_equal(edges.pedestals, 0.0)
    assert any("fully masked" in w for w in res.warnings)


@pytest.mark.parametrize("fraction", [0.02, 0.009, 1e-6])
def test_background_bins_of_a_few_pixels_are_refused(fraction):
    """Bins of a few pixels follow the steps (pedestal errors of 4e13 came out), bins
    under a pixel needed terabytes: a ConfigError naming the field instead."""
    from ampoffset_dask import ConfigError
    from ampoffset_dask.geometry import detector_from_boxes

    det = detector_from_boxes("D", 200, 100, [("A", 0, 0, 100, 100), ("B", 100, 0, 100, 100)])
    image = np.random.default_rng(0).normal(100.0, 1.0, det.shape).astype(np.float32)
    config = AmpOffsetConfig(amp_edge_width=16, do_detection=False,
                             background_fraction_sample=fraction)
    with pytest.raises(ConfigError, match=r"backgroundFractionSample=.* gives background "
                                          r"bins of .* pixels on 100-pixel amps"):
        measure_detector(image, None, det, config)
    config.background_fraction_sample = 0.04  # 4-pixel bins: accepted
    assert measure_detector(image, None, det, config).pedestals.shape == (2,)


def test_interfaces_zeroed_by_do_no_harm_count_in_the_errors_and_are_said():
    """An amp 8 ADU above the rest: two of its interfaces exceed ampEdgeMaxOffset and are
    set to 0 (LSST's value stands), which pulls its pedestal far from the truth; its error
    now carries the zeroed offsets (it read 0.7 for a 7 ADU miss) and the warnings name
    them."""
    det = scale_detector(get_camera("lsstcam")["R22_S11"], 0.25)
    truth = np.zeros(16)
    truth[5] = 8.0
    truth -= truth.mean()
    sim = simulate_detector(det, seed=5, pedestals=list(truth), sky_gradient=0.0)
    res = measure_detector(sim.image, sim.mask, det, AmpOffsetConfig())
    miss = abs(res.pedestals[5] - truth[5])
    assert miss > 5.0  # do-no-harm's cost, LSST's number
    assert miss / res.pedestal_errors[5] < 3.0
    zeroed = [i.id for i in res.interfaces if i.max_offset_fail]
    assert zeroed and all(any(f"interface {z}: offset" in w and "do-no-harm" in w
                              for w in res.warnings) for z in zeroed)


def test_the_transfer_stays_well_conditioned_on_a_pattern_with_an_akima_kink():
    """The measured pedestals of a half-size e2v detector (a simulated sequence, visit 32)
    at which a 0.1 ADU difference found an eigenvalue of G S of 0.99 (errors of 3-106 ADU
    for a true error of 0.6); the same geometry's other visits give ~0.55."""
    det = scale_detector(get_camera("lsstcam")["R22_S11"], 0.5)
    measured = np.array([0.6541, 2.1862, -0.4819, -0.8876, 1.3944, 0.9146, 0.3255, 0.3771,
                         0.1505, 0.8913, -2.6652, 0.4268, 0.4732, -1.8013, -0.6142, -1.3433])
    config = AmpOffsetConfig()
    amp = det.amplifiers[0]
    used = np.ones(len(det.grid(True).interfaces), dtype=bool)
    res = absorbed_steps(det, measured, used, min(amp.width, amp.height),
                         config.background_fraction_sample, config.amp_edge_inset,
                         config.amp_edge_width, config.background.algorithm,
                         config.background.undersample_style, config.apply_weights)
    assert np.linalg.cond(res.transfer) < 5.0
    assert np.abs(res.bias).max() < 2.0


def test_a_singular_absorbed_step_system_gives_nan_errors_not_a_crash():
    # A heavily masked background (71% of pixels BAD, bins of 6 pixels) can make the Newton
    # system of the absorbed steps singular, or nearly: numpy's LinAlgError (no pedestals at
    # all), or pedestal errors of 1e16 ADU. The pedestals are LSST's and stand; the errors
    # are unknown.
    amps = [Amplifier(f"A{ix}{iy}", ix * 17, iy * 12, 17, 12)
            for iy in range(2) for ix in range(4)]
    det = Detector("D", 68, 24, amps)
    rng = np.random.default_rng(143)
    image = rng.normal(0, 1, (24, 68)).astype(np.float32)
    for a in amps:
        image[a.y0:a.y0 + a.height, a.x0:a.x0 + a.width] += np.float32(rng.normal(0, 3))
    mask = (rng.random((24, 68)) < 0.71).astype(np.int32)
    config = AmpOffsetConfig(amp_edge_inset=3, amp_edge_width=4, amp_edge_max_offset=1e9,
                             amp_edge_min_frac=0.0, background_fraction_sample=0.5,
                             do_detection=False)
    m = measure_detector(image, mask, det, config)
    assert m.background == "ok"
    assert np.isnan(m.pedestal_errors).all()
    assert any(w.startswith("pedestal errors undefined: the background's absorbed steps could "
                            "not be solved for") for w in m.warnings)
    # the pedestals are the solve's, as without the error terms
    from ampoffset_dask.algorithm.solve import right_hand_side, solve_pedestals

    grid = det.grid(config.apply_weights)
    offsets = {(grid.interfaces[k].a, grid.interfaces[k].b): r.offset
               for k, r in enumerate(m.interfaces)}
    np.testing.assert_array_equal(
        m.pedestals, solve_pedestals(grid.associations, right_hand_side(grid, offsets)))
    assert np.ptp(m.pedestals) > 1.0
