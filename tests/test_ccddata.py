"""astropy CCDData: in-memory measure/correct, files written by CCDData.write, ccdproc recipe.

``astropy.nddata`` is imported by the functions that use it: with astropy.wcs and
astropy.coordinates it costs about 1 CPU s in every test process that collects this module.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from astropy import units as u
from golden import lsst_config, lsst_detector, lsst_fixture, lsst_image

from ampoffset_dask import Amplifier, AmpOffsetTask, Detector, Exposure, measure_detector
from ampoffset_dask.ccddata import ccddata_to_exposure, correct_ccddata, measure_ccddata
from ampoffset_dask.errors import InputError
from ampoffset_dask.io.fits import inspect_file, open_lazy, read_exposure
from ampoffset_dask.masks import DEFAULT_MASK_PLANES

FIXTURE = lsst_fixture()
DET = lsst_detector(FIXTURE)
PEDESTAL_KEY = "LSST ISR AMPOFFSET PEDESTAL {}"


def _ccd(kind="artificial", mask=None):
    from astropy.nddata import CCDData, StdDevUncertainty

    image = lsst_image(kind, "constant")
    unc = StdDevUncertainty(np.full(image.shape, 2.0, np.float32))
    return CCDData(image, unit=u.adu, mask=mask, uncertainty=unc, meta={"OBJECT": "flat"})


def _config(kind="artificial"):
    return dataclasses.replace(lsst_config(kind, background=True, weighted=True),
                               do_apply_amp_offset=False)


def test_measure_ccddata_matches_published_lsst_pedestals():
    result = measure_ccddata(_ccd(), DET, _config())
    expected = FIXTURE["cases"]["constant_background"]["published_pedestals"]["weighted"][
        "artificial"]
    np.testing.assert_allclose(result.pedestals, expected, rtol=0, atol=1e-6)


def test_correct_ccddata_returns_new_frame_with_lsst_keys_and_leaves_input_alone():
    ccd = _ccd()
    before = ccd.data.copy()
    out = correct_ccddata(ccd, DET, _config())
    # the input is untouched
    np.testing.assert_array_equal(ccd.data, before)
    assert not any("AMPOFFSET" in str(k) for k in ccd.meta)
    # same pixels as LSST's AmpOffsetTask.run applying the pedestals to an exposure
    exp = Exposure(lsst_image("artificial", "constant"), detector=DET)
    ref = AmpOffsetTask(dataclasses.replace(_config(), do_apply_amp_offset=True)).run(exp)
    assert out.data.dtype == np.float32
    np.testing.assert_array_equal(out.data, exp.image)
    for amp, value in zip(DET.amplifiers, ref.pedestals, strict=True):
        assert out.header[PEDESTAL_KEY.format(amp.name)] == pytest.approx(value, abs=0)
    assert out.header["LSST ISR AMPOFFSET PEDESTAL SUBTRACTED"] is True
    first = ref.interfaces[0]
    assert out.header[f"LSST ISR AMPOFFSET INTERFACEOFFSET {first.id}"] == pytest.approx(
        first.offset_raw, abs=0)
    assert out.header["OBJECT"] == "flat"
    assert out.unit == u.adu
    np.testing.assert_array_equal(out.uncertainty.array, ccd.uncertainty.array)


def test_correct_ccddata_leaves_the_header_of_its_input_alone():
    """A frame whose header already holds the pedestal cards (corrected once, read back from
    a file): the pedestal cards were written into the caller's header too (astropy's Header
    built from a Header shares its cards), so a corrected frame corrected again showed the
    second pass's pedestals over pixels that had the first pass's subtracted."""
    from astropy.io import fits
    from astropy.nddata import CCDData

    image = lsst_image("artificial", "constant")
    header = fits.Header()
    header["OBJECT"] = "field"
    header[f"HIERARCH {PEDESTAL_KEY.format(DET.amplifiers[0].name)}"] = 123.0
    ccd = CCDData(image, unit=u.adu, meta=header)
    out = correct_ccddata(ccd, DET, _config())
    key = PEDESTAL_KEY.format(DET.amplifiers[0].name)
    assert ccd.header[key] == 123.0 and "LSST ISR AMPOFFSET PEDESTAL SUBTRACTED" not in ccd.header
    first = out.header[key]
    assert first != 123.0
    again = correct_ccddata(out, DET, _config())
    assert out.header[key] == first and again.header[key] != first


def _masked_case():
    """A frame whose masked pixels (mask values 1, 7 and 255) sit on amp edges with junk."""
    image = lsst_image("artificial", "constant")
    mask = np.zeros(image.shape, np.uint8)
    a0, a1 = DET.amplifiers[0], DET.amplifiers[1]
    mask[a0.y0:a0.y0 + 90, a0.x1 - 20:a0.x1] = 1  # whole edge strips: medians cannot hide it
    mask[a1.y0 + 40:a1.y0 + 60, a1.x0:a1.x0 + 4] = 7
    mask[a0.y1 - 6:a0.y1, a0.x0:a0.x0 + 50] = 255
    junk = image.copy()
    junk[mask != 0] += 8.0
    return image, mask, junk


def test_nonzero_mask_values_are_bad_pixels():
    from astropy.nddata import CCDData

    _, mask, junk = _masked_case()
    exp = ccddata_to_exposure(CCDData(junk, unit=u.adu, mask=mask), DET)
    assert set(np.unique(exp.mask)) == {0, 1}
    assert exp.mask_planes == {"BAD": 0}
    # no detection: only the mask keeps the junk out of the edge statistics
    config = dataclasses.replace(_config(), do_background=False, do_detection=False)
    masked = measure_ccddata(CCDData(junk, unit=u.adu, mask=mask), DET, config)
    # the same pixels flagged BAD in an afw-style mask (default plane dictionary)
    afw_mask = np.where(mask != 0, 1 << DEFAULT_MASK_PLANES["BAD"], 0).astype(np.int32)
    ref = measure_detector(junk, afw_mask, DET, config, DEFAULT_MASK_PLANES)
    np.testing.assert_allclose(masked.pedestals, ref.pedestals, rtol=0, atol=1e-9)
    unmasked = measure_ccddata(CCDData(junk, unit=u.adu), DET, config)
    assert np.max(np.abs(unmasked.pedestals - ref.pedestals)) > 1.0


def test_detector_by_name_needs_a_camera_and_shape_must_match():
    with pytest.raises(InputError, match="pass camera="):
        measure_ccddata(_ccd(), "R22_S11")
    with pytest.raises(InputError, match="trim the overscan"):
        measure_ccddata(_ccd(), "R22_S11", camera="lsstcam")


# ------------------------------------------------------------------------------------------
# Files written by CCDData.write
# ------------------------------------------------------------------------------------------
@pytest.fixture
def ccd_file(tmp_path):
    from astropy.nddata import CCDData, StdDevUncertainty

    image, mask, junk = _masked_case()
    ccd = CCDData(junk, unit=u.adu, mask=mask.astype(bool),
                  uncertainty=StdDevUncertainty(np.full(image.shape, 3.0, np.float32)),
                  meta={"VISIT": 42})
    path = tmp_path / "frame.fits"
    ccd.write(path)
    return path, ccd, image, mask


def test_ccddata_file_layout_is_recognised(ccd_file):
    path, _, _, _ = ccd_file
    info = inspect_file(path)
    assert info.kind == "ccddata"
    assert (info.image_hdu, info.variance_hdu) == (0, None)
    assert info.mask_hdu is not None and info.mask_planes == {"BAD": 0}
    assert info.visit == 42


def test_ccddata_file_read_whole_and_lazily(ccd_file):
    path, ccd, _, mask = ccd_file
    data = read_exposure(path, detector=DET)
    np.testing.assert_array_equal(data.image, ccd.data.astype(np.float32))
    np.testing.assert_array_equal(data.mask, (mask != 0).astype(np.int32))
    lazy = open_lazy(path, detector=DET)
    np.testing.assert_array_equal(lazy.mask[:, :], data.mask)
    a = DET.amplifiers[1]
    np.testing.assert_array_equal(lazy.mask[a.y0:a.y0 + 70, a.x0:a.x0 + 6],
                                  data.mask[a.y0:a.y0 + 70, a.x0:a.x0 + 6])


def test_ccddata_file_through_the_pipeline_task(ccd_file, tmp_path):
    from ampoffset_dask.pipeline.detector_job import process_file

    path, ccd, _, _ = ccd_file
    config = _config()
    expected = measure_ccddata(ccd, DET, config).pedestals
    full = process_file(path, DET, config)
    assert full.status == "ok", full.error
    np.testing.assert_allclose(full.pedestals, expected, rtol=0, atol=1e-9)
    edges = dataclasses.replace(config, do_background=False, do_detection=False)
    lazy = process_file(path, DET, edges)
    assert lazy.status == "ok", lazy.error
    np.testing.assert_allclose(lazy.pedestals, measure_ccddata(ccd, DET, edges).pedestals,
                               rtol=0, atol=1e-9)


def test_ccddata_file_without_geometry_fails_clearly(ccd_file):
    from ampoffset_dask.pipeline.detector_job import process_file

    path, _, _, _ = ccd_file
    result = process_file(path, None, _config())
    assert result.status == "failed"
    assert str(path) in result.error and "amp layout" in result.error


# ------------------------------------------------------------------------------------------
# The ccdproc recipe of docs/ccddata.md: per-amp overscan and trim, then amp offsets
# ------------------------------------------------------------------------------------------
def test_ccdproc_recipe_removes_amp_offsets():
    from astropy.nddata import CCDData

    ccdproc = pytest.importorskip("ccdproc")  # in the test extra; skipped only outside it

    # A 2-amp raw frame: each amp 64 data columns then 8 overscan columns, 80 rows.
    rng = np.random.default_rng(5)
    bias = (1000.0, 1040.0)
    gain_step = (0.0, 3.0)  # what remains after overscan: amp R is 3 ADU too bright
    raw = np.empty((80, 2 * 72), np.float32)
    for k in range(2):
        x = k * 72
        raw[:, x:x + 64] = bias[k] + 200.0 + gain_step[k] + rng.normal(0, 2.0, (80, 64))
        raw[:, x + 64:x + 72] = bias[k] + rng.normal(0, 2.0, (80, 8))
    frame = CCDData(raw, unit=u.adu)

    # the recipe (docs/ccddata.md)
    amps = []
    for k in range(2):
        x = k * 72
        amp = frame[:, x:x + 72]
        amp = ccdproc.subtract_overscan(amp, fits_section="[65:72, :]", median=True,
                                        overscan_axis=1)
        amps.append(ccdproc.trim_image(amp, fits_section="[1:64, :]"))
    assembled = CCDData(np.hstack([a.data for a in amps]), unit=u.adu)
    detector = Detector("kast", 128, 80, (Amplifier("L", 0, 0, 64, 80),
                                          Amplifier("R", 64, 0, 64, 80)))
    from ampoffset_dask import AmpOffsetConfig

    config = AmpOffsetConfig(do_background=False, do_detection=False, amp_edge_width=16)
    corrected = correct_ccddata(assembled, detector, config)

    pedestals = [corrected.header[PEDESTAL_KEY.format(n)] for n in ("L", "R")]
    np.testing.assert_allclose(pedestals, [-1.5, 1.5], atol=0.3)
    left, right = corrected.data[:, :64].mean(), corrected.data[:, 64:].mean()
    assert abs(left - right) < 0.3
    assert abs(assembled.data[:, 64:].mean() - assembled.data[:, :64].mean() - 3.0) < 0.3


def test_a_corrected_frame_written_out_claims_no_stale_checksum(tmp_path):
    """A frame read from a uint16 file written with checksums kept the input's CHECKSUM,
    DATASUM, BITPIX and BZERO in its header: written out, the corrected file claimed a
    checksum it does not have."""
    from astropy.io import fits
    from astropy.nddata import CCDData

    image = np.round(lsst_image("artificial", "constant") + 1000).astype(np.uint16)
    path = tmp_path / "in.fits"
    fits.PrimaryHDU(image).writeto(path, checksum=True)
    ccd = CCDData.read(path, unit="adu")
    assert {"CHECKSUM", "DATASUM", "BZERO"} <= set(ccd.header)
    out = correct_ccddata(ccd, DET, _config())
    assert not {"CHECKSUM", "DATASUM", "BZERO", "BSCALE", "BITPIX"} & set(out.header)
    assert {"CHECKSUM", "DATASUM", "BZERO"} <= set(ccd.header)  # the input's header kept
    written = tmp_path / "out.fits"
    out.write(written)
    with fits.open(written) as hdul:
        # 2: no checksum claimed (0, a wrong one, before)
        assert hdul[0].verify_checksum() == 2 and hdul[0].verify_datasum() == 2
        np.testing.assert_array_equal(hdul[0].data, out.data)
    dict_meta = CCDData(image.astype(np.float32), unit="adu",
                        meta={"checksum": "x", "OBJECT": "f", "list": [1]})
    assert set(correct_ccddata(dict_meta, DET, _config()).meta) >= {"OBJECT", "list"}
    assert "checksum" not in correct_ccddata(dict_meta, DET, _config()).meta
