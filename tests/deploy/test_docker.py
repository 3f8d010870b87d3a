"""deploy/docker: the Dockerfile and its lock file, checked statically (no image is built).

The lock pins every runtime dependency of pyproject.toml (and of the extras the image installs)
at a version that satisfies pyproject's specifier; the Dockerfile installs exactly that lock
and then the package without resolving again, runs as a non-root user under tini.
"""

from __future__ import annotations

import fnmatch
import os
import re
import subprocess
import sys
import tomllib
from importlib import metadata

import pytest
from conftest import DEPLOY, REPO
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

DOCKER = DEPLOY / "docker"
IMAGE_ENV = default_environment() | {
    "python_version": "3.11", "python_full_version": "3.11.0", "implementation_name": "cpython",
    "platform_python_implementation": "CPython", "sys_platform": "linux",
    "platform_system": "Linux", "os_name": "posix", "platform_machine": "x86_64",
}


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    out, current = [], ""
    for line in (DOCKER / "Dockerfile").read_text().splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        current += " " + stripped.removesuffix("\\").strip()
        if not stripped.endswith("\\"):
            op, _, rest = current.strip().partition(" ")
            out.append((op.upper(), rest.strip()))
            current = ""
    return out


def stages() -> dict[str, list[tuple[str, str]]]:
    """Instructions per build stage, by stage name ("" for an unnamed stage)."""
    out: dict[str, list[tuple[str, str]]] = {}
    current = None
    for op, args in instructions():
        if op == "FROM":
            parts = args.split()
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else ""
            current = out.setdefault(name, [])
        current.append((op, args))
    return out


def lock(name: str = "requirements.lock") -> dict[str, Version]:
    pins = {}
    for line in (DOCKER / name).read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)==([^\s;]+)", line)
        assert match, f"requirements.lock: {line!r} is not name==version"
        name = canonicalize_name(match[1])
        assert name not in pins, f"requirements.lock pins {name} twice"
        pins[name] = Version(match[2])
    return pins


def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def package_install_extras() -> list[str]:
    """Extras named on the Dockerfile line that installs the package itself."""
    for op, args in instructions():
        match = re.search(r"pip install --no-deps \"?/opt/ampoffset/src\[([\w,]+)\]", args)
        if op == "RUN" and match:
            return match[1].split(",")
    raise AssertionError("no `pip install --no-deps /opt/ampoffset/src[...]` in the Dockerfile")


def required(requirements: list[str], extra: str = "") -> list[Requirement]:
    env = IMAGE_ENV | {"extra": extra}
    reqs = [Requirement(r) for r in requirements]
    return [r for r in reqs if r.marker is None or r.marker.evaluate(env)]


def test_stages_build_on_one_python_base():
    froms = [args.split()[0] for op, args in instructions() if op == "FROM"]
    assert froms == ["python:3.11-slim-bookworm", "runtime", "runtime"]
    assert list(stages()) == ["runtime", "notebook", ""]  # the default target is the runtime


def test_base_image_python_satisfies_requires_python():
    base = next(args.split()[0] for op, args in instructions() if op == "FROM")
    match = re.fullmatch(r"python:(\d+\.\d+)-slim-\w+", base)
    assert match, base
    assert SpecifierSet(pyproject()["project"]["requires-python"]).contains(match[1] + ".0")
    assert match[1] == IMAGE_ENV["python_version"]
    assert f"CPython {match[1]}" in (DOCKER / "requirements.lock").read_text()


def test_lock_pins_every_dependency_of_pyproject():
    pins = lock()
    project = pyproject()["project"]
    reqs = required(project["dependencies"])
    for extra in package_install_extras():
        assert extra in project["optional-dependencies"], f"unknown extra [{extra}]"
        reqs += required(project["optional-dependencies"][extra], extra)
    assert len(reqs) >= len(project["dependencies"])
    for req in reqs:
        name = canonicalize_name(req.name)
        assert name in pins, f"{req} is not pinned in requirements.lock"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"requirements.lock pins {name}=={pins[name]}, pyproject wants {req}"
        )


def test_notebook_lock_keeps_the_runtime_versions():
    runtime, notebook = lock(), lock("requirements-notebook.lock")
    assert {name: notebook.get(name) for name in runtime} == runtime
    project = pyproject()["project"]
    # the notebook queries Butler repositories (notebooks/04): the client needs the butler
    for extra in ("gateway", "butler"):
        for req in required(project["optional-dependencies"][extra], extra):
            assert req.specifier.contains(notebook[canonicalize_name(req.name)])
    for tool in ("jupyterlab", "jupyterhub", "ipywidgets", "ipykernel"):
        assert tool in notebook


@pytest.mark.parametrize("name", ["requirements.lock", "requirements-notebook.lock"])
def test_lock_is_closed_under_dependencies(name):
    # Every requirement of a locked package is locked too (checked with the metadata of the
    # packages installed here at the locked version; `pip check` in the build checks the rest).
    pins = lock(name)
    checked = 0
    for name, version in pins.items():
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        if Version(dist.version) != version:
            continue
        checked += 1
        for req in required(dist.requires or []):
            dep = canonicalize_name(req.name)
            assert dep in pins, f"{name}=={version} needs {req}, missing from the lock"
            assert req.specifier.contains(pins[dep], prereleases=True), (
                f"{name}=={version} needs {req}; the lock has {dep}=={pins[dep]}"
            )
    assert checked > 0


def test_dockerfile_installs_the_locks_then_the_package_without_resolving():
    runtime = stages()["runtime"]
    runs = [args for op, args in runtime if op == "RUN"]
    lock_install = [r for r in runs if "--requirement" in r]
    assert len(lock_install) == 1
    assert "--no-deps --requirement /opt/ampoffset/requirements.lock" in lock_install[0]
    copies = [args.split() for op, args in runtime if op == "COPY"]
    assert ["deploy/docker/requirements.lock", "/opt/ampoffset/requirements.lock"] in copies
    package_line = next(r for r in runs if "/opt/ampoffset/src[" in r)
    assert "--no-deps" in package_line and "pip check" in package_line
    notebook_runs = [args for op, args in stages()["notebook"] if op == "RUN"]
    assert any("--no-deps --requirement /opt/ampoffset/requirements-notebook.lock" in r
               and "pip check" in r for r in notebook_runs)
    # Every pip install in the image is --no-deps: nothing is resolved at build time.
    for _, run in instructions():
        for match in re.finditer(r"pip install ([^&;]+)", run):
            assert "--no-deps" in match[1], f"unpinned install: {run}"


def dockerignore_allows(path: str) -> bool:
    allowed = False
    for line in (DOCKER / "Dockerfile.dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line.lstrip("!").rstrip("/")
        if fnmatch.fnmatch(path, pattern) or path.startswith(pattern + "/"):
            allowed = negate
    return allowed


def test_copied_files_exist_and_are_in_the_build_context():
    for op, args in instructions():
        if op != "COPY":
            continue
        parts = [p for p in args.split() if not p.startswith("--")]
        for source in parts[:-1]:
            assert (REPO / source).exists(), f"COPY source {source} does not exist"
            assert dockerignore_allows(source), f"{source} is excluded by the .dockerignore"


def test_runs_as_non_root_under_tini():
    all_stages = stages()
    for name, ops in all_stages.items():
        users = [i for i, (op, _) in enumerate(ops) if op == "USER"]
        if name == "":  # the default target inherits the runtime stage's user
            assert users == [] and ops[0][1] == "runtime"
            continue
        assert users, f"stage {name} sets no USER"
        assert ops[users[-1]][1].split(":")[0] not in ("0", "root"), name
        assert all(op != "RUN" for op, _ in ops[users[-1] + 1:]), f"RUN after USER in {name}"
    runtime = all_stages["runtime"]
    (entrypoint,) = [args for op, args in runtime if op == "ENTRYPOINT"]
    assert entrypoint.startswith('["/usr/bin/tini"')
    assert any("apt-get install" in args and "tini" in args for op, args in runtime if op == "RUN")
    exposed = {int(p) for op, args in runtime if op == "EXPOSE" for p in args.split()}
    assert exposed == {8786, 8787, 8788}
    notebook = all_stages["notebook"]
    assert ("CMD", '["jupyterhub-singleuser"]') in notebook


@pytest.mark.parametrize("command", ["dask-scheduler", "dask-worker"])
def test_legacy_command_shims_run(command, cli_env):
    # The dask helm chart calls dask-scheduler / dask-worker; the image maps them to `dask ...`.
    import distributed

    proc = subprocess.run(
        [str(DOCKER / "bin" / command), "--version"],
        capture_output=True, text=True, env=cli_env, timeout=60, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert distributed.__version__ in proc.stdout + proc.stderr


def test_image_installs_the_compiled_kernels_compiled_once_for_any_processor():
    runtime = stages()["runtime"]
    assert "fast" in package_install_extras()
    env = {}
    for op, args in runtime:
        if op == "ENV":
            env.update(dict(re.findall(r"(\w+)=(\S+)", args)))
    assert env["NUMBA_CPU_NAME"] == "generic"
    cache = env["NUMBA_CACHE_DIR"]
    ops = [op for op, _ in runtime]
    warm = next(i for i, (op, args) in enumerate(runtime)
                if op == "RUN" and "kernels import warm; warm()" in args)
    assert ops.index("ENV") < warm  # compiled under the settings the workers run with
    # the runtime user may add what the cache lacks (another processor, other signatures)
    assert any(op == "RUN" and f"chown -R dask:dask {cache}" in args for op, args in runtime)


WARM_THEN_JOB = """
import sys
from numba.core.registry import CPUDispatcher
from ampoffset_dask.algorithm.kernels import _numba, set_kernels, warm

if sys.argv[1] == "warm":
    warm()
else:
    from ampoffset_dask import AmpOffsetConfig
    from ampoffset_dask.io.fits import read_exposure
    from ampoffset_dask.pipeline.detector_job import process_file
    set_kernels("numba")
    path, out = sys.argv[2], sys.argv[3]
    det = read_exposure(path).detector
    for config in (AmpOffsetConfig(), AmpOffsetConfig(do_background=False,
                                                       do_detection=False)):
        assert process_file(path, det, config=config).status == "ok"
    assert process_file(path, det, output=out).status == "ok"
compiled = sorted(name for name in dir(_numba)
                  if isinstance(getattr(_numba, name), CPUDispatcher)
                  and sum(getattr(_numba, name).stats.cache_misses.values()))
print(" ".join(compiled))
"""


def test_warmed_kernels_leave_a_detector_job_nothing_to_compile(tmp_path):
    """The image's build step (`warm`, under its NUMBA settings) compiles every kernel a
    detector job calls, with the array types the job gives them: a worker process then
    loads them all from the cache and compiles none."""
    from ampoffset_dask.simulate import simulate_focal_plane

    sim = simulate_focal_plane(tmp_path / "sim", "lsstcam", detectors=["R22_S11"], scale=0.2,
                               seed=3)
    env = {**os.environ, "NUMBA_CPU_NAME": "generic", "NUMBA_CACHE_DIR": str(tmp_path / "nc")}
    env.pop("NUMBA_CPU_FEATURES", None)

    def run(*args):
        proc = subprocess.run([sys.executable, "-c", WARM_THEN_JOB, *args], env=env,
                              capture_output=True, text=True, timeout=600, check=False)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.split()

    assert {"_smooth", "_strip_stats", "_put_lines", "_band_stats"} <= set(run("warm"))
    assert run("job", str(sim.paths[0]), str(tmp_path / "out.fits")) == []
