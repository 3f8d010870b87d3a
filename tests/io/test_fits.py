"""FITS readers and writers: real LSST files, user cameras, header geometry, bad input."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from astropy.io import fits
from io_helpers import REAL, SHARED, kast_camera_doc

from ampoffset_dask import InputError
from ampoffset_dask.cameras import get_camera
from ampoffset_dask.geometry import Detector
from ampoffset_dask.io.fits import (
    MaskPlanesWarning,
    inspect_file,
    read_exposure,
    read_section,
    resolve_detector,
    write_exposure,
)
from ampoffset_dask.masks import DEFAULT_MASK_PLANES

BOT = REAL / "lsstcam_bot_spots"
RAW_HEADERS = REAL / "lsst_raw_headers_zeroed"
AFW_LATISS = REAL / "lsst_afw_formats" / "LATISS_bias_2018-09-21_afwExposure_zeroed.fits"
KAST = REAL / "kast_blue_pypeit"
MINI_ITL = SHARED / "golden" / "mini_itl.fits.gz"


def _small_detector(name="D", amp_w=6, amp_h=4, nx=2, ny=2, det_id=None) -> Detector:
    return Detector.from_dict({
        "name": name, "id": det_id, "width": amp_w * nx, "height": amp_h * ny,
        "amplifiers": [{"name": f"A{iy}{ix}", "x0": ix * amp_w, "y0": iy * amp_h,
                        "width": amp_w, "height": amp_h}
                       for iy in range(ny) for ix in range(nx)],
    })


# -- LSST raws --------------------------------------------------------------------------------
@pytest.mark.parametrize("vendor, detector", [("e2v", "R22_S11"), ("itl", "R02_S02")])
def test_lsst_raw_assembly_matches_lsst(vendor, detector):
    """The camera's raw boxes and flips reproduce LSST's own assembled test frames exactly."""
    path = BOT / f"{vendor}_spot.fits.gz"
    info = inspect_file(path)
    assert info.kind == "raw" and info.camera == "lsstcam" and len(info.segments) == 16
    data = read_exposure(path, detector=detector)
    assert data.detector.name == detector
    expected = fits.getdata(BOT / f"{vendor}_expected_assembled.fits.gz")
    assert data.image.shape == expected.shape
    np.testing.assert_array_equal(data.image, expected)


def test_e2v_raw_identity_from_raftbay_ccdslot():
    info = inspect_file(BOT / "e2v_spot.fits.gz")
    assert info.detector == "R22_S11" and info.detector_id == 94
    # LSST's exposure id of this file (obs_lsst's raw assembly test names it): the CCS
    # controller ("C") moved day_obs on by 1000 years until 2023-10-04
    assert info.visit == 3019103101985
    assert resolve_detector(info).name == "R22_S11"
    assert info.shape == (4004, 4096)


@pytest.mark.parametrize("controller, day, seq, visit", [
    ("O", 20191031, 1985, 2019103101985),
    ("C", 20191031, 1985, 3019103101985),
    ("C", 20231005, 7, 2023100500007),  # one counter with the OCS from then on
    ("H", 20240101, 12, 4024010100012),
    ("S", 20250417, 3, 7025041700003),
    ("S", 20250418, 3, 2025041800003),
    ("c ", 20191031, 1985, 3019103101985),
    (None, 20191031, 1985, 2019103101985),
])
def test_lsst_raw_visit_follows_the_controller(tmp_path, controller, day, seq, visit):
    """Raws of two controllers with the same day and sequence number are two exposures:
    each gets LSST's own exposure id, not one shared visit (one row replacing the other)."""
    header = fits.Header({"DAYOBS": str(day), "SEQNUM": seq, "DETNAME": "R22_S11"})
    if controller is not None:
        header["CONTRLLR"] = controller
    path = tmp_path / "raw.fits"
    fits.PrimaryHDU(np.zeros((8, 8), np.float32), header).writeto(path)
    assert inspect_file(path).visit == visit


@pytest.mark.parametrize("day, seq, visit, problem", [
    ("2019-10-31", 1985, 3019103101985, ""),  # a date, as LSST's exposure ids take it
    ("2019-10-31T00:00:00", 1985, 3019103101985, ""),
    ("20191030", 101985, None, "header keyword SEQNUM = 101985 is outside 0-99999"),
    ("yesterday", 1985, None, "header keyword DAYOBS = 'yesterday' is not a day"),
])
def test_day_obs_as_a_date_and_sequence_numbers_beyond_five_digits(tmp_path, day, seq, visit,
                                                                  problem):
    """A five-digit sequence number is LSST's limit: 20191030/101985 gave the id of
    20191031/1985, another exposure."""
    header = fits.Header({"DAYOBS": day, "SEQNUM": seq, "CONTRLLR": "C", "DETNAME": "R22_S11"})
    path = tmp_path / "raw.fits"
    fits.PrimaryHDU(np.zeros((8, 8), np.float32), header).writeto(path)
    info = inspect_file(path)
    assert info.visit == visit
    assert info.visit_problem.startswith(problem)


def test_an_unknown_controller_gives_no_visit_and_says_why(tmp_path):
    header = fits.Header({"DAYOBS": "20191031", "SEQNUM": 1985, "CONTRLLR": "Z",
                          "DETNAME": "R22_S11"})
    path = tmp_path / "raw.fits"
    fits.PrimaryHDU(np.zeros((8, 8), np.float32), header).writeto(path)
    info = inspect_file(path)
    assert info.visit is None
    assert info.visit_problem == (
        "header keyword CONTRLLR = 'Z' is not a camera controller code LSST knows (O, C, H, "
        "P, Q, S): its exposure id, the visit number, is unknown")


@pytest.mark.parametrize("name, camera, detector, compressed", [
    ("LSSTCam_BOT_MC_C_20211212_000310_R22_S22_E2V_flat.fits.gz", "lsstcam", "R22_S22", True),
    ("LSSTCam_MC_C_20190319_000001_R10_S02_ITL.fits.gz", "lsstcam", "R10_S02", False),
    ("LSSTComCam_CC_C_20190530_000001_R22_S00_ITL.fits.gz", "lsstcomcam", "R22_S00", False),
    # LATISS raws name no detector: the camera has only one
    ("LATISS_2018-09-20_065_RXX_S00_ITL.fits.gz", "latiss", "RXX_S00", False),
])
def test_raw_headers_identity(name, camera, detector, compressed):
    info = inspect_file(RAW_HEADERS / name)
    assert (info.kind, info.camera, info.detector, info.compressed) == (
        "raw", camera, detector, compressed)
    det = resolve_detector(info)
    assert det.name == detector and info.detector_id == det.id
    assert det.shape == info.shape


def test_compressed_raw_reads_with_overscan():
    data = read_exposure(RAW_HEADERS / "LSSTCam_BOT_MC_C_20211212_000310_R22_S22_E2V_flat.fits.gz",
                         overscan=True)
    assert data.image.shape == (4004, 4096) and data.detector.name == "R22_S22"
    assert not data.image.any()  # zeroed pixels stay zero after overscan subtraction


def _write_tiny_raw(path, camera):
    det = camera["R00_S00"]
    truth = np.arange(96, dtype=np.float64).reshape(8, 12) * 3.0
    hdus = [fits.PrimaryHDU()]
    hdus[0].header["RAFTBAY"] = "R00"
    hdus[0].header["CCDSLOT"] = "S00"
    for amp, raw in zip(det, camera.raw_amps(det), strict=True):
        block = truth[amp.slices]
        if raw.flip_y:
            block = block[::-1]
        if raw.flip_x:
            block = block[:, ::-1]
        bias = 500.0 + 7.0 * np.arange(4) + 10 * raw.hdu
        seg = np.zeros((4, 11), np.int32)
        seg[:, 2:8] = block + bias[:, None]
        seg[:, 8:11] = bias[:, None]
        hdus.append(fits.ImageHDU(seg.astype(">i4"), name=f"Segment{amp.name[1:]}"))
    fits.HDUList(hdus).writeto(path)
    return truth


def test_user_camera_raw_assembly_with_flips_and_overscan(tmp_path, tiny_camera):
    path = tmp_path / "tiny_raw.fits"
    truth = _write_tiny_raw(path, tiny_camera)
    info = inspect_file(path)
    assert info.kind == "raw" and info.detector == "R00_S00"
    data = read_exposure(path, camera=tiny_camera, overscan=True)
    np.testing.assert_array_equal(data.image, truth.astype(np.float32))
    raw = read_exposure(path, camera=tiny_camera, overscan="none")
    assert (raw.image - truth).min() >= 500  # bias left in without overscan subtraction


def test_raw_missing_a_segment_is_refused(tmp_path, tiny_camera):
    """A raw without one of its segments: the HDU number the camera gives for that amp now
    holds the next segment, whose pixels that amp must not take."""
    path = tmp_path / "tiny_raw.fits"
    _write_tiny_raw(path, tiny_camera)
    with fits.open(path) as hdul:
        del hdul[2]  # Segment11: HDU 2 now holds Segment01
        hdul.writeto(tmp_path / "missing.fits")
    with pytest.raises(InputError, match=r"missing.fits: detector 'R00_S00': no raw HDU "
                                         r"Segment11 for amp 'C11' \(the file's segments: "
                                         r"SEGMENT00, SEGMENT01, SEGMENT10\)"):
        read_exposure(tmp_path / "missing.fits", camera=tiny_camera)


def test_raw_with_a_segment_named_twice_is_refused(tmp_path, tiny_camera):
    path = tmp_path / "tiny_raw.fits"
    _write_tiny_raw(path, tiny_camera)
    with fits.open(path) as hdul:
        hdul[3].header["EXTNAME"] = "Segment11"  # Segment01's pixels, under C11's name
        hdul.writeto(tmp_path / "twice.fits")
    assert inspect_file(tmp_path / "twice.fits").duplicate_names == {"SEGMENT11": (2, 3)}
    with pytest.raises(InputError, match=r"twice.fits: HDUs 2, 3 share the EXTNAME Segment11"):
        read_exposure(tmp_path / "twice.fits", camera=tiny_camera)


def test_raw_segments_found_by_number_when_unnamed(tmp_path, tiny_camera):
    """Segments without EXTNAMEs are read from the HDU numbers the camera gives."""
    path = tmp_path / "tiny_raw.fits"
    truth = _write_tiny_raw(path, tiny_camera)
    with fits.open(path) as hdul:
        for hdu in hdul[1:]:
            del hdu.header["EXTNAME"]
        hdul.writeto(tmp_path / "unnamed.fits")
    data = read_exposure(tmp_path / "unnamed.fits", camera=tiny_camera, detector="R00_S00",
                         overscan=True)
    np.testing.assert_array_equal(data.image, truth.astype(np.float32))


def test_raw_without_camera_boxes_is_refused(tmp_path, tiny_camera):
    path = tmp_path / "tiny_raw.fits"
    _write_tiny_raw(path, tiny_camera)
    with pytest.raises(InputError, match=r"tiny_raw.fits.*no known camera|tiny_raw.fits.*camera"):
        read_exposure(path)


# -- LSST exposure files ----------------------------------------------------------------------
def test_lsst_afw_exposure_file():
    info = inspect_file(AFW_LATISS)
    assert info.kind == "exposure" and info.compressed
    assert (info.image_hdu, info.mask_hdu, info.variance_hdu) == (1, 2, 3)
    assert info.detector == "RXX_S00"
    # bits differ from afw's defaults: read from MP_* keywords
    assert info.mask_planes["CROSSTALK"] == 10 and info.mask_planes["UNMASKEDNAN"] == 9
    assert "VIGNETTED" not in info.mask_planes
    # The amps are those of the Detector the file carries in its archive tables (what
    # exposure.getDetector() gives LSST's task): the pre-2020 layout, C10 at the bottom
    # left, where the built-in LATISS camera now has C00.
    builtin = get_camera("latiss")["RXX_S00"]
    for data in (read_exposure(AFW_LATISS), read_exposure(AFW_LATISS, camera="latiss")):
        det = data.detector
        assert (det.name, det.id, det.shape) == ("RXX_S00", 0, (4000, 4072))
        assert sorted(det.amp_names) == sorted(builtin.amp_names)
        assert (det["C10"].x0, det["C10"].y0) == (0, 0)
        assert (builtin["C10"].x0, builtin["C10"].y0) == (0, 2000)
        assert {(a.x0, a.y0, a.width, a.height) for a in det} == {
            (a.x0, a.y0, a.width, a.height) for a in builtin}
        assert data.image.shape == (4000, 4072) and data.mask.dtype == np.int32
    assert resolve_detector(info) == read_exposure(AFW_LATISS).detector
    # an explicit detector still wins
    assert read_exposure(AFW_LATISS, detector=builtin).detector == builtin
    strip = read_section(AFW_LATISS, 1, (slice(0, 4000), slice(0, 20)))
    assert strip.shape == (4000, 20) and strip.dtype.isnative


def test_mini_itl_golden_with_user_detector():
    expected = json.loads((SHARED / "golden" / "mini_itl_expected.json").read_text())
    det = {"name": "mini_itl", "width": 1024, "height": 1000,
           "amplifiers": expected["amps_in_detector_order"]}
    with pytest.raises(InputError, match=r"mini_itl.fits.gz: cannot tell the amp layout"):
        read_exposure(MINI_ITL)
    data = read_exposure(MINI_ITL, detector=det)
    assert data.detector.amp_names[0] == "C10" and data.image.shape == (1000, 1024)
    assert data.mask_planes["NO_DATA"] == 8 and "STREAK" not in data.mask_planes


# -- single images with a user camera, header geometry -------------------------------------------
def test_kast_two_amp_frames_with_user_camera(tmp_path):
    cam_file = tmp_path / "kast.json"
    cam_file.write_text(json.dumps(kast_camera_doc()))
    bias = read_exposure(KAST / "b21.fits.gz", camera=str(cam_file), detector="kast_blue",
                         overscan=True)
    assert bias.detector.amp_names == ("L", "R") and bias.image.shape == (350, 2048)
    left, right = (float(np.median(bias.image[:, a.x0:a.x1])) for a in bias.detector)
    assert abs(left) < 3 and abs(right) < 3  # overscan removes each amp's own bias level
    raw = read_exposure(KAST / "b21.fits.gz", camera=str(cam_file), detector="kast_blue",
                        overscan="none")
    l_raw, r_raw = (float(np.median(raw.image[:, a.x0:a.x1])) for a in raw.detector)
    assert 900 < l_raw < 1000 and 900 < r_raw < 1000 and abs(r_raw - l_raw) > 10


def test_a_plain_image_is_never_cut_with_another_detectors_raw_boxes(tmp_path):
    """An assembled ITL-size image read as an e2v detector is refused for its size: the
    camera's per-segment raw boxes say nothing of a single image (they once cut every amp
    from the same corner, and the run came back ok with meaningless pedestals)."""
    itl = get_camera("lsstcam")["R02_S02"]
    path = tmp_path / "plain_itl.fits"
    image = np.random.default_rng(0).normal(1000.0, 1.0, itl.shape).astype(np.float32)
    fits.PrimaryHDU(image).writeto(path)
    with pytest.raises(InputError, match=r"image shape \(4000, 4072\).*does not match "
                                         r"detector 'R22_S11'"):
        read_exposure(path, camera="lsstcam", detector="R22_S11")
    np.testing.assert_array_equal(
        read_exposure(path, camera="lsstcam", detector="R02_S02").image, image)


def test_overlapping_raw_boxes_are_refused(tmp_path):
    """A single-image camera layout whose boxes overlap in the file cannot be right."""
    doc = kast_camera_doc()
    amps = doc["amp_layouts"]["kast"]["amps"]
    amps[1]["raw_data_bbox"] = [1000, 0, 1024, 350]  # overlaps L's columns 1000-1023
    cam_file = tmp_path / "kast.json"
    cam_file.write_text(json.dumps(doc))
    with pytest.raises(InputError, match=r"amps 'L' and 'R' on overlapping pixels"):
        read_exposure(KAST / "b21.fits.gz", camera=str(cam_file), detector="kast_blue")


def test_header_geometry_decam_style(tmp_path):
    """DATASECA/B + BIASSECA/B + CCDSECA/B in one HDU, as DECam raws carry them."""
    height = 6
    img = np.zeros((height, 2 * (4 + 2)), np.float32)
    img[:, 0:2] = 100.0            # overscan of B
    img[:, 2:6] = 100.0 + 1.0      # data B
    img[:, 6:10] = 200.0 + 5.0     # data A
    img[:, 10:12] = 200.0          # overscan of A
    header = fits.Header()
    header["DATASECA"] = "[7:10,1:6]"
    header["BIASSECA"] = "[11:12,1:6]"
    header["CCDSECA"] = "[5:8,1:6]"
    header["DATASECB"] = "[3:6,1:6]"
    header["BIASSECB"] = "[1:2,1:6]"
    header["CCDSECB"] = "[1:4,1:6]"
    header["DETPOS"] = "S29"
    path = tmp_path / "decam_like.fits"
    fits.PrimaryHDU(img.astype(">f4"), header=header).writeto(path)
    info = inspect_file(path)
    assert info.kind == "image" and info.detector == "S29"
    det = resolve_detector(info)
    assert det.amp_names == ("A", "B") and det.shape == (6, 8)
    assert (det["A"].x0, det["B"].x0) == (4, 0)
    data = read_exposure(path, overscan=True)
    np.testing.assert_array_equal(data.image[:, 4:], 5.0)
    np.testing.assert_array_equal(data.image[:, :4], 1.0)
    assert read_exposure(path).isr.overscan == "per-row"  # the default, "auto"
    plain = read_exposure(path, overscan="none")
    assert plain.image[0, 0] == 101.0 and plain.image[0, 7] == 205.0


# -- bad input ----------------------------------------------------------------------------------
def test_not_fits(tmp_path):
    path = tmp_path / "notes.fits"
    path.write_text("this is not a FITS file\n" * 200)
    with pytest.raises(InputError, match=r"notes.fits: not a readable FITS file"):
        inspect_file(path)


def test_truncated(tmp_path):
    path = tmp_path / "cut.fits"
    write_exposure(path, np.ones((100, 120), np.float32))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"cut.fits: truncated"):
        read_exposure(path, detector=_small_detector(amp_w=60, amp_h=50))


def test_truncated_file_opened_beside_good_ones_in_threads(tmp_path):
    # A truncated file's condition must stay with that file when other threads open files
    # at the same time (a warnings-based check attributed it to whichever file was open).
    from concurrent.futures import ThreadPoolExecutor

    det = _small_detector(amp_w=60, amp_h=50)
    good = []
    for i in range(3):
        good.append(tmp_path / f"good{i}.fits")
        write_exposure(good[-1], np.full((100, 120), float(i), np.float32))
    cut = tmp_path / "cut.fits"
    cut.write_bytes(good[0].read_bytes()[:20000])

    def open_one(path):
        try:
            read_exposure(path, detector=det)
        except InputError as exc:
            return path.name, str(exc)
        return path.name, None

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(open_one, [*good, cut] * 60))
    assert {name for name, err in results if err is not None} == {"cut.fits"}
    assert all("cut.fits: truncated" in err for name, err in results if name == "cut.fits")


def test_missing_image_extension(tmp_path):
    path = tmp_path / "nomage.fits"
    fits.HDUList([fits.PrimaryHDU(),
                  fits.ImageHDU(np.zeros((4, 4), np.int32), name="MASK")]).writeto(path)
    with pytest.raises(InputError, match=r"nomage.fits: missing IMAGE extension"):
        inspect_file(path)


def test_image_shape_does_not_match_detector(tmp_path):
    path = write_exposure(tmp_path / "s.fits", np.ones((8, 12), np.float32),
                          header={"CAMERA": "lsstcam", "DETNAME": "R22_S11"})
    with pytest.raises(InputError, match=r"s.fits: image shape \(8, 12\).*'R22_S11'"):
        read_exposure(path)


def test_unknown_detector(tmp_path):
    path = write_exposure(tmp_path / "u.fits", np.ones((8, 12), np.float32),
                          header={"CAMERA": "lsstcam", "DETNAME": "R99_S99"})
    with pytest.raises(InputError, match=r"u.fits: unknown detector.*R99_S99"):
        read_exposure(path)
    with pytest.raises(InputError, match=r"u.fits: unknown camera 'nocam'"):
        read_exposure(path, camera="nocam")


def test_amp_boxes_outside_image(tmp_path):
    path = write_exposure(tmp_path / "o.fits", np.ones((8, 12), np.float32))
    det = {"name": "D", "width": 12, "height": 8,
           "amplifiers": [{"name": "A", "x0": 0, "y0": 0, "width": 6, "height": 8},
                          {"name": "B", "x0": 6, "y0": 0, "width": 8, "height": 8}]}
    with pytest.raises(InputError, match=r"o.fits: invalid detector.*'B'.*outside"):
        read_exposure(path, detector=det)
    hdr = fits.Header()
    hdr["DATASECA"] = "[1:6,1:8]"
    hdr["DATASECB"] = "[7:20,1:8]"
    bad = tmp_path / "hdr.fits"
    fits.PrimaryHDU(np.ones((8, 12), np.float32), header=hdr).writeto(bad)
    with pytest.raises(InputError, match=r"hdr.fits: header amp geometry: .*DATASECB.*outside"):
        read_exposure(bad)


def test_raw_box_outside_segment(tmp_path, tiny_camera):
    path = tmp_path / "small_seg.fits"
    hdus = [fits.PrimaryHDU()]
    for name in ("Segment10", "Segment11", "Segment01", "Segment00"):
        hdus.append(fits.ImageHDU(np.zeros((4, 5), np.int32), name=name))
    fits.HDUList(hdus).writeto(path)
    with pytest.raises(InputError, match=r"small_seg.fits: amp 'C10': raw data box.*outside"):
        read_exposure(path, camera=tiny_camera, detector="R00_S00")


@pytest.mark.parametrize("dtype", [">i2", ">i4", ">f8", "<f4", "uint16"])
def test_integer_and_big_endian_pixels(tmp_path, dtype):
    values = (np.arange(96).reshape(8, 12) * 7 % 300).astype(dtype)
    path = tmp_path / "ints.fits"
    fits.PrimaryHDU(values).writeto(path)
    data = read_exposure(path, detector=_small_detector())
    assert data.image.dtype == np.float32 and data.image.dtype.isnative
    np.testing.assert_array_equal(data.image, values.astype(np.float64))
    section = read_section(path, 0, (slice(1, 3), slice(2, 5)))
    assert section.dtype.isnative
    np.testing.assert_array_equal(section, values[1:3, 2:5])


def test_nan_and_inf_are_masked(tmp_path):
    image = np.ones((8, 12), np.float32)
    image[1, 2] = np.nan
    image[5, 7] = np.inf
    path = write_exposure(tmp_path / "n.fits", image, mask_planes={"BAD": 0, "NO_DATA": 4})
    data = read_exposure(path, detector=_small_detector())
    assert data.mask[1, 2] & (1 << 4) and data.mask[5, 7] & (1 << 4)
    assert int(np.count_nonzero(data.mask)) == 2


def test_missing_mask_plane_keywords_warn_and_use_defaults(tmp_path):
    path = tmp_path / "nomp.fits"
    fits.HDUList([fits.PrimaryHDU(),
                  fits.ImageHDU(np.ones((8, 12), np.float32), name="IMAGE"),
                  fits.ImageHDU(np.zeros((8, 12), np.int32), name="MASK"),
                  fits.ImageHDU(np.zeros((8, 12), np.float32), name="VARIANCE")]).writeto(path)
    with pytest.warns(MaskPlanesWarning, match=r"nomp.fits: the MASK extension has no MP_"):
        info = inspect_file(path)
    assert info.mask_planes == DEFAULT_MASK_PLANES


def test_empty_file_and_directory(tmp_path):
    empty = tmp_path / "empty.fits"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match=r"empty.fits: empty file"):
        inspect_file(empty)
    with pytest.raises(InputError, match=r"is a directory"):
        read_exposure(tmp_path)
    with pytest.raises(InputError, match=r"missing.fits: no such file"):
        inspect_file(tmp_path / "missing.fits")


def test_no_warnings_on_clean_files(tmp_path):
    path = write_exposure(tmp_path / "c.fits", np.ones((8, 12), np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_exposure(path, detector=_small_detector())


def test_identity_from_butler_keys(tmp_path):
    path = write_exposure(tmp_path / "b.fits", np.zeros((8, 12), np.float32), header={
        "LSST BUTLER DATAID DETECTOR": 94, "LSST BUTLER DATAID VISIT": 2024120300042,
        "LSST BUTLER DATAID INSTRUMENT": "LSSTCam"})
    info = inspect_file(path)
    assert (info.camera, info.detector, info.detector_id, info.visit) == (
        "lsstcam", "R22_S11", 94, 2024120300042)
    assert resolve_detector(info).name == "R22_S11"


def test_open_lazy_measures_from_strips_only(tmp_path, monkeypatch):
    import pickle

    import ampoffset_dask.io.sections as sections_io
    from ampoffset_dask import AmpOffsetConfig, measure_detector
    from ampoffset_dask.io.fits import open_lazy

    det = _small_detector("L", amp_w=400, amp_h=500, nx=4, ny=2)
    rng = np.random.default_rng(2)
    image = rng.normal(500.0, 3.0, det.shape).astype(np.float32)
    for i, amp in enumerate(det):
        image[amp.slices] += i
    path = write_exposure(tmp_path / "l.fits", image, detector=det, header={"VISIT": 4})
    read = []
    original = sections_io.read_section

    def counting(*args, **kwargs):
        out = original(*args, **kwargs)
        read.append(out.size)
        return out

    monkeypatch.setattr(sections_io, "read_section", counting)
    lazy = open_lazy(path)
    assert not read  # headers only
    assert lazy.detector == det and lazy.visit == 4 and lazy.image.shape == det.shape
    config = AmpOffsetConfig(do_background=False, do_detection=False)
    m = measure_detector(lazy.image, lazy.mask, lazy.detector, config, lazy.mask_planes)
    assert 0 < sum(read) < image.size  # image + mask strips: less than one full plane
    eager = read_exposure(path)
    ref = measure_detector(eager.image, eager.mask, eager.detector, config, eager.mask_planes)
    np.testing.assert_array_equal(m.pedestals, ref.pedestals)
    back = pickle.loads(pickle.dumps(lazy))
    np.testing.assert_array_equal(np.asarray(back.image), image)


def test_lsst_afw_exposure_amps_follow_the_persisted_detector(tmp_path, caplog):
    """A step in the file's own C10 box is measured on C10 (LSST's task names amps from the
    exposure's Detector); an unusable persisted amp table falls back to the camera, said."""
    from ampoffset_dask import AmpOffsetConfig, measure_detector

    image = np.random.default_rng(1).normal(1000.0, 5.0, (4000, 4072)).astype(np.float32)
    image[0:2000, 0:509] += 3.0
    stepped, broken = tmp_path / "stepped.fits", tmp_path / "broken.fits"
    with fits.open(AFW_LATISS) as hdul:
        hdul[1].data = image
        hdul[3].data = np.full((4000, 4072), 25.0, np.float32)
        hdul.writeto(stepped)
        table = hdul[9].data
        table["bbox_min_x"][1] = table["bbox_min_x"][0]  # C11 on top of C10
        hdul.writeto(broken)
    config = AmpOffsetConfig(do_background=False, do_detection=False)
    result = measure_detector(read_exposure(stepped), config=config)
    assert result.amp_names[int(np.argmax(result.pedestals))] == "C10"
    assert result.pedestals.max() > 2.0

    with caplog.at_level("WARNING", logger="ampoffset_dask.io.layout"):
        det = read_exposure(broken).detector
    assert det == get_camera("latiss")["RXX_S00"]
    assert "persisted detector in its archive tables is unusable" in caplog.text
