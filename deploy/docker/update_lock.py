"""Regenerate deploy/docker/requirements.lock from pyproject.toml.

Resolves (without installing) the package's dependencies, the extras the image installs and
the image-only packages below with pip, for the interpreter running this script (use the
Python version of the image's base, 3.11), and writes one ``name==version`` line per package.

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
#: Extras installed in the image (keep in sync with the Dockerfile's install line).
IMAGE_EXTRAS = ("yaml", "plot")
#: Packages the image needs that are not package dependencies: bokeh serves the dashboard.
IMAGE_ONLY = ("bokeh>=3.1",)

HEADER = """\
# Pinned runtime environment of the ampoffset-dask image (client, scheduler and workers).
# Resolved for CPython {py} on {platform} from pyproject.toml's dependencies, the extras
# [{extras}] and the image-only packages {image_only}.
# Regenerate with: python deploy/docker/update_lock.py
"""


def resolve() -> list[str]:
    """Return sorted ``name==version`` pins for the image's environment."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        target = f"{ROOT}[{','.join(IMAGE_EXTRAS)}]"
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed",
             "--quiet", "--report", str(report), target, *IMAGE_ONLY],
            check=True,
        )
        installs = json.loads(report.read_text())["install"]
    pins = {
        item["metadata"]["name"].lower().replace("_", "-"): item["metadata"]["version"]
        for item in installs
        if item["metadata"]["name"] != "ampoffset-dask"
    }
    return [f"{name}=={version}" for name, version in sorted(pins.items())]


def main() -> int:
    """Write the lock file."""
    pins = resolve()
    header = HEADER.format(
        py=".".join(map(str, sys.version_info[:2])),
        platform=sys.platform,
        extras=",".join(IMAGE_EXTRAS),
        image_only=", ".join(IMAGE_ONLY),
    )
    LOCK.write_text(header + "\n".join(pins) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
