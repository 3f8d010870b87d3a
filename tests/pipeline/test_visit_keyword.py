"""``--visit KEYWORD`` / ``visit="KEYWORD"``: the named header keyword is the visit over the
header's own visit keywords, read from the image HDU else the primary of every kind of file,
local or in an object store (with the run's storage options); visit values that are no visit
(``-3``, ``+3``, ``3.5``) and text that is no FITS keyword are refused up front."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from cli_helpers import cli

from ampoffset_dask.errors import ConfigError
from ampoffset_dask.pipeline.inputs import discover_inputs, plan_tasks
from ampoffset_dask.pipeline.options import RunOptions
from ampoffset_dask.pipeline.run import prepare
from ampoffset_dask.simulate import simulate_focal_plane

from .helpers import SCALE


@pytest.fixture(scope="module")
def exposure(tmp_path_factory) -> Path:
    """One small simulated LSSTCam exposure (primary: DETNAME, DETECTOR, VISIT = 1; IMAGE,
    MASK, VARIANCE extensions): read only, copied and edited by the tests."""
    folder = tmp_path_factory.mktemp("visit_keyword")
    result = simulate_focal_plane(folder, "lsstcam", detectors=["R22_S11"], visits=[1],
                                  scale=SCALE, seed=4)
    return Path(result.paths[0])


def _edited(src: Path, dst: Path, primary: dict | None = None, image: dict | None = None,
            drop: tuple[str, ...] = ("VISIT",)) -> Path:
    """A copy of ``src`` with ``drop`` removed from its primary header and the cards
    ``primary`` and ``image`` (HDU 1) set."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    with fits.open(src) as hdul:
        for key in drop:
            del hdul[0].header[key]
        for index, cards in ((0, primary or {}), (1, image or {})):
            for key, value in cards.items():
                hdul[index].header[key] = value
        hdul.writeto(dst)
    return dst


def _plan(path, **kw):
    (task,) = plan_tasks(discover_inputs(str(path)), **kw)
    return task


# -- 1. the keyword over the header's own visit keywords ----------------------------------

@pytest.mark.parametrize("own", [{"DAYOBS": 20261201, "SEQNUM": 5}, {"EXPNUM": 81},
                                 {"VISIT": 82}], ids=["dayobs-seqnum", "expnum", "visit"])
def test_a_visit_keyword_wins_over_the_header_s_own_visit_keywords(exposure, tmp_path, own):
    path = _edited(exposure, tmp_path / "x.fits", {"OBSNUM": 79, **own})
    assert _plan(path).visit != 79  # the header's own visit without --visit
    for given in ("OBSNUM", "obsnum"):
        task = _plan(path, visit=given)
        assert (task.error, task.visit, task.visit_from) == ("", 79, "keyword")


def test_inputs_without_the_keyword_keep_their_header_s_visit_and_say_so(exposure, tmp_path):
    """Planning says which visit came from the keyword and which from the header (the run's
    note about inputs that kept their own); an input without either fails, naming both."""
    with_key = _edited(exposure, tmp_path / "a" / "x.fits", {"OBSNUM": 79, "EXPNUM": 81})
    own = _edited(exposure, tmp_path / "b" / "x.fits", {"DETNAME": "R22_S12", "DETECTOR": 95,
                                                        "EXPNUM": 81})
    neither = _edited(exposure, tmp_path / "c" / "x.fits", {"DETNAME": "R22_S10",
                                                            "DETECTOR": 93})
    planned = {Path(t.path).parent.name: t for t in plan_tasks(
        discover_inputs([str(with_key), str(own), str(neither)]), visit="OBSNUM")}
    assert (planned["a"].visit, planned["a"].visit_from) == (79, "keyword")
    assert (planned["b"].error, planned["b"].visit, planned["b"].visit_from) == (
        "", 81, "header")
    assert planned["c"].error == (f"InputError: {neither}: no header keyword OBSNUM "
                                  "(--visit OBSNUM)")
    # the other sources, for a note to tell them apart
    assert _plan(own, visit=5).visit_from == "header"
    assert _plan(neither, visit=5).visit_from == "option"
    # the run's note names the input that kept its own visit
    from ampoffset_dask.cli import _kept_identity_note
    from ampoffset_dask.pipeline.options import RunOptions

    note = _kept_identity_note(list(planned.values()), RunOptions(visit="OBSNUM"))
    assert note == ("--visit OBSNUM only applies to inputs whose headers have that keyword: "
                    f"1 input(s) kept their own (header or manifest), e.g. {own} (visit 81)")


def test_a_visit_keyword_that_holds_no_number_fails_its_input(exposure, tmp_path):
    """The user named the keyword: its value is no visit, and the header's own visit is not
    taken silently instead."""
    path = _edited(exposure, tmp_path / "x.fits", {"OBSNUM": "tonight", "EXPNUM": 81})
    task = _plan(path, visit="OBSNUM")
    assert task.error == (f"InputError: {path}: header keyword OBSNUM = 'tonight' is not a "
                          "visit number (--visit OBSNUM)")


def test_a_hierarch_visit_keyword_is_found_with_or_without_its_prefix(exposure, tmp_path):
    path = _edited(exposure, tmp_path / "x.fits", {"HIERARCH ESO DET EXPID": 123,
                                                   "EXPNUM": 81})
    for given in ("ESO DET EXPID", "hierarch eso det expid"):
        assert RunOptions(visit=given).visit == "ESO DET EXPID"
        assert _plan(path, visit=given).visit == 123


# -- 3. image HDU, else primary, for every kind of file -----------------------------------

def _gzipped(path: Path) -> Path:
    out = path.with_name(path.name + ".gz")
    with open(path, "rb") as src, gzip.open(out, "wb") as dst:
        shutil.copyfileobj(src, dst)
    path.unlink()
    return out


@pytest.mark.parametrize("wrap", [False, True], ids=["plain", "gzip"])
def test_a_visit_keyword_is_read_from_the_image_hdu_else_the_primary(exposure, tmp_path,
                                                                    wrap):
    only_image = _edited(exposure, tmp_path / "a" / "x.fits", image={"OBSNUM": 78})
    both = _edited(exposure, tmp_path / "b" / "x.fits", {"OBSNUM": 1},
                   image={"OBSNUM": 78})
    only_primary = _edited(exposure, tmp_path / "c" / "x.fits", {"OBSNUM": 77})
    if wrap:  # headers streamed from the compressed file, not walked
        only_image, both, only_primary = map(_gzipped, (only_image, both, only_primary))
    assert _plan(only_image, visit="OBSNUM").visit == 78
    assert _plan(both, visit="OBSNUM").visit == 78
    assert _plan(only_primary, visit="OBSNUM").visit == 77


def test_each_ccd_of_a_multi_ccd_file_reads_the_keyword_from_its_hdu_else_the_primary(
        tmp_path):
    hdus = [fits.PrimaryHDU()]
    hdus[0].header["OBSNUM"] = 60
    for k, name in enumerate(("C1", "C2"), start=1):
        header = fits.Header()
        for key, value in (("DATASECA", "[1:16,1:8]"), ("DATASECB", "[17:32,1:8]"),
                           ("CCDNUM", k), ("DETPOS", name)):
            header[key] = value
        if name == "C2":
            header["OBSNUM"] = 61
        hdus.append(fits.ImageHDU(np.zeros((8, 32), np.float32), header=header, name=name))
    path = tmp_path / "mef.fits"
    fits.HDUList(hdus).writeto(path)
    planned = plan_tasks(discover_inputs(str(path)), visit="OBSNUM")
    assert [(t.name, t.hdu, t.visit, t.error) for t in planned] == [
        ("C1", 1, 60, ""), ("C2", 2, 61, "")]


# -- 2. object stores: the run's storage options ------------------------------------------

def test_a_visit_keyword_of_an_s3_input_uses_the_run_s_storage_options(
        exposure, tmp_path, s3_endpoint, monkeypatch):
    """The keyword comes from the headers planning read with ``--storage-options``: no second
    open through the environment's endpoint (here a closed port)."""
    from s3_server import KEYS, bucket_name, free_port, s3_client

    path = _edited(exposure, tmp_path / "x.fits", {"OBSNUM": 79})  # no other visit key
    bucket = bucket_name("visit-keyword")
    client = s3_client(s3_endpoint)
    client.create_bucket(Bucket=bucket)
    client.upload_file(str(path), bucket, "raw/x.fits")
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"):
        monkeypatch.setenv(name, KEYS[name])
    options = RunOptions(progress=False, visit="OBSNUM", storage_options={
        "endpoint_url": s3_endpoint, "key": KEYS["AWS_ACCESS_KEY_ID"],
        "secret": KEYS["AWS_SECRET_ACCESS_KEY"]})
    with prepare([f"s3://{bucket}/raw/x.fits"], tmp_path / "catalog",
                 options=options) as run:
        (task,) = run.planned
    assert (task.error, task.visit) == ("", 79)
    assert task.visit_from == "keyword"


# -- 4. what --visit takes ----------------------------------------------------------------

@pytest.mark.parametrize("given", ["-3", "+3", "3.5", ".5", "1e5", " -0 "])
def test_numbers_that_are_no_visit_are_refused_up_front(given):
    with pytest.raises(ConfigError, match=r"visit \(--visit\) must be an integer >= 0 "
                                          r"\(digits only\)"):
        RunOptions(visit=given)


@pytest.mark.parametrize("given", ["", "  ", "OBS.NUM", "OBS=NUM", "ÖBSNUM", "²", "HIERARCH",
                                   "OBS'NUM"])
def test_text_that_is_no_header_keyword_is_refused_up_front(given):
    with pytest.raises(ConfigError, match="or a header keyword"):
        RunOptions(visit=given)


@pytest.mark.parametrize(("given", "visit"), [
    (" 12 ", 12), ("0", 0), ("obsnum", "OBSNUM"), ("DATE-OBS", "DATE-OBS"),
    ("EXP_ID", "EXP_ID"), ("1STEXP", "1STEXP"), ("LONGKEYWORD", "LONGKEYWORD"),
    ("lsst  butler dataid visit", "LSST BUTLER DATAID VISIT")])
def test_visits_and_header_keywords_are_taken(given, visit):
    assert RunOptions(visit=given).visit == visit


def test_the_command_refuses_a_negative_visit_before_reading_any_input(exposure, tmp_path):
    proc = cli("run", exposure, "--visit", "-3", "--output", tmp_path / "catalog")
    assert proc.returncode == 2, proc.stderr
    assert "must be an integer >= 0" in proc.stderr
    assert "no header keyword" not in proc.stderr + proc.stdout
    assert not (tmp_path / "catalog").exists()
