"""The notebook API: `build_graph` and `measure_visit`."""

from __future__ import annotations

import json

import dask
import numpy as np
import pytest
from io_helpers import write_stepped_lsstcam

from ampoffset_dask import InputError, build_graph, measure_detector
from ampoffset_dask.catalog import DetectorResult
from ampoffset_dask.catalog.schema import UNKNOWN_VISIT
from ampoffset_dask.io.fits import read_exposure
from ampoffset_dask.pipeline import measure_visit

from .helpers import VISIT


def test_build_graph_computes_on_the_cluster(sim_visit, sim_dir, direct, client, tmp_path):
    graph = build_graph(sim_dir, output_images=tmp_path / "out")
    assert len(graph) == 9
    key = (VISIT, "R22_S11")
    node = graph[key]
    call = node.key.split("-")[1]
    assert len(call) == 12 and node.key == f"ampoffset-{call}-{VISIT}-R22_S11"
    layers = set(node.dask.keys())
    assert {f"ampoffset-read-{call}-{VISIT}-R22_S11", f"ampoffset-measure-{call}-{VISIT}-R22_S11",
            f"ampoffset-write-{call}-{VISIT}-R22_S11"} <= layers
    # no pixels in the graph: it pickles to a few kB
    import cloudpickle

    assert len(cloudpickle.dumps(dict(node.dask))) < 20_000
    (results,) = dask.compute(graph)  # runs on the connected LocalCluster
    pedestals, _ = direct
    for (visit, name), res in results.items():
        assert isinstance(res, DetectorResult) and res.status == "ok"
        expected = pedestals[pedestals["detector"] == name]["pedestal"].to_numpy()
        np.testing.assert_array_equal(res.pedestals, expected)
        written = read_exposure(res.output)
        assert written.visit == visit and written.detector.name == name
    assert len(list((tmp_path / "out" / str(VISIT)).glob("*/*.fits"))) == 9


def test_an_unusable_input_computes_to_process_s_failed_record(tmp_path):
    bad = tmp_path / "bad.fits"
    bad.write_bytes(b"not a fits file at all")
    graph = build_graph(bad)
    ((key, node),) = graph.items()
    assert key == (UNKNOWN_VISIT, f"input:{bad}")
    (result,) = dask.compute(*graph.values(), scheduler="sync")
    assert result.status == "failed" and result.input == str(bad)
    assert "bad.fits" in result.error
    assert result.key == key
    assert node.key == f"ampoffset-{node.key.split('-')[1]}-{UNKNOWN_VISIT}-input:{bad}"
    with pytest.raises(InputError, match=r"missing\.fits: no such file or folder"):
        build_graph(tmp_path / "missing.fits")


def test_measure_visit_mapping_and_datatree(sim_visit, client):
    paths = sim_visit.paths[:3]
    exposures = {}
    expected = {}
    for path in paths:
        exp = read_exposure(path)
        exposures[exp.detector.name] = (exp.image, exp.mask, exp.detector, exp.mask_planes)
        expected[exp.detector.name] = measure_detector(exp.image, exp.mask, exp.detector,
                                                       mask_planes=exp.mask_planes).pedestals
    got = measure_visit(exposures, scheduler="threads")
    assert list(got) == list(exposures)
    for name, m in got.items():
        np.testing.assert_array_equal(m.pedestals, expected[name])

    # a DataTree of dask-backed Datasets laid out as open_visit makes them
    import dask.array as da
    import xarray as xr

    nodes = {}
    for name, (image, mask, det, planes) in exposures.items():
        chunks = (det.amplifiers[0].height, det.amplifiers[0].width)
        nodes[name] = xr.Dataset(
            {"image": (("y", "x"), da.from_array(image, chunks=chunks)),
             "mask": (("y", "x"), da.from_array(mask, chunks=chunks))},
            attrs={"visit": VISIT, "detector": name, "geometry": json.dumps(det.to_dict()),
                   "mask_planes": json.dumps(planes)})
    tree = xr.DataTree.from_dict(nodes)
    got = measure_visit(tree, scheduler="threads")
    assert sorted(got) == sorted(expected)
    for name, m in got.items():
        np.testing.assert_array_equal(m.pedestals, expected[name])

    # open_visit's lazy DataTree, measured on the LocalCluster (the current client)
    from ampoffset_dask import open_visit

    got = measure_visit(open_visit(paths))
    assert sorted(got) == sorted(expected)
    for name, m in got.items():
        np.testing.assert_array_equal(m.pedestals, expected[name])


def test_measure_visit_edges_only_reads_only_the_strips(tmp_path, pixel_counter):
    """An edges-only measure_visit on a lazy DataTree reads the edge strips, not every pixel
    (dask.delayed must not materialise the Datasets it is handed)."""
    from ampoffset_dask import AmpOffsetConfig, open_visit

    path, image, det = write_stepped_lsstcam(tmp_path / "e2v.fits", "R22_S11", visit=4,
                                             step=0.25, noise=5.0, seed=3)
    config = AmpOffsetConfig(do_background=False, do_detection=False)
    tree = open_visit([path])
    results = measure_visit(tree, config=config, scheduler="sync")
    (result,) = results.values()
    assert 0 < pixel_counter["pixels"] <= 0.26 * 2 * image.size
    expected = measure_detector(image, None, det, config)
    np.testing.assert_array_equal(result.pedestals, expected.pedestals)


def test_process_file_edges_only_reads_only_the_strips(tmp_path, pixel_counter):
    from ampoffset_dask import AmpOffsetConfig
    from ampoffset_dask.pipeline.detector_job import process_file

    path, image, det = write_stepped_lsstcam(tmp_path / "itl.fits", "R02_S02", visit=9,
                                             step=0.1)
    config = AmpOffsetConfig(do_background=False, do_detection=False)
    res = process_file(path, det, config)
    assert res.status == "ok", res.error
    assert 0 < pixel_counter["pixels"] <= 0.26 * 2 * image.size
    expected = measure_detector(image, None, det, config)
    np.testing.assert_array_equal(res.pedestals, expected.pedestals)


def test_untouched_dataset_planes_are_read_from_their_files(tmp_path, monkeypatch):
    """The planes of a Dataset as `open_exposure` made them are read through their
    LazyPlanes (no dask computation of their pixels) by `measure_visit`, `measure_detector`
    and `AmpOffsetTask.run`; changed ones through dask. Either way the pedestals are those of
    the Dataset's pixels."""
    import dask.array as da

    from ampoffset_dask import AmpOffsetConfig, AmpOffsetTask, open_exposure
    from ampoffset_dask.io.sections import lazy_plane

    path, image, det = write_stepped_lsstcam(tmp_path / "e2v.fits", "R22_S11", visit=4,
                                             step=0.25, noise=5.0, seed=3)
    ds = open_exposure(path)
    for name in ("image", "mask"):
        plane = lazy_plane(ds[name])
        assert plane is not None and lazy_plane(ds[name].data) is plane
        np.testing.assert_array_equal(np.asarray(plane), ds[name].values)
    for changed in (ds["image"] + 0, ds["image"][:, :100], ds["image"].chunk({"y": 1000}),
                    ds["image"].values, da.zeros((4, 4), chunks=2)):
        assert lazy_plane(changed) is None

    computed = []
    original = da.Array.__array__

    def spy(self, *args, **kwargs):
        computed.append(self.name)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(da.Array, "__array__", spy)
    step = np.zeros(det.shape, np.float32)
    step[det.amplifiers[0].slices] = 2.0  # a 2-ADU step on the first amp
    stepped = ds.copy()
    stepped["image"] = ds["image"] + step
    edges = AmpOffsetConfig(do_background=False, do_detection=False)
    for config in (edges, AmpOffsetConfig()):
        untouched = measure_detector(image, None, det, config).pedestals
        measured = {
            "measure_visit": lambda d, c=config: measure_visit({"d": d}, config=c,
                                                               scheduler="sync")["d"].pedestals,
            "measure_detector": lambda d, c=config: measure_detector(d, config=c).pedestals,
        }
        if config is edges:
            measured["AmpOffsetTask.run"] = lambda d: AmpOffsetTask(edges).run(d).pedestals
        for how, measure in measured.items():
            computed.clear()
            np.testing.assert_array_equal(measure(ds), untouched, err_msg=how)
            assert computed == [], how
            got = measure(stepped)
            assert computed, how  # the changed image went through dask
            np.testing.assert_array_equal(
                got, measure_detector(image + step, None, det, config).pedestals, err_msg=how)
            assert abs(got[0] - untouched[0]) > 1.0, how


def test_a_worker_unpickling_a_dataset_reads_its_files(tmp_path):
    """A fresh process that only unpickles an `open_exposure` Dataset (as a worker does) and
    imports the adapter gets LazyPlanes for its planes."""
    import pickle
    import subprocess
    import sys

    from ampoffset_dask import open_exposure

    path, _, _ = write_stepped_lsstcam(tmp_path / "e2v.fits", "R22_S11", visit=4, step=0.25)
    (tmp_path / "ds.pkl").write_bytes(pickle.dumps(open_exposure(path)))
    code = ("import pickle, sys\n"
            "ds = pickle.loads(open(sys.argv[1], 'rb').read())\n"
            "from ampoffset_dask.exposure import as_exposure_parts\n"
            "parts = as_exposure_parts(ds)\n"
            "print(type(parts.image).__name__, type(parts.mask).__name__)\n")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "ds.pkl")],
                         capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["LazyPlane", "LazyPlane"]


def test_measure_visit_of_persisted_datasets_on_a_cluster(sim_visit, client):
    """Datasets persisted on the cluster (untouched or edited) are measured from their
    persisted pixels (their tasks once failed with 'Missing dependency')."""
    from ampoffset_dask import AmpOffsetConfig, open_exposure

    config = AmpOffsetConfig(do_background=False, do_detection=False)
    path = sim_visit.paths[0]
    untouched = open_exposure(path).persist()
    edited = open_exposure(path)
    edited["image"] = edited["image"] + 1.0
    edited = edited.persist()
    got = measure_visit({"a": untouched, "b": edited}, config=config)
    expected = measure_detector(read_exposure(path), config=config).pedestals
    np.testing.assert_array_equal(got["a"].pedestals, expected)
    np.testing.assert_allclose(got["b"].pedestals, expected, rtol=0, atol=1e-4)


def test_measure_visit_takes_the_kernels_setting(sim_visit, monkeypatch):
    from ampoffset_dask import ConfigError
    from ampoffset_dask.algorithm import kernels

    exp = read_exposure(sim_visit.paths[0])
    visit = {exp.detector.name: (exp.image, exp.mask, exp.detector, exp.mask_planes)}
    seen = []
    real = kernels.active

    def spy():
        seen.append(real().NAME)
        return real()

    monkeypatch.setattr(kernels, "active", spy)
    try:
        for choice in ("numpy", "numba"):
            seen.clear()
            with dask.config.set({"ampoffset.kernels": choice}):
                measure_visit(visit, scheduler="sync")
            assert seen and set(seen) == {choice}
        with dask.config.set({"ampoffset.kernels": "cuda"}), \
                pytest.raises(ConfigError, match="kernels must be one of"):
            measure_visit(visit, scheduler="sync")
    finally:
        kernels.set_kernels(None)
    # "auto" (the default) keeps this process's own choice, as a notebook made it
    with kernels.use_kernels("numpy"):
        seen.clear()
        measure_visit(visit, scheduler="sync")
        assert set(seen) == {"numpy"} and kernels.requested() == "numpy"


def test_a_graph_keeps_the_config_it_was_built_with(sim_visit, tmp_path):
    """build_graph kept the caller's config object: edited after building (one config
    reused across notebook cells), it changed the built graph's pedestals and status. A
    mapping of LSST names is taken as process takes it, an invalid config refused up front
    (both failed every detector at compute time)."""
    from ampoffset_dask import AmpOffsetConfig, ConfigError

    path = sim_visit.paths[0]
    config = AmpOffsetConfig(do_background=False, do_detection=False)
    graph = build_graph(path, config=config)
    (first,) = dask.compute(*graph.values(), scheduler="sync")
    config.amp_edge_max_offset = 0.01  # every interface beyond it: pedestals 0, flagged
    (again,) = dask.compute(*graph.values(), scheduler="sync")
    assert again.status == first.status == "ok"
    np.testing.assert_array_equal(again.pedestals, first.pedestals)
    mapped = build_graph(path, config={"doBackground": False, "doDetection": False})
    (by_name,) = dask.compute(*mapped.values(), scheduler="sync")
    np.testing.assert_array_equal(by_name.pedestals, first.pedestals)
    with pytest.raises(ConfigError, match="ampEdgeWidth"):
        build_graph(path, config={"ampEdgeWidth": 10_000})
    exp = read_exposure(path)
    members = {exp.detector.name: (exp.image, exp.mask, exp.detector)}
    got = measure_visit(members, config={"doBackground": False, "doDetection": False},
                        scheduler="sync")
    np.testing.assert_array_equal(got[exp.detector.name].pedestals, first.pedestals)


def test_a_copy_is_not_written_from_an_input_rewritten_after_its_read(sim_visit, tmp_path):
    """The write task read the input's header cards after the read task's change check: an
    input rewritten in between (another run correcting it in place) gave a copy with the
    old pixels under the new file's cards, recorded ok. Now the copy is not written and the
    result is flagged, its measurement (of one version) kept."""
    import shutil

    from astropy.io import fits
    from dask.callbacks import Callback

    src = tmp_path / "in" / "x.fits"
    src.parent.mkdir()
    shutil.copyfile(sim_visit.paths[0], src)
    graph = build_graph(src, output_images=tmp_path / "out")

    class Rewrite(Callback):
        def _posttask(self, key, result, dsk, state, id):
            if str(key).startswith("ampoffset-measure-"):
                with fits.open(src, mode="update") as hdul:
                    hdul[0].header["OBJECT"] = "REWRITTEN"
                    hdul["IMAGE"].data[:] += 1000.0

    with Rewrite():
        (result,) = dask.compute(*graph.values(), scheduler="sync")
    assert result.status == "flagged" and result.output == ""
    assert "corrected image not written" in result.error and "changed" in result.error
    assert not list((tmp_path / "out").rglob("*.fits"))
    (clean,) = dask.compute(*build_graph(sim_visit.paths[0]).values(), scheduler="sync")
    np.testing.assert_array_equal(result.pedestals, clean.pedestals)
