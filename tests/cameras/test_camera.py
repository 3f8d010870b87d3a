"""Built-in and user cameras."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys

import numpy as np
import pytest
from golden import SHARED
from io_helpers import kast_camera_doc

from ampoffset_dask import InputError
from ampoffset_dask.cameras import Camera, get_camera, list_cameras
from ampoffset_dask.geometry import Detector

AFW_CAMERA = SHARED / "realdata" / "lsst_afw_formats" / "camera_LSSTCam_afw_persisted.fits"

E2V_ORDER = [f"C1{i}" for i in range(8)] + [f"C0{i}" for i in range(7, -1, -1)]


def test_list_cameras():
    assert list_cameras() == ["decam", "hsc", "latiss", "lsstcam", "lsstcomcam"]


def test_lsstcam_science_detectors():
    cam = get_camera("lsstcam")
    science = cam.names("SCIENCE")
    assert len(science) == 189
    assert sorted(cam[n].id for n in science) == list(range(189))
    assert len(cam) == 205
    assert len(cam.names("GUIDER")) == 8 and len(cam.names("WAVEFRONT")) == 8


def test_lsstcam_e2v_and_itl():
    cam = get_camera("lsstcam")
    e2v = cam["R22_S11"]
    assert (e2v.width, e2v.height) == (4096, 4004)
    assert cam.info("R22_S11")["physical_type"] == "E2V"
    assert list(e2v.amp_names) == E2V_ORDER
    c10 = e2v["C10"]
    assert (c10.x0, c10.y0, c10.width, c10.height) == (0, 2002, 512, 2002)
    assert (e2v["C00"].x0, e2v["C00"].y0) == (0, 0)
    assert (e2v["C17"].x0, e2v["C07"].x0) == (3584, 3584)
    itl = cam["R02_S02"]
    assert cam.info("R02_S02")["physical_type"] == "ITL"
    assert (itl.width, itl.height) == (4072, 4000)
    assert (itl["C10"].y0, itl["C10"].width, itl["C10"].height) == (2000, 509, 2000)
    assert list(itl.amp_names) == E2V_ORDER


def test_index_by_id_and_name():
    cam = get_camera("LSSTCam")
    assert cam[0] == cam["R01_S00"] == cam["r01_s00"]
    assert cam[94].name == "R22_S11"
    assert cam.resolve("94") == "R22_S11"
    assert "R22_S11" in cam and "R99_S99" not in cam
    assert cam.detector_names[0] == "R01_S00"
    assert cam.detector_ids[:3] == [0, 1, 2]
    info = cam.info(94)
    assert info["raft"] == "R22" and info["type"] == "SCIENCE"
    assert np.asarray(info["corners_mm"]).shape == (4, 2)


def test_case_insensitive_names_and_alias():
    assert get_camera("comcam") is get_camera("LSSTComCam")
    assert get_camera("LATISS")["RXX_S00"].id == 0
    comcam = get_camera("comcam")
    assert comcam.name == "lsstcomcam" and len(comcam) == 9


def test_unknown_names_raise_clearly():
    with pytest.raises(InputError, match=r"unknown camera 'nocam'.*lsstcam"):
        get_camera("nocam")
    cam = get_camera("lsstcam")
    with pytest.raises(KeyError, match="camera 'lsstcam' has no detector 'R99_S99'"):
        cam["R99_S99"]
    with pytest.raises(InputError, match="no detector 999"):
        cam[999]


def test_hsc_and_decam():
    hsc = get_camera("hsc")
    det = hsc[0]
    assert len(det) == 4 and det.amp_names == ("0", "1", "2", "3")
    assert all((a.width, a.height) == (512, 4176) for a in det)
    assert (det.width, det.height) == (2048, 4176)
    decam = get_camera("decam")
    s29, n29 = decam["S29"], decam["N29"]
    assert len(s29) == 2 and s29.id == 1
    assert s29["A"].x0 == 1024 and n29["A"].x0 == 0


@pytest.mark.parametrize("name", ["lsstcam", "lsstcomcam", "latiss", "hsc", "decam"])
def test_every_builtin_detector_checks(name):
    cam = get_camera(name)
    for det in cam:
        assert isinstance(det, Detector)
        det.check()


def test_raw_amps_lsst():
    cam = get_camera("lsstcam")
    raws = cam.raw_amps("R22_S11")
    assert [r.name for r in raws] == E2V_ORDER
    c10 = raws[0]
    assert c10.extname == "Segment10" and c10.hdu == 1
    assert c10.raw_data_bbox == (10, 0, 512, 2002)
    assert c10.raw_serial_overscan_bbox == (522, 0, 54, 2002)
    assert (c10.flip_x, c10.flip_y) == (True, True)
    assert (raws[-1].flip_x, raws[-1].flip_y) == (False, False)
    itl = cam.raw_amps("R02_S02")
    assert itl[0].raw_data_bbox == (3, 0, 509, 2000)
    assert (itl[-1].flip_x, itl[-1].flip_y) == (True, False)


def test_camera_pickles():
    cam = get_camera("latiss")
    back = pickle.loads(pickle.dumps(cam))
    assert back["RXX_S00"] == cam["RXX_S00"] and back.name == "latiss"


def test_builtin_camera_pickles_by_name():
    # what every task of a run with --camera carries: the name, not the 160 KB document
    cam = get_camera("lsstcam")
    data = pickle.dumps(cam)
    assert len(data) < 1000
    assert pickle.loads(data) is cam
    # a fresh process rebuilds the same camera from its own copy of the package
    code = ("import pickle, sys; cam = pickle.loads(sys.stdin.buffer.read()); "
            "sys.stdout.buffer.write(pickle.dumps((cam.name, len(cam), cam['R22_S11'])))")
    out = subprocess.run([sys.executable, "-c", code], input=data, capture_output=True,
                         check=True).stdout
    assert pickle.loads(out) == ("lsstcam", len(cam), cam["R22_S11"])


def test_user_camera_with_a_builtin_name_pickles_its_own_document():
    doc = kast_camera_doc()
    doc["name"] = "lsstcam"
    cam = Camera.from_dict(doc)
    back = pickle.loads(pickle.dumps(cam))
    assert back is not get_camera("lsstcam")
    assert back.detector_names == cam.detector_names and back[0] == cam[0]
    # built once per process for the tasks that carry it; another document is another camera
    assert pickle.loads(pickle.dumps(cam)) is back
    doc["amp_layouts"]["kast"]["amps"][0]["name"] = "L2"
    other = pickle.loads(pickle.dumps(Camera.from_dict(doc)))
    assert other is not back and other[0].amp_names[0] == "L2"


def test_user_camera_json_and_yaml(tmp_path):
    path = tmp_path / "kast.json"
    path.write_text(json.dumps(kast_camera_doc()))
    cam = Camera.from_file(path)
    assert cam.name == "kast_blue"
    det = cam["KAST_BLUE"]
    assert det.shape == (350, 2048) and det.amp_names == ("L", "R")
    det.check()
    assert cam.raw_amps(0)[1].raw_serial_overscan_bbox == (2080, 0, 31, 350)
    assert get_camera(str(path))[0] == det
    import yaml  # a test dependency
    ypath = tmp_path / "kast.yaml"
    ypath.write_text(yaml.safe_dump(kast_camera_doc()))
    assert Camera.from_file(ypath)[0] == det


def test_user_camera_errors(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(InputError, match=r"bad.json: not valid JSON"):
        Camera.from_file(bad)
    with pytest.raises(InputError, match=r"missing.json: cannot read"):
        Camera.from_file(tmp_path / "missing.json")
    doc = kast_camera_doc()
    doc["amp_layouts"]["kast"]["amps"][1]["bbox"] = [1024, 0, 1100, 350]
    outside = tmp_path / "outside.json"
    outside.write_text(json.dumps(doc))
    with pytest.raises(InputError, match=r"outside.json.*'R'.*outside"):
        Camera.from_file(outside)
    doc = kast_camera_doc()
    doc["detectors"][0]["physical_type"] = "nope"
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps(doc))
    with pytest.raises(InputError, match="amp layout 'nope'"):
        Camera.from_file(wrong)


def test_lsstcam_matches_afw_persisted_camera():
    from astropy.io import fits

    cam = get_camera("lsstcam")
    with fits.open(AFW_CAMERA) as hdul:
        dets = hdul[3].data
        amps = hdul[6].data
        names = ["".join(n) for n in dets["name"]]
        ids = [int(i) for i in dets["id"]]
        row = 0
        for name, det_id in zip(names, ids, strict=True):
            det = cam[name]
            assert det.id == det_id
            raws = cam.raw_amps(name)
            for amp, raw in zip(det, raws, strict=True):
                rec = amps[row]
                row += 1
                assert "".join(rec["name"]) == amp.name
                assert (bool(rec["flags"][1]), bool(rec["flags"][2])) == (raw.flip_x, raw.flip_y)
                assert (int(rec["bbox_min_x"]), int(rec["bbox_min_y"]),
                        int(rec["bbox_extent_x"]), int(rec["bbox_extent_y"])) == (
                    amp.x0, amp.y0, amp.width, amp.height)
                assert (int(rec["raw_databbox_min_x"]), int(rec["raw_databbox_min_y"]),
                        int(rec["raw_databbox_extent_x"]),
                        int(rec["raw_databbox_extent_y"])) == raw.raw_data_bbox
        assert row == len(amps)
