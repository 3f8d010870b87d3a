"""`build_graph`, like `process`, never lets one bad detector fail the graph: an input that
cannot be planned, read or measured computes to `process`'s ``failed`` record and the others
compute as usual; ``force``, ``visit`` and ``detector`` plan inputs as `process` plans them."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import dask
import numpy as np
from astropy.io import fits

from ampoffset_dask import AmpOffsetConfig, build_graph
from ampoffset_dask.algorithm.apply import apply_pedestals
from ampoffset_dask.catalog.schema import UNKNOWN_VISIT
from ampoffset_dask.io.fits import read_exposure
from ampoffset_dask.pipeline.detector_job import process_file
from ampoffset_dask.pipeline.inputs import SUBTRACTED_KEY, discover_inputs, plan_tasks

from .helpers import VISIT


def _compute(graph: dict) -> dict:
    (results,) = dask.compute(graph, scheduler="sync")
    return results


def _copies(sim_visit, folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True)
    return [Path(shutil.copy(p, folder)) for p in sim_visit.paths[:n]]


def test_bad_inputs_of_a_graph_are_failed_records_and_the_rest_computes(sim_visit, tmp_path):
    good, unreadable, damaged = _copies(sim_visit, tmp_path / "in", 3)
    garbage = tmp_path / "in" / "garbage.fits"
    garbage.write_bytes(b"not a fits file at all")
    graph = build_graph(tmp_path / "in")
    names = {read_exposure(p).detector.name: p for p in (good, unreadable, damaged)}
    assert set(graph) == {(VISIT, n) for n in names} | {(UNKNOWN_VISIT, f"input:{garbage}")}

    # after planning, keeping each file's size and time (the planned stamp still matches):
    # one file's bytes replaced by zeros (its read fails), one file's pixels made NaN
    stat = unreadable.stat()
    unreadable.write_bytes(b"\0" * stat.st_size)
    os.utime(unreadable, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    stat = damaged.stat()
    with fits.open(damaged, mode="update") as hdul:
        hdul["IMAGE"].data[...] = np.nan
    os.utime(damaged, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    results = _compute(graph)

    by_input = {r.input: r for r in results.values()}
    assert by_input[str(garbage)].status == "failed"
    assert "garbage.fits: not a readable FITS file" in by_input[str(garbage)].error
    broken = by_input[str(unreadable)]
    assert broken.status == "failed" and broken.error.startswith("InputError: ")
    assert str(unreadable) in broken.error
    assert broken.detector in names and broken.visit == VISIT and not broken.pedestals
    # the same record `process` makes of it (its error, its status)
    for path in (damaged, good):
        got = by_input[str(path)]
        ref = process_file(str(path))
        assert (got.status, got.error) == (ref.status, ref.error)
        np.testing.assert_array_equal(got.pedestals, ref.pedestals)
    assert by_input[str(good)].status == "ok"
    assert by_input[str(damaged)].status == "flagged"


def test_a_detector_whose_measurement_raises_is_failed_with_process_s_message(sim_visit,
                                                                              tmp_path):
    """An unknown mask plane in the config fails each detector when it is measured."""
    (path,) = _copies(sim_visit, tmp_path / "in", 1)
    config = AmpOffsetConfig()
    config.background.ignored_pixel_mask = ["SATURATED"]  # the plane is SAT
    out = tmp_path / "out"
    (result,) = _compute(build_graph(path, config=config, output_images=out)).values()
    ref = process_file(str(path), config=config)
    assert result.status == ref.status == "failed"
    assert result.error == ref.error and "SATURATED" in result.error
    assert not list(out.rglob("*.fits"))  # nothing measured, nothing written


def test_force_measures_and_corrects_an_already_corrected_input_again(sim_visit, tmp_path):
    (source,) = _copies(sim_visit, tmp_path / "in", 1)
    (first,) = _compute(build_graph(source, output_images=tmp_path / "pass1")).values()
    corrected = first.output
    assert fits.getheader(corrected)[SUBTRACTED_KEY] is True
    (flagged,) = _compute(build_graph(corrected)).values()
    assert flagged.status == "flagged"

    graph = build_graph(corrected, force=True, output_images=tmp_path / "pass2")
    (again,) = _compute(graph).values()
    assert again.status == "ok" and again.output
    ref = process_file(corrected)
    np.testing.assert_array_equal(again.pedestals, ref.pedestals)
    written = read_exposure(again.output)
    np.testing.assert_array_equal(
        written.image, apply_pedestals(read_exposure(corrected).image, again.pedestals,
                                       written.detector))


def test_visit_and_detector_identify_inputs_whose_headers_do_not(sim_visit, tmp_path):
    (path,) = _copies(sim_visit, tmp_path / "in", 1)
    name = read_exposure(path).detector.name
    with fits.open(path, mode="update") as hdul:
        del hdul[0].header["VISIT"]
    graph = build_graph(path)
    ((key, _),) = graph.items()
    assert key[0] == UNKNOWN_VISIT
    (unnamed,) = _compute(graph).values()
    assert unnamed.status == "failed" and "visit" in unnamed.error

    graph = build_graph(path, visit=77, detector=name)
    assert list(graph) == [(77, name)]
    (result,) = _compute(graph).values()
    assert result.status == "ok" and result.visit == 77
    np.testing.assert_array_equal(result.pedestals, process_file(str(path), visit=77).pedestals)


def test_graphs_of_the_same_inputs_with_other_configs_computed_together(sim_visit, tmp_path):
    """Each graph's keys are its own: two graphs of one file (default and edges-only
    configs) computed in one `dask.compute` each get their own config's pedestals."""
    (path,) = _copies(sim_visit, tmp_path / "in", 1)
    edges = AmpOffsetConfig(do_background=False, do_detection=False)
    default_graph, edges_graph = build_graph(path), build_graph(path, config=edges)
    both = dask.compute(default_graph, edges_graph, scheduler="sync")
    for results, config in zip(both, (None, edges), strict=True):
        (result,) = results.values()
        np.testing.assert_array_equal(result.pedestals,
                                      process_file(str(path), config=config).pedestals)
    assert not np.array_equal(next(iter(both[0].values())).pedestals,
                              next(iter(both[1].values())).pedestals)


def test_a_file_with_truncated_pixels_is_failed_under_the_identity_its_header_gives(
        sim_visit, tmp_path):
    """Its headers are whole: the failed row names its visit and detector (before: visit -1
    and no detector), in `process`'s plan as in a graph."""
    (path,) = _copies(sim_visit, tmp_path / "in", 1)
    name = read_exposure(path).detector.name
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    (task,) = plan_tasks(discover_inputs(path))
    assert (task.visit, task.name) == (VISIT, name) and "truncated" in task.error
    ((key, _),) = build_graph(path).items()
    assert key == (VISIT, name)
    (result,) = _compute(build_graph(path)).values()
    assert (result.visit, result.detector, result.status) == (VISIT, name, "failed")
    # beside its good original, a damaged copy does not make a failed row of its detector
    original = Path(sim_visit.paths[0])
    tasks = plan_tasks(discover_inputs([original, path]))
    assert [(t.visit, t.name, bool(t.error)) for t in tasks] == [(VISIT, name, False),
                                                                  (None, None, True)]

