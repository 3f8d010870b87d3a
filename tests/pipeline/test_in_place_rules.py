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
