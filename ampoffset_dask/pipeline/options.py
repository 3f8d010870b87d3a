"""`RunOptions`: how a `process` run behaves, as one object validated on creation.

The ``ampoffset-dask run`` command and `ampoffset_dask.process` both build a `RunOptions`, so
the rules about applying corrections, output images and in-place writes are the same for
both. Invalid combinations raise `~ampoffset_dask.errors.ConfigError` naming the option (its
Python name and its command-line flag).

Adding an option: add a field with its default and docstring entry below, validate it in a
``_check_<name>`` method (``__post_init__`` calls every one of them), and, if the command line
exposes it, add the flag in ``cli.py`` and a `_FLAGS` entry here.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import ConfigError

__all__ = ["RunOptions"]

#: Command-line flag of each option, for error messages.
_FLAGS = {
    "camera": "--camera",
    "apply": "--apply",
    "output_images": "--output-images",
    "in_place": "--in-place",
    "new_run": "--new-run",
    "max_in_flight": "--max-in-flight",
    "progress": "--no-progress",
    "performance_report": "--performance-report",
    "n_workers": "--workers",
    "force": "--force",
    "storage_options": "--storage-options",
    "overscan": "--overscan",
    "gain": "--gain",
    "visit": "--visit",
    "detector": "--detector",
}


def option_name(name: str) -> str:
    """``"output_images (--output-images)"``: how messages name an option."""
    flag = _FLAGS.get(name)
    return f"{name} ({flag})" if flag else name


@dataclasses.dataclass
class RunOptions:
    """Options of one `~ampoffset_dask.process` run (everything but inputs, catalog, config
    and client).

    Rules (the same for the API and the command line):

    - ``output_images`` implies ``apply``;
    - ``in_place`` implies ``apply`` and excludes ``output_images``;
    - ``apply`` needs ``output_images`` or ``in_place`` (inputs are never overwritten unless
      asked for).

    Attributes
    ----------
    camera : str, path or Camera, optional
        Camera whose geometry to use (default: from the headers).
    apply : bool, optional
        Write corrected exposures (pedestals subtracted, LSST metadata keys set); by
        default (None) when ``output_images`` or ``in_place`` asks for them. False with one
        of those is refused.
    output_images : Path or URL, optional
        Folder for corrected exposures (``<folder>/<visit>/<detector>/<input name>.fits``),
        or an object-store prefix (``s3://bucket/prefix``: one upload per exposure). A
        relative path is made absolute here, on the client, not in each worker's working
        directory.
    in_place : bool
        Overwrite the inputs with the corrected exposures.
    resume : bool
        Skip the inputs whose result the catalog already holds: the current row of their
        (visit, detector) is ok or flagged, of this config, from this very input, unchanged
        since, and names the corrected image this run writes, if any (an input corrected in
        place by the catalog's run is done too).
    new_run : bool
        Accept a config different from the catalog's; recompute everything given and replace
        the earlier rows of those detectors.
    max_in_flight : int, optional
        Bound on tasks submitted but not yet gathered (default
        ``ampoffset.in-flight-per-thread`` x the cluster's threads, at least 8, read again
        as the run goes: workers that join during the run get tasks).
    retries : int, optional
        Retries of transient I/O errors inside each task (default ``ampoffset.io-retries``).
    progress : bool
        Show a progress bar (tqdm) advanced as tasks complete.
    performance_report : Path, optional
        Write Dask's HTML performance report here (needs bokeh).
    forward_logs : bool
        Forward the workers' ``ampoffset_dask`` log records to this process.
    n_workers : int, optional
        Workers of the local cluster started when no client is given.
    force : bool
        Process inputs whose header says they were already corrected
        (``LSST ISR AMPOFFSET PEDESTAL SUBTRACTED = T``); without it they are ``flagged``
        rows ("already corrected") and left alone. A forced run measures such an input
        again unless its catalog row comes from a forced run too.
    storage_options : mapping or JSON string, optional
        fsspec storage options for URL inputs and outputs (``{"endpoint_url": ...}``...);
        default: the standard environment (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``...),
        which is forwarded to the workers with these options over it. They reach the workers
        as task arguments and are never recorded (the ``runs`` table lists their names only).
    overscan : {"auto", "per-row", "mean", "none"}
        Serial overscan subtraction of raw pixels (`ampoffset_dask.io.overscan`): ``"auto"``
        subtracts it row by row from raws and untrimmed images, leaves assembled files alone.
    gain : {None, "nominal"}
        ``"nominal"``: multiply each amp by the camera's nominal gain (pedestals in electrons).
    visit : int or str, optional
        Visit of the inputs whose headers and manifest give none (a number), or the name of
        the header keyword that holds it (e.g. ``"OBSNUM"``), read over the headers' own
        visit keywords (inputs without it keep their own).
    detector : str, optional
        Detector name of the inputs whose headers and manifest give none (a single file or a
        folder of one detector).

    Raises
    ------
    ConfigError
        On creation, for an invalid value or combination; the message names the option.

    Examples
    --------
    >>> RunOptions(output_images="corrected").apply
    True
    >>> RunOptions(apply=True)
    Traceback (most recent call last):
    ...
    ampoffset_dask.errors.ConfigError: apply (--apply) needs output_images (--output-images) \
to write the corrected exposures to, or in_place (--in-place) to overwrite the inputs
    """

    camera: Any = None
    apply: bool | None = None
    output_images: Path | None = None
    in_place: bool = False
    resume: bool = True
    new_run: bool = False
    max_in_flight: int | None = None
    retries: int | None = None
    progress: bool = True
    performance_report: Path | None = None
    forward_logs: bool = True
    n_workers: int | None = None
    force: bool = False
    storage_options: Mapping[str, Any] | None = None
    overscan: str = "auto"
    gain: str | None = None
    visit: int | str | None = None
    detector: str | None = None

    def __post_init__(self) -> None:
        for name in sorted(dir(self)):
            if name.startswith("_check_"):
                getattr(self, name)()

    # -- checks (each one option or one rule) ---------------------------------------------
    def _check_bools(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            optional = f.type == "bool | None"  # None: derived (``apply``)
            if ((f.type in ("bool", bool) or optional) and not isinstance(value, bool)
                    and not (optional and value is None)):
                raise ConfigError(f"{option_name(f.name)} must be True or False, got {value!r}")

    def _check_images(self) -> None:
        from ..io.remote import is_url

        if self.output_images is not None and not is_url(self.output_images):
            # absolute on the client: a worker's working directory is not the user's
            self.output_images = Path(os.path.abspath(_path("output_images",
                                                            self.output_images)))
        if self.in_place and self.output_images is not None:
            raise ConfigError(
                f"{option_name('in_place')} overwrites the inputs and "
                f"{option_name('output_images')} writes elsewhere: choose one"
            )
        images = self.output_images is not None or self.in_place
        if self.apply is False and images:
            # an explicit "do not write" beside a place to write to: which one was meant?
            given = "output_images" if self.output_images is not None else "in_place"
            raise ConfigError(f"{option_name('apply')}=False, but {option_name(given)} asks "
                              "for corrected exposures: drop one")
        if self.apply is None:
            self.apply = images
        if self.apply and not images:
            raise ConfigError(
                f"{option_name('apply')} needs {option_name('output_images')} to write the "
                f"corrected exposures to, or {option_name('in_place')} to overwrite the inputs"
            )

    def _check_counts(self) -> None:
        for name, minimum in (("max_in_flight", 1), ("retries", 0), ("n_workers", 1)):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ConfigError(
                    f"{option_name(name)} must be an integer >= {minimum}, got {value!r}")

    def _check_performance_report(self) -> None:
        if self.performance_report is None:
            return
        self.performance_report = _path("performance_report", self.performance_report)
        try:
            import bokeh  # noqa: F401
        except ImportError:
            raise ConfigError(
                f"{option_name('performance_report')} needs bokeh (the Dask dashboard's "
                "plotting library): pip install bokeh"
            ) from None

    def _check_isr(self) -> None:
        from ..io.overscan import normalize_gain, normalize_overscan

        try:
            self.overscan = normalize_overscan(self.overscan)
            gain = normalize_gain(self.gain)
        except ConfigError as exc:
            raise ConfigError(f"{exc} ({_FLAGS['overscan' if 'overscan' in str(exc) else 'gain']})"
                              ) from None
        self.gain = None if gain == "none" else gain

    def _check_identity(self) -> None:
        if isinstance(self.visit, str):
            self.visit = _visit_value(self.visit)
        if self.visit is not None and (
                isinstance(self.visit, bool)
                or (isinstance(self.visit, int) and self.visit < 0)
                or not isinstance(self.visit, int | str)):
            raise ConfigError(f"{option_name('visit')} must be an integer >= 0 or a header "
                              f"keyword, got {self.visit!r}")
        if self.detector is not None and (not isinstance(self.detector, str)
                                          or not self.detector.strip()):
            raise ConfigError(f"{option_name('detector')} must be a detector name, "
                              f"got {self.detector!r}")

    def _check_camera(self) -> None:
        if self.camera is not None and not isinstance(self.camera, (str, os.PathLike)) \
                and not hasattr(self.camera, "__getitem__"):
            raise ConfigError(f"{option_name('camera')} must be a camera name, a camera file or "
                              f"a Camera, got {type(self.camera).__name__}")

    def _check_storage_options(self) -> None:
        value = self.storage_options
        if isinstance(value, str):
            import json

            try:
                value = json.loads(value) if value.strip() else None
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{option_name('storage_options')} is not valid JSON: "
                                  f"{exc.msg} (at character {exc.pos})") from None
        if value is not None and not isinstance(value, Mapping):
            raise ConfigError(f"{option_name('storage_options')} must be a JSON object / "
                              f"mapping, got {type(value).__name__}")
        self.storage_options = None if value is None else dict(value)

    # -- use ------------------------------------------------------------------------------
    @classmethod
    def from_kwargs(cls, options: RunOptions | None = None, **kwargs: Any) -> RunOptions:
        """``options`` with ``kwargs`` replacing its fields (a new, validated object).

        Raises
        ------
        TypeError
            For a keyword that is not an option (the message lists the valid ones).
        """
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(kwargs) - names)
        if unknown:
            raise TypeError(f"unknown run option(s) {', '.join(unknown)}; valid options: "
                            f"{', '.join(sorted(names))}")
        if options is None:
            return cls(**kwargs)
        derived = options.output_images is not None or options.in_place
        if ("apply" not in kwargs and options.apply == derived
                and ({"in_place", "output_images"} & set(kwargs))):
            # ``apply`` was derived from where the images went: derived again from the new
            # places (else in_place=False over in_place=True blamed an apply never given)
            kwargs["apply"] = None
        return dataclasses.replace(options, **kwargs) if kwargs else options

    def to_record(self) -> dict[str, Any]:
        """JSON-safe dictionary, as recorded in the catalog's ``runs`` table."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "camera":
                value = getattr(value, "name", value)
            if f.name == "storage_options":  # may hold credentials: names only
                value = None if value is None else sorted(value)
            if isinstance(value, os.PathLike):
                value = os.fspath(value)
            elif not isinstance(value, (str, int, float, bool, type(None), list, Mapping)):
                value = str(value)
            out[f.name] = value
        return out


#: Text that reads as a number: a visit value, never a keyword (``-3`` is a legal FITS
#: keyword, but a user typing it means a visit).
_NUMBER = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[EeDd][+-]?[0-9]+)?")


def _visit_value(text: str) -> int | str:
    """The visit a ``visit`` string gives: an integer (ASCII digits), or the header keyword
    holding it, upper case, as `~ampoffset_dask.io.file_info.inspect_file` looks it up (a
    plain keyword, or a HIERARCH name without its ``HIERARCH`` prefix).

    Raises
    ------
    ConfigError
        For a number that is no visit (``-3``, ``+3``, ``3.5``) or text that is no FITS
        keyword (empty, non-ASCII, other characters than letters, digits, ``-`` and ``_``).
    """
    from ..io.header_walk import _HIERARCH_KEYWORD, _PLAIN_KEYWORD

    stripped = text.strip()
    if re.fullmatch(r"[0-9]+", stripped):
        return int(stripped)
    if _NUMBER.fullmatch(stripped):
        raise ConfigError(f"{option_name('visit')} must be an integer >= 0 (digits only) or a "
                          f"header keyword, got {text!r}")
    words = stripped.upper().split()
    while words[:1] == ["HIERARCH"]:  # astropy finds a HIERARCH card by its name either way
        words = words[1:]
    name = " ".join(words)
    # the keywords a header holds: plain (8 characters at most) or HIERARCH names of words
    if not (_PLAIN_KEYWORD.fullmatch(name) or _HIERARCH_KEYWORD.fullmatch(name)):
        raise ConfigError(f"{option_name('visit')} must be an integer >= 0 or a header "
                          "keyword (letters, digits, '-' and '_', or a HIERARCH name of such "
                          f"words), got {text!r}")
    return name


def _path(name: str, value: Any) -> Path:
    if isinstance(value, (str, os.PathLike)) and os.fspath(value).strip():
        return Path(value).expanduser()
    raise ConfigError(f"{option_name(name)} must be a path, got {value!r}")
