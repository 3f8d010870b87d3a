"""What a run does with its config: ``doApplyAmpOffset`` against the run's options, and
settings checked before anything starts."""

from __future__ import annotations

import json

import dask
import pytest

from ampoffset_dask import AmpOffsetConfig, ConfigError, process, read_catalog


def _recorded(catalog) -> dict:
    runs = read_catalog(catalog, "runs")
    return json.loads(runs.sort_values("started")["config"].iloc[-1])


def test_the_options_decide_whether_images_are_corrected(sim_visit, client, tmp_path):
    """A preset's doApplyAmpOffset has nowhere to write: the run's options decide, a note
    says so when the config expected corrected images the run does not write, and the
    catalog records what the run did. Measuring and then
    correcting resume one catalog."""
    paths = sim_visit.paths[:2]
    drp = AmpOffsetConfig.from_preset("lsstcam-drp")  # doApplyAmpOffset=True
    summary = process(paths, tmp_path / "cat", config=drp, client=client, progress=False)
    assert summary.n_ok == 2
    assert any("doApplyAmpOffset=True, but this run writes no corrected images" in n
               for n in summary.notes), summary.notes
    assert _recorded(tmp_path / "cat")["do_apply_amp_offset"] is False
    assert drp.do_apply_amp_offset is True  # the caller's config is left alone
    # the same catalog, now writing corrected images with a config saying False
    summary = process(paths, tmp_path / "cat", config=AmpOffsetConfig.from_preset("lsstcam"),
                      client=client, progress=False, output_images=tmp_path / "corrected")
    assert summary.n_ok == 2 and summary.n_skipped == 0
    # asking for corrected images with LSST's default False is the ordinary way: no note
    assert not [n for n in summary.notes if "doApplyAmpOffset" in n], summary.notes
    assert _recorded(tmp_path / "cat")["do_apply_amp_offset"] is True
    assert len(list((tmp_path / "corrected").rglob("*.fits"))) == 2
    # agreeing: no note
    summary = process(paths, tmp_path / "cat2", client=client, progress=False)
    assert not [n for n in summary.notes if "doApplyAmpOffset" in n]


@pytest.mark.parametrize("setting", ["dask", "env"])
def test_an_unknown_kernels_setting_is_refused_before_the_run(sim_visit, tmp_path, monkeypatch,
                                                              setting):
    catalog = tmp_path / "cat"
    if setting == "env":
        monkeypatch.setenv("AMPOFFSET_KERNELS", "fortran")
        match = r"\$AMPOFFSET_KERNELS: kernels must be one of auto, numpy, numba"
        ctx = dask.config.set({})
    else:
        match = r"ampoffset.kernels='bogus' .* must be one of auto, numpy, numba"
        ctx = dask.config.set({"ampoffset.kernels": "bogus"})
    with ctx, pytest.raises(ConfigError, match=match):
        # no client is given: refused before a cluster would be started
        process(sim_visit.paths[:1], catalog, progress=False)
    assert not catalog.exists()


@pytest.mark.parametrize("key, value, match", [
    ("io-retries", "abc", r"ampoffset.io-retries='abc' .*DASK_AMPOFFSET__IO_RETRIES.* an "
                          r"integer >= 0"),
    ("in-flight-per-thread", 0, r"in-flight-per-thread=0 .* an integer >= 1"),
    ("remote.merge-gap", "lots", r"remote.merge-gap='lots' .* a size such as 2MiB"),
    ("io-retry-delay", -1, r"io-retry-delay=-1 .* a number >= 0"),
])
def test_an_invalid_numeric_setting_is_refused_before_the_run(sim_visit, tmp_path, key,
                                                              value, match):
    """An invalid ``ampoffset.*`` number (``$DASK_AMPOFFSET__IO_RETRIES=abc``) was an
    internal error (exit 4) after the catalog was opened, its run recorded as failed."""
    catalog = tmp_path / "cat"
    with dask.config.set({f"ampoffset.{key}": value}), pytest.raises(ConfigError, match=match):
        process(sim_visit.paths[:1], catalog, progress=False)
    assert not catalog.exists()


def test_a_run_with_other_overscan_or_gain_options_is_refused_as_a_new_config(sim_visit,
                                                                             client, tmp_path):
    """Pedestals measured with the camera's nominal gains (electrons) and without (ADU), or
    with and without the overscan removed, cannot share a catalog's current rows: like a
    changed config, such a run is refused unless it is a new run, whose rows replace the
    earlier ones."""
    paths = sim_visit.paths[:2]
    cat = tmp_path / "cat"
    assert process(paths, cat, client=client, progress=False).n_ok == 2
    for kwargs in ({"gain": "nominal"}, {"overscan": "none"}):
        with pytest.raises(ConfigError, match=r"measured with overscan 'auto', gain None "
                                              r"\(ADU\).*--new-run"):
            process(paths, cat, client=client, progress=False, **kwargs)
    assert len(read_catalog(cat, "runs")) == 1  # nothing recorded
    # the same options resume (nothing measured again)
    assert process(paths, cat, client=client, progress=False).n_skipped == 2
    summary = process(paths, cat, client=client, progress=False, overscan="none",
                      new_run=True)
    assert summary.n_ok == 2 and summary.n_skipped == 0
    assert process(paths, cat, client=client, progress=False, overscan="none").n_skipped == 2
    with pytest.raises(ConfigError, match=r"holds results measured with overscan 'none'"):
        process(paths, cat, client=client, progress=False)


def test_a_catalog_in_an_object_store_is_refused_before_anything_is_made(sim_visit, tmp_path,
                                                                         monkeypatch):
    """``--output s3://...`` made a local folder named ``s3:`` and then failed on it."""
    from ampoffset_dask import InputError

    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match=r"s3://bucket/catalog: the catalog is a local folder"):
        process(sim_visit.paths[:1], "s3://bucket/catalog", progress=False,
                output_images=tmp_path / "corrected")
    assert not list(tmp_path.iterdir())  # no "s3:" folder, no marked output folder


def test_the_cli_refuses_a_catalog_in_an_object_store_too(sim_visit, tmp_path, monkeypatch):
    """The command took ``--output`` as a Path, which reads ``s3://b/c`` as ``s3:/b/c``: the
    URL went unseen, and the run failed on a "damaged catalog" in a local folder ``s3:``."""
    from cli_helpers import cli

    monkeypatch.chdir(tmp_path)
    proc = cli("run", sim_visit.paths[0], "--output", "s3://bucket/catalog", "--no-progress",
               "--scheduler", "local:1")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "s3://bucket/catalog: the catalog is a local folder" in proc.stderr
    assert not list(tmp_path.iterdir())


def test_a_new_run_that_recorded_nothing_is_not_said_to_hold_results(sim_visit, client,
                                                                     tmp_path):
    """A --new-run with config B over files this catalog corrected in place with config A
    records nothing (it may not measure them); a run with config A was then refused as
    'the catalog holds results of a different configuration', though every row was A's."""
    import shutil

    folder = tmp_path / "in"
    folder.mkdir()
    for path in sim_visit.paths[:2]:
        shutil.copy(path, folder)
    cat = tmp_path / "cat"
    first = process(folder, cat, client=client, progress=False, in_place=True)
    assert first.n_ok == 2
    other = process(folder, cat, client=client, progress=False, new_run=True,
                    config=AmpOffsetConfig(amp_edge_max_offset=7))
    assert (other.n_ok, other.n_flagged, other.n_failed) == (0, 0, 0), other
    # the new run set the catalog's configuration (later plain runs of config B go on); a
    # run of config A is refused, saying that run recorded nothing, not that the catalog
    # holds results of config B
    with pytest.raises(ConfigError, match="was last run with a different configuration, "
                                          "whose run recorded no rows"):
        process(folder, cat, client=client, progress=False)
