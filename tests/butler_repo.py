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

from lsst.daf.butler import Butler, DatasetRef, DatasetType, FileDataset, FormatterV2

RUN = "u/test/ampoffset"
DAY_OBS = 20250601


class FitsExposureFormatter(FormatterV2):
    """Names the files' format in the datastore; reading them through the Butler would need
    afw, which this package never does (it reads the files itself)."""

    default_extension = ".fits"
    can_read_from_uri = True

    def read_from_uri(self, uri, component=None, expected_size=-1):
        raise NotImplementedError("ampoffset-dask reads the file itself; no butler.get")


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
) -> Butler:
    """Create a repository at ``root`` and ingest ``files``: (path, visit, detector id,
    detector full name) tuples (``ingest=False``: only their dimension records, for a later
    ``butler.ingest_zip``). Returns a writeable Butler."""
    from lsst.sphgeom import Box

    Butler.makeRepo(str(root))
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
