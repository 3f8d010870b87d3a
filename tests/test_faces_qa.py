"""The in-memory faces as users drive them: what `AmpOffsetTask.run` records when it cannot
apply, Dataset copies, arrays that carry their own mask (CCDData, MaskedArray), masks of
other dtypes, geometry-less Datasets and exposures, CCDData metadata and uncertainties,
concurrent `measure_visit` calls, DataTree node names, pickled tasks, astropy headers as
metadata and the xarray engine's decoding options."""

from __future__ import annotations

import dataclasses
import json
import threading

import dask
import numpy as np
import pytest
import xarray as xr
from afw_fakes import FakeExposure

from ampoffset_dask import (
    AmpOffsetConfig,
    AmpOffsetTask,
    InputError,
    get_camera,
    measure_detector,
    open_exposure,
)
from ampoffset_dask.algorithm import kernels
from ampoffset_dask.io.fits import open_lazy
from ampoffset_dask.io.writer import write_exposure
from ampoffset_dask.pipeline.graph import measure_visit
from ampoffset_dask.simulate import scale_detector, simulate_detector

SUBTRACTED = "LSST ISR AMPOFFSET PEDESTAL SUBTRACTED"
EDGES = AmpOffsetConfig(amp_edge_width=16, do_background=False, do_detection=False)
APPLY_EDGES = dataclasses.replace(EDGES, do_apply_amp_offset=True)
DET = scale_detector(get_camera("lsstcam")["R22_S11"], 0.1)  # 16 amps of 80x200


def _sim(seed=1):
    return simulate_detector(DET, seed=seed, n_stars=20, n_saturated=1, n_cosmic_rays=10,
                             n_bad_columns=1)


@pytest.fixture(scope="module")
def sim():
    return _sim()


@pytest.fixture(scope="module")
def path(sim, tmp_path_factory):
    return write_exposure(tmp_path_factory.mktemp("faces") / "d.fits", sim.image, sim.mask,
                          sim.variance, detector=DET, header={"VISIT": 4})


# -- AmpOffsetTask.run records a correction only when it made it ----------------------------
def test_apply_that_cannot_happen_records_nothing(sim, path):
    fake = FakeExposure(sim.image.copy(), DET, sim.mask.copy())
    fake.image.array.flags.writeable = False
    task = AmpOffsetTask(APPLY_EDGES)
    with pytest.raises(InputError, match=r"R22_S11.*read-only.*nothing was measured"):
        task.run(fake)
    assert fake.getMetadata().values == {}  # no "PEDESTAL SUBTRACTED: True", no pedestals
    assert "AMPOFFSET_PEDESTALS" not in task.metadata
    np.testing.assert_array_equal(fake.image.array, sim.image)

    lazy = open_lazy(path)
    with pytest.raises(InputError, match=r"in-memory, writable image.*LazyPlane"):
        AmpOffsetTask(APPLY_EDGES).run(lazy)
    assert SUBTRACTED not in lazy.metadata

    with pytest.raises(InputError, match=r"image of floats.*got an int32 ndarray"):
        AmpOffsetTask(APPLY_EDGES).run((sim.image.astype(np.int32), sim.mask, DET))

    # a correctable exposure still gets LSST's keys, after the correction
    ok = FakeExposure(sim.image.copy(), DET, sim.mask.copy())
    result = AmpOffsetTask(APPLY_EDGES).run(ok)
    assert ok.getMetadata().values[SUBTRACTED] is True
    amp = DET.amplifiers[3]
    np.testing.assert_array_equal(
        ok.image.array[amp.slices],
        (sim.image[amp.slices].astype(np.float64) - result.pedestals[3]).astype(np.float32))


def test_a_corrected_dataset_copy_leaves_the_original_metadata_alone(sim, path):
    ds = open_exposure(path)
    measured = AmpOffsetTask(EDGES).run(ds)
    assert json.loads(ds.attrs["ampoffset_metadata"])[SUBTRACTED] is False
    corrected = ds.copy()  # xarray copies attrs shallowly
    AmpOffsetTask(APPLY_EDGES).run(corrected)
    assert json.loads(corrected.attrs["ampoffset_metadata"])[SUBTRACTED] is True
    assert json.loads(ds.attrs["ampoffset_metadata"])[SUBTRACTED] is False  # was True
    np.testing.assert_array_equal(ds["image"].values, sim.image)
    # the copy is corrected: measuring it again finds (almost) nothing left
    again = measure_detector(corrected, config=EDGES).pedestals
    assert np.abs(measured.pedestals).max() > 1.0 and np.abs(again).max() < 1e-3


# -- arrays that carry their own mask ----------------------------------------------------------
def test_ccddata_and_masked_array_masks_are_not_ignored(sim):
    from astropy.nddata import CCDData

    bad = sim.mask != 0
    masked = measure_detector(sim.image, bad.astype(np.int32), DET, EDGES).pedestals
    unmasked = measure_detector(sim.image, None, DET, EDGES).pedestals
    assert np.abs(masked - unmasked).max() > 0.05
    ccd = CCDData(sim.image, unit="adu", mask=bad.astype(np.uint8) * 7)
    for obj in (ccd, np.ma.masked_array(sim.image, mask=bad)):
        got = measure_detector(obj, detector=DET, config=EDGES).pedestals
        np.testing.assert_array_equal(got, masked)  # was equal to `unmasked`
    with pytest.raises(InputError, match=r"no amp geometry.*correct_ccddata"):
        AmpOffsetTask(EDGES).run(ccd)
    with pytest.raises(InputError, match="needs a detector"):
        measure_detector(ccd, config=EDGES)


# -- masks of other dtypes ---------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_masks_of_other_integer_dtypes_measure_as_int32(sim, backend):
    if backend == "numba" and not kernels.numba_available():
        pytest.skip("numba not installed")
    bad = (sim.mask != 0).astype(np.int32)  # BAD (bit 0) wherever a plane is set
    config = AmpOffsetConfig()  # background and detection: the full-image mask passes
    with kernels.use_kernels(backend):
        want = measure_detector(sim.image, bad, DET, config).pedestals
        for dtype in (bool, np.uint8, np.int8, np.uint16):
            # bool failed with the numpy kernels, uint8/int8 with both (bit 8 of NO_DATA)
            got = AmpOffsetTask(config).run((sim.image, bad.astype(dtype), DET)).pedestals
            np.testing.assert_array_equal(got, want, err_msg=str(np.dtype(dtype)))


def test_signed_mask_words_are_their_bit_patterns():
    # int8 -128 is bit 7 (SUSPECT) alone; sign-extended it also set NO_DATA (bit 8, in
    # detection.statsMask), which left those pixels out of the threshold
    from ampoffset_dask.exposure import mask_words
    from ampoffset_dask.geometry import detector_from_boxes

    assert mask_words(np.array([-128, 1], np.int8), None, "D").tolist() == [128, 1]
    assert mask_words(np.array([-32768, 3], np.int16), None, "D").tolist() == [32768, 3]
    det = detector_from_boxes("D", 128, 64, [("A", 0, 0, 64, 64), ("B", 64, 0, 64, 64)])
    rng = np.random.default_rng(0)
    image = rng.normal(1000, 5, det.shape).astype(np.float32)
    image[:, 64:] += 3
    suspect = rng.random(det.shape) < 0.002
    image[suspect] += rng.normal(0, 40, suspect.sum()).astype(np.float32)
    image[rng.random(det.shape) < 0.01] += 12
    config = AmpOffsetConfig(amp_edge_width=16)
    want = measure_detector(image, np.where(suspect, 128, 0).astype(np.int32), det, config)
    got = measure_detector(image, np.where(suspect, -128, 0).astype(np.int8), det, config)
    assert (got.threshold, got.n_detected) == (want.threshold, want.n_detected)
    np.testing.assert_array_equal(got.pedestals, want.pedestals)


def test_float_masks_of_a_dataset(sim, path):
    want = measure_detector(sim.image, sim.mask, DET, EDGES).pedestals
    as_float = open_exposure(path).astype("float64")  # converts the mask as well
    assert as_float["mask"].dtype == np.float64
    np.testing.assert_array_equal(measure_detector(as_float, config=EDGES).pedestals, want)
    holes = open_exposure(path)
    holes["mask"] = holes["mask"].where(holes["y"] > 0)  # NaN: not mask bits
    with pytest.raises(InputError, match=r"R22_S11.*mask.*not mask bits"):
        measure_detector(holes, config=EDGES)


# -- Datasets without geometry, and measure_visit's errors ----------------------------------
def test_a_dataset_without_geometry_takes_the_detector_given(sim):
    ds = xr.Dataset({"image": (("y", "x"), sim.image), "mask": (("y", "x"), sim.mask)})
    want = measure_detector(sim.image, sim.mask, DET, EDGES).pedestals
    np.testing.assert_array_equal(measure_detector(ds, detector=DET, config=EDGES).pedestals,
                                  want)  # was "dataset has no geometry; pass detector="
    with pytest.raises(InputError, match=r"no 'geometry' attribute.*no amp geometry"):
        AmpOffsetTask(EDGES).run(ds)
    assert ds.attrs == {}  # a failed run leaves the Dataset as it was
    members = {"R22_S11": (sim.image, sim.mask, DET), "R22_S12": ds}
    with pytest.raises(InputError, match="member 'R22_S12' carries no amp geometry"):
        measure_visit(members, config=EDGES, scheduler="sync")
    with pytest.raises(InputError, match="member 'R22_S20': unsupported exposure type"):
        measure_visit({"R22_S20": sim.image}, config=EDGES, scheduler="sync")


# -- CCDData metadata ---------------------------------------------------------------------------
def test_correct_ccddata_keeps_a_meta_that_a_header_cannot_hold(sim):
    from astropy.nddata import CCDData

    from ampoffset_dask.ccddata import correct_ccddata

    plain = CCDData(sim.image, unit="adu", mask=sim.mask != 0, meta={"OBJECT": "f12"})
    rich = CCDData(sim.image, unit="adu", mask=sim.mask != 0,
                   meta={"OBJECT": "f12", "FILTERS": ["r", "i"], "PROC": {"step": 3}})
    want = correct_ccddata(plain, DET, EDGES)
    got = correct_ccddata(rich, DET, EDGES)  # raised "Illegal value: ['r', 'i']"
    np.testing.assert_array_equal(got.data, want.data)
    assert got.meta["FILTERS"] == ["r", "i"] and got.meta["PROC"] == {"step": 3}
    assert got.meta[SUBTRACTED] is True and want.header[SUBTRACTED] is True
    key = "LSST ISR AMPOFFSET PEDESTAL C10"
    assert got.meta[key] == want.header[key] != 0.0
    assert want.header.comments[key] == "Pedestal level calculated for amp C10"
    assert "FILTERS" not in plain.meta and SUBTRACTED not in rich.meta


# -- measure_visit on a shared scheduler ----------------------------------------------------------
def test_concurrent_measure_visits_get_their_own_results():
    """Two visits with the same detector names measured at once on one scheduler: the
    second is submitted while the first's tasks are still there (it got the first visit's
    results when the keys were only the detector names)."""
    from distributed import Client, LocalCluster

    config = AmpOffsetConfig()
    names = [f"R22_S{i}{j}" for i in range(3) for j in range(3)]
    sims = {"A": _sim(1), "B": _sim(2)}
    visits = {k: {n: (s.image, s.mask, DET) for n in names} for k, s in sims.items()}
    want = {k: measure_detector(s.image, s.mask, DET, config).pedestals
            for k, s in sims.items()}
    got: dict[str, dict] = {}
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                      dashboard_address=":0") as cluster, \
            Client(cluster, set_as_default=False) as client_a, \
            Client(cluster, set_as_default=False) as client_b:

        def first():
            got["A"] = measure_visit(visits["A"], config=config, scheduler=client_a)

        thread = threading.Thread(target=first)
        thread.start()
        for _ in range(500):  # until visit A's tasks are on the scheduler
            if client_b.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks)):
                break
            threading.Event().wait(0.01)
        got["B"] = measure_visit(visits["B"], config=config, scheduler=client_b)
        thread.join()
    for label in ("A", "B"):
        for name in names:
            np.testing.assert_array_equal(got[label][name].pedestals, want[label],
                                          err_msg=f"visit {label} {name}")


def test_datatree_nodes_of_the_same_name_are_refused(sim, path):
    ds = open_exposure(path)
    tree = xr.DataTree.from_dict({"/R22/S11": ds, "/R23/S11": ds, "/R23/S12": ds})
    with pytest.raises(InputError, match=r"nodes /R22/S11 and /R23/S11 have the same name"):
        measure_visit(tree, config=EDGES, scheduler="sync")  # returned 2 results for 3
    tree = xr.DataTree.from_dict({"/R22/S11": ds, "/R23/S12": ds})
    got = measure_visit(tree, config=EDGES, scheduler="sync")
    assert list(got) == ["S11", "S12"]
    want = measure_detector(sim.image, sim.mask, DET, EDGES).pedestals
    np.testing.assert_array_equal(got["S12"].pedestals, want)


def test_correct_ccddata_keeps_the_uncertainty_unit(sim):
    from astropy.nddata import CCDData, StdDevUncertainty

    from ampoffset_dask.ccddata import correct_ccddata

    unc = StdDevUncertainty(np.full(sim.image.shape, 2.0), unit="mJy")
    out = correct_ccddata(CCDData(sim.image, unit="Jy", uncertainty=unc), DET, EDGES)
    assert str(out.uncertainty.unit) == "mJy"  # was Jy: 1000 times too large
    np.testing.assert_array_equal(out.uncertainty.array, unc.array)


def test_tasks_pickle_and_run_on_dask_workers(sim):
    import pickle

    from ampoffset_dask import Exposure
    from ampoffset_dask._pipe_base import Task

    parent = Task(name="isr")
    task = AmpOffsetTask(EDGES, name="ampOffset", parentTask=parent)
    copy = pickle.loads(pickle.dumps(task))  # raised: cannot pickle 'weakref.ReferenceType'
    assert copy.getFullName() == "isr.ampOffset" and copy.config == task.config
    assert set(copy.getTaskDict()) == {"isr", "isr.ampOffset"}
    top = AmpOffsetTask()
    background = pickle.loads(pickle.dumps(top.background))
    assert background.getFullName() == "isrAmpOffset.background"
    want = measure_detector(sim.image, sim.mask, DET, EDGES).pedestals
    got = dask.compute(dask.delayed(task.run)(Exposure(sim.image, sim.mask, detector=DET)),
                       scheduler="processes", num_workers=1)[0]
    np.testing.assert_array_equal(got.pedestals, want)


def test_an_afw_exposure_without_a_detector(sim):
    exposure = FakeExposure(sim.image.copy(), DET, sim.mask.copy())
    exposure.getDetector = lambda: None  # what afw returns when none is attached
    with pytest.raises(InputError, match=r"FakeExposure \(no detector attached\) carries no"):
        AmpOffsetTask(EDGES).run(exposure)  # was TypeError: 'NoneType' object is not iterable
    assert exposure.getMetadata().values == {}
    want = measure_detector(sim.image, sim.mask, DET, EDGES).pedestals
    np.testing.assert_array_equal(
        measure_detector(exposure, detector=DET, config=EDGES).pedestals, want)


def test_an_astropy_header_as_metadata_takes_the_keys_without_warnings(sim):
    import warnings

    from astropy.io import fits

    from ampoffset_dask import Exposure

    header = fits.Header({"OBJECT": "field 12"})
    exposure = Exposure(sim.image, sim.mask, detector=DET, metadata=header)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one VerifyWarning per key before
        result = AmpOffsetTask(EDGES).run(exposure)
    key = "LSST ISR AMPOFFSET PEDESTAL C10"
    assert header[key] == float(result.pedestals[0]) != 0.0
    assert header.comments[key] == "Pedestal level calculated for amp C10"
    assert header[SUBTRACTED] is False and header["OBJECT"] == "field 12"


def test_the_xarray_engine_takes_xarrays_decoding_options(sim, path):
    want = open_exposure(path)["image"].values
    for kwargs in ({"decode_times": False}, {"mask_and_scale": False}, {"decode_cf": False},
                   {"decode_coords": "all", "use_cftime": True}):
        ds = xr.open_dataset(path, engine="ampoffset", **kwargs)  # TypeError for most
        np.testing.assert_array_equal(ds["image"].values, want, err_msg=str(kwargs))
    np.testing.assert_array_equal(want, sim.image)
