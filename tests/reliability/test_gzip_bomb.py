"""Issue 10 item 5: compressed files cannot exhaust the client's or the workers' memory.

Three files in one input folder, run by a real ``ampoffset-dask run`` on a real scheduler
and worker:

* ``bomb.fits.gz``: 2 MB of gzip declaring (and expanding to) a 2 GiB image, more than the
  default ``ampoffset.max-decompressed-bytes``: a failed row naming the limit.
* ``table.fits.gz``: a small valid exposure followed by a table extension of zeros bigger than
  the memory limit below (400 MiB): its headers are streamed, the table is skipped, the
  detector is measured exactly as the plain file is.
* ``tiles.fits.fz``: a tile-compressed exposure whose ZNAXIS cards claim 100000 x 100000
  pixels: a failed row naming the limit, nothing allocated.

The client's and the worker's peak RSS (VmHWM) stay under 300 MiB (they peak at ~180 and
~135 MiB: imports and the tiny detectors).
"""

from __future__ import annotations

import gzip
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from distributed import Client
from pipeline.helpers import SCALE, VISIT, dask_processes, direct_measurements

from ampoffset_dask import read_catalog
from ampoffset_dask.io.fits import read_exposure, write_exposure
from ampoffset_dask.simulate import simulate_focal_plane

MiB = 1 << 20
LIMIT_MB = 300  # MiB
# Rows of 1 MiB: the table alone is over the limit, so holding it would fail the test. Every
# pass over it costs ~3 s of CPU per GiB (inflate and CRC), and a run passes over it twice
# (the client's header walk; the worker's one decompression for its walk and read): the
# limit is as low as the processes' own peaks allow with margin, the table just above it.
TABLE_ROWS = LIMIT_MB + 100

_ZEROS = gzip.compress(b"\0" * MiB, compresslevel=9)  # ~1 kB that expands to 1 MiB


def padded(n_bytes: int) -> int:
    """FITS data units fill whole 2880-byte blocks."""
    return -(-n_bytes // 2880) * 2880


def zeros_members(n_bytes: int) -> bytes:
    """Gzip members that decompress to ``n_bytes`` zero bytes (concatenated members are
    one valid gzip stream), built without compressing gigabytes."""
    whole, rest = divmod(n_bytes, MiB)
    return _ZEROS * whole + (gzip.compress(b"\0" * rest) if rest else b"")


def write_bomb(path: Path) -> None:
    header = fits.Header()
    header["SIMPLE"] = True
    header["BITPIX"] = -32
    header["NAXIS"] = 2
    header["NAXIS1"] = 32768
    header["NAXIS2"] = 16384  # 2 GiB of float32
    header["INSTRUME"] = "LSSTCam"
    header["DETNAME"] = "R22_S11"
    header["VISIT"] = VISIT
    raw = header.tostring().encode("ascii")
    size = padded(4 * 32768 * 16384)
    path.write_bytes(gzip.compress(raw) + zeros_members(size))


def write_with_big_table(plain: Path, path: Path) -> None:
    table = fits.Header()
    table["XTENSION"] = "BINTABLE"
    table["BITPIX"] = 8
    table["NAXIS"] = 2
    table["NAXIS1"] = MiB
    table["NAXIS2"] = TABLE_ROWS
    table["PCOUNT"] = 0
    table["GCOUNT"] = 1
    table["TFIELDS"] = 1
    table["TFORM1"] = f"{MiB}B"
    table["EXTNAME"] = "ARCHIVE_BLOB"
    size = padded(MiB * TABLE_ROWS)
    path.write_bytes(gzip.compress(plain.read_bytes() + table.tostring().encode("ascii"))
                     + zeros_members(size))


def write_lying_tiles(plain: Path, path: Path) -> None:
    exp = read_exposure(plain)
    write_exposure(path, exp.image, exp.mask, exp.variance, mask_planes=exp.mask_planes,
                   header={"INSTRUME": "LSSTCam", "DETNAME": exp.detector.name,
                           "VISIT": VISIT},
                   detector=exp.detector, compress="rice")
    data = bytearray(path.read_bytes())
    for key in (b"ZNAXIS1", b"ZNAXIS2"):
        start = 0
        while (i := data.find(key.ljust(8) + b"= ", start)) >= 0:
            data[i + 10:i + 30] = b"100000".rjust(20)
            start = i + 80
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with dask_processes(tmp_path_factory.mktemp("cluster"), n_workers=1) as (address, _, _):
        yield address


def vm_hwm_kb(status: str) -> int:
    """Peak resident memory from a /proc/<pid>/status text (VmHWM: unlike getrusage's
    ru_maxrss it is not inherited from the process that forked this one)."""
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM in /proc/self/status")


# The CLI in a fresh process, reporting its own peak memory when it ends.
_CLIENT = """
import sys
from pathlib import Path
from ampoffset_dask.cli import main
code = main(sys.argv[1:])
hwm = [ln for ln in Path("/proc/self/status").read_text().splitlines() if ln.startswith("VmHWM:")]
sys.stderr.write(f"PEAK_KB {hwm[0].split()[1]}\\n")
sys.exit(code)
"""


def run_group(cmd: list[str], env: dict, timeout: float) -> subprocess.CompletedProcess:
    """Run ``cmd`` in its own process group; on timeout kill the whole group (the CLI is a
    grandchild of the test)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"the run did not finish in {timeout} s: {err[-2000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def worker_peak_mb(address: str) -> float:
    with Client(address, timeout=30) as client:
        client.wait_for_workers(1, timeout=60)
        # a bound method of a Path pickles by value: each worker reads its own status
        statuses = client.run(Path("/proc/self/status").read_text)
    return max(vm_hwm_kb(text) for text in statuses.values()) / 1024


@pytest.mark.slow
def test_compressed_files_cannot_exhaust_memory(cluster, tmp_path, cli_env):
    sim = simulate_focal_plane(tmp_path / "sim", "lsstcam", detectors=["R22_S12", "R22_S21"],
                               visits=[VISIT], scale=SCALE, seed=5)
    plain_table, plain_tiles = (Path(p) for p in sim.paths)
    data = tmp_path / "data"
    data.mkdir()
    write_bomb(data / "bomb.fits.gz")
    write_with_big_table(plain_table, data / "table.fits.gz")
    write_lying_tiles(plain_tiles, data / "tiles.fits.fz")
    assert (data / "bomb.fits.gz").stat().st_size < 3 * MiB
    assert (data / "table.fits.gz").stat().st_size < 2 * MiB

    before = worker_peak_mb(cluster)
    assert before < LIMIT_MB
    catalog = tmp_path / "catalog"
    proc = run_group(
        [sys.executable, "-c", _CLIENT, "run", str(data), "--output",
         str(catalog), "--scheduler", cluster, "--no-progress"], cli_env, timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    client_mb = int(proc.stderr.rsplit("PEAK_KB ", 1)[1]) / 1024
    worker_mb = worker_peak_mb(cluster)
    print(f"peak RSS: client {client_mb:.0f} MB, worker {worker_mb:.0f} MB")
    assert client_mb < LIMIT_MB, proc.stderr
    assert worker_mb < LIMIT_MB

    rows = read_catalog(catalog, "detectors").set_index("input")
    bomb, tiles = str(data / "bomb.fits.gz"), str(data / "tiles.fits.fz")
    assert rows.loc[bomb, "status"] == "failed"
    assert "max-decompressed-bytes" in rows.loc[bomb, "error"]
    assert "2048.0 MiB" in rows.loc[bomb, "error"]
    assert rows.loc[tiles, "status"] == "failed"
    assert "100000 x 100000" in rows.loc[tiles, "error"]
    assert "max-decompressed-bytes" in rows.loc[tiles, "error"]
    assert rows.loc[str(data / "table.fits.gz"), "status"] == "ok"

    # the detector behind the big table measures exactly like the plain file
    expected, _ = direct_measurements([plain_table])
    got = read_catalog(catalog, "pedestals")
    got = got[got["detector"] == "R22_S12"]
    assert len(got) == 16
    assert np.array_equal(got["pedestal"].to_numpy(), expected["pedestal"].to_numpy())
