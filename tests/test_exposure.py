"""The in-memory ``Exposure``: dtypes, defaults, shape checks, LSST-style accessors."""

from __future__ import annotations

import numpy as np
import pytest

from ampoffset_dask import ConfigError, Exposure, InputError
from ampoffset_dask.geometry import detector_from_boxes
from ampoffset_dask.masks import DEFAULT_MASK_PLANES, mask_bits

DET = detector_from_boxes("D", 80, 30, [("A", 0, 0, 40, 30), ("B", 40, 0, 40, 30)], id=7)


def test_dtypes_and_defaults():
    image = np.arange(30 * 80, dtype=np.float64).reshape(30, 80) + 0.1
    exp = Exposure(image, detector=DET)
    assert exp.image.dtype == np.float32 and exp.image.flags.c_contiguous
    np.testing.assert_array_equal(exp.image, image.astype(np.float32))
    assert exp.mask.dtype == np.int32 and not exp.mask.any()
    assert exp.variance.dtype == np.float32 and not exp.variance.any()
    assert exp.mask_planes == DEFAULT_MASK_PLANES
    assert exp.mask_planes is not DEFAULT_MASK_PLANES  # a copy
    assert exp.metadata == {}
    assert exp.getDetector() is DET
    assert exp.getMetadata() is exp.metadata
    assert "D" in repr(exp) and "(30, 80)" in repr(exp)


def test_float32_image_is_not_copied():
    image = np.zeros((30, 80), np.float32)
    exp = Exposure(image, detector=DET)
    assert exp.image is image  # subtraction in place reaches the caller's array


def test_mask_variance_metadata_given():
    mask = np.ones((30, 80), np.int64)
    var = np.full((30, 80), 2.0)
    md = {"X": 1}
    planes = {"BAD": 3, "EDGE": 4}
    exp = Exposure(np.zeros((30, 80)), mask, var, DET, planes, md)
    assert exp.mask.dtype == np.int32 and exp.mask.sum() == 30 * 80
    assert exp.variance.dtype == np.float32 and exp.variance[0, 0] == 2.0
    assert exp.metadata is md
    assert exp.mask_planes == planes


def test_default_mask_dictionary_of_afw():
    assert DEFAULT_MASK_PLANES == {
        "BAD": 0, "SAT": 1, "INTRP": 2, "CR": 3, "EDGE": 4, "DETECTED": 5,
        "DETECTED_NEGATIVE": 6, "SUSPECT": 7, "NO_DATA": 8, "VIGNETTED": 9, "STREAK": 10,
    }
    planes = ["BAD", "SAT", "INTRP", "CR", "EDGE", "DETECTED", "DETECTED_NEGATIVE", "SUSPECT",
              "NO_DATA"]
    assert mask_bits(planes) == 0x1FF
    with pytest.raises(ConfigError, match="unknown mask plane 'NOT_A_PLANE'"):
        mask_bits(["BAD", "NOT_A_PLANE"])  # as afw refuses it (tests/test_masks.py)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"image": np.zeros((30, 80)), "detector": None}, "needs a detector"),
        ({"image": np.zeros((30, 81)), "detector": DET}, r"'D'.*\(30, 81\).*\(30, 80\)"),
        ({"image": np.zeros(2400), "detector": DET}, "'D'.*2-D"),
        ({"image": np.zeros((30, 80)), "mask": np.zeros((30, 79)), "detector": DET},
         "'D'.*mask shape"),
        ({"image": np.zeros((30, 80)), "variance": np.zeros((29, 80)), "detector": DET},
         "'D'.*variance shape"),
    ],
)
def test_bad_inputs(kwargs, match):
    with pytest.raises(InputError, match=match):
        Exposure(**kwargs)


# -- as_exposure_parts: one adapter for every exposure shape -----------------------------------
def _sim():
    from ampoffset_dask.simulate import simulate_detector

    det = detector_from_boxes("R22_S11", 80, 60, [(f"A{i}{j}", 40 * j, 30 * i, 40, 30)
                                                  for i in range(2) for j in range(2)], id=94)
    return det, simulate_detector(det, seed=2, n_stars=3, n_cosmic_rays=0)


def test_parts_of_every_supported_shape(tmp_path):
    from afw_fakes import FakeExposure

    from ampoffset_dask.exposure import as_exposure_parts, is_exposure_like
    from ampoffset_dask.io.fits import open_lazy, read_exposure
    from ampoffset_dask.io.writer import write_exposure
    from ampoffset_dask.io.xarray import open_exposure

    det, sim = _sim()
    planes = dict(DEFAULT_MASK_PLANES, CUSTOM=12)
    path = write_exposure(tmp_path / "d.fits", sim.image, sim.mask, sim.variance,
                          mask_planes=planes, detector=det, header={"VISIT": 3})
    ours = Exposure(sim.image, sim.mask, detector=det, mask_planes=planes)
    read = read_exposure(path)
    lazy = open_lazy(path)
    assert not read.lazy and lazy.lazy and type(read) is type(lazy)
    ds = open_exposure(path)
    fake = FakeExposure(sim.image, det, sim.mask, planes)
    for obj in (ours, read, lazy, ds, fake, (sim.image, sim.mask, det, planes)):
        assert is_exposure_like(obj) or isinstance(obj, tuple)
        parts = as_exposure_parts(obj)
        assert (parts.detector.amp_names, parts.detector.shape) == (det.amp_names, det.shape)
        assert parts.mask_planes == planes, type(obj)
        np.testing.assert_array_equal(np.asarray(parts.image), sim.image, strict=False)
        np.testing.assert_array_equal(np.asarray(parts.mask), sim.mask)
    assert as_exposure_parts(ours).image is ours.image  # in-place correction reaches it
    assert as_exposure_parts(fake).image is fake.image.array
    assert as_exposure_parts(ours).metadata is ours.metadata
    assert as_exposure_parts(fake).metadata is fake.getMetadata()
    assert as_exposure_parts(ds).metadata is None and "ampoffset_metadata" not in ds.attrs
    assert (as_exposure_parts(ds, writes_metadata=True).metadata
            is ds.attrs["ampoffset_metadata"])
    assert as_exposure_parts(read).metadata is read.metadata  # what the Task records
    assert as_exposure_parts((sim.image, None, det), planes).mask_planes == planes
    assert not is_exposure_like(sim.image)


def test_parts_errors():
    from ampoffset_dask.exposure import as_exposure_parts

    with pytest.raises(InputError, match="unsupported exposure type object"):
        as_exposure_parts(object())
    with pytest.raises(InputError, match=r"\(image, mask, detector\[, mask_planes\]\)"):
        as_exposure_parts((np.zeros((2, 2)),))


def test_measure_detector_and_measure_visit_accept_every_shape(tmp_path):
    from afw_fakes import FakeExposure

    from ampoffset_dask import AmpOffsetConfig, AmpOffsetTask, measure_detector
    from ampoffset_dask.io.fits import open_lazy, read_exposure
    from ampoffset_dask.io.writer import write_exposure
    from ampoffset_dask.io.xarray import open_exposure
    from ampoffset_dask.pipeline.graph import measure_visit

    det, sim = _sim()
    config = AmpOffsetConfig(amp_edge_width=8, amp_edge_inset=2)
    path = write_exposure(tmp_path / "d.fits", sim.image, sim.mask, sim.variance, detector=det,
                          header={"VISIT": 3})
    want = measure_detector(sim.image, sim.mask, det, config).pedestals
    assert np.abs(want).max() > 0.1
    members = {
        "exposure": Exposure(sim.image, sim.mask, detector=det),
        "read": read_exposure(path), "lazy": open_lazy(path), "dataset": open_exposure(path),
        "afw": FakeExposure(sim.image, det, sim.mask), "tuple": (sim.image, sim.mask, det),
    }
    for name, obj in members.items():
        if not isinstance(obj, tuple):
            np.testing.assert_array_equal(measure_detector(obj, config=config).pedestals, want,
                                          err_msg=name)
            np.testing.assert_array_equal(AmpOffsetTask(config).run(obj).pedestals, want,
                                          err_msg=name)
    got = measure_visit(members, config=config, scheduler="sync")
    for name, m in got.items():
        np.testing.assert_array_equal(m.pedestals, want, err_msg=name)


def test_task_refuses_to_apply_to_a_lazy_file(tmp_path):
    from ampoffset_dask import AmpOffsetConfig, AmpOffsetTask
    from ampoffset_dask.io.fits import open_lazy
    from ampoffset_dask.io.writer import write_exposure

    det, sim = _sim()
    path = write_exposure(tmp_path / "d.fits", sim.image, detector=det, header={"VISIT": 3})
    config = AmpOffsetConfig(amp_edge_width=8, amp_edge_inset=2, do_apply_amp_offset=True)
    with pytest.raises(InputError, match=r"R22_S11.*in-memory, writable image.*LazyPlane"):
        AmpOffsetTask(config).run(open_lazy(path))
    frozen = sim.image.copy()
    frozen.flags.writeable = False
    with pytest.raises(InputError, match=r"got a read-only ndarray \(np.array\(image\)"):
        AmpOffsetTask(config).run((frozen, None, det))


def test_former_names_still_import():
    from ampoffset_dask import lsst_task
    from ampoffset_dask._pipe_base import Task
    from ampoffset_dask.io.fits import ExposureData, LazyExposure

    assert LazyExposure is ExposureData
    assert lsst_task.Task is Task


def test_applying_to_an_opened_file_records_the_correction(tmp_path):
    """``AmpOffsetTask.run`` on a `read_exposure` result records LSST's keys in its
    ``metadata`` (the mark of a correction among them): written with the image, the file is
    recognised as corrected; `to_exposure` carries them."""
    from ampoffset_dask import AmpOffsetConfig, AmpOffsetTask
    from ampoffset_dask.io.fits import inspect_file, read_exposure
    from ampoffset_dask.io.writer import write_exposure
    from ampoffset_dask.pipeline.inputs import discover_inputs, plan_tasks

    det, sim = _sim()
    path = write_exposure(tmp_path / "d.fits", sim.image, detector=det, header={"VISIT": 3})
    data = read_exposure(path)
    config = AmpOffsetConfig(amp_edge_width=8, amp_edge_inset=2, do_apply_amp_offset=True)
    result = AmpOffsetTask(config).run(data)
    key = "LSST ISR AMPOFFSET PEDESTAL SUBTRACTED"
    assert data.metadata[key] is True
    assert data.metadata[f"LSST ISR AMPOFFSET PEDESTAL {det.amp_names[0]}"] == result.pedestals[0]
    assert data.to_exposure().metadata[key] is True
    out = write_exposure(tmp_path / "corrected.fits", data.image, data.mask, data.variance,
                         detector=det, header={"VISIT": 3}, metadata=data.metadata)
    assert inspect_file(out).kind == "exposure"
    (task,) = plan_tasks(discover_inputs([str(out)]))
    assert "already corrected" in task.flag


def test_masked_array_image_marks_its_mask_bad():
    # A MaskedArray's own mask used to be dropped: its pixels counted as good.
    from ampoffset_dask import AmpOffsetConfig, measure_detector

    det = detector_from_boxes("D", 200, 100, [("A", 0, 0, 100, 100), ("B", 100, 0, 100, 100)])
    image = np.random.default_rng(1).normal(1000.0, 1.0, det.shape).astype(np.float32)
    image[:, 100:] += 3.0
    image[:, 80:95] += 50.0  # in amp A's edge strip
    masked = np.ma.MaskedArray(image, mask=np.zeros(image.shape, bool))
    masked[:, 80:95] = np.ma.masked
    config = AmpOffsetConfig(amp_edge_width=16, do_background=False, do_detection=False)

    exp = Exposure(masked, detector=det)
    bad = 1 << DEFAULT_MASK_PLANES["BAD"]
    np.testing.assert_array_equal(exp.mask != 0, np.ma.getmaskarray(masked))
    assert set(np.unique(exp.mask)) == {0, bad}
    np.testing.assert_array_equal(exp.image, image)
    ours = measure_detector(exp, config=config)
    assert ours.pedestals[1] - ours.pedestals[0] == pytest.approx(3.0, abs=0.1)
    np.testing.assert_array_equal(ours.pedestals,
                                  measure_detector(masked, detector=det, config=config).pedestals)
    # unmasked, the bright block is measured and do-no-harm zeroes the step
    assert not measure_detector(Exposure(image, detector=det), config=config).pedestals.any()

    # With a mask given too, the array's pixels are added as BAD; the given mask is kept.
    given = np.zeros(image.shape, np.int32)
    given[0, 0] = 1 << DEFAULT_MASK_PLANES["SAT"]
    exp = Exposure(masked, given, detector=det)
    assert not given[:, 80:95].any()
    assert exp.mask[0, 0] == 1 << DEFAULT_MASK_PLANES["SAT"]
    assert (exp.mask[:, 80:95] == bad).all()

    with pytest.raises(InputError, match="no BAD plane"):
        Exposure(masked, detector=det, mask_planes={"SAT": 1})


def test_measure_detector_keeps_a_masked_arrays_mask_beside_a_mask_given():
    # The mask given replaced the array's own: its masked pixels were measured.
    from ampoffset_dask import AmpOffsetConfig, measure_detector

    det = detector_from_boxes("D", 200, 100, [("A", 0, 0, 100, 100), ("B", 100, 0, 100, 100)])
    image = np.random.default_rng(1).normal(1000.0, 1.0, det.shape).astype(np.float32)
    image[:, 100:] += 3.0
    image[:, 80:95] += 50.0
    masked = np.ma.MaskedArray(image, mask=np.zeros(image.shape, bool))
    masked[:, 80:95] = np.ma.masked
    config = AmpOffsetConfig(amp_edge_width=16, do_background=False, do_detection=False)
    alone = measure_detector(masked, detector=det, config=config).pedestals
    assert alone[1] - alone[0] == pytest.approx(3.0, abs=0.1)
    given = np.zeros(image.shape, np.uint8)
    given[50, 120:125] = 1  # another plane's bit (SAT)
    both = measure_detector(masked, given, detector=det, config=config).pedestals
    assert both[1] - both[0] == pytest.approx(3.0, abs=0.1)
    assert not given[:, 80:95].any()  # the caller's mask is left alone

    # With planes of its own, the masked pixels get that BAD bit.
    planes = {"BAD": 9, "SAT": 1, "NO_DATA": 8}
    from ampoffset_dask.exposure import as_exposure_parts

    parts = as_exposure_parts(masked, planes)
    assert set(np.unique(parts.mask)) == {0, 1 << 9} and parts.mask_planes == planes
    np.testing.assert_array_equal(
        measure_detector(masked, detector=det, config=config, mask_planes=planes).pedestals,
        alone)


def test_masks_are_read_as_measure_detector_reads_them():
    """``Exposure`` cast its mask to int32: a boolean mask landed on bit 0 (here STREAK,
    which is not ignored, so the flagged pixels counted as good) and a fractional float
    mask was truncated, where `measure_detector` uses the BAD bit and refuses fractions."""
    from ampoffset_dask import AmpOffsetConfig, AmpOffsetTask, measure_detector

    planes = {"STREAK": 0, "BAD": 1, "SAT": 2, "EDGE": 4, "NO_DATA": 8, "DETECTED": 5,
              "DETECTED_NEGATIVE": 6, "SUSPECT": 7, "CR": 3, "INTRP": 9}
    rng = np.random.default_rng(2)
    image = rng.normal(100.0, 1.0, (30, 80)).astype(np.float32)
    image[:, 40:] += 2.0
    flagged = np.zeros(image.shape, bool)
    flagged[:, 30:40] = True  # the edge of amp A, raised where flagged
    image[flagged] += 3.0
    exp = Exposure(image, flagged, detector=DET, mask_planes=planes)
    np.testing.assert_array_equal(exp.mask, np.where(flagged, 2, 0))
    config = {"doBackground": False, "doDetection": False, "ampEdgeMinFrac": 0.0,
              "ampEdgeWidth": 8, "ampEdgeInset": 2}
    config = AmpOffsetConfig.from_lsst(config)
    via_task = AmpOffsetTask(config=config).run(exp).pedestals
    direct = measure_detector(image, flagged, DET, config, mask_planes=planes).pedestals
    np.testing.assert_array_equal(via_task, direct)
    with pytest.raises(InputError, match=r"'D'.*not mask bits"):
        Exposure(image, np.full(image.shape, 0.5, np.float32), detector=DET)
    whole = Exposure(image, np.full(image.shape, 2.0), detector=DET)  # floats holding bits
    assert whole.mask.dtype == np.int32 and (whole.mask == 2).all()
