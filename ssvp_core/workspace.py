"""The workspace: the one folder that holds a project's `data/`, `runs/` (checkpoints, evaluations, feature caches)
and `reports/`, whatever the current folder of the process that reads or writes them.

A JupyterLab kernel runs in `notebooks/`, papermill in whatever folder it was started from, `ssvp` wherever the
user types it; all of them must meet the same data, models and reports. So every relative path that comes from a
configuration (a preset's dataset roots, `out_dir`, `train.feature_cache_dir`) resolves against the workspace root,
never against the current folder. Paths a user types as command arguments keep their usual meaning (relative to
the current folder); the CLI makes them absolute before they enter a configuration.

The root, first match wins:
1. an explicit value (`ssvp --workspace DIR`, the notebooks' `workspace` parameter, `Study(workspace=...)`);
2. the environment variable `SSVP_WORKSPACE`;
3. the nearest folder at or above the current folder that holds the marker file `.ssvp-workspace`;
4. the source checkout the package was imported from, when it holds the marker (this repository does);
5. the current folder (an installed package used in a folder without a marker).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

ENV = "SSVP_WORKSPACE"
MARKER = ".ssvp-workspace"
PACKAGE_CHECKOUT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Workspace:
    root: Path
    found_by: str  # which rule of the module docstring chose the root, in words

    def path(self, path: str | os.PathLike) -> Path:
        """`path` if it is absolute, otherwise the same path under the root."""
        return resolve(path, self.root)

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    def describe(self) -> str:
        return f"{self.root} ({self.found_by})"


def find(explicit: str | os.PathLike | None = None, cwd: str | os.PathLike | None = None) -> Workspace:
    """The workspace by the rules of the module docstring (`cwd`: the folder to start from, default the current)."""
    if explicit:
        return Workspace(_absolute(explicit), "given explicitly")
    env = os.environ.get(ENV)
    if env:
        return Workspace(_absolute(env), f"${ENV}")
    start = Path(cwd).resolve() if cwd else Path.cwd()
    for folder in (start, *start.parents):
        if (folder / MARKER).is_file():
            return Workspace(folder, f"marker file {folder / MARKER}")
    if (PACKAGE_CHECKOUT / MARKER).is_file():
        return Workspace(PACKAGE_CHECKOUT, "the source checkout of the ssvp package")
    return Workspace(start, "the current folder (no marker file found above it)")


def resolve(path: str | os.PathLike, root: str | os.PathLike | None = None) -> Path:
    """`path` if absolute, else under `root` (default: the workspace `find()` gives)."""
    path = Path(path).expanduser()
    if path.is_absolute():
        return path
    return Path(root if root else find().root) / path


def _absolute(path: str | os.PathLike) -> Path:
    return Path(path).expanduser().resolve()
