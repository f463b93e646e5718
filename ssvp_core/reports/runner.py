"""`ssvp reproduce`: execute the notebooks with papermill into reports/<profile>/ and build the index.

* Each notebook runs with parameters (profile, out_dir, overrides) into a work folder; only when it succeeds does
  the folder replace reports/<profile>/<name>/ (tables, figures, manifest, the executed notebook and its HTML).
  A failing notebook is marked failed in status.json and the index, with its error; its earlier good outputs stay.
* Trained models and evaluations are cached by config fingerprint (runs/), so notebooks share them; a notebook
  whose inputs (notebook file, parameters, package sources) did not change since its last success is skipped.
* --jobs N runs N notebooks at once, each kernel with cores / N threads; the engine's run-folder lock makes two
  notebooks needing the same model train it once.
* The terminal shows one progress bar (notebooks done / total, elapsed time, the notebooks running now) and one line
  per finished notebook. What the kernels print (jupyter's "Kernel is running over TCP without encryption", an
  interrupted kernel's "KeyboardInterrupt caught in kernel", library logs) goes to `<notebook>/kernel.log`
  (`<notebook>.failed.log` when it failed) unless `verbose`.
"""
from __future__ import annotations

import concurrent.futures as cf
import contextlib
import hashlib
import json
import logging
import os
import shutil
import sys
import time
import traceback
from pathlib import Path

from .. import io
from ..config import load_preset
from ..errors import ConfigError
from ..workspace import ENV as WORKSPACE_ENV
from ..workspace import Workspace, find
from .catalog import NOTEBOOKS, PAGES
from .site import build_index, read_status, record_status, relocate_manifest, replace_folder

PACKAGE = Path(__file__).resolve().parents[1]
DEFAULT_NOTEBOOKS = NOTEBOOKS
ORDER = list(PAGES)


# read by `ssvp plan` alone, never by a page: a new FLOP count or dataset size must not re-run every notebook
NOT_PAGE_INPUTS = frozenset({"reports/data/costs.csv", "reports/data/dataset_sizes.csv"})


def sources_digest() -> str:
    """What every page's outputs depend on in the package: its code, presets and data files."""
    h = hashlib.sha256()
    for p in sorted(PACKAGE.rglob("*")):
        if p.relative_to(PACKAGE).as_posix() in NOT_PAGE_INPUTS:
            continue
        if p.suffix in (".py", ".yaml", ".csv", ".json") and "__pycache__" not in p.parts:
            h.update(p.relative_to(PACKAGE).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()[:16]


def notebook_path(name: str, notebooks_dir: Path) -> Path:
    return Path(notebooks_dir) / f"{name}.ipynb"


def notebook_key(name: str, notebooks_dir: Path, profile: str, overrides: list[str], digest: str,
                 workspace: Workspace | None = None) -> str:
    """What a notebook's outputs depend on: its text, the profile, the overrides, the package's sources and the
    files its page reads besides them (`PageSpec.inputs`, e.g. the GPU table bench/gpu.py wrote, in the workspace)."""
    workspace = workspace or find()
    files = [(f, hashlib.sha256(workspace.path(f).read_bytes()).hexdigest() if workspace.path(f).is_file() else None)
             for f in PAGES[name].inputs]
    text = notebook_path(name, notebooks_dir).read_text()
    return hashlib.sha256(json.dumps([text, profile, overrides, digest, files]).encode()).hexdigest()[:16]


@contextlib.contextmanager
def _output_to(path: Path | None):
    """Send this process's stdout/stderr, and so the kernel's it starts, to `path` (None: leave them)."""
    if path is None:
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(path, "ab", buffering=0) as f:
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def run_one(name: str, profile: str, report_dir: str, notebooks_dir: str, overrides: list[str], threads: int | None,
            verbose: bool = False, workspace: str | None = None) -> dict:
    """Execute one notebook (in a worker process) and move its outputs into place on success."""
    import papermill as pm

    report_dir, started = Path(report_dir), time.time()
    final = report_dir / name
    work = report_dir / ".work" / name
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    root = str(find(workspace).root)
    os.environ.update({"SSVP_THREADS": str(threads)} if threads else {})
    os.environ[WORKSPACE_ENV] = root  # the kernel and anything it starts resolve paths in the same workspace
    os.environ.setdefault("TQDM_DISABLE", "1")  # a batch run shows no progress lines in its rendered notebook
    if not verbose:
        for logger in ("papermill", "traitlets", "jupyter_client", "nbclient"):
            logging.getLogger(logger).setLevel(logging.ERROR)
    params = {"profile": profile, "workspace": root, "out_dir": str(work), "overrides": list(overrides)}
    executed = work / f"{name}.ipynb"
    log_file = None if verbose else work / "kernel.log"
    try:
        with _output_to(log_file):
            pm.execute_notebook(str(notebook_path(name, Path(notebooks_dir))), str(executed), parameters=params,
                                kernel_name="python3", progress_bar=False, cwd=root)
        _export_html(executed, work / f"{name}.html")
        relocate_manifest(work, final)
    except Exception as e:  # the notebook failed: keep the earlier outputs, record the error
        error = _describe(e)
        if executed.is_file():
            failed = report_dir / f"{name}.failed.ipynb"
            shutil.copy(executed, failed)
        if log_file is not None and log_file.is_file():
            shutil.copy(log_file, report_dir / f"{name}.failed.log")
        shutil.rmtree(work, ignore_errors=True)
        return {"status": "failed", "error": error, "seconds": time.time() - started}
    replace_folder(work, final)
    (report_dir / f"{name}.failed.ipynb").unlink(missing_ok=True)
    (report_dir / f"{name}.failed.log").unlink(missing_ok=True)
    return {"status": "ok", "error": "", "seconds": time.time() - started}


def _export_html(notebook: Path, html: Path) -> None:
    import nbformat
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter(template_name="lab", exclude_input=True).from_notebook_node(nbformat.read(notebook, as_version=4))
    io.write_text(html, body)


def _describe(e: Exception) -> str:
    ename, evalue = getattr(e, "ename", None), getattr(e, "evalue", None)
    if ename:
        return f"{ename}: {evalue}"
    return "".join(traceback.format_exception_only(type(e), e)).strip()


def reproduce(profile: str = "smoke", only: list[str] | None = None, jobs: int = 1, overrides: list[str] | None = None,
              force: bool = False, reports_dir: str | Path | None = None, notebooks_dir: str | Path | None = None,
              log=None, verbose: bool = False, workspace: str | Path | None = None) -> Path:
    """Run the notebooks of `profile` (all, or `only`) into `reports_dir/<profile>/` (default: the workspace's
    reports/) and return the index. See the module docstring."""
    from tqdm import tqdm

    from .experiments import Study

    ws = find(workspace)
    notebooks_dir = Path(notebooks_dir or DEFAULT_NOTEBOOKS)
    names = ORDER if not only else list(only)
    unknown = [n for n in names if n not in PAGES or not notebook_path(n, notebooks_dir).is_file()]
    if unknown:
        raise ConfigError(f"unknown notebook(s) {unknown}; available: {[n for n in ORDER if notebook_path(n, notebooks_dir).is_file()]}")
    name_of_profile = load_preset(profile).get("profile", profile)
    report_dir = Path(reports_dir or ws.reports) / name_of_profile
    report_dir.mkdir(parents=True, exist_ok=True)
    status = read_status(report_dir)
    digest = sources_digest()
    overrides = list(overrides or [])
    say = log or tqdm.write
    todo = []
    for name in names:
        key = notebook_key(name, notebooks_dir, profile, overrides, digest, ws)
        previous = status.get(name, {})
        if not force and previous.get("status") == "ok" and previous.get("key") == key and (report_dir / name / "manifest.json").is_file():
            say(f"{name}: unchanged since its last successful run, skipped")
            continue
        todo.append((name, key))
    threads = max(1, (os.cpu_count() or 1) // max(1, jobs)) if jobs > 1 else None
    if todo:  # generate the synthetic data once, before parallel notebooks race for it
        Study(profile, ws).ensure_data()
    size = shutil.get_terminal_size((100, 24))  # a terminal that reports 0 x 0 (some ptys) would hide the bar
    bar = tqdm(total=len(todo), desc=f"reproduce {profile}", unit="notebook", ncols=size.columns, nrows=size.lines,
               bar_format="{desc}: {n}/{total} notebooks |{bar}| {elapsed}{postfix}", disable=not todo or None)
    with bar, cf.ProcessPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = {pool.submit(run_one, name, profile, str(report_dir), str(notebooks_dir), overrides, threads, verbose,
                               str(ws.root)): (name, key) for name, key in todo}
        pending = set(futures)
        while pending:
            finished, pending = cf.wait(pending, timeout=1.0, return_when=cf.FIRST_COMPLETED)
            running = [futures[f][0] for f in pending if (report_dir / ".work" / futures[f][0]).is_dir()]
            bar.set_postfix_str(f"running: {', '.join(running)}" if running else "", refresh=False)
            for fut in finished:
                name, key = futures[fut]
                try:
                    result = fut.result()
                except Exception as e:  # the worker itself died
                    result = {"status": "failed", "error": _describe(e), "seconds": 0.0}
                result.update(key=key if result["status"] == "ok" else status.get(name, {}).get("key"),
                              run_by="ssvp reproduce")
                status = record_status(report_dir, name, result)
                say(f"{name}: {result['status']} in {result['seconds']:.0f} s" + (f" ({result['error']})" if result["error"] else ""))
                build_index(report_dir, name_of_profile, status)
                bar.update(1)
            bar.refresh()
    for name, _ in todo:  # keep the work folders of notebooks open in JupyterLab (<name>.notebook)
        shutil.rmtree(report_dir / ".work" / name, ignore_errors=True)
    return build_index(report_dir, name_of_profile, status)
