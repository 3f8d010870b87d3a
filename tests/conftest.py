"""Test configuration: tests/golden.py importable as ``golden``; shared fixtures."""

import os
import sys
import threading
from pathlib import Path

import pytest

# The numpy kernels unless a test asks for numba: every process the tests start (CLI runs,
# dask workers, notebook kernels) would otherwise load the compiled kernels' cache, about
# 1.2 s of CPU each. The two paths are bit-identical; tests/algorithm (test_kernels,
# test_parity, test_pinned) and tests/pipeline/test_detector_job.py run both explicitly.
os.environ.setdefault("AMPOFFSET_KERNELS", "numpy")

# Let the processes the tests start cache compiled bytecode (in the checkout's gitignored
# __pycache__ folders) even where PYTHONDONTWRITEBYTECODE is set, as in CI containers: each
# of the ~100 CLI, dask and notebook processes otherwise compiles the package again (about
# 0.25 s of CPU each). The test processes of ``-n`` are started after this line runs.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)

# The test clusters idle most of the session, and distributed's defaults are costly at idle:
# each worker samples its threads' stacks every 10 ms and every process ticks and polls its
# system monitor several times a second (~4 % of a core per idle worker, ~2 % per scheduler,
# minutes of CPU over the suite on 2 cores). Every process the tests start inherits these.
os.environ.setdefault("DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED", "False")
os.environ.setdefault("DASK_DISTRIBUTED__ADMIN__TICK__INTERVAL", "1s")
os.environ.setdefault("DASK_DISTRIBUTED__ADMIN__SYSTEM_MONITOR__INTERVAL", "5s")

sys.path.insert(0, str(Path(__file__).resolve().parent))

from golden import SHARED, SHARED_FOLDERS
from run_shared import once_per_run, run_wide

if "dask" in sys.modules:  # imported by a plugin before the settings above
    sys.modules["dask"].config.refresh()


def pytest_configure(config):
    """Stop with one clear message, before collection, when the reference data is missing
    (otherwise every module reading it fails to import with its own traceback)."""
    missing = [f"{name}/" for name in SHARED_FOLDERS if not (SHARED / name).is_dir()]
    if missing:
        raise pytest.UsageError(
            f"reference data not found: {SHARED} lacks {', '.join(missing)}. The tests read "
            "the shared folder beside the repository (../shared relative to the repository "
            "root); put it there or set AMPOFFSET_SHARED=/path/to/shared."
        )
    if not hasattr(config, "workerinput") and config.getoption("numprocesses", None) \
            and config.getoption("assertmode", "rewrite") == "rewrite":
        threading.Thread(target=_rewrite_ahead, args=(config,), daemon=True,
                         name="rewrite-ahead").start()


def _rewrite_ahead(config) -> None:
    """In the ``-n`` controller, rewrite the test modules' asserts once into the pyc cache
    that every test process reads (``__pycache__/*-pytest-*.pyc``, gitignored).

    In a fresh checkout each of the ``-n 4`` test processes would otherwise rewrite all ~85
    modules itself at collection (about 2 CPU s each). This runs in a thread while they
    start (importing pytest's plugins and the conftests takes them longer than this takes),
    in their collection order; a module a process reaches first it rewrites itself, as
    without this. The pycs are pytest's own (its private rewrite API, checked here): if that
    API changes this does nothing, and the tests are unaffected either way.
    """
    try:
        from _pytest.assertion import rewrite

        state = config.stash[rewrite.assertstate_key]
        tests = Path(__file__).resolve().parent
        # pytest collects a folder's entries in name order, conftest first
        files = sorted((p for p in tests.rglob("*.py")
                        if p.name == "conftest.py" or p.name.startswith("test_")),
                       key=lambda p: [(part != "conftest.py", part)
                                      for part in p.relative_to(tests).parts])
        for fn in files:
            pyc = rewrite.get_cache_dir(fn) / (fn.name[:-3] + rewrite.PYC_TAIL)
            if rewrite._read_pyc(fn, pyc) is not None:
                continue  # cached by an earlier run, or already by a test process
            source_stat, co = rewrite._rewrite_test(fn, config)
            if rewrite.try_makedirs(pyc.parent):
                rewrite._write_pyc(state, co, source_stat, pyc)
    except Exception:  # an optimisation only: the test processes rewrite what is missing
        return


# Tests that run the compiled kernels: numba compiles them (or loads its cache) once per
# process, tens of CPU seconds in a fresh checkout, so with ``-n`` they share one test
# process (``--dist loadgroup`` in pyproject's addopts).
_NUMBA_MODULES = {"test_kernels.py", "test_smoothing.py"}
_NUMBA_TESTS = {"test_kernels_choice_from_dask_config"}


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups
def pytest_collection_modifyitems(config, items):
    for item in items:
        if (item.path.name in _NUMBA_MODULES or "numba" in item.nodeid
                or item.originalname in _NUMBA_TESTS):
            item.add_marker(pytest.mark.xdist_group("numba-kernels"))


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_node_collection_finished(node, ids):
    """Stop when ``--dist loadgroup`` lost the group (xdist appends ``@group`` to the ids a
    test process collects; with a pytest it does not support it cannot), instead of silently
    compiling the kernels once per test process."""
    lost = [i for i in ids if "@" not in i and Path(i.split("::")[0]).name in _NUMBA_MODULES]
    if lost and node.config.getvalue("dist") == "loadgroup":
        pytest.exit(
            f"pytest-xdist ignored the xdist_group of {lost[0]} and {len(lost) - 1} more "
            "with this pytest; install the versions pinned by pyproject's test extra",
            returncode=pytest.ExitCode.USAGE_ERROR)


_STARTED: list = []  # the run-wide processes this process started (not collected while they run)


@pytest.fixture(scope="module")
def inprocess_client():
    """A client of one in-process worker (one thread), for modules whose runs are of one or
    two tiny detectors."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                      dashboard_address=":0") as cluster, Client(cluster) as c:
        yield c


@pytest.fixture(scope="session")
def shared_scheduler(tmp_path_factory):
    """The address of a real ``dask scheduler`` with two ``dask worker`` processes on
    127.0.0.1, for every test that needs a cluster but not a cluster of its own (tests that
    kill, stop or inspect their cluster start their own).

    One cluster serves all test processes of a ``-n`` run: the first to ask starts it, each
    registers itself as a user, and the last to leave stops it. Runs on a shared scheduler are
    what users do too; each run's results are keyed by its own run token
    (tests/reliability/test_shared_scheduler.py).
    """
    from pipeline.helpers import start_dask_processes

    def start(folder):
        address, procs = start_dask_processes(folder, n_workers=2)
        _STARTED.extend(procs)
        return address, [p.pid for p in procs]

    with run_wide(tmp_path_factory, "shared-cluster", start) as address:
        yield address


def _moto(tmp_path_factory, name: str, auth: bool):
    pytest.importorskip("s3fs")  # the [cloud] extra is in the test extra
    pytest.importorskip("moto")
    from s3_server import start_moto_server

    def start(_folder):
        url, proc = start_moto_server(auth=auth)
        _STARTED.append(proc)
        return url, [proc.pid]

    return run_wide(tmp_path_factory, name, start)


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory):
    """The URL of a real S3 server (``moto_server``) on 127.0.0.1 that trusts every request,
    one for the whole run (each ``-n`` process would otherwise start its own, ~1 CPU s): make
    buckets of your own, named after your test and process (`s3_server.bucket_name`)."""
    with _moto(tmp_path_factory, "moto", auth=False) as url:
        yield url


@pytest.fixture(scope="session")
def s3_checking_endpoint(tmp_path_factory):
    """The URL of a real S3 server on 127.0.0.1 that checks credentials on every request
    (the tests' keys are unknown to it: every request is refused with 403, as a real store
    refuses wrong keys), one for the whole run."""
    with _moto(tmp_path_factory, "moto-checking", auth=True) as url:
        yield url


@pytest.fixture(scope="session")
def butler_detector_files(tmp_path_factory):
    """The detector files of `butler_repo.DETECTORS` (full-size, tile-compressed, ~3.6 CPU s
    to write), written once per run for every test that ingests them into a Butler
    repository (the repositories copy them: they stay unchanged)."""
    pytest.importorskip("lsst.daf.butler")  # the [butler] extra is in the test extra
    from butler_repo import write_detector_files

    return once_per_run(tmp_path_factory, "butler_files", write_detector_files)


@pytest.fixture(scope="session")
def butler_repo_root(tmp_path_factory, butler_detector_files) -> Path:
    """A Butler repository (SQLite registry, file datastore) holding `butler_detector_files`,
    made once per run (~1 CPU s) and shared by the ``-n`` processes: query it, do not write
    to it."""
    from butler_repo import make_repo

    def make(folder):
        make_repo(folder / "butler", butler_detector_files)
        return folder / "butler"

    return once_per_run(tmp_path_factory, "butler_repo", make)


@pytest.fixture
def pixel_counter(monkeypatch):
    """Count the pixels every `read_section` call returns (all lazy reads go through it)."""
    import ampoffset_dask.io.sections as sections_io

    counts = {"calls": 0, "pixels": 0}
    original = sections_io.read_section

    def counting(*args, **kwargs):
        out = original(*args, **kwargs)
        counts["calls"] += 1
        counts["pixels"] += int(out.size)
        return out

    monkeypatch.setattr(sections_io, "read_section", counting)
    return counts
