"""How ``ampoffset-dask run`` combines ``--preset``, ``--config`` and ``--set``: field by field,
later sources winning (preset < --config < each --set in order).

Each run here is on one unreadable input, so it records its run (and the config it would
have used) in the catalog's ``runs`` table without starting any cluster.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cli_helpers import cli

from ampoffset_dask.catalog import read_catalog


def run_config(tmp_path: Path, *options: Any) -> dict[str, Any]:
    """The config ``ampoffset-dask run ... OPTIONS`` recorded for its run (snake_case)."""
    junk = tmp_path / "junk"
    junk.mkdir(exist_ok=True)
    (junk / "junk.fits").write_text("not a FITS file\n")
    cat = tmp_path / f"cat{len(list(tmp_path.glob('cat*')))}"
    proc = cli("run", junk, "--output", cat, "--scheduler", "nosuch-spec", "--no-progress",
               *options)
    assert proc.returncode == 1, proc.stderr  # the junk input failed; the run was recorded
    runs = read_catalog(cat, "runs")
    assert len(runs) == 1
    return json.loads(runs["config"].iloc[0])


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_a_set_section_merges_with_the_config_file_section(tmp_path):
    cfg = write(tmp_path / "cfg.yaml", "detection:\n  thresholdValue: 6\n  nSigmaToGrow: 3.0\n")
    det = run_config(tmp_path, "--config", cfg,
                     "--set", 'detection={"isotropicGrow": false}')["detection"]
    # the file's threshold and growth stay; only the field the --set names changes
    assert (det["threshold_value"], det["n_sigma_to_grow"], det["isotropic_grow"]) == (
        6.0, 3.0, False)
    # two --set of one section merge too, the later winning for the field both name
    det = run_config(tmp_path, "--set", 'detection={"thresholdValue": 7, "sigma": 3.0}',
                     "--set", 'detection={"thresholdValue": 8}')["detection"]
    assert (det["threshold_value"], det["sigma"]) == (8.0, 3.0)


def test_preset_then_config_then_each_set(tmp_path):
    """preset < --config < --set, field by field, sections included."""
    cfg = write(tmp_path / "cfg.yaml", "ampEdgeMaxOffset: 8\ndetection:\n  thresholdValue: 6\n")
    # hsc sets detection.isotropicGrow=False; the file and a --set each name another field
    # of that section, and a last --set overrides the file's ampEdgeMaxOffset
    config = run_config(tmp_path, "--preset", "hsc", "--config", cfg,
                        "--set", 'detection={"nSigmaToGrow": 3.0}',
                        "--set", "ampEdgeMaxOffset=9")
    det = config["detection"]
    assert (det["isotropic_grow"], det["threshold_value"], det["n_sigma_to_grow"]) == (
        False, 6.0, 3.0)
    assert config["amp_edge_max_offset"] == 9.0


def test_one_field_spelt_differently_in_two_sources_takes_the_later(tmp_path):
    cfg = write(tmp_path / "cfg.yaml", "ampEdgeMaxOffset: 8\n")
    config = run_config(tmp_path, "--config", cfg, "--set", "amp_edge_max_offset=9")
    assert config["amp_edge_max_offset"] == 9.0
    config = run_config(tmp_path, "--set", "ampEdgeMaxOffset=7", "--set",
                        "amp_edge_max_offset=6")
    assert config["amp_edge_max_offset"] == 6.0
    config = run_config(tmp_path, "--set", "detection.isotropicGrow=false", "--set",
                        'detection={"isotropic_grow": true}')
    assert config["detection"]["isotropic_grow"] is True
    # one source naming a field in both spellings is still a mistake
    both = write(tmp_path / "both.yaml", "ampEdgeMaxOffset: 8\namp_edge_max_offset: 9\n")
    proc = cli("run", tmp_path / "junk", "--output", tmp_path / "refused", "--config", both)
    assert proc.returncode == 2
    assert "given twice" in proc.stderr and not (tmp_path / "refused").exists()


def test_yaml_numbers_with_a_leading_zero_are_not_octal(tmp_path):
    # YAML 1.1 (PyYAML's safe_load) read 010 as 8, and the run used it without a word;
    # --set refuses it, and so does the file now; YAML 1.2's 0o17 and 0x1f are numbers
    cfg = write(tmp_path / "octal.yaml", "ampEdgeWidth: 010\n")
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "junk.fits").write_text("not a FITS file\n")
    proc = cli("run", junk, "--output", tmp_path / "cat", "--config", cfg, "--no-progress")
    assert proc.returncode == 2, proc.stderr
    assert "octal.yaml: line 1, column 15" in proc.stderr, proc.stderr
    assert "the number 010 has a leading zero" in proc.stderr, proc.stderr
    assert not (tmp_path / "cat").exists()
    cfg = write(tmp_path / "ok.yaml", "ampEdgeWidth: 0o17\nampEdgeInset: 0x3\n")
    config = run_config(tmp_path, "--config", cfg)
    assert (config["amp_edge_width"], config["amp_edge_inset"]) == (15, 3)
