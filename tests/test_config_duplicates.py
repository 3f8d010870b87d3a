"""One config source naming a field twice is refused; mask-plane lists that are not lists and
an invalid ``ampoffset.local.memory-limit-per-worker`` are refused as the user's error.

Each ``run`` here is on one unreadable input with an unknown scheduler, so a config it
accepts records its run (exit 1) without starting a cluster; a refused one exits 2 and makes
no catalog.
"""

from __future__ import annotations

import json
from pathlib import Path

import dask.config
import pytest
import yaml
from cli_helpers import cli

from ampoffset_dask.catalog import read_catalog
from ampoffset_dask.config import AmpOffsetConfig, BackgroundConfig, load_document
from ampoffset_dask.errors import ConfigError, InputError
from ampoffset_dask.pipeline import _config


def run(tmp_path: Path, *options: object):
    """``ampoffset-dask run`` on a junk input with ``options``: (process, catalog path)."""
    junk = tmp_path / "junk"
    junk.mkdir(exist_ok=True)
    (junk / "junk.fits").write_text("not a FITS file\n")
    cat = tmp_path / f"cat{len(list(tmp_path.glob('cat*')))}"
    proc = cli("run", junk, "--output", cat, "--scheduler", "nosuch-spec", "--no-progress",
               *options)
    return proc, cat


def run_with_env(tmp_path: Path, monkeypatch, name: str, value: str):
    """`run` with the environment variable ``name`` set to ``value`` (dask's config read
    again with it, and without it afterwards)."""
    monkeypatch.setenv(name, value)
    dask.config.refresh()
    try:
        return run(tmp_path)
    finally:
        monkeypatch.delenv(name)
        dask.config.refresh()


def recorded_config(cat: Path) -> dict:
    """The config (snake_case) the catalog's one run recorded."""
    runs = read_catalog(cat, "runs")
    assert len(runs) == 1
    return json.loads(runs["config"].iloc[0])


# --- one source naming a field twice ---------------------------------------------------------

def test_a_yaml_config_file_naming_a_key_twice_is_refused_with_its_line(tmp_path):
    cfg = tmp_path / "dup.yaml"
    cfg.write_text("ampEdgeWidth: 32\nampEdgeMaxOffset: 5\nampEdgeMaxOffset: 9\n")
    proc, cat = run(tmp_path, "--config", cfg)
    assert proc.returncode == 2, proc.stderr
    assert f"{cfg}: line 3, column 1" in proc.stderr
    assert "'ampEdgeMaxOffset' is given twice (first on line 2)" in proc.stderr
    assert not cat.exists()


def test_a_json_config_file_naming_a_key_twice_is_refused(tmp_path):
    cfg = tmp_path / "dup.json"
    cfg.write_text('{"ampEdgeMaxOffset": 5, "ampEdgeMaxOffset": 9}')
    proc, cat = run(tmp_path, "--config", cfg)
    assert proc.returncode == 2, proc.stderr
    assert str(cfg) in proc.stderr and "'ampEdgeMaxOffset' is given twice" in proc.stderr
    assert not cat.exists()


def test_a_key_twice_inside_a_section_is_refused_too(tmp_path):
    yaml_file = tmp_path / "c.yaml"
    text = "background:\n  ignoredPixelMask: [BAD]\n  algorithm: LINEAR\n  ignoredPixelMask: []\n"
    with pytest.raises(InputError, match=r"c.yaml: line 4, column 3: .*'ignoredPixelMask' is "
                                         r"given twice \(first on line 2\)"):
        load_document(yaml_file, text, "config files")
    json_file = tmp_path / "c.json"
    with pytest.raises(InputError, match=r"c.json: .*'statsMask' is given twice"):
        load_document(json_file, '{"detection": {"statsMask": [], "statsMask": ["BAD"]}}',
                      "config files")
    # the same key in two different mappings is no repeat
    assert load_document(yaml_file, "a: {x: 1}\nb: {x: 2}\n", "config files") == {
        "a": {"x": 1}, "b": {"x": 2}}
    assert load_document(json_file, '[{"x": 1}, {"x": 2}]', "camera files") == [
        {"x": 1}, {"x": 2}]
    # fields merged in with << are meant to be overridden by the mapping's own
    text = "base: &b {x: 1, y: 2}\nthis:\n  <<: *b\n  x: 3\n"
    assert load_document(tmp_path / "m.yaml", text, "camera files") == {
        "base": {"x": 1, "y": 2}, "this": {"x": 3, "y": 2}}


@pytest.mark.parametrize("mapping", [
    {"background": {"ignoredPixelMask": ["BAD", "SAT"]}, "background.ignoredPixelMask": ["BAD"]},
    {"background.ignoredPixelMask": ["BAD"], "background": {"ignored_pixel_mask": ["BAD", "SAT"]}},
    {"detection": {"isotropicGrow": False}, "detection.isotropic_grow": True},
])
def test_a_section_field_and_the_same_dotted_key_are_refused(mapping):
    """Which of the two won depended on the order of the keys."""
    with pytest.raises(ConfigError, match=r"(background.ignored_pixel_mask|detection."
                                          r"isotropic_grow) given twice \(.* of section "):
        AmpOffsetConfig.from_lsst(mapping)
    config = AmpOffsetConfig()
    with pytest.raises(ConfigError, match="given twice"):
        config.update(mapping)
    assert config == AmpOffsetConfig()  # refused whole: no field of it was set


def test_a_config_file_with_a_section_and_its_dotted_key_is_refused(tmp_path):
    cfg = tmp_path / "dup2.yaml"
    cfg.write_text("background:\n  ignoredPixelMask: [BAD, SAT]\n"
                   "background.ignoredPixelMask: [BAD]\n")
    proc, cat = run(tmp_path, "--config", cfg)
    assert proc.returncode == 2, proc.stderr
    assert f"{cfg}: background.ignored_pixel_mask given twice" in proc.stderr  # the file
    assert not cat.exists()
    # two sources naming one field is an override (README), whatever the spelling: only a
    # repeat within one source is refused
    cfg = tmp_path / "c.yaml"
    cfg.write_text("background:\n  ignoredPixelMask: [BAD, SAT]\n  algorithm: LINEAR\n"
                   "ampEdgeMaxOffset: 5\n")
    proc, cat = run(tmp_path, "--config", cfg, "--set", "background.ignoredPixelMask=[\"CR\"]",
                    "--set", "amp_edge_max_offset=9", "--set", "ampEdgeMaxOffset=8")
    assert proc.returncode == 1, proc.stderr
    config = recorded_config(cat)
    assert config["background"] == {**BackgroundConfig().to_dict(), "algorithm": "LINEAR",
                                    "ignored_pixel_mask": ["CR"]}
    assert config["amp_edge_max_offset"] == 8.0
    # the different sections of one mapping are no repeat either
    merged = AmpOffsetConfig.from_lsst({"background": {"algorithm": "LINEAR"},
                                        "background.ignoredPixelMask": ["BAD"]})
    assert merged.background == BackgroundConfig(algorithm="LINEAR", ignored_pixel_mask=("BAD",))


# --- mask-plane lists --------------------------------------------------------------------------

@pytest.mark.parametrize("mapping, field", [
    ({"detection.statsMask": None}, "detection.statsMask"),
    ({"background": {"ignoredPixelMask": None}}, "background.ignoredPixelMask"),
    ({"background.ignoredPixelMask": 5}, "background.ignoredPixelMask"),
    ({"detection": {"stats_mask": {"BAD": 1}}}, "detection.statsMask"),
])
def test_a_mask_plane_list_that_is_not_a_list_names_the_field(mapping, field):
    with pytest.raises(ConfigError, match=rf"{field} must be a list of mask-plane names"):
        AmpOffsetConfig.from_lsst(mapping)


def test_an_assigned_list_of_planes_is_the_tuple():
    config = AmpOffsetConfig()
    config.detection.statsMask = ["BAD", "SAT"]
    assert config.detection.stats_mask == ("BAD", "SAT")
    assert config == AmpOffsetConfig.from_lsst({"detection.statsMask": ["BAD", "SAT"]})
    config.background.ignored_pixel_mask = None
    with pytest.raises(ConfigError, match=r"background.ignoredPixelMask must be a list of "
                                          r"mask-plane names, got None \(write \[\] for none\)"):
        config.validate()


@pytest.mark.parametrize("how", ["empty yaml key", "set null", "set number"])
def test_the_cli_refuses_a_mask_plane_list_that_is_not_a_list(tmp_path, how):
    """It was an internal error (exit 4, TypeError)."""
    if how == "empty yaml key":
        cfg = tmp_path / "empty.yaml"
        cfg.write_text("background:\n  ignoredPixelMask:\n")
        options, field = ["--config", cfg], "background.ignoredPixelMask"
    elif how == "set null":
        options, field = ["--set", "detection.statsMask=null"], "detection.statsMask"
    else:
        options, field = ["--set", "background.ignoredPixelMask=5"], "background.ignoredPixelMask"
    proc, cat = run(tmp_path, *options)
    assert proc.returncode == 2, proc.stderr
    assert f"{field} must be a list of mask-plane names" in proc.stderr
    assert not cat.exists()


# --- ampoffset.local.memory-limit-per-worker ---------------------------------------------------

def test_the_memory_limit_per_worker_is_checked_up_front():
    """The local cluster sizes its workers by a byte size: anything else is refused before
    a run (it has no "auto", fraction or unlimited), naming the setting."""
    from dask.utils import parse_bytes

    from ampoffset_dask.pipeline.cluster import local_cluster_size

    # "4" is 4 bytes (4 GB meant?): under the 256 MiB floor a nanny restarts its worker
    # every 200 ms and the run never ends
    for value in ["lots", None, 0.5, "auto", -1, True, "4", 1.5, "255MiB"]:
        with dask.config.set({"ampoffset.local.memory-limit-per-worker": value}), \
                pytest.raises(ConfigError, match=r"ampoffset.local.memory-limit-per-worker=.*"
                                                 r"DASK_AMPOFFSET__LOCAL__MEMORY_LIMIT_PER_"
                                                 r"WORKER.* a size such as 2MiB >= 256\.00 MiB"):
            _config.check_settings()
    for value in ["4GiB", "512 MB", 2**31, 2e9]:
        with dask.config.set({"ampoffset.local.memory-limit-per-worker": value}):
            _config.check_settings()
            workers, limit = local_cluster_size(n_workers=1)
        assert (workers, limit) == (1, int(parse_bytes(value)))


def test_the_cli_refuses_an_invalid_memory_limit_before_making_the_catalog(tmp_path,
                                                                          monkeypatch):
    """It was exit 4 after the catalog was made, leaving a failed run in its runs table."""
    proc, cat = run_with_env(tmp_path, monkeypatch,
                             "DASK_AMPOFFSET__LOCAL__MEMORY_LIMIT_PER_WORKER", "lots")
    assert proc.returncode == 2, proc.stderr
    assert ("ampoffset.local.memory-limit-per-worker='lots'" in proc.stderr
            and "Could not interpret 'lots' as a byte unit" in proc.stderr)
    assert not cat.exists()


def test_a_merge_override_inside_an_anchored_mapping_merged_again_is_accepted(tmp_path):
    # merging rewrites the anchored mapping in place: checked as constructed, its merged
    # key and its own override looked like one key given twice
    text = "a:\n  b: &n\n    <<: {k: 1}\n    k: 2\nc:\n  <<: *n\n"
    path = tmp_path / "nested.yaml"
    path.write_text(text)
    assert load_document(path, text, "config files") == yaml.safe_load(text)
    text += "c2: {k: 1, k: 3}\n"  # a key written twice in one mapping is still refused
    with pytest.raises(InputError, match=r"line 7, .*the key 'k' is given twice"):
        load_document(path, text, "config files")


@pytest.mark.parametrize("value", ['{"ignoredPixelMask": ["BAD"], "ignoredPixelMask": ["SAT"]}',
                                   "{'ignoredPixelMask': ['BAD'], 'ignoredPixelMask': ['SAT']}"])
def test_a_set_value_naming_a_key_twice_is_refused(tmp_path, value):
    # as the same mapping in a --config file; it kept ('SAT',) without a word
    proc, cat = run(tmp_path, "--set", f"background={value}")
    assert proc.returncode == 2, proc.stderr
    assert "the key 'ignoredPixelMask' is given twice" in proc.stderr
    assert not cat.exists()


def test_a_keyword_overrides_the_mapping_however_either_names_the_field():
    # the mapping and the keywords are two sources: a dotted keyword over the mapping's
    # section was refused as "given twice"
    for build in (AmpOffsetConfig.from_lsst,
                  lambda m, **k: AmpOffsetConfig.from_preset("lsstcam", m, **k)):
        cfg = build({"background": {"ignoredPixelMask": ["BAD"], "algorithm": "LINEAR"}},
                    **{"background.ignoredPixelMask": ["SAT"]})
        assert cfg.background.ignored_pixel_mask == ("SAT",)
        assert cfg.background.algorithm == "LINEAR"
    with pytest.raises(ConfigError, match="given twice"):  # one source still may not
        AmpOffsetConfig.from_lsst({"background": {"ignoredPixelMask": ["BAD"]},
                                   "background.ignoredPixelMask": ["SAT"]})


@pytest.mark.parametrize("value", ["abc", "-5s", "0s"])
def test_the_worker_watch_interval_is_checked_up_front(tmp_path, monkeypatch, value):
    """An invalid interval was an internal error (exit 4) after the cluster had started,
    with a failed run recorded; 'abc' (an unknown unit) escaped the check as a KeyError."""
    with dask.config.set({"ampoffset.worker-watch-interval": value}), \
            pytest.raises(ConfigError, match=r"ampoffset.worker-watch-interval=.*"
                                             r"DASK_AMPOFFSET__WORKER_WATCH_INTERVAL.* a "
                                             r"duration such as 30s >= 0\.05"):
        _config.check_settings()
    proc, cat = run_with_env(tmp_path, monkeypatch, "DASK_AMPOFFSET__WORKER_WATCH_INTERVAL",
                             "abc")
    assert proc.returncode == 2, proc.stderr
    assert not cat.exists()
