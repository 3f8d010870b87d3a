"""The ``ampoffset-dask`` command.

Subcommands: ``demo``, ``simulate``, ``run``, ``plot``, ``cameras``, ``info``, ``catalog``,
``trends``.
Run ``ampoffset-dask COMMAND --help`` for each one's options.

Exit codes
----------
0
    Success.
1
    The run finished but some detectors failed (they are listed on stderr and recorded in
    the catalog's ``detectors`` table with the reason).
2
    Usage or input error: bad option, missing or unreadable file, unknown camera or
    detector, invalid configuration.
3
    The Dask cluster could not be started or reached.
4
    Unexpected internal error (re-run with ``-v`` for the traceback and report it).
130
    Interrupted (Ctrl-C).
143
    Terminated (SIGTERM, as SLURM and Kubernetes send): handled like Ctrl-C.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import glob
import json
import logging
import math
import os
import sys
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__
from .errors import AmpOffsetError, ClusterError, ConfigError, InputError

if TYPE_CHECKING:
    from .config import AmpOffsetConfig

__all__ = ["EXIT_CLUSTER", "EXIT_FAILED", "EXIT_INTERNAL", "EXIT_OK", "EXIT_USAGE", "main"]

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_CLUSTER = 3
EXIT_INTERNAL = 4
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143  # 128 + SIGTERM, what a shell reports for a process killed by it

_PROG = "ampoffset-dask"
_EPILOG = """exit codes: 0 ok; 1 some detectors failed; 2 usage or input error; 3 cluster could
not be started or reached; 4 internal error (re-run with -v); 130 interrupted; 143 terminated."""
# Only `run` and `demo` exit 1 (detectors failed in this run); the other commands report a
# catalog's failed rows but exit 0 for them, so their help does not list code 1.
_EPILOG_NO_FAILED = """exit codes: 0 ok; 2 usage or input error; 3 cluster could not be started or
reached; 4 internal error (re-run with -v); 130 interrupted; 143 terminated."""


class CommandError(Exception):
    """An error the CLI reports in one line with a given exit code."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


def _out(text: str = "") -> None:
    sys.stdout.write(text + "\n")


# -- parser ------------------------------------------------------------
def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be >= 1")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``ampoffset-dask`` (all subcommands)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS,
                        help="more log output (-vv for debug); tracebacks on errors")

    parser = argparse.ArgumentParser(
        prog=_PROG,
        description="Measure and remove amplifier offsets across whole focal planes on Dask, "
                    "with the numbers of LSST's AmpOffsetTask.",
        epilog=_EPILOG,
    )
    parser.add_argument("--version", action="version", version=f"{_PROG} {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more log output (-vv for debug); tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    # demo
    p = sub.add_parser(
        "demo", parents=[common], epilog=_EPILOG,
        help="simulate one LSSTCam raft, measure it on a local cluster, write catalog + plots",
        description="Simulate one LSSTCam raft (9 detectors) with known amp pedestals, measure "
                    "them on a local Dask cluster, write the catalog and plots, and compare "
                    "with the truth.")
    p.add_argument("--out", default="ampoffset-demo", type=Path,
                   help="working folder (default: %(default)s)")
    p.add_argument("--raft", default="R22", help="LSSTCam raft to simulate (default: R22)")
    p.add_argument("--scale", type=_positive_float, default=1.0,
                   help="detector size factor, < 1 for a quick look (default: 1, full size)")
    p.add_argument("--seed", type=int, default=0, help="simulation seed (default: 0)")
    p.add_argument("--workers", type=_positive_int, default=None,
                   help="local worker processes (default: one per core)")
    p.add_argument("--scheduler", default=None,
                   help="use this Dask scheduler instead of a local cluster (its workers "
                        "must see the --out folder)")
    p.set_defaults(func=cmd_demo)

    # simulate
    p = sub.add_parser(
        "simulate", parents=[common], epilog=_EPILOG_NO_FAILED,
        help="write simulated exposures with known pedestals and a truth table",
        description="Write one FITS file per (visit, detector) of a built-in camera with "
                    "injected per-amp pedestals, and OUT/truth.parquet (visit, detector, amp, "
                    "pedestal). `ampoffset-dask run OUT` processes them with no other option.")
    p.add_argument("--camera", default="lsstcam", help="built-in camera (default: lsstcam)")
    p.add_argument("--detectors", type=_csv, default=None,
                   help="comma-separated detector names or ids (R22_S11,R22_S12)")
    p.add_argument("--rafts", type=_csv, default=None, help="comma-separated rafts (R22)")
    p.add_argument("--visits", type=_positive_int, default=1,
                   help="number of visits, numbered 1..N (default: 1)")
    p.add_argument("--scale", type=_positive_float, default=1.0,
                   help="detector size factor; amps keep their names and layout (default: 1)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--sky", type=_positive_float, default=1200.0,
                   help="typical sky level in ADU (default: 1200)")
    p.add_argument("--overwrite", action="store_true", help="replace existing files")
    p.add_argument("--sequence", action="store_true",
                   help="camera-health sequence: persistent per-amp offsets with drifts, "
                        "jumps and gain errors, a visit's sky drawn in 300-2000 ADU and then "
                        "within +-30 %% (all in the truth table)")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.set_defaults(func=cmd_simulate)

    # run
    p = sub.add_parser(
        "run", parents=[common], epilog=_EPILOG,
        help="measure (and optionally apply) amp offsets of many files on a Dask cluster",
        description="Measure the amp pedestals of every input exposure on a Dask cluster and "
                    "stream them into a Parquet catalog. Folders are searched for FITS "
                    "files (*.fits, *.fit, *.fts, *.fz, gzip/bzip2-wrapped *.fits.gz...). "
                    "Camera, visit and detector come from the "
                    "headers. A second run with the same catalog resumes (skips finished "
                    "detectors) unless --new-run is given.")
    p.add_argument("inputs", nargs="*", metavar="INPUT",
                   help="files, folders, globs, manifests or URLs (s3://bucket/prefix/, "
                        "https://...); none with --butler")
    # (a str: Path("s3://b/cat") would be "s3:/b/cat", no longer seen as a URL and refused)
    p.add_argument("--output", "-o", required=True, metavar="CATALOG",
                   help="catalog folder (on this machine, also for remote inputs)")
    p.add_argument("--camera", default=None,
                   help="camera name or camera JSON/YAML file (default: from the headers)")
    g = p.add_argument_group("Butler input (pip install 'ampoffset-dask[butler]')")
    g.add_argument("--butler", default=None, metavar="REPO",
                   help="query this Butler repository (path, butler.yaml or server URL) "
                        "instead of giving INPUTs")
    g.add_argument("--collections", default=None, metavar="C1[,C2]",
                   help="collections to search (with --butler)")
    g.add_argument("--where", default=None, metavar="EXPR",
                   help="Butler query expression, e.g. \"visit = 2025060100042\"")
    g.add_argument("--dataset-type", default="post_isr_image", metavar="TYPE",
                   help="dataset type of the exposures (default: post_isr_image)")
    g.add_argument("--instrument", default=None, metavar="NAME",
                   help="restrict the query to one instrument (LSSTCam...); needed when "
                        "--where names detectors or visits by number")
    p.add_argument("--storage-options", default=None, metavar="JSON",
                   help="fsspec storage options for URL inputs/outputs as JSON, e.g. "
                        "'{\"endpoint_url\": \"http://...\"}' (default: the environment, "
                        "AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...)")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS|FILE",
                   help="Dask scheduler address, scheduler file, 'local[:N]', 'gateway', "
                        "'slurm[:N]', 'kubernetes[:NAME][:N]' (a running Kubernetes cluster is "
                        "only ever scaled up; default: a local cluster)")
    p.add_argument("--config", type=Path, default=None,
                   help="AmpOffsetConfig as JSON or YAML (LSST camelCase names accepted)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="config override, e.g. --set ampEdgeMaxOffset=10 (repeatable)")
    p.add_argument("--apply", action="store_true",
                   help="write corrected exposures (pedestals subtracted): to --output-images, "
                        "or over the inputs with --in-place")
    p.add_argument("--output-images", default=None, metavar="DIR|URL",
                   help="folder or s3://bucket/prefix for corrected exposures (implies "
                        "--apply)")
    p.add_argument("--in-place", action="store_true",
                   help="overwrite the inputs with the corrected exposures (implies --apply)")
    p.add_argument("--max-in-flight", type=_positive_int, default=None, metavar="N",
                   help="detectors submitted at once (default: 4 per worker thread, at "
                        "least 8)")
    p.add_argument("--performance-report", type=Path, default=None, metavar="FILE",
                   help="write a Dask performance report (HTML)")
    p.add_argument("--new-run", action="store_true",
                   help="process every input again instead of resuming")
    p.add_argument("--force", action="store_true",
                   help="also process inputs whose header says they were already corrected "
                        "(LSST ISR AMPOFFSET PEDESTAL SUBTRACTED = T); without it they are "
                        "flagged and left alone")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar (there is none when stderr is not a terminal)")
    p.add_argument("--preset", default=None, metavar="NAME",
                   help="start from a production config (ampoffset-dask presets); --config "
                        "and --set apply on top")
    p.add_argument("--overscan", choices=("auto", "per-row", "mean", "none"), default="auto",
                   help="serial overscan subtraction of raw files: auto (per-row for raws and "
                        "untrimmed images, nothing for assembled files), per-row, mean, none "
                        "(default: auto)")
    p.add_argument("--gain", choices=("nominal",), default=None,
                   help="multiply each amp by the camera's nominal gain (pedestals in "
                        "electrons)")
    p.add_argument("--visit", default=None, metavar="N|KEY",
                   help="visit of inputs whose headers give none (a number), or the header "
                        "keyword holding it (e.g. OBSNUM: read over the headers' own visit "
                        "keywords)")
    p.add_argument("--detector", default=None, metavar="NAME",
                   help="detector of inputs whose headers give none (one file, or a folder "
                        "of one detector)")
    p.set_defaults(func=cmd_run)

    # presets
    p = sub.add_parser(
        "presets", parents=[common], epilog=_EPILOG_NO_FAILED,
        help="list the production config presets and their sources",
        description="List the production presets (the overrides Rubin's pipelines set) with "
                    "where they come from. Use one with `run --preset NAME`.")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_presets)

    # plot
    p = sub.add_parser(
        "plot", parents=[common], epilog=_EPILOG_NO_FAILED,
        help="plots of one visit of a catalog (focal plane, interfaces, amps, before/after)",
        description="Write PNG plots for one visit of a catalog: focal-plane pedestal map, "
                    "interface-offset histograms, and for one detector the amp map and a "
                    "before/after binned image (when its input file is readable).")
    p.add_argument("catalog", type=Path, help="catalog folder")
    p.add_argument("--visit", type=int, default=None,
                   help="visit to plot (needed when the catalog has several)")
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (default: CATALOG/plots)")
    p.add_argument("--camera", default=None,
                   help="camera for the focal-plane map (default: from the input headers)")
    p.add_argument("--detector", default=None,
                   help="detector for the amp map and before/after, by name in any case "
                        "or id (default: the first)")
    p.set_defaults(func=cmd_plot)

    # cameras
    p = sub.add_parser(
        "cameras", parents=[common], epilog=_EPILOG_NO_FAILED,
        help="list built-in cameras or detectors",
        description="Without NAME, list the built-in cameras; with NAME, list its detectors.")
    p.add_argument("name", nargs="?", default=None, help="camera name")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_cameras)

    # info
    p = sub.add_parser(
        "info", parents=[common], epilog=_EPILOG_NO_FAILED,
        help="what the loader sees in a file",
        description="Print what the loader sees in FILE: kind (tile-compressed, gzip-wrapped), "
                    "visit, detector, size, HDUs, mask planes, the amps and where their "
                    "geometry comes from (a camera, given or from the header; the file's "
                    "persisted detector; header DATASEC keywords).")
    p.add_argument("file", help="FITS file, URL (s3://, gs://, https://) or zip member "
                                "(archive.zip#zip-path=member.fits)")
    p.add_argument("--camera", default=None, help="camera name or file (default: from header)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_info)

    # catalog
    p = sub.add_parser(
        "catalog", parents=[common], epilog=_EPILOG_NO_FAILED,
        help="summarise a catalog, or compact it (catalog compact CATALOG)",
        description="Summarise a catalog: runs, visits, detector status, failures, pedestal "
                    "statistics, do-no-harm counts; or print one table. 'catalog compact "
                    "CATALOG' moves the per-visit files into files of many visits each "
                    "(same rows; faster reads of many visits; run it when no run is writing). "
                    "Failed detectors are listed, with exit code 0: exit 1 is for the "
                    "failures of a run itself.")
    p.add_argument("action", nargs="?", choices=("compact",), default=None,
                   help="compact: move per-visit files into files of many visits")
    p.add_argument("catalog", type=Path, help="catalog folder")
    p.add_argument("--visit", type=int, default=None, help="only this visit")
    p.add_argument("--table", choices=("detectors", "pedestals", "interfaces", "runs"),
                   default=None, help="print this table instead of the summary")
    p.add_argument("--limit", type=_positive_int, default=None,
                   help="rows to print with --table, at least 1 (default: 50; with --json, "
                        "all)")
    p.add_argument("--json", action="store_true",
                   help="machine-readable output: the summary, or the --table rows as a JSON "
                        "list of records")
    p.add_argument("--all-rows", action="store_true",
                   help="every run's rows (history), not only the latest per (visit, detector)")
    p.add_argument("--visits-per-file", type=_positive_int, default=None,
                   help="compact: visits per compacted file (default: 500)")
    p.set_defaults(func=cmd_catalog)

    # trends
    p = sub.add_parser(
        "trends", parents=[common], epilog=_EPILOG_NO_FAILED,
        help="per-amp pedestal time series over visits: jumps and gain-like drifts",
        description="Build per-amp pedestal series over the catalog's visits, flag change "
                    "points (jumps beyond K sigma of the running level) and gain-like "
                    "drifts (pedestal proportional to the sky level), and write "
                    "trends.parquet, trends_summary.parquet and plots.")
    p.add_argument("catalog", type=Path, help="catalog folder")
    p.add_argument("--detector", default=None, help="only this detector")
    p.add_argument("--amp", default=None, help="only this amp")
    p.add_argument("--k", type=_positive_float, default=4.0,
                   help="jump threshold in sigma (default: 4)")
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (default: CATALOG/trends)")
    p.add_argument("--camera", default=None,
                   help="camera for the focal-plane flag map (default: none)")
    p.set_defaults(func=cmd_trends)
    return parser


# -- main ------------------------------------------------------------
class _RedactingFormatter(logging.Formatter):
    """Log lines, and the tracebacks logged with them, without the credentials of a URL."""

    def format(self, record: logging.LogRecord) -> str:
        from .io.remote import redact_text

        return redact_text(super().format(record))


def _setup_logging(verbose: int) -> None:
    level = logging.WARNING if verbose <= 0 else logging.INFO if verbose == 1 else logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s",
                                             "%H:%M:%S"))
    root = logging.getLogger("ampoffset_dask")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    if verbose < 2:
        # Without -v, dask's errors (a lost scheduler: pages of CancelledError tracebacks)
        # are left to the one-line error the command prints for them; with -v its warnings
        # only, with -vv everything. Its child loggers too: distributed's own logging config
        # gives some (``distributed.client``) a level and a handler of their own, which the
        # parent's level does not reach.
        quiet = logging.CRITICAL if verbose <= 0 else logging.WARNING
        for name in _dask_logger_names():
            logging.getLogger(name).setLevel(quiet)


#: Loggers of the libraries under a Dask cluster, quietened by `_setup_logging`.
_DASK_LOGGERS = ("distributed", "tornado", "bokeh", "asyncio")


def _dask_logger_names() -> list[str]:
    """`_DASK_LOGGERS` and every logger under them that exists now."""
    existing = [n for n in logging.root.manager.loggerDict
                if n.split(".", 1)[0] in _DASK_LOGGERS and "." in n]
    return [*_DASK_LOGGERS, *sorted(existing)]


@contextlib.contextmanager
def _logging_restored():
    """Put the loggers `_setup_logging` changes back afterwards (``main`` called in-process,
    e.g. from tests or notebooks, leaves logging as it found it)."""
    names = ("ampoffset_dask", *_dask_logger_names())
    saved = {n: (logging.getLogger(n).level, list(logging.getLogger(n).handlers),
                 logging.getLogger(n).propagate) for n in names}
    try:
        yield
    finally:
        for name, (level, handlers, propagate) in saved.items():
            log = logging.getLogger(name)
            log.setLevel(level)
            log.handlers[:] = handlers
            log.propagate = propagate


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``ampoffset-dask`` command; returns the exit code (see the module docstring)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if hasattr(args, "scheduler"):
        # a command that may use a cluster: distributed configures its loggers when first
        # imported, which must come before `_setup_logging` quietens them (and before
        # `_logging_restored` notes how they were)
        from .pipeline.cluster import configure_dask_logging

        configure_dask_logging()
    with _logging_restored(), warnings.catch_warnings():
        if not int(getattr(args, "verbose", 0) or 0):
            # astropy's warnings about a damaged or odd file repeat, in its own words, what
            # our error or note says about that file; -v shows them
            from astropy.utils.exceptions import AstropyWarning

            warnings.filterwarnings("ignore", category=AstropyWarning)
        return _main(parser, args)


def _main(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    verbose = int(getattr(args, "verbose", 0) or 0)
    _setup_logging(verbose)
    if getattr(args, "func", None) is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    sigterm = _SigtermAsInterrupt().install()
    try:
        return int(args.func(args) or EXIT_OK)
    except BrokenPipeError:
        # Output piped into a program that stopped reading (``| head``): not an error.
        import os

        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except KeyboardInterrupt:
        # detectors already on the workers finish after the client stops: in place, they
        # overwrite their inputs with results nobody records (the next run records them)
        in_place = getattr(args, "func", None) is cmd_run and getattr(args, "in_place", False)
        unrecorded = ("detectors running when it stopped may have been corrected in place "
                      "without being recorded; run again to record them from their headers "
                      "(they are not corrected again) and resume")
        if sigterm.received:
            sys.stderr.write(f"{_PROG}: terminated (SIGTERM); the run is recorded as "
                             + (f"interrupted; {unrecorded}\n" if in_place
                                else "interrupted, run again to resume\n"))
            return EXIT_TERMINATED
        if in_place:
            sys.stderr.write(f"{_PROG}: interrupted; the results it received are in the "
                             f"catalog, but {unrecorded}\n")
        elif getattr(args, "func", None) is cmd_run:
            sys.stderr.write(f"{_PROG}: interrupted; what finished is in the catalog, run "
                             "again to resume\n")
        else:
            sys.stderr.write(f"{_PROG}: interrupted\n")
        return EXIT_INTERRUPTED
    except Exception as exc:
        # a message, or a chained store error, may quote a URL with its password
        from .io.remote import redact_text

        code = _exit_code(exc)
        if verbose:
            import traceback

            sys.stderr.write(redact_text(traceback.format_exc()))
        message = redact_text(str(exc)) or type(exc).__name__
        if code == EXIT_INTERNAL:
            message = f"internal error: {type(exc).__name__}: {message} (run with -v for details)"
        sys.stderr.write(f"{_PROG} {args.command}: error: {message}\n")
        return code
    finally:
        sigterm.restore()


class _SigtermAsInterrupt:
    """Make SIGTERM (what SLURM and Kubernetes send) stop the command like Ctrl-C: the
    catalog is flushed and the run marked interrupted. ``received`` tells the caller which
    signal it was (exit 143, not 130). The previous handler is put back afterwards, since
    `main` may run in-process (tests, notebooks)."""

    def __init__(self) -> None:
        self.received = False
        self._previous: Any = None
        self._installed = False

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        import signal

        self.received = True
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM kills at once
        raise KeyboardInterrupt

    def install(self) -> _SigtermAsInterrupt:
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)
            self._installed = True
        return self

    def restore(self) -> None:
        import signal

        if self._installed:
            signal.signal(signal.SIGTERM, self._previous)
            self._installed = False


def _exit_code(exc: BaseException) -> int:
    if isinstance(exc, CommandError):
        return exc.code
    if isinstance(exc, ClusterError):
        return EXIT_CLUSTER
    if isinstance(exc, AmpOffsetError | FileNotFoundError | IsADirectoryError
                  | NotADirectoryError | PermissionError | FileExistsError):
        return EXIT_USAGE
    if isinstance(exc, ImportError):
        return EXIT_USAGE
    return EXIT_INTERNAL


# -- helpers ------------------------------------------------------------
def _client(spec: Any, n_workers: int | None = None):
    """A `ClientHandle` for ``spec``; failures raise `ClusterError` (exit code 3)."""
    from .pipeline.cluster import get_client

    try:
        return get_client(spec, n_workers=n_workers)
    except OSError as exc:
        raise ClusterError(f"could not reach the Dask scheduler {spec!r}: {exc}") from exc


def _load_config(path: Path | None, overrides: Sequence[str],
                 preset: str | None = None) -> AmpOffsetConfig | None:
    """The run's config: the preset's, then the ``--config`` file's fields, then each
    ``--set`` in order.

    Each source is applied on top of the previous ones field by field: a later source wins
    for the fields it names, a section it gives (``detection={"isotropicGrow": false}``)
    changes only the fields listed, and a field may be spelt differently in two sources
    (``ampEdgeMaxOffset`` in the file, ``--set amp_edge_max_offset=9``). One source naming
    a field twice is refused (`AmpOffsetConfig.update`).

    Parameters
    ----------
    path : Path or None
        ``--config`` file (JSON, or YAML for ``.yaml``/``.yml``).
    overrides : sequence of str
        ``--set KEY=VALUE`` items, in the order given.
    preset : str or None
        ``--preset`` name.

    Returns
    -------
    AmpOffsetConfig or None
        None when nothing was given (the run's defaults).

    Raises
    ------
    InputError, ConfigError, CommandError
        For an unreadable file, an invalid field or value, a malformed ``--set``.
    """
    from .config import AmpOffsetConfig

    sources: list[tuple[str, dict[str, Any]]] = []  # (where, fields)
    if path is not None:
        sources.append((str(path), _read_config_file(path)))
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise CommandError(f"--set {item!r}: use KEY=VALUE")
        sources.append((f"--set {item}", {key.strip(): _override_value(value)}))
    sources = [(where, s) for where, s in sources if s]
    if preset is None and not sources:
        return None
    config = AmpOffsetConfig.from_preset(preset) if preset is not None else AmpOffsetConfig()
    for where, fields in sources:
        # one update per source: a sub-config mapping merges into the fields set so far
        # (one flat dict would let a later section replace an earlier one whole)
        try:
            config.update(fields)
        except ConfigError as exc:
            if where.startswith("--set") or where in str(exc):
                raise
            raise ConfigError(f"{where}: {exc}") from None
    config.validate()
    return config


def _read_config_file(path: Path) -> dict[str, Any]:
    """The mapping of config fields in a ``--config`` JSON or YAML file."""
    from .config import load_document

    if not path.is_file():
        raise InputError(f"{path}: config file not found")
    loaded = load_document(path, path.read_text(), "config files")
    if not isinstance(loaded, dict):
        raise InputError(f"{path}: expected a mapping of config fields")
    return loaded


def _override_value(text: str) -> Any:
    """A ``--set`` value: JSON (``false``, ``10``, ``["BAD"]``), else a Python literal as LSST
    config files write them (``False``, ``None``, ``['BAD', 'SAT']``), else the text."""
    from .config import _DuplicateKeyError, _unique_keys

    def twice(key: Any) -> CommandError:
        return CommandError(f"--set value {text!r}: the key {key!r} is given twice")

    try:  # as in a --config file, a JSON object naming a key twice is refused
        return json.loads(text, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError:
        pass
    except _DuplicateKeyError as exc:
        raise twice(exc.args[0]) from None
    try:
        tree = ast.parse(text.strip(), mode="eval")
        value = ast.literal_eval(tree)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text
    for node in ast.walk(tree):  # as json: a dict literal naming a key twice is refused
        if isinstance(node, ast.Dict):
            keys = [ast.literal_eval(k) for k in node.keys if k is not None]
            for k in keys:
                if keys.count(k) > 1:
                    raise twice(k)
    return value


def _call_process(inputs: Sequence[Any], output: Path, **options: Any):
    """`ampoffset_dask.pipeline.run.process` (imported late: it loads dask)."""
    from .pipeline.run import process

    return process(list(inputs), output, **options)


def _failed_detectors(result: Any) -> list[tuple[Any, str, str]]:
    """``(visit, detector, error)`` of the detectors that failed in this run."""
    return [(v, str(d), str(e or "")) for v, d, e in getattr(result, "failed", [])]


def _fmt_visit(visit: Any) -> str:
    return "?" if visit is None or visit == -1 else str(visit)


def _failure_line(visit: Any, detector: str, input: str, error: str) -> str:
    """A failed row for people: ``visit V DETECTOR: error``. An input whose detector could
    not be read (an empty ``detector``) is named by its file name instead, and the unknown
    visit (-1 in the catalog) is said to be unknown."""
    shown = "-1 (unknown)" if visit is None or int(visit) == -1 else str(int(visit))
    line = f"visit {shown} {detector or _file_name(input)}: {error}"
    # one line: a newline in a file name printed what read as another failure
    return line.replace("\r", "\\r").replace("\n", "\\n")


def _text_or_empty(value: Any) -> str:
    """A catalog cell as text, "" for a null."""
    import pandas as pd

    return "" if value is None or (not isinstance(value, str) and pd.isna(value)) else str(value)


def _file_name(input: Any) -> str:
    """The file name of an input path or URL (without a signed URL's query)."""
    from .io.paths import file_name

    return ("" if input is None else file_name(str(input))) or "(unknown input)"


def _print_failures(failed: Sequence[tuple[Any, str, str]], inputs: set[str]) -> None:
    """The failed detectors of a run on stderr, one line each. A run's failure names the
    input in place of the detector when the detector is unknown: ``inputs`` tells them
    apart."""
    for visit, det, err in failed:
        unknown = det in inputs
        sys.stderr.write("  " + _failure_line(visit, "" if unknown else det,
                                              det if unknown else "", err) + "\n")


# -- commands ------------------------------------------------------------
def cmd_simulate(args: argparse.Namespace) -> int:
    """``ampoffset-dask simulate``."""
    from .simulate import simulate_focal_plane

    t0 = time.perf_counter()
    result = simulate_focal_plane(args.out, camera=args.camera, detectors=args.detectors,
                                  rafts=args.rafts, visits=args.visits, scale=args.scale,
                                  seed=args.seed, sky=args.sky, overwrite=args.overwrite,
                                  sequence=args.sequence)
    n_det = result.truth["detector"].nunique()
    _out(f"wrote {len(result.paths)} exposure(s) ({n_det} detector(s) x {args.visits} visit(s)) "
         f"and {result.truth_path.name} to {args.out} in {time.perf_counter() - t0:.1f} s")
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    """``ampoffset-dask run``."""
    from .io.remote import is_url, named_file
    from .pipeline.options import RunOptions

    options = RunOptions(
        camera=args.camera, apply=args.apply or None, output_images=args.output_images,
        in_place=args.in_place, new_run=args.new_run, max_in_flight=args.max_in_flight,
        performance_report=args.performance_report, force=args.force,
        progress=not args.no_progress and sys.stderr.isatty(),
        storage_options=args.storage_options,
        overscan=args.overscan, gain=args.gain, visit=args.visit, detector=args.detector,
    )
    from .pipeline.cluster import check_spec

    try:  # a mistyped --scheduler is a usage error, found before the catalog is opened
        check_spec(args.scheduler)
    except ClusterError as exc:
        raise CommandError(str(exc)) from None
    inputs = _run_inputs(args)
    for item in args.inputs:  # quoted globs are expanded by process
        if (not is_url(item) and not os.path.lexists(named_file(item))
                and not glob.has_magic(str(item))):
            raise InputError(f"{item}: no such file or folder")
    config = _load_config(args.config, args.overrides, args.preset)
    if args.preset is None:
        _suggest_preset(args.camera, args.inputs)
    t0 = time.perf_counter()
    from .pipeline.run import execute, prepare

    # Everything the user can get wrong is found by prepare, before any cluster starts.
    with prepare(inputs, args.output, config=config, options=options,
                 scheduler=str(args.scheduler or "local")) as run:
        note = _kept_identity_note(run.planned, options)
        if note:  # before the cluster starts: the user may want to stop and fix the inputs
            run.summary.notes.append(note)
            sys.stderr.write(f"{_PROG} run: note: {note}\n")
        if run.runnable:
            with _client(args.scheduler) as client:
                result = execute(run, client)
        else:
            result = execute(run, None)
    failed = _failed_detectors(result)
    _print_run_summary(result, args.output, time.perf_counter() - t0)
    flagged = getattr(result, "flagged", None) or []
    if flagged:
        shown = "; ".join(f"visit {_fmt_visit(v)} {d}: {why}" for v, d, why in flagged[:3])
        more = f"; and {len(flagged) - 3} more" if len(flagged) > 3 else ""
        sys.stderr.write(f"{_PROG} run: {len(flagged)} detector(s) flagged (pedestals not "
                         f"trusted): {shown}{more}\n")
    if failed:
        from .io.remote import redact

        sys.stderr.write(f"{_PROG} run: {len(failed)} detector(s) failed:\n")
        _print_failures(failed, {redact(t.path) for t in run.planned})
        return EXIT_FAILED
    return EXIT_OK


def _kept_identity_note(planned: Sequence[Any], options: Any) -> str:
    """One line about the inputs whose header (or manifest) gave a visit or detector other
    than ``--visit N`` / ``--detector NAME``: those options only fill in what an input lacks,
    so the input's own value was kept. Empty when there are none.

    With ``--visit KEYWORD``, the inputs whose visit did not come from that keyword
    (``PlannedTask.visit_from``: their headers lack it) are the ones that kept their own.
    """
    from .io.remote import redact  # signed URLs carry credentials

    visit = options.visit if isinstance(options.visit, int) else None
    keyword = options.visit if isinstance(options.visit, str) else None
    wanted = None if options.detector is None else options.detector.strip().upper()
    kept: dict[str, dict[str, str]] = {"visit": {}, "detector": {}}
    for task in planned:
        if task.error:
            continue
        if (visit is not None and task.visit != visit) or (
                keyword is not None and task.visit_from != "keyword"):
            kept["visit"].setdefault(task.path, str(task.visit))
        if wanted is not None:
            names = {str(task.name).upper()}
            if task.detector is not None:
                names |= {str(task.detector.name).upper(), str(task.detector.id)}
            if wanted not in names:
                kept["detector"].setdefault(task.path, str(task.name))
    parts = []
    for what, given in (("visit", options.visit), ("detector", options.detector)):
        if kept[what]:
            path, value = next(iter(kept[what].items()))
            applies = ("have that keyword" if what == "visit" and keyword is not None
                       else f"give no {what}")
            parts.append(f"--{what} {given} only applies to inputs whose headers {applies}: "
                         f"{len(kept[what])} input(s) kept their own (header or "
                         f"manifest), e.g. {redact(path)} ({what} {value})")
    return "; ".join(parts)


def _run_inputs(args: argparse.Namespace) -> list[Any]:
    """The INPUTs, or the manifest of a Butler query (``--butler``)."""
    butler_only = [name for name in ("collections", "where", "instrument")
                   if getattr(args, name)]
    if args.butler is None:
        if butler_only:
            raise CommandError(f"--{butler_only[0]} needs --butler REPO")
        if not args.inputs:
            raise CommandError("give INPUT files/folders/URLs, or --butler REPO --collections C")
        return list(args.inputs)
    if args.inputs:
        raise CommandError("give either INPUTs or --butler, not both")
    if not args.collections:
        raise CommandError("--butler needs --collections C1[,C2]")
    from .io.butler import find_inputs

    table = find_inputs(args.butler, args.collections, where=args.where,
                        dataset_type=args.dataset_type, instrument=args.instrument)
    _out(f"butler {args.butler}: {len(table)} {args.dataset_type} dataset(s) in "
         f"{args.collections}")
    return [table]


def _suggest_preset(camera: Any, inputs: Sequence[Any]) -> None:
    """Say which preset matches the camera (given, or named by the first input's header);
    never applies it."""
    from .config import preset_for_camera

    name = None
    if isinstance(camera, str):
        from .cameras import canonical_camera_name

        name = canonical_camera_name(camera)
    if name is None and camera is None:
        from .io.fits import inspect_file
        from .io.paths import is_fits_name

        first = None
        for item in inputs:
            path = Path(item)
            if path.is_dir():
                first = next((p for p in sorted(path.rglob("*"))
                              if p.is_file() and is_fits_name(p.name)), None)
            elif path.is_file() and is_fits_name(path.name):
                first = path
            if first is not None:
                break
        try:
            name = inspect_file(first).camera if first is not None else None
        except (AmpOffsetError, OSError):
            name = None
    preset = preset_for_camera(name)
    if preset is not None:
        sys.stderr.write(f"{_PROG} run: note: camera {name}: preset {preset.name!r} "
                         f"({preset.source}) matches; add --preset {preset.name} to use it "
                         "(not applied)\n")


def cmd_presets(args: argparse.Namespace) -> int:
    """``ampoffset-dask presets``."""
    from .config import list_presets

    presets = list_presets()
    if args.json:
        _out(_dumps([{"name": p.name, "overrides": dict(p.overrides), "source": p.source,
                          "cameras": list(p.cameras)} for p in presets], indent=1))
        return EXIT_OK
    for p in presets:
        values = ", ".join(f"{k}={v!r}" for k, v in p.overrides.items())
        _out(f"{p.name:<12} {values}")
        _out(f"{'':<12} source: {p.source}")
    return EXIT_OK


def _print_run_summary(result: Any, catalog: Path, seconds: float) -> None:
    parts = []
    for name in ("n_ok", "n_flagged", "n_failed", "n_skipped"):
        value = getattr(result, name, None)
        if value is not None:
            parts.append(f"{name[2:]} {value}")
    text = ", ".join(parts) if parts else "done"
    _out(f"catalog {catalog}: {text} ({seconds:.1f} s)")


def cmd_cameras(args: argparse.Namespace) -> int:
    """``ampoffset-dask cameras``."""
    from .cameras import get_camera, list_cameras

    if args.name is None:
        rows = []
        for name in list_cameras():
            cam = get_camera(name)
            layouts = sorted({(d.width, d.height, len(d)) for d in cam})
            rows.append({"name": name, "instrument": getattr(cam, "instrument", name),
                         "detectors": len(cam),
                         "layouts": [f"{w}x{h}/{n} amps" for w, h, n in layouts]})
        if args.json:
            _out(_dumps(rows, indent=1))
            return EXIT_OK
        _out(f"{'camera':<12}{'instrument':<14}{'detectors':>10}  layouts (size/amps)")
        for r in rows:
            _out(f"{r['name']:<12}{r['instrument']:<14}{r['detectors']:>10}  "
                 + ", ".join(r["layouts"]))
        return EXIT_OK
    cam = get_camera(args.name)
    rows = []
    for det in cam:
        info = cam.info(det.name)
        rows.append({"name": det.name, "id": det.id, "type": info.get("type"),
                     "physical_type": info.get("physical_type"), "width": det.width,
                     "height": det.height, "amps": len(det)})
    if args.json:
        _out(_dumps(rows, indent=1))
        return EXIT_OK
    _out(f"{cam.name}: {len(rows)} detectors")
    _out(f"{'name':<12}{'id':>5}  {'type':<10}{'physical':<10}{'size':>11}  amps")
    for r in rows:
        _out(f"{r['name']:<12}{r['id'] if r['id'] is not None else '-':>5}  "
             f"{r['type'] or '-':<10}{r['physical_type'] or '-':<10}"
             f"{str(r['width']) + 'x' + str(r['height']):>11}  {r['amps']}")
    return EXIT_OK


def cmd_info(args: argparse.Namespace) -> int:
    """``ampoffset-dask info FILE``."""
    from .io import remote
    from .io.fits import inspect_file, resolve_detector

    given = args.file
    if remote.is_url(given):  # only the header blocks are fetched
        info = inspect_file(given)
        shown, size, wrapped = remote.redact(given), remote.object_size(given), None
    else:
        # ``file://`` URIs and zip members (``archive.zip#zip-path=x.fits``) as `run` takes them
        path = Path(remote.localize(given))
        if path.is_dir():
            raise InputError(f"{remote.printable(given)}: is a directory, not a FITS file")
        if not path.exists():
            raise InputError(f"{remote.printable(given)}: no such file")
        info = inspect_file(path)
        shown, size, wrapped = remote.printable(given), path.stat().st_size, _wrapping(path)
    detector = None
    geometry_error = None
    try:
        detector = resolve_detector(info, camera=args.camera)
    except AmpOffsetError as exc:
        geometry_error = str(exc)
    camera, source, where = _geometry_source(info, args.camera, detector)
    # a header naming the detector but not its id: the camera's id (an id the header's own
    # camera filled in numbers another detector in a camera given with --camera)
    det_id = (getattr(detector, "id", None)
              if info.detector_id is None or (info.detector_id_from and detector is not None)
              else info.detector_id)
    data = {
        "path": shown,
        "kind": info.kind,
        "camera": camera,
        "geometry_source": source,
        "visit": info.visit,
        "detector": info.detector,
        "detector_id": det_id,
        "shape": list(info.shape),
        "compressed": bool(info.compressed),
        "wrapped": wrapped,
        "hdus": {"image": info.image_hdu, "mask": info.mask_hdu, "variance": info.variance_hdu},
        "ccd_hdus": list(info.ccd_hdus),
        "mask_planes": dict(info.mask_planes),
        "amps": None if detector is None else [
            {"name": a.name, "x0": a.x0, "y0": a.y0, "width": a.width, "height": a.height}
            for a in detector.amplifiers],
        "geometry_error": geometry_error,
        "size_bytes": size,
    }
    if args.json:
        _out(_dumps(data, indent=1, default=str))
        return EXIT_OK if detector is not None else EXIT_USAGE
    h, w = info.shape
    _out(f"file        {shown}")
    packing = ", ".join(([f"{wrapped}-wrapped"] if wrapped else [])
                        + (["tile-compressed"] if info.compressed else []))
    _out(f"kind        {info.kind}{f' ({packing})' if packing else ''}, "
         f"{data['size_bytes'] / 1e6:.1f} MB")
    _out(f"camera      {camera or '-'}{where}")
    if info.ccd_hdus:
        _out(f"ccds        {len(info.ccd_hdus)} CCD HDUs {list(info.ccd_hdus)[:8]}"
             f"{' ...' if len(info.ccd_hdus) > 8 else ''} (run: one task per CCD; shown: "
             "the first)")
    _out(f"visit       {_fmt_visit(info.visit)}")
    _out(f"detector    {info.detector or '-'} (id {'-' if det_id is None else det_id})")
    _out(f"image       {w} x {h} pixels (HDU {info.image_hdu})")
    planes = ", ".join(f"{k}={v}" for k, v in sorted(info.mask_planes.items(),
                                                     key=lambda kv: kv[1])) or "-"
    if info.mask_hdu is None:
        _out("mask        none (all pixels used)")
    else:
        _out(f"mask        HDU {info.mask_hdu}; planes: {planes}")
    _out(f"variance    HDU {info.variance_hdu if info.variance_hdu is not None else '-'}")
    if detector is None:
        _out(f"amps        unknown: {geometry_error}")
        return EXIT_USAGE
    amp = detector.amplifiers[0]
    _out(f"amps        {len(detector)} of {amp.width} x {amp.height} (detector order):")
    for a in detector.amplifiers:
        _out(f"  {a.name:<6} x[{a.x0}:{a.x1}] y[{a.y0}:{a.y1}]")
    return EXIT_OK


def _geometry_source(info: Any, camera: Any, detector: Any) -> tuple[str | None, str | None,
                                                                     str]:
    """Which camera ``info`` used, and where its amp geometry ``detector`` came from.

    Follows the order of `~ampoffset_dask.io.fits.resolve_detector`: the file's persisted
    detector, the given camera, the header's, one recognised from the detector name and
    image size, the header's ``DATASEC``-style keywords.

    Returns
    -------
    camera : str or None
        The camera the geometry came from (else the header's, if any).
    source : str or None
        ``"persisted detector"``, ``"camera"`` or ``"header keywords"``; None without a
        geometry.
    where : str
        For the text output: where the geometry came from when the camera's name alone
        does not tell (empty otherwise).
    """
    from .cameras import get_camera
    from .io.layout import _guess_camera, persisted_detector

    if detector is None:
        return info.camera, None, ""
    if info.archive_hdus and detector == persisted_detector(info):
        # resolve_detector takes it before any camera, a given one too
        unused = f", not from --camera {camera}" if camera is not None else ""
        return (info.camera, "persisted detector",
                f" (amp geometry from the file's persisted detector{unused})")
    if camera is not None:
        name = get_camera(camera).name
        return name, "camera", "" if str(camera) == name else f" (--camera {camera})"
    if info.camera is not None:
        return info.camera, "camera", ""
    guessed = _guess_camera(info)
    if guessed is not None:
        return guessed.name, "camera", " (recognised from the detector name and image size)"
    return None, "header keywords", " (amp geometry from the header's DATASEC keywords)"


def _wrapping(path: Path) -> str | None:
    """``"gzip"``, ``"bzip2"`` or ``"zip"`` for a file wrapped whole in that compression
    (read by decompressing all of it, unlike a tile-compressed one); None otherwise."""
    from .io.sections import _is_wrapped

    if not _is_wrapped(path):
        return None
    with open(path, "rb") as fh:
        magic = fh.read(4)
    return ("gzip" if magic.startswith(b"\x1f\x8b") else "bzip2" if magic.startswith(b"BZh")
            else "zip")


def _check_is_catalog(folder: Path) -> None:
    """A catalog folder holds a ``runs`` table (written when a run starts)."""
    if not folder.is_dir():
        raise InputError(f"{folder}: no such catalog folder")
    if not any(folder.glob("runs*")) and not any(folder.glob("detectors*")):
        raise InputError(f"{folder}: not an ampoffset-dask catalog (no runs or detectors "
                         "table); give the --output folder of a run")


def cmd_compact(args: argparse.Namespace) -> int:
    """``ampoffset-dask catalog compact CATALOG``."""
    from .catalog import compact_catalog
    from .catalog.compact import VISITS_PER_FILE

    _check_is_catalog(args.catalog)
    result = compact_catalog(args.catalog, visits_per_file=args.visits_per_file
                             or VISITS_PER_FILE)
    if args.json:
        _out(_dumps({"catalog": str(args.catalog), "files_before": result.files_before,
                         "files_after": result.files_after, "rows": result.rows,
                         "seconds": result.seconds}, indent=1))
        return EXIT_OK
    _out(f"compacted {args.catalog}: {result.n_before} -> {result.n_after} data files, "
         f"{sum(result.rows.values())} rows moved ({result.seconds:.1f} s)")
    return EXIT_OK


def _with_int_columns(df: Any, table: str) -> Any:
    """``df`` with the integer columns of ``table`` that nulls turned into floats (the
    ``detector_id`` of failed rows) as nullable integers: printed ``29``, not ``29.0``."""
    import pyarrow as pa

    from .catalog.schema import SCHEMAS

    schema = SCHEMAS.get(table)
    for field in schema if schema is not None else ():
        if pa.types.is_integer(field.type) and field.name in df.columns \
                and df[field.name].dtype.kind == "f":
            df[field.name] = df[field.name].astype("Int64")
    return df


def cmd_catalog(args: argparse.Namespace) -> int:
    """``ampoffset-dask catalog CATALOG``."""
    import numpy as np

    from .catalog import UNKNOWN_VISIT, read_catalog
    from .catalog.read import pending_results

    summary_only = [flag for flag, given in (
        ("--visit", args.visit is not None), ("--table", args.table is not None),
        ("--limit", args.limit is not None), ("--all-rows", args.all_rows)) if given]
    if args.action == "compact":
        if summary_only:  # compaction moves every visit's files of every table
            raise CommandError(f"{', '.join(summary_only)}: not for 'catalog compact', which "
                               "moves every visit of every table")
        return cmd_compact(args)
    if args.visits_per_file is not None:
        raise CommandError("--visits-per-file is for 'catalog compact'")
    visits = None if args.visit is None else [args.visit]
    _check_is_catalog(args.catalog)
    det = None
    if visits is not None and args.table != "runs":
        # a visit the catalog does not have is a mistake, not an empty summary
        det = read_catalog(args.catalog, "detectors", visits=visits, all_rows=args.all_rows)
        if not len(det):
            raise CommandError(f"no rows for visit {args.visit} in {args.catalog} "
                               f"('{_PROG} catalog {args.catalog}' lists its visits)")
    if args.table is not None:
        df = det if args.table == "detectors" and det is not None else read_catalog(
            args.catalog, args.table, visits=visits if args.table != "runs" else None,
            all_rows=args.all_rows)
        df = _with_int_columns(df, args.table)
        if args.json:
            # every row unless --limit is given: a "more rows" line would not be JSON
            shown = df if args.limit is None else df.head(args.limit)
            _out(_dumps(_json_records(shown), indent=1))
            return EXIT_OK
        import pandas as pd

        limit = 50 if args.limit is None else args.limit
        with pd.option_context("display.width", 160, "display.max_columns", 20):
            _out(df.head(limit).to_string(index=False) if len(df) else "(empty)")
        if len(df) > limit:
            _out(f"... {len(df) - limit} more rows (use --limit)")
        return EXIT_OK
    if det is None:
        det = read_catalog(args.catalog, "detectors", visits=visits, all_rows=args.all_rows)
    ped = read_catalog(args.catalog, "pedestals", visits=visits, all_rows=args.all_rows)
    itf = read_catalog(args.catalog, "interfaces", visits=visits, all_rows=args.all_rows)
    runs = read_catalog(args.catalog, "runs")  # a damaged runs table is an error, not 0 runs
    # results of a killed run still only in its journal: not in the rows above
    pending = [j for j in pending_results(args.catalog) if j.n_results]
    status = det["status"].value_counts().to_dict() if len(det) else {}
    peds = np.asarray(ped["pedestal"], dtype=float) if len(ped) else np.zeros(0)
    units = _pedestal_units(det, ped)
    by_unit = {u: peds[units == u] for u in dict.fromkeys(units.tolist())}
    # pedestals in electrons (--gain nominal) and in ADU have no common RMS
    one_unit = len(by_unit) <= 1
    summary = {
        "catalog": str(args.catalog),
        "runs": len(runs),
        # UNKNOWN_VISIT holds the failed inputs whose identity could not be read: no visit
        "visits": sorted(int(v) for v in det["visit"].unique() if int(v) != UNKNOWN_VISIT)
        if len(det) else [],
        "failed_without_visit": int((det["visit"] == UNKNOWN_VISIT).sum()) if len(det) else 0,
        "detectors": len(det),
        "status": {str(k): int(v) for k, v in status.items()},
        "amps": len(ped),
        "pedestal_unit": (next(iter(by_unit)) if one_unit and by_unit else
                          "mixed" if by_unit else None),
        "pedestal_rms": (float(np.sqrt(np.mean(peds ** 2))) if peds.size and one_unit
                         else None),
        "pedestal_max_abs": float(np.abs(peds).max()) if peds.size and one_unit else None,
        "pedestals_by_unit": {u: {"amps": int(v.size), "rms": float(np.sqrt(np.mean(v ** 2))),
                                  "max_abs": float(np.abs(v).max())}
                              for u, v in by_unit.items()},
        "interfaces": len(itf),
        "max_offset_fail": int(itf["max_offset_fail"].sum()) if len(itf) else 0,
        "min_frac_fail": int(itf["min_frac_fail"].sum()) if len(itf) else 0,
        "failed": [{"visit": int(row.visit), "detector": _text_or_empty(row.detector),
                    "input": _text_or_empty(row.input), "error": str(row.error)}
                   for row in det[det["status"] == "failed"].itertuples(index=False)],
        "pending": [{"run_id": j.run_id, "results": j.n_results, "journal": str(j.path)}
                    for j in pending],
        # the configs the measured rows above come from: more than one when a --new-run
        # with another config covered only some detectors (the numbers above pool them)
        "configs": _config_groups(det, ped, itf, runs, peds, units),
    }
    if args.json:
        _out(_dumps(summary, indent=1))
        return EXIT_OK
    _out(f"catalog     {summary['catalog']} ({summary['runs']} run(s))")
    vis = summary["visits"]
    n_lost = summary["failed_without_visit"]
    _out(f"visits      {len(vis)}: " + ", ".join(map(str, vis[:10]))
         + (" ..." if len(vis) > 10 else "")
         + (f" (plus {n_lost} failed input(s) without a visit: unreadable identity)"
            if n_lost else ""))
    _out(f"detectors   {summary['detectors']}: "
         + (", ".join(f"{k} {v}" for k, v in sorted(summary["status"].items())) or "-"))
    if peds.size and one_unit:
        unit = summary["pedestal_unit"]
        _out(f"pedestals   {summary['amps']} amps, RMS {summary['pedestal_rms']:.3f} {unit}, "
             f"max |p| {summary['pedestal_max_abs']:.3f} {unit}")
    elif peds.size:
        _out(f"pedestals   {summary['amps']} amps in two units (some detectors measured with "
             "--gain nominal, others not): no RMS over both; "
             + "; ".join(f"{v['amps']} in {u}: RMS {v['rms']:.3f}, max |p| {v['max_abs']:.3f}"
                         for u, v in summary["pedestals_by_unit"].items()))
    _out(f"interfaces  {summary['interfaces']}: {summary['max_offset_fail']} over the offset "
         f"limit, {summary['min_frac_fail']} under the good-fraction limit (zeroed)")
    if len(summary["configs"]) > 1:
        _out(f"configs     {len(summary['configs'])}: the rows above come from runs with "
             "different configurations (their numbers are pooled):")
        for group in summary["configs"]:
            _out("  " + _config_group_line(group))
    for row in summary["failed"][:20]:
        _out("  failed: " + _failure_line(row["visit"], row["detector"], row["input"],
                                          row["error"]))
    if len(summary["failed"]) > 20:
        _out(f"  ... {len(summary['failed']) - 20} more failures")
    for j in summary["pending"]:
        _out(f"pending     run {j['run_id']} did not finish (killed?): {j['results']} "
             f"result(s) only in its journal, not counted above; '{_PROG} catalog compact "
             f"{args.catalog}' or running again recovers them")
    return EXIT_OK


def _config_groups(det: Any, ped: Any, itf: Any, runs: Any, peds: Any,
                   units: Any) -> list[dict[str, Any]]:
    """The measured rows of a catalog summary grouped by the config of their run.

    Parameters
    ----------
    det, ped, itf : pandas.DataFrame
        The ``detectors``, ``pedestals`` and ``interfaces`` rows summarised.
    runs : pandas.DataFrame
        The ``runs`` table (each run's ``config`` and ``config_digest``).
    peds, units : numpy.ndarray
        The pedestals of ``ped`` as floats and the unit of each (`_pedestal_units`).

    Returns
    -------
    list of dict
        One entry per config digest (None for rows whose run is not in ``runs``), in the
        order the runs started: ``config_digest``, ``amp_edge_max_offset`` (the offset
        limit; None if unknown), ``runs`` (``run_id`` and ``detectors``: rows of that run),
        ``detectors``, ``amps``, ``interfaces``, ``max_offset_fail``, ``pedestal_rms`` and
        ``pedestal_unit`` (None over two units). Failed rows measured nothing and are left
        out.
    """
    import numpy as np

    if not len(det) or "run_id" not in det.columns:
        return []
    measured = det[det["status"] != "failed"]
    per_run = measured["run_id"].value_counts().to_dict()
    digest_of: dict[str, Any] = {}
    limit_of: dict[str, Any] = {}
    order: dict[str, int] = {}
    for i, row in enumerate(runs.drop_duplicates("run_id", keep="last").itertuples()):
        digest_of[row.run_id] = _text_or_empty(row.config_digest) or None
        order[row.run_id] = i
        try:
            limit_of[row.run_id] = json.loads(row.config).get("amp_edge_max_offset")
        except (TypeError, ValueError, AttributeError):
            limit_of[row.run_id] = None
    groups: dict[Any, dict[str, Any]] = {}
    for run_id in sorted(per_run, key=lambda r: (order.get(r, len(order)), str(r))):
        digest = digest_of.get(run_id)
        group = groups.setdefault(digest, {
            "config_digest": digest, "amp_edge_max_offset": limit_of.get(run_id),
            "runs": [], "detectors": 0, "amps": 0, "interfaces": 0, "max_offset_fail": 0,
            "pedestal_rms": None, "pedestal_unit": None})
        group["runs"].append({"run_id": str(run_id), "detectors": int(per_run[run_id])})
        group["detectors"] += int(per_run[run_id])
    for group in groups.values():
        ids = [r["run_id"] for r in group["runs"]]
        in_ped = ped["run_id"].isin(ids).to_numpy() if len(ped) else np.zeros(0, bool)
        in_itf = itf["run_id"].isin(ids) if len(itf) else None
        group["amps"] = int(in_ped.sum())
        group["interfaces"] = int(in_itf.sum()) if in_itf is not None else 0
        group["max_offset_fail"] = (int(itf.loc[in_itf, "max_offset_fail"].sum())
                                    if in_itf is not None else 0)
        values = peds[in_ped]
        group_units = set(units[in_ped].tolist())
        if values.size and len(group_units) == 1:
            group["pedestal_rms"] = float(np.sqrt(np.mean(values ** 2)))
            group["pedestal_unit"] = group_units.pop()
    return list(groups.values())


def _config_group_line(group: Mapping[str, Any]) -> str:
    """One config group of `_config_groups` for people."""
    limit = group["amp_edge_max_offset"]
    name = (f"config {group['config_digest']}" if group["config_digest"] else
            "config unknown (run not in the runs table)")
    rms = ("" if group["pedestal_rms"] is None
           else f", RMS {group['pedestal_rms']:.3f} {group['pedestal_unit']}")
    runs = ", ".join(f"{r['run_id']} ({r['detectors']})" for r in group["runs"])
    return (f"{name}" + ("" if limit is None else f" (ampEdgeMaxOffset {limit:g})")
            + f": {group['detectors']} detector(s), {group['amps']} amps{rms}, "
            f"{group['interfaces']} interfaces, {group['max_offset_fail']} over the offset "
            f"limit; run(s) {runs}")


def _dumps(data: Any, *, indent: int | None = None, default: Any = None) -> str:
    """Strict JSON of ``data``: NaN as null, infinities as the strings ``"Infinity"`` and
    ``"-Infinity"`` (as ``--set`` reads them), which JSON has no number for."""
    import math

    def clean(value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            return None if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [clean(v) for v in value]
        return value

    return json.dumps(clean(data), indent=indent, default=default, allow_nan=False)


def _json_records(df: Any) -> list[dict[str, Any]]:
    """The rows of ``df`` as JSON-safe records: nulls and NaN as None, times in ISO 8601,
    numpy scalars as Python numbers (floats keep their full precision)."""
    import numpy as np
    import pandas as pd

    def cell(value: Any) -> Any:
        if value is None or (np.ndim(value) == 0 and pd.isna(value)):
            return None
        if isinstance(value, pd.Timestamp | np.datetime64):
            return pd.Timestamp(value).isoformat()
        if isinstance(value, np.generic):
            return value.item()
        return value

    return [{str(k): cell(v) for k, v in row.items()} for row in df.to_dict("records")]


def _pedestal_units(det: Any, ped: Any) -> Any:
    """The unit of each pedestal row (an object ndarray): ``"e-"`` when its detector row
    (same visit, detector and run) was measured with the camera's nominal gains
    (``gain == "nominal"``), else ``"ADU"`` (also for catalogs older than the column)."""
    import numpy as np

    keys = ["visit", "detector", "run_id"]
    if not len(ped):
        return np.zeros(0, dtype=object)
    if "gain" not in det.columns or not (set(keys) <= set(det.columns)
                                         and set(keys) <= set(ped.columns)):
        return np.full(len(ped), "ADU", dtype=object)
    gains = det[[*keys, "gain"]].drop_duplicates(keys)
    merged = ped[keys].merge(gains, on=keys, how="left")
    return np.where(merged["gain"].to_numpy() == "nominal", "e-", "ADU").astype(object)


def cmd_trends(args: argparse.Namespace) -> int:
    """``ampoffset-dask trends CATALOG``."""
    from .trends import find_trends, read_series, write_trends

    t0 = time.perf_counter()
    table = read_series(args.catalog, detector=args.detector, amp=args.amp)
    t_read = time.perf_counter() - t0
    result = find_trends(table, k=args.k, amp=args.amp)
    out = args.out if args.out is not None else args.catalog / "trends"
    written = write_trends(result, out, camera=args.camera)
    flagged = result.flagged
    _out(f"{len(result.series)} pedestals of {len(result.summary)} amp(s) over "
         f"{table['visit'].nunique()} visit(s) (read in {t_read:.2f} s); "
         f"{int(result.summary['n_jumps'].sum())} jump(s), "
         f"{int(result.summary['gain_like'].sum())} gain-like amp(s)")
    unit = table.attrs.get("unit", "ADU")  # e- after --gain nominal
    for row in flagged.itertuples():
        note = f"  {row.detector} {row.amp}:"
        if row.n_jumps:
            note += f" jump(s) at visit {row.jump_visits};"
        if row.gain_like:
            note += (f" gain-like, {row.gain_slope:+.2e} +- {row.gain_slope_err:.1e} per "
                     f"{unit} of level;")
        _out(note.rstrip(";"))
    for path in written:
        _out(str(path))
    return EXIT_OK


def cmd_plot(args: argparse.Namespace) -> int:
    """``ampoffset-dask plot CATALOG``."""
    from .plots import plot_visit

    written = plot_visit(args.catalog, args.visit, out=args.out, camera=args.camera,
                         detector=args.detector)
    for path in written:
        _out(str(path))
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    """``ampoffset-dask demo``."""
    import numpy as np

    from .catalog import read_catalog
    from .simulate import simulate_focal_plane

    out: Path = args.out
    data_dir, catalog, plot_dir = out / "data", out / "catalog", out / "plots"
    t_start = time.perf_counter()
    _out(f"ampoffset-dask demo: LSSTCam raft {args.raft}, scale {args.scale:g}, into {out}")
    handle = _client(args.scheduler, n_workers=args.workers)
    with handle:
        client = handle.client
        link = handle.dashboard_link
        n_workers = len(client.scheduler_info().get("workers", {}))
        _out(f"  Dask cluster: {n_workers} worker(s)" + (f", dashboard {link}" if link else ""))
        _out(f"  simulating raft {args.raft} ...")
        sys.stdout.flush()
        t0 = time.perf_counter()
        sim = simulate_focal_plane(data_dir, camera="lsstcam", rafts=[args.raft], visits=1,
                                   scale=args.scale, seed=args.seed, overwrite=True,
                                   executor=client)
        t_sim = time.perf_counter() - t0
        n_det = len(sim.paths)
        _out(f"  simulated {n_det} detectors in {t_sim:.1f} s -> {data_dir}")
        _out(f"  measuring {n_det} detectors ...")
        sys.stdout.flush()
        t0 = time.perf_counter()
        result = _call_process([str(p.absolute()) for p in sim.paths], catalog, client=client,
                               new_run=True, progress=sys.stderr.isatty())
        t_run = time.perf_counter() - t0
    failed = _failed_detectors(result)
    _out(f"  measured {n_det - len(failed)}/{n_det} detectors in {t_run:.1f} s -> {catalog}")
    ped = read_catalog(catalog, "pedestals")
    merged = ped.merge(sim.truth, on=["visit", "detector", "amp"], suffixes=("", "_truth"))
    err = np.asarray(merged["pedestal"] - merged["pedestal_truth"], dtype=float)
    rms_err = float(np.sqrt(np.mean(err ** 2))) if err.size else float("nan")
    rms_truth = float(np.sqrt(np.mean(np.asarray(sim.truth["pedestal"]) ** 2)))
    _out(f"  pedestal RMS error vs truth: {rms_err:.3f} ADU over {err.size} amps "
         f"(injected pedestals RMS {rms_truth:.2f} ADU)")
    t0 = time.perf_counter()
    if len(failed) == n_det:  # nothing measured: plot_visit refuses such a visit
        _out("  plots skipped: every detector failed")
    else:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            _out("  plots skipped: matplotlib is missing (pip install 'ampoffset-dask[plot]')")
        else:
            from .plots import plot_visit

            written = plot_visit(catalog, int(sim.truth["visit"].iloc[0]), out=plot_dir)
            _out(f"  wrote {len(written)} plots in {time.perf_counter() - t0:.1f} s -> "
                 f"{plot_dir}")
            for path in written:
                _out(f"    {path}")
    _out(f"done in {time.perf_counter() - t_start:.1f} s. Next: ampoffset-dask catalog {catalog}")
    if failed:
        sys.stderr.write(f"{_PROG} demo: {len(failed)} detector(s) failed:\n")
        _print_failures(failed, {str(p.absolute()) for p in sim.paths})
        return EXIT_FAILED
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
