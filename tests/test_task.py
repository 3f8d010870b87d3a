"""``AmpOffsetTask``: LSST's Task semantics, building blocks, metadata and duck typing."""

from __future__ import annotations

import datetime
import gc
import logging
import warnings
import weakref

import numpy as np
import pytest
from afw_fakes import FakeAmp, FakeExposure, FakePlane
from golden import (
    lsst_detector,
    lsst_fixture,
    lsst_image,
    lsst_values,
    noise_free_three_amps,
)

from ampoffset_dask import AmpOffsetConfig, AmpOffsetTask, Exposure, InputError
from ampoffset_dask._pipe_base import ConfigurableField, Struct, Task, TaskMetadata
from ampoffset_dask.config import BackgroundConfig
from ampoffset_dask.masks import DEFAULT_MASK_PLANES
from ampoffset_dask.task import SubtractBackgroundTask

FIXTURE = lsst_fixture()
DET = lsst_detector(FIXTURE)


def edges_config(**kwargs) -> AmpOffsetConfig:
    base = {"do_background": False, "do_detection": False, "amp_edge_width": 12}
    base.update(kwargs)
    return AmpOffsetConfig(**base)


# -- Task semantics ------------------------------------------------------------------------------
def test_names_and_task_dict():
    task = AmpOffsetTask()
    assert task.getName() == "isrAmpOffset"
    assert task.getFullName() == "isrAmpOffset"
    assert task.background.getName() == "background"
    assert task.background.getFullName() == "isrAmpOffset.background"
    assert task.detection.getFullName() == "isrAmpOffset.detection"
    tasks = task.getTaskDict()
    assert set(tasks) == {"isrAmpOffset", "isrAmpOffset.background", "isrAmpOffset.detection"}
    # weak references, as lsst.pipe.base.Task keeps them
    assert all(isinstance(ref, weakref.ReferenceType) for ref in tasks.values())
    assert tasks["isrAmpOffset.background"]() is task.background
    assert tasks["isrAmpOffset"]() is task
    assert task.background.getTaskDict() == tasks
    tasks.clear()  # a copy: the tree's own dictionary is untouched
    assert len(task.getTaskDict()) == 3
    assert task.background.config is task.config.background
    assert task.detection.config is task.config.detection
    named = AmpOffsetTask(name="ampOffset")
    assert named.getFullName() == "ampOffset"
    assert named.detection.getFullName() == "ampOffset.detection"


def test_subtasks_follow_config():
    task = AmpOffsetTask(edges_config())
    assert not hasattr(task, "background") and not hasattr(task, "detection")
    assert set(task.getTaskDict()) == {"isrAmpOffset"}
    with pytest.raises(KeyError, match="nope"):
        task.makeSubtask("nope")
    task.makeSubtask("background")
    assert task.background.getFullName() == "isrAmpOffset.background"
    assert isinstance(task.background, SubtractBackgroundTask)


def test_full_metadata_and_empty_metadata():
    task = AmpOffsetTask()
    task.metadata["a"] = 1
    task.background.metadata.add("b", 2)
    task.background.metadata.add("b", 3)
    full = task.getFullMetadata()
    assert set(full) == {"isrAmpOffset", "isrAmpOffset:background", "isrAmpOffset:detection"}
    assert full["isrAmpOffset"]["a"] == 1
    assert full["isrAmpOffset:background"].getArray("b") == [2, 3]
    assert full["isrAmpOffset:background"].getScalar("b") == 3
    task.emptyMetadata()
    assert task.metadata == {} and task.background.metadata == {}
    assert all(len(md) == 0 for md in task.getFullMetadata().values())


def test_task_metadata_add():
    md = TaskMetadata()
    md["x"] = 1
    md.add("x", 2)
    assert md.getArray("x") == [1, 2]
    assert md.getScalar("x") == 2


def test_make_field():
    field = AmpOffsetTask.makeField("amp offsets")
    assert isinstance(field, ConfigurableField)
    assert field.target is AmpOffsetTask
    assert field.ConfigClass is AmpOffsetConfig
    assert field.doc == "amp offsets"
    task = field.apply(config=edges_config(), name="ampOffset")
    assert isinstance(task, AmpOffsetTask)
    assert task.getName() == "ampOffset"
    assert SubtractBackgroundTask.makeField("bg").ConfigClass is BackgroundConfig


def test_parent_task_and_log():
    parent = Task(name="isr")
    child = AmpOffsetTask(edges_config(), name="ampOffset", parentTask=parent)
    assert child.getFullName() == "isr.ampOffset"
    assert set(parent.getTaskDict()) == {"isr", "isr.ampOffset"}
    assert child.log.name == parent.log.name + ".ampOffset"
    assert set(parent.getFullMetadata()) == {"isr", "isr:ampOffset"}


def test_task_dict_does_not_keep_tasks_alive():
    """The shared dictionary holds weak references: a dropped task is freed."""
    parent = Task(name="isr")
    child = AmpOffsetTask(name="ampOffset", parentTask=parent)
    ref = parent.getTaskDict()["isr.ampOffset"]
    assert ref() is child
    assert ref().getTaskDict()["isr.ampOffset.background"]() is child.background
    del child
    gc.collect()
    assert ref() is None
    with pytest.raises(RuntimeError, match=r"'isr\.ampOffset' of 'isr' was garbage collected"):
        parent.getFullMetadata()


def test_subtask_of_a_real_pipe_base_task():
    """lsst.pipe.base (from PyPI, no afw) as the parent: its getFullMetadata and
    emptyMetadata dereference our entries, and ours dereference its."""
    pipe_base = pytest.importorskip("lsst.pipe.base")
    import lsst.pex.config as pex_config

    class IsrConfig(pex_config.Config):
        pass

    class IsrTask(pipe_base.Task):
        ConfigClass = IsrConfig
        _DefaultName = "isr"

        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.ampOffset = AmpOffsetTask(AmpOffsetConfig(amp_edge_width=12), name="ampOffset",
                                           parentTask=self)

    isr = IsrTask()
    amp = isr.ampOffset
    assert amp.getFullName() == "isr.ampOffset"
    assert amp.background.getFullName() == "isr.ampOffset.background"
    tasks = isr.getTaskDict()
    assert set(tasks) == {"isr", "isr.ampOffset", "isr.ampOffset.background",
                          "isr.ampOffset.detection"}
    assert tasks["isr.ampOffset.detection"]() is amp.detection
    image = lsst_image("symmetric")
    result = amp.run(Exposure(image, detector=DET))
    isr.metadata["note"] = "parent"
    full = isr.getFullMetadata()  # pipe_base's own code
    assert set(full.keys()) >= {"isr", "isr:ampOffset", "isr:ampOffset:background"}
    peds = full["isr:ampOffset"]["AMPOFFSET_PEDESTALS"]
    assert [peds[n] for n in DET.amp_names] == [float(p) for p in result.pedestals]
    ours = amp.getFullMetadata()  # ours, over the shared (pipe_base) dictionary
    assert ours["isr"] is isr.metadata and ours["isr:ampOffset"] is amp.metadata
    assert ours["isr"]["note"] == "parent"
    isr.emptyMetadata()
    assert len(amp.metadata) == 0 and "note" not in isr.metadata
    assert amp.log.name.endswith("isr.ampOffset")


def test_timer_writes_start_and_end():
    task = AmpOffsetTask(edges_config())
    before = datetime.datetime.now(datetime.UTC)
    with task.timer("work", logLevel=logging.INFO):
        sum(range(10000))
    after = datetime.datetime.now(datetime.UTC)
    md = task.metadata
    for when in ("Start", "End"):
        for what in ("Utc", "CpuTime", "UserTime", "SystemTime", "MaxResidentSet"):
            assert len(md.getArray(f"work{when}{what}")) == 1
    start = datetime.datetime.fromisoformat(md.getScalar("workStartUtc"))
    end = datetime.datetime.fromisoformat(md.getScalar("workEndUtc"))
    assert before <= start <= end <= after
    assert md.getScalar("workEndCpuTime") >= md.getScalar("workStartCpuTime")
    # a second use appends
    with task.timer("work"):
        pass
    assert len(md.getArray("workEndUtc")) == 2


def test_timer_records_end_on_error():
    task = AmpOffsetTask(edges_config())
    with pytest.raises(RuntimeError), task.timer("boom"):
        raise RuntimeError("x")
    assert "boomEndUtc" in task.metadata


def test_struct():
    s = Struct(a=1, b=[2])
    assert s.a == 1 and s.getDict() == {"a": 1, "b": [2]}


# -- LSST building blocks ------------------------------------------------------------------------
@pytest.mark.parametrize(("weighted", "key"), [(True, "associations_weighted"),
                                               (False, "associations_unweighted")])
def test_get_amp_associations(weighted, key):
    task = AmpOffsetTask(edges_config(apply_weights=weighted))
    for amps in (list(DET.amplifiers), [FakeAmp(a) for a in DET.amplifiers]):
        a_mat, s_mat = task.getAmpAssociations(amps)
        np.testing.assert_array_equal(a_mat, FIXTURE["expected_matrices"][key])
        np.testing.assert_array_equal(s_mat, FIXTURE["expected_matrices"]["sides"])
        assert task.interfaceLengthLookupBySide == {0: 100, 1: 51, 2: 100, 3: 51}


def test_get_neighbors():
    task = AmpOffsetTask(edges_config())
    ids = np.array([[0, 4], [1, 5], [2, 6], [3, 7]])
    assert task.getNeighbors(ids, 5) == ([6, 4, 1], [0, 2, 3])
    assert task.getNeighbors(ids, 0) == ([1, 4], [0, 1])
    assert task.getNeighbors(ids, 7) == ([6, 3], [2, 3])
    assert task.getNeighbors(np.array([[0]]), 0) == ([], [])


def _masked_image(kind="random"):
    rng = np.random.default_rng(0)
    image = lsst_image(kind) + rng.normal(0, 0.05, DET.shape).astype(np.float32)
    image[rng.random(DET.shape) < 0.05] = np.nan
    return image


def test_get_amp_edges():
    task = AmpOffsetTask(edges_config())
    image = _masked_image()
    _, sides = task.getAmpAssociations(list(DET.amplifiers))
    edges = task.getAmpEdges(image, list(DET.amplifiers), sides)
    assert sorted(edges) == list(range(8))
    assert sorted(edges[0]) == [0, 1]  # C:0,0 has neighbours at larger y and larger x
    assert sorted(edges[5]) == [0, 2, 3]
    a = image[DET[5].slices]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        np.testing.assert_array_equal(edges[5][0], np.nanmedian(a[-17:-5, :], axis=0))
        np.testing.assert_array_equal(edges[5][2], np.nanmedian(a[5:17, :], axis=0))
        np.testing.assert_array_equal(edges[5][3], np.nanmedian(a[:, 5:17], axis=1))
    assert edges[5][3].dtype == np.float32 and edges[5][3].shape == (51,)
    # an afw-like image object with .array works the same way
    fake = FakePlane(image)
    edges2 = task.getAmpEdges(fake, [FakeAmp(x) for x in DET.amplifiers], sides)
    np.testing.assert_array_equal(edges2[5][0], edges[5][0])


def test_get_amp_offsets_and_solve_match_run():
    config = edges_config(amp_edge_max_offset=50.0)
    task = AmpOffsetTask(config)
    image = _masked_image("artificial")
    amps = list(DET.amplifiers)
    a_mat, s_mat = task.getAmpAssociations(amps)
    b = task.getAmpOffsets(image, amps, a_mat, s_mat)
    assert abs(b.sum()) < 1e-9
    values = lsst_values("artificial")
    # noise 0.05 per pixel: offsets good to ~0.01, times weights up to 100 per interface
    np.testing.assert_allclose(b, a_mat @ values, atol=3.0)
    pedestals = np.nan_to_num(np.linalg.lstsq(a_mat, b, rcond=None)[0])
    result = AmpOffsetTask(config).run(Exposure(image, detector=DET))
    np.testing.assert_allclose(result.pedestals, pedestals, rtol=0, atol=1e-12)
    assert task.interfaceOffsetOriginals == result.measurement.interface_offsets_raw


def test_get_interface_offset_six_tuple(caplog):
    task = AmpOffsetTask(edges_config(amp_edge_min_frac=0.5, amp_edge_max_offset=5.0))
    edge_a = np.full(100, 3.0, np.float32)
    edge_b = np.full(100, 1.0, np.float32)
    res = task.getInterfaceOffset("C:0,0", "C:0,1", edge_a, edge_b)
    assert isinstance(res, tuple) and len(res) == 6
    assert res == ("C:0,0-C:0,1", 2.0, 2.0, 1.0, False, False)
    big = task.getInterfaceOffset("A", "B", edge_a * 3, edge_b)
    assert big == ("A-B", 0.0, 8.0, 1.0, False, True)
    nan = np.full(100, np.nan, np.float32)
    with caplog.at_level(logging.WARNING):
        masked = task.getInterfaceOffset("A", "B", nan, edge_b)
    assert masked == ("A-B", 0.0, 0.0, 0.0, True, False)
    assert "A-B" in caplog.text and "fully masked" in caplog.text
    no_smooth = AmpOffsetTask(edges_config(do_window_smoothing=False))
    assert no_smooth.getInterfaceOffset("A", "B", edge_a, edge_b)[1] == 2.0


# -- run ---------------------------------------------------------------------------------------
def test_run_metadata_keys_and_values():
    image = lsst_image("symmetric")
    exposure = Exposure(image.copy(), detector=DET)
    task = AmpOffsetTask(edges_config())
    result = task.run(exposure)
    md = exposure.metadata
    names = DET.amp_names
    expected_keys = (
        [f"LSST ISR AMPOFFSET INTERFACEOFFSET {i}" for i in FIXTURE["interfaces_in_order"]]
        + [f"LSST ISR AMPOFFSET PEDESTAL {n}" for n in names]
        + ["LSST ISR AMPOFFSET PEDESTAL SUBTRACTED"]
    )
    assert list(md) == expected_keys
    assert md["LSST ISR AMPOFFSET PEDESTAL SUBTRACTED"] is False
    for name, p in zip(names, result.pedestals, strict=True):
        assert md[f"LSST ISR AMPOFFSET PEDESTAL {name}"] == float(p)
        assert type(md[f"LSST ISR AMPOFFSET PEDESTAL {name}"]) is float
    values = lsst_values("symmetric").astype(np.float32)
    # raw offsets: A minus B of the two constants
    assert md["LSST ISR AMPOFFSET INTERFACEOFFSET C:0,0-C:0,1"] == pytest.approx(
        float(values[0] - values[1]), abs=1e-6)
    assert md["LSST ISR AMPOFFSET INTERFACEOFFSET C:0,0-C:1,0"] == pytest.approx(
        float(values[0] - values[4]), abs=1e-6)
    peds = task.metadata["AMPOFFSET_PEDESTALS"]
    assert list(peds) == list(names)
    assert peds == {n: float(p) for n, p in zip(names, result.pedestals, strict=True)}
    assert result.pedestals.dtype == np.float64 and result.pedestals.shape == (8,)
    np.testing.assert_allclose(result.pedestals, values - values.mean(), atol=5e-7)
    assert [i.id for i in result.interfaces] == FIXTURE["interfaces_in_order"]
    assert "ampOffsetStartUtc" in task.metadata and "ampOffsetEndUtc" in task.metadata
    assert task.ampDims == (100, 51) and task.shortAmpSide == 51


def test_run_does_not_apply_by_default():
    image = lsst_image("random")
    exposure = Exposure(image.copy(), detector=DET)
    AmpOffsetTask(edges_config()).run(exposure)
    np.testing.assert_array_equal(exposure.image, image)


def test_run_without_apply_leaves_the_exposure_bit_identical():
    """LSST's testAmpOffsetEffectOnExposure: a ramp background, sources, background and
    detection on, ``doApplyAmpOffset=False``: the input planes are untouched."""
    rng = np.random.default_rng(7)
    image = lsst_image("random", "ramp") + rng.normal(0.0, 1.0, DET.shape).astype(np.float32)
    yy, xx = np.mgrid[:DET.height, :DET.width]
    for y, x in ((40, 30), (120, 150), (170, 60)):  # bright sources near the interfaces
        image += (500.0 * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / 8.0)).astype(np.float32)
    mask = np.zeros(DET.shape, np.int32)
    mask[10:14, 10:40] = 1 << DEFAULT_MASK_PLANES["SAT"]
    mask[90:95, 120:125] = 1 << DEFAULT_MASK_PLANES["DETECTED"]
    variance = rng.uniform(1.0, 2.0, DET.shape).astype(np.float32)
    exposure = Exposure(image.copy(), mask.copy(), variance.copy(), detector=DET)
    arrays = (exposure.image, exposure.mask, exposure.variance)
    config = AmpOffsetConfig(amp_edge_width=12, amp_edge_min_frac=0.1)
    assert config.do_background and config.do_detection and not config.do_apply_amp_offset
    result = AmpOffsetTask(config).run(exposure)
    assert result.measurement.detection == "ok" and result.measurement.n_detected > 0
    assert result.measurement.background == "ok"
    assert np.abs(result.pedestals).max() > 0.1  # the amps do have offsets to remove
    assert all(a is b for a, b in zip((exposure.image, exposure.mask, exposure.variance),
                                      arrays, strict=True))
    np.testing.assert_array_equal(exposure.image, image, strict=True)
    np.testing.assert_array_equal(exposure.mask, mask, strict=True)
    np.testing.assert_array_equal(exposure.variance, variance, strict=True)
    assert exposure.metadata["LSST ISR AMPOFFSET PEDESTAL SUBTRACTED"] is False


def test_run_applies_in_place():
    image = lsst_image("artificial")
    exposure = Exposure(image.copy(), detector=DET)
    array = exposure.image
    result = AmpOffsetTask(edges_config(do_apply_amp_offset=True,
                                        amp_edge_max_offset=50.0)).run(exposure)
    assert exposure.image is array
    assert exposure.metadata["LSST ISR AMPOFFSET PEDESTAL SUBTRACTED"] is True
    for amp, p in zip(DET.amplifiers, result.pedestals, strict=True):
        expected = (image[amp.slices].astype(np.float64) - p).astype(np.float32)
        np.testing.assert_array_equal(array[amp.slices], expected)
    # the corrected amps all sit at the mean level
    values = lsst_values("artificial")
    np.testing.assert_allclose(array, values.mean(), atol=1e-5)


def test_run_with_afw_like_exposure_matches_exposure():
    image = _masked_image("random")
    mask = np.zeros(DET.shape, np.int32)
    mask[60:70, 20:90] = 1 << DEFAULT_MASK_PLANES["SAT"]
    config = edges_config(amp_edge_min_frac=0.1)
    ours = Exposure(image.copy(), mask.copy(), detector=DET)
    r_ours = AmpOffsetTask(config).run(ours)
    fake = FakeExposure(image.copy(), DET, mask.copy())
    r_fake = AmpOffsetTask(config).run(fake)
    np.testing.assert_array_equal(r_fake.pedestals, r_ours.pedestals)
    assert fake.getMetadata().values == ours.metadata
    assert fake.getMetadata().comments["LSST ISR AMPOFFSET PEDESTAL C:0,0"]
    assert "C:0,0-C:0,1" in fake.getMetadata().comments[
        "LSST ISR AMPOFFSET INTERFACEOFFSET C:0,0-C:0,1"]
    # applying goes through .image.array in place
    fake2 = FakeExposure(image.copy(), DET, mask.copy())
    array = fake2.image.array
    AmpOffsetTask(edges_config(amp_edge_min_frac=0.1, do_apply_amp_offset=True)).run(fake2)
    assert fake2.image.array is array
    p = r_ours.pedestals[3]
    amp = DET[3]
    np.testing.assert_array_equal(
        array[amp.slices], (image[amp.slices].astype(np.float64) - p).astype(np.float32))


def test_afw_like_mask_plane_dictionary_is_used():
    """A non-default plane dictionary (BAD at bit 12) decides which pixels are ignored."""
    image = lsst_image("symmetric")
    strip = (slice(40, 46), slice(0, 100))  # inside C:0,0's side-0 edge strip
    image[strip] = 1000.0
    mask = np.zeros(DET.shape, np.int32)
    mask[strip] = 1 << 12
    planes = dict(DEFAULT_MASK_PLANES)
    planes["BAD"] = 12
    config = edges_config(amp_edge_max_offset=1e4)
    custom = AmpOffsetTask(config).run(FakeExposure(image, DET, mask, planes))
    values = lsst_values("symmetric")
    np.testing.assert_allclose(custom.pedestals, values - values.mean(), atol=5e-7)
    default = AmpOffsetTask(config).run(FakeExposure(image, DET, mask))
    assert np.abs(default.pedestals - (values - values.mean())).max() > 1.0


def test_unsupported_exposure():
    with pytest.raises(InputError, match="unsupported exposure type"):
        AmpOffsetTask(edges_config()).run(object())


def test_all_masked_gives_zero_pedestals():
    exposure = Exposure(lsst_image("random"), np.ones(DET.shape, np.int32), detector=DET)
    result = AmpOffsetTask(edges_config()).run(exposure)
    np.testing.assert_array_equal(result.pedestals, 0.0)
    assert result.measurement.all_masked
    assert all(i.min_frac_fail and i.offset == 0.0 for i in result.interfaces)
    assert all(v == 0.0 for k, v in exposure.metadata.items() if "INTERFACEOFFSET" in k)


def _three_amps_one_without_clipped_mean():
    """`golden.noise_free_three_amps` (its A-B interface has no raw offset: NaN), applied."""
    det, image = noise_free_three_amps()
    config = AmpOffsetConfig(amp_edge_inset=2, amp_edge_width=8, do_background=False,
                             do_detection=False, do_apply_amp_offset=True)
    return det, image, config


def test_a_nan_interface_offset_is_an_undefined_card_in_a_header_metadata():
    # astropy refuses NaN in a header: the run raised after correcting the pixels, and the
    # header had no pedestal and no SUBTRACTED card
    from astropy.io import fits

    det, image, config = _three_amps_one_without_clipped_mean()
    header = fits.Header()
    exp = Exposure(image.copy(), detector=det, metadata=header)
    res = AmpOffsetTask(config).run(exp)
    assert not np.array_equal(exp.image, image)
    assert header["LSST ISR AMPOFFSET INTERFACEOFFSET A-B"] is None
    assert "no valid edge samples" in header.comments["LSST ISR AMPOFFSET INTERFACEOFFSET A-B"]
    assert header["LSST ISR AMPOFFSET INTERFACEOFFSET B-C"] == pytest.approx(-2.99, abs=0.05)
    assert header["LSST ISR AMPOFFSET PEDESTAL C"] == res.pedestals[2]
    assert header["LSST ISR AMPOFFSET PEDESTAL SUBTRACTED"] is True
    back = fits.Header.fromstring(header.tostring())  # a FITS-legal header
    assert back["LSST ISR AMPOFFSET INTERFACEOFFSET A-B"] is None
    # a dict keeps LSST's NaN
    meta: dict = {}
    AmpOffsetTask(config).run(Exposure(image.copy(), detector=det, metadata=meta))
    assert np.isnan(meta["LSST ISR AMPOFFSET INTERFACEOFFSET A-B"])


def test_metadata_of_any_mutable_mapping_and_others_refused_before_measuring():
    import collections
    import types

    det, image, config = _three_amps_one_without_clipped_mean()
    for meta in (collections.UserDict(), collections.ChainMap()):
        AmpOffsetTask(config).run(Exposure(image.copy(), detector=det, metadata=meta))
        assert meta["LSST ISR AMPOFFSET PEDESTAL SUBTRACTED"] is True
    exp = Exposure(image.copy(), detector=det, metadata=types.MappingProxyType({}))
    with pytest.raises(InputError, match=r"metadata, a mappingproxy, cannot take LSST's keys.*"
                                         r"nothing was measured"):
        AmpOffsetTask(config).run(exp)
    assert np.array_equal(exp.image, image)


def test_written_nan_metadata_is_refused_by_name_or_undefined():
    from astropy.io import fits

    from ampoffset_dask.algorithm.measure import measure_detector
    from ampoffset_dask.algorithm.metadata import (
        header_metadata_comments,
        lsst_metadata_comments,
    )
    from ampoffset_dask.io.writer import write_exposure

    det, image, config = _three_amps_one_without_clipped_mean()
    m = measure_detector(image, None, det, config)
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "d.fits"
        with pytest.raises(ValueError, match="card 'LSST ISR AMPOFFSET INTERFACEOFFSET A-B' "
                                             "is nan, which FITS cannot hold"):
            write_exposure(path, image, metadata=lsst_metadata_comments(m, True))
        assert not path.exists()
        write_exposure(path, image, metadata=header_metadata_comments(m, True))
        header = fits.getheader(path)
        assert header["LSST ISR AMPOFFSET INTERFACEOFFSET A-B"] is None
        assert header["LSST ISR AMPOFFSET PEDESTAL B"] == m.pedestals[1]
