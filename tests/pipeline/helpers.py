"""Helpers of the pipeline tests: direct measurements, catalog checks, real dask processes."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from run_shared import stop_processes

from ampoffset_dask import measure_detector
from ampoffset_dask.io.fits import read_exposure

VISIT = 7
SCALE = 0.05  # 640 x 200 pixel LSSTCam detectors with 80 x 100 pixel amps


def direct_measurements(paths, config=None):
    """``(pedestals, interfaces)`` DataFrames computed without Dask, sorted like the catalog."""
    peds, itfs = [], []
    for path in paths:
        exp = read_exposure(path)
        m = measure_detector(exp.image, exp.mask, exp.detector, config,
                             mask_planes=exp.mask_planes)
        for i, (amp, value) in enumerate(zip(m.amp_names, m.pedestals, strict=True)):
            peds.append((exp.visit, exp.detector.name, amp, i, float(value)))
        for it in m.interfaces:
            itfs.append((exp.visit, exp.detector.name, it.id, it.offset_raw, it.offset,
                         it.good_frac))
    pedestals = pd.DataFrame(peds, columns=["visit", "detector", "amp", "amp_index",
                                            "pedestal"])
    interfaces = pd.DataFrame(itfs, columns=["visit", "detector", "interface_id", "offset_raw",
                                             "offset", "good_frac"])
    pedestals = pedestals.sort_values(["visit", "detector", "amp_index"], kind="stable")
    interfaces = interfaces.sort_values(["visit", "detector"], kind="stable")
    return pedestals.reset_index(drop=True), interfaces.reset_index(drop=True)


def assert_catalog_matches(catalog, expected):
    """The catalog's pedestals and interfaces equal ``expected`` exactly, without duplicates."""
    from ampoffset_dask import read_catalog

    pedestals, interfaces = expected
    got = read_catalog(catalog, "pedestals")
    assert not got.duplicated(["visit", "detector", "amp"]).any()
    pd.testing.assert_frame_equal(got[list(pedestals.columns)].astype({"amp_index": "int64"}),
                                  pedestals.astype({"amp_index": "int64"}), check_dtype=False)
    got_i = read_catalog(catalog, "interfaces")
    assert not got_i.duplicated(["visit", "detector", "interface_id"]).any()
    pd.testing.assert_frame_equal(got_i[list(interfaces.columns)], interfaces,
                                  check_dtype=False)
    det = read_catalog(catalog, "detectors")
    assert not det.duplicated(["visit", "detector"]).any()


def journal_lines(catalog: Path) -> int:
    """Results journaled so far by a running `process`."""
    folder = Path(catalog) / "_journal"
    n = 0
    for path in folder.glob("*.jsonl") if folder.is_dir() else ():
        with contextlib.suppress(OSError):
            n += path.read_text().count("\n")
    return n


def signal_after_first_result(proc: subprocess.Popen, catalog: Path,
                              sig: int) -> tuple[str, str]:
    """Send ``sig`` to a running ``ampoffset-dask run`` once it has journaled a result (or
    ended); return its ``(stdout, stderr)``, killing it if it outlives the wait."""
    try:
        wait_for(lambda: journal_lines(catalog) >= 1 or proc.poll() is not None, 120, 0.01,
                 "the first result")
        proc.send_signal(sig)
        return proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def wait_for(predicate, timeout=60.0, interval=0.01, what="condition"):
    t0 = time.monotonic()
    while not predicate():
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def start_dask_processes(folder: Path, n_workers: int = 2, tls: dict | None = None,
                         cwd: Path | None = None, nanny: bool = False
                         ) -> tuple[str, list[subprocess.Popen]]:
    """Start a real ``dask scheduler`` and ``n_workers`` ``dask worker`` processes on
    127.0.0.1, each in its own session; return ``(address, [scheduler, *workers])``.

    Workers run without a nanny so that killing one really removes it, unless ``nanny``
    (which ``Client.restart`` needs); ``cwd`` is the processes' working directory. Stop
    them with `stop_processes`.
    """
    folder.mkdir(parents=True, exist_ok=True)
    sfile = folder / "scheduler.json"
    tls_args: list[str] = []
    protocol = "tcp"
    if tls:
        protocol = "tls"
        tls_args = ["--tls-ca-file", tls["ca"], "--tls-cert", tls["cert"], "--tls-key",
                    tls["key"]]
    env = {**os.environ, "DASK_DISTRIBUTED__WORKER__DAEMON": "False"}
    with open(folder / "cluster.log", "w") as log:
        procs = [subprocess.Popen(
            [sys.executable, "-m", "dask", "scheduler", "--host", "127.0.0.1", "--port", "0",
             "--protocol", protocol, "--no-dashboard", "--scheduler-file", str(sfile),
             *tls_args],
            cwd=cwd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)]
        try:
            wait_for(lambda: sfile.exists() and sfile.stat().st_size > 0, 60, 0.05,
                     "the scheduler file")
            time.sleep(0.1)
            address = json.loads(sfile.read_text())["address"]
            for i in range(n_workers):
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", "dask", "worker", address, "--nthreads", "1",
                     *([] if nanny else ["--no-nanny"]), "--no-dashboard", "--memory-limit",
                     "1GiB", "--name", f"w{i}", "--host", "127.0.0.1", *tls_args],
                    cwd=cwd, stdout=log, stderr=subprocess.STDOUT, env=env,
                    start_new_session=True))
        except BaseException:
            stop_processes([p.pid for p in procs])
            raise
    return address, procs


@contextlib.contextmanager
def dask_processes(folder: Path, n_workers: int = 2, tls: dict | None = None,
                   cwd: Path | None = None, nanny: bool = False):
    """A real ``dask scheduler`` and ``dask worker`` processes on 127.0.0.1 for the block.

    Yields ``(address, worker_processes, scheduler_file)``; see `start_dask_processes`.
    """
    address, procs = start_dask_processes(folder, n_workers, tls, cwd, nanny)
    try:
        yield address, procs[1:], folder / "scheduler.json"
    finally:
        stop_processes([p.pid for p in procs])
        for proc in procs:  # reap them
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(1)


def make_certificates(folder: Path) -> dict[str, str]:
    """A throw-away CA and a certificate for 127.0.0.1 (openssl command line; P-256 keys,
    which TLS accepts as RSA ones and which take milliseconds to make, not ~0.25 s)."""
    openssl = shutil.which("openssl")
    assert openssl, "the TLS test needs the openssl command"
    folder.mkdir(parents=True, exist_ok=True)
    ca_key, ca, key, csr, cert = (str(folder / n) for n in
                                  ("ca.key", "ca.pem", "key.pem", "req.csr", "cert.pem"))
    ext = folder / "san.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")

    def run(*args):
        subprocess.run([openssl, *args], check=True, capture_output=True)

    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1")
    run("req", "-x509", *ec, "-nodes", "-keyout", ca_key, "-out", ca,
        "-days", "2", "-subj", "/CN=ampoffset-test-ca")
    run("req", *ec, "-nodes", "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1")
    run("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-out",
        cert, "-days", "2", "-extfile", str(ext))
    return {"ca": ca, "cert": cert, "key": key}


def pedestal_array(catalog, detector):
    from ampoffset_dask import read_catalog

    ped = read_catalog(catalog, "pedestals")
    return np.asarray(ped[ped["detector"] == detector]["pedestal"])
