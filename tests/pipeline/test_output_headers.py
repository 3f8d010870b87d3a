"""The headers of corrected copies: an exposure's image-HDU cards (its WCS, BUNIT, LTV) go
to the copy's IMAGE extension when the copy's pixels are that HDU's pixels, and a primary
HDU's own image description does not stay on the copy's data-less primary."""

from __future__ import annotations

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from ampoffset_dask import process, read_catalog

_WCS = {"CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CRPIX1": 320.5, "CRPIX2": 100.5,
        "CRVAL1": 150.1, "CRVAL2": 2.2, "CD1_1": -5.5e-5, "CD1_2": 0.0, "CD2_1": 0.0,
        "CD2_2": 5.5e-5}


def _copy_of(catalog):
    return read_catalog(catalog, "detectors")["output"].iloc[0]


def test_an_exposures_image_cards_reach_the_copys_image(sim_visit, client, tmp_path):
    src = tmp_path / "in" / "x.fits"
    src.parent.mkdir()
    with fits.open(sim_visit.paths[0]) as hdul:
        for key, value in {**_WCS, "BUNIT": "adu", "LTV1": 0, "LTV2": 0, "ZD": 30.5}.items():
            hdul["IMAGE"].header[key] = value
        hdul.writeto(src)
    summary = process([src], tmp_path / "cat", output_images=tmp_path / "out", client=client,
                      progress=False)
    assert summary.n_ok == 1
    with fits.open(_copy_of(tmp_path / "cat")) as out, fits.open(src) as inp:
        image = out["IMAGE"].header
        # (a card starting with Z that is no compression keyword, ZD, is kept)
        for key, value in {**_WCS, "BUNIT": "adu", "LTV1": 0, "ZD": 30.5}.items():
            assert image[key] == value, key
        assert WCS(image).wcs.ctype[0] == "RA---TAN"
        # the copy's amp boxes are its own, and its pixels those of the input's HDU
        assert image["AMPNAMA"] == inp["IMAGE"].header["AMPNAMA"]
        assert out["IMAGE"].data.shape == inp["IMAGE"].data.shape


def test_a_single_hdu_images_wcs_moves_to_the_copys_image(sim_visit, client, tmp_path):
    with fits.open(sim_visit.paths[0]) as hdul:
        data = hdul["IMAGE"].data.copy()
        geometry = {k: v for k, v in hdul["IMAGE"].header.items()
                    if k.startswith(("AMPNAM", "DATASEC"))}
        identity = {k: hdul[0].header[k] for k in ("DETNAME", "VISIT")}
    src = tmp_path / "in" / "single.fits"
    src.parent.mkdir()
    hdu = fits.PrimaryHDU(data)
    for key, value in {**identity, **geometry, **_WCS, "BUNIT": "adu",
                       "OBJECT": "field"}.items():
        hdu.header[key] = value
    hdu.writeto(src)
    summary = process([src], tmp_path / "cat", output_images=tmp_path / "out", client=client,
                      progress=False)
    assert summary.n_ok == 1
    with fits.open(_copy_of(tmp_path / "cat")) as out:
        assert out[0].data is None
        assert "CTYPE1" not in out[0].header and "BUNIT" not in out[0].header
        assert out[0].header["OBJECT"] == "field"
        assert out["IMAGE"].header["CTYPE1"] == "RA---TAN"
        assert out["IMAGE"].header["BUNIT"] == "adu"
        pedestals = read_catalog(tmp_path / "cat", "pedestals")["pedestal"].to_numpy()
        assert np.isfinite(pedestals).all()


def test_a_ccddata_files_uncertainty_becomes_the_copys_variance(sim_visit, client, tmp_path):
    """``CCDData.write`` keeps a standard deviation in ``UNCERT``: the reader squares it into
    the variance (zeros before), and the copy's IMAGE takes the WCS off the data's HDU."""
    from astropy.nddata import CCDData, InverseVariance, StdDevUncertainty

    from ampoffset_dask.io.fits import read_exposure

    with fits.open(sim_visit.paths[0]) as hdul:
        data = hdul["IMAGE"].data.astype(np.float32)
        meta = {k: v for k, v in hdul["IMAGE"].header.items()
                if k.startswith(("AMPNAM", "DATASEC"))}
        meta.update({k: hdul[0].header[k] for k in ("DETNAME", "VISIT")})
    ccd = CCDData(data, unit="adu", mask=np.zeros(data.shape, bool), meta={**meta, **_WCS},
                  uncertainty=StdDevUncertainty(np.full(data.shape, 7.0, np.float32)))
    src = tmp_path / "in" / "ccd.fits"
    src.parent.mkdir()
    ccd.write(src)
    assert read_exposure(src).variance[0, 0] == 49.0
    summary = process([src], tmp_path / "cat", output_images=tmp_path / "out", client=client,
                      progress=False)
    assert summary.n_ok == 1
    with fits.open(_copy_of(tmp_path / "cat")) as out:
        assert np.all(out["VARIANCE"].data == 49.0)
        assert out["IMAGE"].header["CTYPE1"] == "RA---TAN" and "CTYPE1" not in out[0].header
    # an inverse variance is inverted
    ccd.uncertainty = InverseVariance(np.full(data.shape, 0.25, np.float32))
    ccd.write(tmp_path / "ivar.fits")
    assert read_exposure(tmp_path / "ivar.fits").variance[5, 5] == 4.0


def test_an_exposures_mask_and_variance_cards_reach_the_copy_and_stay_in_place(
        sim_visit, client, tmp_path):
    """The copy's MASK and VARIANCE headers were built from the plane bits alone: the
    input's own cards there (a BUNIT of the variance, a user's card) were lost, in copies
    and in place."""
    src = tmp_path / "in" / "x.fits"
    src.parent.mkdir()
    with fits.open(sim_visit.paths[0]) as hdul:
        hdul["MASK"].header["MYMASK"] = "kept"
        hdul["VARIANCE"].header["BUNIT"] = "adu2"
        hdul["VARIANCE"].header["MYVAR"] = 3
        planes = {k: v for k, v in hdul["MASK"].header.items() if k.startswith("MP_")}
        hdul.writeto(src)
    summary = process([src], tmp_path / "cat", output_images=tmp_path / "out", client=client,
                      progress=False)
    assert summary.n_ok == 1
    inplace = process([src], tmp_path / "cat2", in_place=True, client=client, progress=False)
    assert inplace.n_ok == 1
    for path in (_copy_of(tmp_path / "cat"), src):
        with fits.open(path) as out:
            mask, var = out["MASK"].header, out["VARIANCE"].header
            assert mask["MYMASK"] == "kept" and var["MYVAR"] == 3 and var["BUNIT"] == "adu2"
            assert {k: v for k, v in mask.items() if k.startswith("MP_")} == planes
            assert mask["EXTTYPE"] == "MASK" and var["EXTTYPE"] == "VARIANCE"


def test_an_interface_without_a_raw_offset_gives_an_undefined_card_not_a_failed_copy(
        client, tmp_path):
    # FITS has no NaN: the copy's header writer raised, and the detector, flagged without
    # output images, was a failed row with astropy's traceback and no copy
    from golden import noise_free_three_amps

    from ampoffset_dask.io.writer import write_exposure

    det, image = noise_free_three_amps()
    src = tmp_path / "in" / "d.fits"
    src.parent.mkdir()
    write_exposure(src, image, detector=det, header={"VISIT": 1})
    config = {"ampEdgeInset": 2, "ampEdgeWidth": 8, "doBackground": False,
              "doDetection": False}
    summary = process([src], tmp_path / "cat", config=config, output_images=tmp_path / "out",
                      client=client, progress=False)
    assert summary.n_flagged == 1 and summary.n_failed == 0
    row = read_catalog(tmp_path / "cat", "detectors").iloc[0]
    assert "without a clipped mean" in row["error"]
    peds = read_catalog(tmp_path / "cat", "pedestals")["pedestal"].to_numpy()
    with fits.open(row["output"]) as out:
        header = out[0].header
        assert header["LSST ISR AMPOFFSET INTERFACEOFFSET A-B"] is None
        assert header["LSST ISR AMPOFFSET PEDESTAL C"] == peds[2]
        assert np.allclose(out["IMAGE"].data[:, 40:], image[:, 40:] - np.float32(peds[2]))
