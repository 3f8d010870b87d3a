"""`build_graph` applies `process`'s rules: each CCD of a multi-CCD file read from its own HDU
(with the run's overscan and gain), already-corrected inputs flagged and left alone, and
`process`'s up-front output checks (no output over an input, the output folder marked)."""

from __future__ import annotations

from pathlib import Path

import dask
import numpy as np
import pytest
from astropy.io import fits

from ampoffset_dask import AmpOffsetConfig, InputError, build_graph
from ampoffset_dask.algorithm.apply import apply_pedestals
from ampoffset_dask.io.fits import read_exposure
from ampoffset_dask.io.paths import OUTPUT_MARKER
from ampoffset_dask.pipeline.detector_job import process_file
from ampoffset_dask.pipeline.inputs import SUBTRACTED_KEY, discover_inputs, plan_tasks
from ampoffset_dask.pipeline.options import RunOptions
from ampoffset_dask.pipeline.run import prepare

from .helpers import VISIT

EDGES = AmpOffsetConfig(do_background=False, do_detection=False)
#: Per CCD of the MEF: (name, sky, step of amp A over amp B, bias of A, bias of B); the bias
#: differences stay within the do-no-harm limit (5 ADU), so ``overscan="none"`` measures them.
CCDS = (("C1", 100.0, 2.0, 301.5, 300.0), ("C2", 500.0, -3.0, 150.0, 151.0))
AMP_W, AMP_H, OVER = 96, 160, 8


def _mef(path: Path) -> Path:
    """A raw MEF of two header-described CCDs (DATASECA/B, BIASSECA/B, DETPOS, as DECam
    writes them), each with its own sky, amp step and per-amp bias in the overscan."""
    rng = np.random.default_rng(5)
    hdus = [fits.PrimaryHDU()]
    hdus[0].header["EXPNUM"] = 42
    width = 2 * (AMP_W + OVER)
    for k, (name, sky, step, bias_a, bias_b) in enumerate(CCDS, start=1):
        img = rng.normal(0.0, 1.0, (AMP_H, width)).astype(np.float32)
        # columns: overscan B | data B | data A | overscan A
        img[:, :OVER] += bias_b
        img[:, OVER:OVER + AMP_W] += bias_b + sky
        img[:, OVER + AMP_W:OVER + 2 * AMP_W] += bias_a + sky + step
        img[:, OVER + 2 * AMP_W:] += bias_a
        header = fits.Header()
        for key, value in (
                ("DATASECB", f"[{OVER + 1}:{OVER + AMP_W},1:{AMP_H}]"),
                ("BIASSECB", f"[1:{OVER},1:{AMP_H}]"),
                ("CCDSECB", f"[1:{AMP_W},1:{AMP_H}]"),
                ("DATASECA", f"[{OVER + AMP_W + 1}:{OVER + 2 * AMP_W},1:{AMP_H}]"),
                ("BIASSECA", f"[{OVER + 2 * AMP_W + 1}:{width},1:{AMP_H}]"),
                ("CCDSECA", f"[{AMP_W + 1}:{2 * AMP_W},1:{AMP_H}]"),
                ("CCDNUM", k), ("DETPOS", name)):
            header[key] = value
        hdus.append(fits.ImageHDU(img, header=header, name=name))
    fits.HDUList(hdus).writeto(path)
    return path


def _compute(graph):
    (results,) = dask.compute(graph, scheduler="sync")
    return results


def _step(result) -> float:
    ped = dict(zip(result.amp_names, result.pedestals, strict=True))
    return ped["A"] - ped["B"]


def test_each_ccd_of_a_multi_ccd_file_is_read_from_its_own_hdu(tmp_path):
    (tmp_path / "in").mkdir()
    path = _mef(tmp_path / "in" / "mef.fits")
    planned = plan_tasks(discover_inputs(path))
    assert [(t.name, t.hdu, t.raw) for t in planned] == [("C1", 1, True), ("C2", 2, True)]
    out = tmp_path / "out"
    results = _compute(build_graph(path, config=EDGES, output_images=out))
    assert sorted(results) == [(42, "C1"), (42, "C2")]
    assert all(r.status == "ok" for r in results.values())
    # each CCD's own step (C1 +2, C2 -3), not C1's pixels measured twice
    assert {name: _step(r) for (_, name), r in results.items()} == pytest.approx(
        {name: step for name, _, step, _, _ in CCDS}, abs=0.15)
    for task in planned:
        name = CCDS[task.hdu - 1][0]
        res = results[(42, name)]
        assert res.overscan == "per-row"  # raw boxes: overscan "auto" subtracts it
        # the pedestals and the corrected image are those `process`'s task makes
        ref = process_file(path, task.detector, EDGES, visit=42, hdu=task.hdu,
                           output=tmp_path / "ref" / f"{name}.fits")
        assert ref.status == "ok", ref.error
        np.testing.assert_array_equal(res.pedestals, ref.pedestals)
        assert res.output == str(out / "42" / name / "mef.fits")
        written = read_exposure(res.output)
        assert written.detector.name == name
        own = read_exposure(path, hdu=task.hdu)
        np.testing.assert_array_equal(
            written.image, apply_pedestals(own.image, res.pedestals, task.detector))
        np.testing.assert_array_equal(written.image, read_exposure(ref.output).image)
        assert fits.getheader(res.output, 0)["OVERSCAN"] == "per-row"  # as process writes

    # the graph's overscan is the reader's: "none" leaves each amp's bias in its pedestal
    raw = _compute(build_graph(path, config=EDGES, overscan="none"))
    for task in planned:
        (name, _, step, bias_a, bias_b) = CCDS[task.hdu - 1]
        assert raw[(42, name)].overscan == "none"
        assert _step(raw[(42, name)]) == pytest.approx(step + bias_a - bias_b, abs=0.1)
        ref = process_file(path, task.detector, EDGES, visit=42, hdu=task.hdu,
                           overscan="none")
        np.testing.assert_array_equal(raw[(42, name)].pedestals, ref.pedestals)


def test_an_already_corrected_input_is_flagged_not_corrected_again(sim_visit, tmp_path):
    source = sim_visit.paths[0]
    (first,) = _compute(build_graph(source, output_images=tmp_path / "pass1")).values()
    assert first.status == "ok", first.error
    corrected = first.output
    assert fits.getheader(corrected)[SUBTRACTED_KEY] is True
    before = Path(corrected).read_bytes()

    graph = build_graph(corrected, output_images=tmp_path / "pass2")
    ((visit, name), node), = graph.items()
    assert (visit, name) == (first.visit, first.detector)
    # nothing read or written: the result's key only
    assert set(node.dask.keys()) == {f"ampoffset-{node.key.split('-')[1]}-{visit}-{name}"}
    (again,) = _compute(graph).values()
    assert again.status == "flagged"
    assert again.error.startswith(f"already corrected ({SUBTRACTED_KEY} = T in {corrected})")
    assert "not corrected again" in again.error
    assert again.output == "" and again.applied is True
    # the pedestals its header records, i.e. those of the first pass
    assert again.amp_names == first.amp_names
    np.testing.assert_allclose(again.pedestals, first.pedestals, rtol=1e-12, atol=0)
    assert Path(corrected).read_bytes() == before
    assert not list((tmp_path / "pass2").rglob("*.fits"))

    # the very row `process` records for it
    with prepare(corrected, tmp_path / "cat",
                 options=RunOptions(output_images=tmp_path / "pass3")) as run:
        assert not run.runnable
        (row,) = run.failures
    assert (row.status, row.error, row.amp_names, row.applied) == (
        again.status, again.error, again.amp_names, again.applied)
    np.testing.assert_array_equal(row.pedestals, again.pedestals)


def _copy_sim(sim_visit, folder: Path) -> tuple[Path, bytes]:
    """The first simulated detector, copied to where `process` would write its corrected
    image under ``folder``: ``folder/<visit>/<detector>/<name>``."""
    src = Path(sim_visit.paths[0])
    name = read_exposure(src).detector.name
    dest = folder / str(VISIT) / name / src.name
    dest.parent.mkdir(parents=True)
    data = src.read_bytes()
    dest.write_bytes(data)
    return dest, data


def test_output_folder_equal_to_the_input_folder_is_refused(sim_visit, tmp_path):
    data_dir = tmp_path / "data"
    path, data = _copy_sim(sim_visit, data_dir)
    with pytest.raises(InputError, match=r"the input folder is the --output-images folder"):
        build_graph(data_dir, output_images=data_dir)
    assert path.read_bytes() == data
    assert not (data_dir / OUTPUT_MARKER).exists()


def test_output_over_its_own_input_file_is_refused(sim_visit, tmp_path):
    """The input named as a file, lying where its corrected copy would go, inside the output
    folder (which the graph would mark as one of corrected images)."""
    out = tmp_path / "out"
    path, data = _copy_sim(sim_visit, out)
    with pytest.raises(InputError, match=rf"{path}: the input lies inside the --output-images "
                                         rf"folder {out}, which the run marks"):
        build_graph(path, output_images=out)
    assert path.read_bytes() == data
    assert not (out / OUTPUT_MARKER).exists()


def test_output_folder_is_marked_and_not_taken_as_inputs(sim_visit, tmp_path):
    data_dir = tmp_path / "data"
    path, _ = _copy_sim(sim_visit, data_dir)
    out = data_dir / "corrected"  # inside the inputs: allowed, as with process
    graph = build_graph(data_dir, output_images=out)
    assert (out / OUTPUT_MARKER).is_file()  # marked when the graph is built
    (res,) = _compute(graph).values()
    assert res.status == "ok" and Path(res.output).is_relative_to(out)
    # a second graph over the inputs does not take the corrected copy as a second input of
    # the same (visit, detector)
    again = build_graph(data_dir)
    assert list(again) == [(res.visit, res.detector)]
    (res2,) = _compute(again).values()
    assert res2.input == str(path)


def test_object_store_output_is_refused(sim_visit, tmp_path):
    with pytest.raises(InputError, match=r"build_graph writes corrected images to a local "
                                         r"folder"):
        build_graph(sim_visit.paths[0], output_images="s3://bucket/corrected")


def test_a_measurement_failing_the_do_no_harm_checks_is_flagged_as_process_flags_it(
        sim_visit, tmp_path):
    """Amps 20 ADU apart (no bias correction, say): most interfaces exceed ampEdgeMaxOffset,
    and the graph's result is `process`'s flagged one, not ``ok``."""
    path = tmp_path / "steps.fits"
    with fits.open(sim_visit.paths[0]) as hdul:
        det = read_exposure(sim_visit.paths[0]).detector
        for k, amp in enumerate(det):
            hdul["IMAGE"].data[amp.slices] += np.float32(20.0 * (k % 2))
        hdul.writeto(path)
    (result,) = dask.compute(*build_graph(path).values(), scheduler="sync")
    expected = process_file(str(path))
    assert expected.status == result.status == "flagged"
    assert result.error == expected.error
    assert "interfaces exceed ampEdgeMaxOffset=5" in result.error
    np.testing.assert_array_equal(result.pedestals, expected.pedestals)


def test_a_file_replaced_after_the_graph_was_built_is_refused(sim_visit, tmp_path):
    path, _ = _copy_sim(sim_visit, tmp_path / "in")
    graph = build_graph(path)
    other = Path(sim_visit.paths[1]).read_bytes()
    path.write_bytes(other)  # another detector's pixels under the planned name
    (result,) = dask.compute(*graph.values(), scheduler="sync")
    assert result.status == "failed" and not result.pedestals
    assert result.error.startswith("InputError: ")
    assert "the file changed since the graph was built" in result.error


def test_an_image_that_cannot_be_written_flags_the_result_as_process_does(sim_visit,
                                                                          tmp_path):
    """The measurement stands when only its corrected image is missing: flagged, naming
    why, and the rest of the graph computes."""
    path, _ = _copy_sim(sim_visit, tmp_path / "in")
    out = tmp_path / "out"
    graph = build_graph(path, output_images=out)
    (key,) = graph
    (out / str(key[0])).mkdir(parents=True)
    (out / str(key[0]) / key[1]).write_text("a file where the detector's folder goes")
    (result,) = dask.compute(*graph.values(), scheduler="sync")
    assert result.status == "flagged" and not result.output
    assert result.error.startswith("corrected image not written: ")
    np.testing.assert_array_equal(result.pedestals, process_file(str(path)).pedestals)
