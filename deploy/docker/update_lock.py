"""Regenerate deploy/docker/requirements.lock and requirements-notebook.lock.

Resolves (without installing) the package's dependencies, the extras the image installs and
the image-only packages below with pip, for the interpreter running this script (use the
Python version of the image's base, 3.11), and writes one ``name==version`` line per package.
The notebook lock (JupyterLab for JupyterHub) is resolved with the runtime lock as
constraints, so both images share every runtime version.

Usage: ``python deploy/docker/update_lock.py`` from the repository root.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LOCK = Path(__file__).resolve().parent / "requirements.lock"
NOTEBOOK_LOCK = Path(__file__).resolve().parent / "requirements-notebook.lock"
#: Extras installed in the image (keep in sync with the Dockerfile's install line).
IMAGE_EXTRAS = ("yaml", "plot", "fast", "cloud")
#: Packages the image needs that are not package dependencies: bokeh serves the dashboard.
IMAGE_ONLY = ("bokeh>=3.1",)
#: What the notebook image adds (the `notebook` target of the Dockerfile).
NOTEBOOK_EXTRAS = ("gateway", "butler")
NOTEBOOK_ONLY = ("jupyterlab>=4.2", "jupyterhub>=5", "ipywidgets>=8")

HEADER = """\
# Pinned environment of the {what}.
# Resolved for CPython {py} on {platform} from pyproject.toml's dependencies, the extras
# [{extras}] and the image-only packages {image_only}.
# Regenerate with: python deploy/docker/update_lock.py
"""


def resolve(extras: tuple[str, ...], extra_packages: tuple[str, ...],
            constraints: Path | None = None) -> list[str]:
    """Return sorted ``name==version`` pins for the package with these extras and packages."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        target = f"{ROOT}[{','.join(extras)}]"
        constrain = ["--constraint", str(constraints)] if constraints else []
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed",
             "--quiet", "--report", str(report), *constrain, target, *extra_packages],
            check=True,
        )
        installs = json.loads(report.read_text())["install"]
    pins = {
        item["metadata"]["name"].lower().replace("_", "-"): item["metadata"]["version"]
        for item in installs
        if item["metadata"]["name"] != "ampoffset-dask"
    }
    return [f"{name}=={version}" for name, version in sorted(pins.items())]


def write(path: Path, what: str, extras: tuple[str, ...], extra_packages: tuple[str, ...],
          constraints: Path | None = None) -> None:
    """Resolve and write one lock file."""
    pins = resolve(extras, extra_packages, constraints)
    header = HEADER.format(
        what=what,
        py=".".join(map(str, sys.version_info[:2])),
        platform=sys.platform,
        extras=",".join(extras),
        image_only=", ".join(extra_packages),
    )
    path.write_text(header + "\n".join(pins) + "\n")


def main() -> int:
    """Write both lock files."""
    write(LOCK, "ampoffset-dask image (client, scheduler and workers)", IMAGE_EXTRAS,
          IMAGE_ONLY)
    write(NOTEBOOK_LOCK, "ampoffset-dask notebook image (JupyterHub single-user server)",
          IMAGE_EXTRAS + NOTEBOOK_EXTRAS, IMAGE_ONLY + NOTEBOOK_ONLY, LOCK)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
