"""A real Butler repository in a folder, for the Butler-input tests and notebook 04.

SQLite registry, file datastore; instrument, physical_filter, day_obs, detector, visit and
(optionally) visit_detector_region records; a ``post_isr_image`` dataset type with storage
class ``ExposureF``, files ingested with `FitsExposureFormatter` (importable as
``butler_repo.FitsExposureFormatter`` with ``tests/`` on ``sys.path``). No LSST science
pipelines are needed: the package never calls ``butler.get``.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

RUN = "u/test/ampoffset"
DAY_OBS = 20250601
VISIT = 2025060100042
#: (detector id, name) of the files in the test repositories
DETECTORS = ((94, "R22_S11"), (95, "R22_S12"))
#: the visit the files' headers claim (wrong on purpose: identity must come from the dataId)
HEADER_VISIT = 1


def write_detector_file(path, name: str, step: float):
    """A full-size LSSTCam detector (gzip tile-compressed: tiny on disk) whose amp i sits
    ``i * step`` above a 1000 ADU sky plus a gentle ramp; its header names the detector and
    `HEADER_VISIT`."""
    from ampoffset_dask import get_camera
    from ampoffset_dask.io.fits import write_exposure

    det = get_camera("lsstcam")[name]
    image = np.full(det.shape, 1000.0, dtype=np.float32)
    image += np.linspace(0.0, 4.0, det.width, dtype=np.float32)[None, :]
    for i, amp in enumerate(det):
        image[amp.slices] += step * i
    return write_exposure(path, image, compress="gzip",
                          header={"CAMERA": "lsstcam", "DETNAME": name, "VISIT": HEADER_VISIT})


def write_detector_files(folder) -> list[tuple[Path, int, int, str]]:
    """The files of `DETECTORS` as ``make_repo`` takes them."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return [(write_detector_file(folder / f"{name}.fits", name, 0.5 + k), VISIT, det_id, name)
            for k, (det_id, name) in enumerate(DETECTORS)]


def _formatter_class() -> type:
    from lsst.daf.butler import FormatterV2

    class FitsExposureFormatter(FormatterV2):
        """Names the files' format in the datastore; reading them through the Butler would
        need afw, which this package never does (it reads the files itself)."""

        default_extension = ".fits"
        can_read_from_uri = True

        def read_from_uri(self, uri, component=None, expected_size=-1):
            raise NotImplementedError("ampoffset-dask reads the file itself; no butler.get")

    FitsExposureFormatter.__module__ = __name__
    return FitsExposureFormatter


def __getattr__(name: str) -> Any:
    # lsst.daf.butler (~2 CPU s to import) only when a repository is made or read, not when
    # every test process collects the modules importing this one
    if name == "FitsExposureFormatter":
        cls = globals()[name] = _formatter_class()
        return cls
    raise AttributeError(name)


FORMATTER = f"{__name__}.FitsExposureFormatter"


def make_repo(
    root: str | Path,
    files: Iterable[tuple[str | Path, int, int, str]],
    *,
    instrument: str = "LSSTCam",
    run: str = RUN,
    regions: bool = True,
    transfer: str | None = "copy",
    dataset_type: str = "post_isr_image",
    ingest: bool = True,
    datastore_root: str | None = None,
) -> Any:
    """Create a repository at ``root`` and ingest ``files``: (path, visit, detector id,
    detector full name) tuples (``ingest=False``: only their dimension records, for a later
    ``butler.ingest_zip``). ``datastore_root`` puts the datastore elsewhere (an
    ``s3://bucket/prefix/``: lsst.resources takes its endpoint from ``S3_ENDPOINT_URL``).
    Returns a writeable Butler."""
    from lsst.daf.butler import Butler, Config, DatasetRef, DatasetType, FileDataset
    from lsst.sphgeom import Box

    if datastore_root is None:
        Butler.makeRepo(str(root))
    else:
        Butler.makeRepo(str(root), config=Config({"datastore": {"root": datastore_root}}),
                        forceConfigRoot=False)
    butler = Butler.from_config(str(root), writeable=True, run=run)
    files = list(files)
    reg = butler.registry
    reg.insertDimensionData("instrument", {
        "name": instrument, "visit_max": 2**40, "exposure_max": 2**40, "detector_max": 1000,
        "visit_system": 0, "class_name": "lsst.obs.lsst.LsstCam"})
    reg.insertDimensionData("physical_filter",
                            {"instrument": instrument, "name": "r_57", "band": "r"})
    reg.insertDimensionData("day_obs", {"instrument": instrument, "id": DAY_OBS})
    detectors = {(d, n) for _, _, d, n in files}
    reg.insertDimensionData("detector", *[
        {"instrument": instrument, "id": d, "full_name": n, "raft": n.split("_")[0],
         "name_in_raft": n.split("_")[-1], "purpose": "SCIENCE"} for d, n in sorted(detectors)])
    visits = sorted({v for _, v, _, _ in files})
    reg.insertDimensionData("visit", *[
        {"instrument": instrument, "id": v, "day_obs": DAY_OBS, "physical_filter": "r_57",
         "name": f"visit{v}", "seq_num": v % 100000} for v in visits])
    if regions:
        box = Box.fromDegrees(10.0, -5.0, 10.2, -4.8)
        reg.insertDimensionData("visit_detector_region", *[
            {"instrument": instrument, "visit": v, "detector": d, "region": box}
            for _, v, d, _ in files])
    dtype = DatasetType(dataset_type, ("instrument", "visit", "detector"), "ExposureF",
                        universe=butler.dimensions)
    reg.registerDatasetType(dtype)
    if not ingest:
        return butler
    datasets = [
        FileDataset(path=str(Path(p).resolve()),
                    refs=[DatasetRef(dtype, {"instrument": instrument, "visit": v,
                                             "detector": d}, run=run)],
                    formatter=FORMATTER)
        for p, v, d, _ in files
    ]
    butler.ingest(*datasets, transfer=transfer)
    return butler
