"""What a notebook kernel needs beyond plain Python: showing objects, a progress line that lives in the running cell,
and keeping library warnings out of the rendered page.

Progress. `NotebookBar` follows tqdm's interface and draws one line of HTML (a <progress> element and the counts)
through an IPython display handle that it updates in place, at most every `REFRESH_S` seconds, and clears when the
work is done. So a person watching a cell in JupyterLab sees which model trains and how far it is, and a notebook
executed in batch (papermill, `ssvp reproduce`) keeps no progress output: the last update of a display handle is
what a saved notebook holds, and that update is empty. `ssvp reproduce` also sets `TQDM_DISABLE=1` in its kernels,
which turns the bars off altogether.
"""
from __future__ import annotations

import html
import json
import logging
import time
import warnings
from pathlib import Path

REFRESH_S = 0.3


def in_kernel() -> bool:
    """True inside an IPython kernel (JupyterLab, papermill), False in a script or the tests' process."""
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython comes with the notebook stack
        return False
    shell = get_ipython()
    return shell is not None and hasattr(shell, "kernel")


def show(obj) -> None:
    """Display `obj` in a notebook kernel; do nothing elsewhere."""
    if in_kernel():
        from IPython.display import display

        display(obj)


def show_markdown(text: str) -> None:
    if in_kernel():
        from IPython.display import Markdown, display

        display(Markdown(text))


def show_tables_as_the_pages_do() -> None:
    """In a kernel, every DataFrame a cell shows (a step's summary) is drawn like the page's tables: 2 decimals and
    an em dash for a missing value (formatting.table_html), instead of pandas' full precision and NaN."""
    import pandas as pd
    from IPython import get_ipython

    from .formatting import table_html

    get_ipython().display_formatter.formatters["text/html"].for_type(pd.DataFrame, table_html)


class NotebookBar:
    """A tqdm-like progress bar drawn as one live line in the running notebook cell (see the module docstring)."""

    clock = staticmethod(time.monotonic)

    def __init__(self, total: int | None = None, desc: str = "", leave: bool = True, initial: int = 0, unit: str = "it"):
        from IPython.display import display

        self.total, self.n, self.desc, self.unit = total, initial, desc, unit
        self.postfix = ""
        self.started = self.clock()
        self._drawn = self.started
        self.closed = False
        self.handle = display(self._bundle(), raw=True, display_id=True)

    def _bundle(self) -> dict:
        elapsed = self.clock() - self.started
        count = f"{self.n}/{self.total}" if self.total else f"{self.n}"
        text = f"{self.desc}: {count} {self.unit} [{elapsed:.0f} s]" + (f" {self.postfix}" if self.postfix else "")
        bar = (f"<progress value='{self.n}' max='{self.total}' style='width:16em;vertical-align:middle'></progress> "
               if self.total else "")
        return {"text/plain": text,
                "text/html": f"<div class='ssvp-progress' style='font-family:monospace;font-size:12px'>{bar}"
                             f"{html.escape(text)}</div>"}

    def refresh(self, force: bool = False) -> None:
        now = self.clock()
        if self.closed or (not force and now - self._drawn < REFRESH_S):
            return
        self._drawn = now
        self.handle.update(self._bundle(), raw=True)

    def update(self, n: int = 1) -> None:
        self.n += n
        self.refresh(force=self.total is not None and self.n >= self.total)

    def set_postfix(self, ordered_dict=None, refresh: bool = True, **kwargs) -> None:
        items = {**(ordered_dict or {}), **kwargs}
        self.postfix = ", ".join(f"{k}={v}" for k, v in items.items())
        if refresh:
            self.refresh()

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self.postfix = s
        if refresh:
            self.refresh()

    def set_description(self, desc: str = "", refresh: bool = True) -> None:
        self.desc = desc
        if refresh:
            self.refresh()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.handle.update({"text/plain": ""}, raw=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def capture_warnings(log: Path, on_record) -> None:
    """In a kernel, route Python warnings and WARNING+ log records to `log` (one line each; `on_record()` after each)
    instead of red boxes in the rendered notebook."""
    log.write_text("")

    def write(text: str) -> None:
        with log.open("a", encoding="utf-8") as f:
            f.write(text + "\n")
        on_record()

    def record(message, category, filename, lineno, file=None, line=None):
        write(f"{category.__name__}: {message} ({Path(filename).name}:{lineno})")

    warnings.showwarning = record
    # tqdm.auto, imported by the hub libraries, looks for notebook widgets; the kit draws its own progress lines
    warnings.filterwarnings("ignore", message="IProgress not found")

    class _Handler(logging.Handler):
        def emit(self, rec):
            write(f"{rec.levelname} {rec.name}: {rec.getMessage()}")

    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.addHandler(_Handler(level=logging.WARNING))


# the notebook metadata the kit's notebooks are stored with; a kernel adds its Python version and more, which would
# make every save on another machine a change
STORED_METADATA = {"kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"},
                   "language_info": {"name": "python"}}


def strip_outputs(nb: dict) -> dict:
    """A notebook (nbformat JSON) as the kit stores it: no outputs or execution counts, cell metadata reduced to the
    tags (the papermill `parameters` tag), notebook metadata reduced to STORED_METADATA."""
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
        tags = (cell.get("metadata") or {}).get("tags")
        cell["metadata"] = {"tags": tags} if tags else {}
    nb["metadata"] = json.loads(json.dumps(STORED_METADATA))
    return nb


def strip_outputs_on_save(model: dict, path: str, contents_manager, **kwargs) -> None:
    """A Jupyter server `pre_save_hook`: a notebook saved into the kit's `notebooks/` folder is written without its
    outputs, so running the notebooks in JupyterLab never changes the stored files (the outputs live in the page
    under `reports/`). Other notebooks are saved as they are. Set by the repository's jupyter_server_config.py."""
    from .catalog import NOTEBOOKS

    if model.get("type") != "notebook" or not isinstance(model.get("content"), dict):
        return
    target = (Path(contents_manager.root_dir) / path).resolve()
    if target.parent == NOTEBOOKS.resolve():
        strip_outputs(model["content"])
