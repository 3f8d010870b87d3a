"""`RunOptions`: one validated object, the same rules for `process` and the command line."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from ampoffset_dask import ConfigError, RunOptions, process
from ampoffset_dask.cli import main


def test_defaults_and_implied_apply(tmp_path):
    opts = RunOptions()
    assert (opts.apply, opts.in_place, opts.resume, opts.new_run) == (False, False, True, False)
    out = RunOptions(output_images=str(tmp_path / "out"))
    assert out.apply and out.output_images == tmp_path / "out"
    assert isinstance(out.output_images, Path)
    assert RunOptions(in_place=True).apply
    assert RunOptions(apply=True, in_place=True).output_images is None


@pytest.mark.parametrize(("kwargs", "needles"), [
    ({"apply": True}, ["apply (--apply)", "output_images (--output-images)",
                       "in_place (--in-place)"]),
    ({"in_place": True, "output_images": "x"}, ["in_place (--in-place)", "choose one"]),
    # an explicit "do not write" beside a place to write to became apply=True silently
    ({"apply": False, "output_images": "x"}, ["apply (--apply)=False",
                                              "output_images (--output-images)", "drop one"]),
    ({"apply": False, "in_place": True}, ["apply (--apply)=False", "in_place (--in-place)"]),
    ({"apply": "no"}, ["apply (--apply)", "True or False"]),
    ({"max_in_flight": 0}, ["max_in_flight (--max-in-flight)", ">= 1"]),
    ({"max_in_flight": 2.5}, ["max_in_flight"]),
    ({"retries": -1}, ["retries", ">= 0"]),
    ({"n_workers": True}, ["n_workers"]),
    ({"resume": "yes"}, ["resume", "True or False"]),
    ({"output_images": ""}, ["output_images", "path"]),
    ({"camera": 3}, ["camera (--camera)"]),
])
def test_invalid_options_name_the_option(kwargs, needles):
    with pytest.raises(ConfigError) as info:
        RunOptions(**kwargs)
    for needle in needles:
        assert needle in str(info.value)


def test_from_kwargs_and_record(tmp_path):
    base = RunOptions(new_run=True)
    merged = RunOptions.from_kwargs(base, output_images=tmp_path)
    assert merged.new_run and merged.apply and base.output_images is None
    assert RunOptions.from_kwargs(base) is base
    with pytest.raises(TypeError, match=r"unknown run option.*nope.*valid options"):
        RunOptions.from_kwargs(None, nope=1)
    with pytest.raises(ConfigError, match="choose one"):  # replace() validates again
        dataclasses.replace(merged, in_place=True)
    # apply derived from in_place is derived again when in_place is replaced (it blamed
    # an apply never given: "apply needs output_images")
    undone = RunOptions.from_kwargs(RunOptions(in_place=True), in_place=False)
    assert (undone.apply, undone.in_place) == (False, False)
    record = RunOptions(camera="lsstcam", output_images=tmp_path).to_record()
    assert record["output_images"] == str(tmp_path) and record["camera"] == "lsstcam"
    assert record["apply"] is True


def test_process_and_cli_share_the_rules(tmp_path, capsys):
    """The same mistakes are refused by the API and by the command line, before any work."""
    # --output-images alone implies --apply on the command line as in the API: the run
    # then fails on the missing input (exit 2), not on the option.
    assert main(["run", str(tmp_path / "none"), "-o", str(tmp_path / "cat"),
                 "--output-images", str(tmp_path / "img")]) == 2
    assert "none: no such file" in capsys.readouterr().err
    for argv, kwargs in [
        (["--apply"], {"apply": True}),
        (["--in-place", "--output-images", str(tmp_path / "img")],
         {"in_place": True, "output_images": tmp_path / "img"}),
    ]:
        code = main(["run", str(tmp_path), "-o", str(tmp_path / "cat"), *argv])
        assert code == 2
        err = capsys.readouterr().err
        with pytest.raises(ConfigError) as info:
            process(tmp_path, tmp_path / "cat", **kwargs)
        assert str(info.value) in err  # word for word the same message
    assert not (tmp_path / "cat").exists()
