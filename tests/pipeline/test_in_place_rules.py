"""What an in-place correction may replace, and where corrected copies may go.

A corrected exposure is plain IMAGE, MASK and VARIANCE extensions: an input holding more (tile
compression, afw archive tables, a CCDData layout) is not replaced by it; a symbolic link's
file is corrected, not the link; names from headers never lead a copy out of its folder.
"""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
from astropy.io import fits
from io_helpers import REAL

from ampoffset_dask import InputError, process
from ampoffset_dask.algorithm.metadata import SUBTRACTED_KEY
from ampoffset_dask.io.fits import inspect_file, read_exposure
from ampoffset_dask.io.writer import write_exposure
from ampoffset_dask.pipeline.detector_job import output_header


def _refused(path, catalog, match, **options):
    before = path.read_bytes()
    with pytest.raises(InputError, match=match):
        process([path], catalog, in_place=True, progress=False, **options)
    assert path.read_bytes() == before
    assert not catalog.exists()


def test_files_a_corrected_exposure_cannot_replace_are_refused(sim_visit, tmp_path):
    exp = read_exposure(sim_visit.paths[0])
    rice = write_exposure(tmp_path / "rice.fits", exp.image, exp.mask, exp.variance,
                          header={"VISIT": 1, "DETNAME": "R22_S11"},
                          compress="rice", detector=exp.detector)
    _refused(rice, tmp_path / "c1", r"rice\.fits: cannot be corrected in place: .* would lose "
                                    r"its tile-compressed image extensions for good")
    afw = tmp_path / "latiss.fits"
    shutil.copyfile(REAL / "lsst_afw_formats" / "LATISS_bias_2018-09-21_afwExposure_zeroed.fits",
                    afw)
    assert inspect_file(afw).archive_hdus
    _refused(afw, tmp_path / "c2", r"afw archive table\(s\) \(its persisted Detector",
             visit=5)  # (the file has no visit number)
    # several hard links: one write can replace one name only
    plain = tmp_path / "plain.fits"
    shutil.copyfile(sim_visit.paths[0], plain)
    os.link(plain, tmp_path / "other-name.fits")
    _refused(plain, tmp_path / "c3", r"plain\.fits: has 2 hard links")


def test_a_symbolic_link_corrects_the_file_it_names(sim_visit, client, tmp_path):
    store, links = tmp_path / "store", tmp_path / "links"
    store.mkdir()
    links.mkdir()
    target = store / "x.fits"
    shutil.copyfile(sim_visit.paths[0], target)
    (links / "x.fits").symlink_to(target)
    summary = process(links, tmp_path / "cat", in_place=True, client=client, progress=False)
    assert summary.n_ok == 1
    assert (links / "x.fits").is_symlink() and os.readlink(links / "x.fits") == str(target)
    assert fits.getheader(target, 0).get(SUBTRACTED_KEY) is True


def test_a_zip_member_is_refused_in_place_by_name(sim_visit, tmp_path):
    # it failed with the zip member's path as a missing file ([Errno 2])
    import zipfile

    import pandas as pd

    archive = tmp_path / "arch.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(sim_visit.paths[0], "a/x.fits")
    before = archive.read_bytes()
    manifest = pd.DataFrame({"path": [f"{archive}#zip-path=a/x.fits"], "visit": [1]})
    with pytest.raises(InputError, match=r"arch\.zip#zip-path=a/x\.fits: a member of a zip "
                                         r"archive cannot be corrected in place"):
        process(manifest, tmp_path / "cat", in_place=True, progress=False)
    assert archive.read_bytes() == before


@pytest.mark.parametrize("force", [False, True])
def test_a_file_corrected_in_place_through_a_link_is_done_on_the_next_run(
        sim_visit, client, tmp_path, force):
    # the row's input is the link, its output the file: the next run did not see its own
    # correction, and flagged the file "already corrected" over the ok row or, with force,
    # corrected it a second time
    real = tmp_path / "real"
    real.mkdir()
    shutil.copyfile(sim_visit.paths[0], real / "x.fits")
    (tmp_path / "dirlink").symlink_to(real)
    inp = tmp_path / "dirlink" / "x.fits"
    first = process([inp], tmp_path / "cat", in_place=True, force=force, client=client,
                    progress=False)
    assert first.n_ok == 1
    corrected = (real / "x.fits").read_bytes()
    again = process([inp], tmp_path / "cat", in_place=True, force=force, client=client,
                    progress=False)
    assert (again.n_ok, again.n_flagged, again.n_skipped) == (0, 0, 1)
    assert (real / "x.fits").read_bytes() == corrected
    from ampoffset_dask import read_catalog

    rows = read_catalog(tmp_path / "cat", "detectors", all_rows=True)
    assert rows["status"].tolist() == ["ok"]


@pytest.mark.parametrize("force", [False, True])
def test_a_file_corrected_through_a_link_is_done_by_its_real_path_too(
        sim_visit, client, tmp_path, force):
    # the row's input was the link: given by its real path, the file was flagged "already
    # corrected ... use --force" over the catalog's ok row, and --force corrected it again
    real = tmp_path / "real"
    links = tmp_path / "links"
    real.mkdir()
    links.mkdir()
    shutil.copyfile(sim_visit.paths[0], real / "x.fits")
    (links / "x.fits").symlink_to(real / "x.fits")
    assert process(links, tmp_path / "cat", in_place=True, client=client,
                   progress=False).n_ok == 1
    corrected = (real / "x.fits").read_bytes()
    again = process(real, tmp_path / "cat", in_place=True, force=force, client=client,
                    progress=False)
    assert (again.n_ok, again.n_flagged, again.n_skipped) == (0, 0, 1)
    assert (real / "x.fits").read_bytes() == corrected


def test_a_file_corrected_since_by_another_catalog_is_not_taken_for_this_ones(
        sim_visit, client, tmp_path):
    # restored from its backup and corrected in place by another catalog (another config):
    # the first catalog's resume took the file for its own correction, its row keeping
    # pedestals the file no longer holds
    from ampoffset_dask import read_catalog

    path = tmp_path / "in" / "x.fits"
    path.parent.mkdir()
    shutil.copyfile(sim_visit.paths[0], path)
    backup = shutil.copy2(path, tmp_path / "backup.fits")
    a, b = tmp_path / "a", tmp_path / "b"
    assert process([path], a, in_place=True, client=client, progress=False).n_ok == 1
    shutil.copy2(backup, path)
    assert process([path], b, in_place=True, config={"ampEdgeWidth": 30}, client=client,
                   progress=False).n_ok == 1
    again = process([path], a, in_place=True, client=client, progress=False)
    assert (again.n_ok, again.n_flagged, again.n_skipped) == (0, 1, 0)
    assert "already corrected" in again.flagged[0][2]
    header = fits.getheader(path, 0)
    peds = read_catalog(a, "pedestals").sort_values("amp_index")
    for amp, value in zip(peds["amp"], peds["pedestal"], strict=True):
        assert header[f"LSST ISR AMPOFFSET PEDESTAL {amp}"] == value


def test_a_file_with_a_name_near_the_longest_is_corrected_in_place(sim_visit, client,
                                                                   tmp_path):
    # the writer's temporary name (".<name>.<id>.tmp") was too long for a file: flagged
    # "corrected image not written: File name too long"
    path = tmp_path / ("d" * 240 + ".fits")
    shutil.copyfile(sim_visit.paths[0], path)
    summary = process([path], tmp_path / "cat", in_place=True, client=client, progress=False)
    assert summary.n_ok == 1, summary.flagged
    assert fits.getheader(path, 0).get(SUBTRACTED_KEY) is True
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["cat", path.name])


def test_a_detector_name_that_is_no_folder_name_is_refused(sim_visit, tmp_path):
    src = tmp_path / "in" / "x.fits"
    src.parent.mkdir()
    with fits.open(sim_visit.paths[0]) as hdul:
        hdul[0].header["DETNAME"] = "../../escaped"
        hdul.writeto(src)
    with pytest.raises(InputError, match=r"the detector name '\.\./\.\./escaped' cannot name a "
                                         r"folder of the corrected images"):
        process([src], tmp_path / "cat", output_images=tmp_path / "out", progress=False)
    assert not list(tmp_path.rglob("escaped"))


def test_a_copys_primary_header_drops_what_no_longer_describes_it(tmp_path):
    """afw's archive pointers, compression keys, and the keys of a primary HDU's own pixels
    (the copy's primary holds none) are left out; the rest is kept."""
    path = tmp_path / "single.fits"
    hdu = fits.PrimaryHDU(data=np.zeros((4, 6), "int16"))
    hdu.header["HIERARCH DETECTOR_ID"] = 1  # as afw writes it
    for key, value in {"AR_HDU": 5, "ZQUANTIZ": "NONE", "BZERO": 32768,
                       "BSCALE": 1, "DATASEC": "[1:6,1:4]", "LTV1": -2, "OBJECT": "flat",
                       "EXPTIME": 30.0, "DATE-OBS": "2024-01-01"}.items():
        hdu.header[key] = value
    hdu.writeto(path)
    from ampoffset_dask.cameras import get_camera

    header = output_header(str(path), None, 7, get_camera("lsstcam")["R22_S11"])
    assert {"AR_HDU", "DETECTOR_ID", "ZQUANTIZ", "BZERO", "BSCALE", "DATASEC",
            "LTV1"}.isdisjoint(header)
    assert header["OBJECT"] == "flat" and header["EXPTIME"] == 30.0
    assert (header["VISIT"], header["DETNAME"], header["DETECTOR"]) == (7, "R22_S11", 94)


def test_files_whose_layout_or_pixels_the_copy_would_change_are_refused(sim_visit, tmp_path):
    """In place, a corrected exposure replaced the whole file with float32 IMAGE, MASK and
    VARIANCE extensions: extra extensions were deleted, integer and float64 pixels rewritten
    as float32 (an int32 pixel of 2e7 moved by up to 2 ADU), a primary-HDU image moved to
    an extension beside an all-zero MASK and VARIANCE. Such files are now refused, untouched."""
    src = sim_visit.paths[0]
    with fits.open(src) as hdul:
        primary = hdul[0].header.copy()
        image, mask, variance = (hdul[n].data.copy() for n in ("IMAGE", "MASK", "VARIANCE"))
        headers = [hdul[n].header.copy() for n in ("IMAGE", "MASK", "VARIANCE")]

    def planes(img=image, extra=(), drop=()):
        hdus = [fits.PrimaryHDU(header=primary)]
        for (name, data), header in zip((("IMAGE", img), ("MASK", mask),
                                         ("VARIANCE", variance)), headers, strict=True):
            if name not in drop:
                hdus.append(fits.ImageHDU(data, header=header, name=name))
        return fits.HDUList(hdus + list(extra))

    one = fits.PrimaryHDU(image, header=primary)
    for key, value in headers[0].items():  # the amp boxes, so the geometry is known
        if key.startswith(("AMPNAM", "DATASEC")):
            one.header[key] = value
    table = fits.BinTableHDU.from_columns([fits.Column("x", "E", array=np.arange(3.0))],
                                          name="EXTRA")
    cases = {
        "extra.fits": (planes(extra=[table]), r"other extension\(s\) EXTRA \(HDU 4\)"),
        "int32.fits": (planes(img=np.round(image).astype(np.int32)),
                       r"32-bit integer pixels \(the copy's are float32\)"),
        "double.fits": (planes(img=image.astype(np.float64)), r"float64 pixels"),
        "novar.fits": (planes(drop=("VARIANCE",)), r"layout without VARIANCE"),
        "primary.fits": (fits.HDUList([one]),
                         r"image in the primary HDU.*layout without MASK and VARIANCE"),
    }
    for k, (name, (hdul, match)) in enumerate(cases.items()):
        path = tmp_path / name
        hdul.writeto(path)
        _refused(path, tmp_path / f"c{k}", rf"{name}: cannot be corrected in place: .*{match}")
    # the project's own layout is corrected in place as before
    assert not inspect_file(src).other_hdus and inspect_file(src).image_bitpix == -32
