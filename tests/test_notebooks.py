"""The stored notebooks read as reproduction documents and stay free of outputs and logic.

* each opens with the paper's claim, declares its papermill parameters (all parsed by papermill), shows the paper's
  numbers (where the paper prints any) before it trains or evaluates anything, runs one step per cell with a
  markdown cell before each, publishes its page and ends with what differs from the paper and why;
* the cells call `ssvp_core` and display; no function or class is defined in a notebook;
* no stored notebook holds an output or an execution count (and the strip tool and the JupyterLab save hook keep
  it so);
* the progress line of a notebook kernel lives in the running cell and leaves nothing behind.
"""
import ast
import json
import subprocess
import sys
import time

import nbformat
import papermill as pm
import pytest

from ssvp_core.reports.catalog import NOTEBOOKS, PAGES

STORED = sorted(NOTEBOOKS.glob("*.ipynb"))
# the paper (and table) whose published numbers each page opens with; the figure pages have no printed numbers
PAPER_TABLES = {"table1": ("SSVP", "Table 1"), "table2": ("SSVP", "Table 2"), "table3": ("SSVP", "Table 3"),
                "table4": ("SSVP", "Table 4"), "table5": ("SSVP", "Table 5"), "vip2clip": ("ViP2-CLIP", "Table 1"),
                "dapo": ("DAPO", "")}
REQUIRED_PARAMETERS = {"profile", "workspace", "overrides", "device", "out_dir"}


@pytest.mark.parametrize("path", STORED, ids=lambda p: p.stem)
def test_notebook_reads_as_a_reproduction(path):
    nb = nbformat.read(path, as_version=4)
    cells = nb.cells
    assert cells[0].cell_type == "markdown" and cells[0].source.startswith("# ")
    assert "**The claim.**" in cells[0].source or "**The paper**" in cells[0].source
    tagged = [i for i, c in enumerate(cells) if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert tagged == [1] and cells[1].cell_type == "code"
    assert REQUIRED_PARAMETERS <= set(pm.inspect_notebook(str(path)))  # every line parsed by papermill
    code = [(i, c) for i, c in enumerate(cells) if c.cell_type == "code"]
    for i, cell in code[1:]:
        assert cells[i - 1].cell_type == "markdown", f"code cell {i} of {path.name} has no explanation before it"
    sources = [c.source for _, c in code]
    position = {call: next((k for k, s in enumerate(sources) if call in s), None)
                for call in ("study.page(", "page.paper(", "page.protocol(", "study.prepare_data(", "study.train(",
                             "page.publish()", "page.differences()")}
    assert position["study.page("] is not None and position["page.publish()"] is not None
    assert position["page.differences()"] == len(sources) - 1  # the last step
    headings = [c.source.splitlines()[0] for c in cells if c.cell_type == "markdown"]
    assert headings[-1] == "## What differs from the paper in this profile, and why"
    if path.stem in PAPER_TABLES:
        paper, table = PAPER_TABLES[path.stem]
        assert f'page.paper("{paper}", "{table}")' in sources[position["page.paper("]]
        assert "## What the paper reports" in headings
    if path.stem != "efficiency":  # efficiency trains nothing
        assert position["page.protocol("] < position["study.prepare_data("] < position["study.train("]
        if position["page.paper("] is not None:
            assert position["page.paper("] < position["study.train("]


@pytest.mark.parametrize("path", STORED, ids=lambda p: p.stem)
def test_notebook_holds_no_outputs_and_no_logic(path):
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        assert cell.outputs == [] and cell.execution_count is None
        tree = ast.parse(cell.source)
        defined = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.Lambda, ast.While))]
        assert not defined, f"{path.name}: logic belongs in ssvp_core ({ast.dump(defined[0])[:60]})"
        assert len(cell.source.splitlines()) <= 12, f"{path.name}: a step per cell"
    assert nb.metadata.kernelspec.name == "python3"


@pytest.mark.parametrize("path", STORED, ids=lambda p: p.stem)
def test_notebook_is_stored_in_the_form_the_strip_tool_and_the_save_hook_write(path):
    from ssvp_core.reports.notebook import strip_outputs

    text = path.read_text()
    assert json.dumps(strip_outputs(json.loads(text)), indent=1, sort_keys=True, ensure_ascii=False) + "\n" == text


def test_every_page_has_its_notebook_and_names_its_page():
    assert sorted(p.stem for p in STORED) == sorted(PAGES)
    for path in STORED:
        sources = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells)
        assert f'study.page("{path.stem}", out_dir)' in sources


def test_strip_tool_finds_and_removes_outputs(tmp_path):
    nb = nbformat.read(STORED[0], as_version=4)
    nb.cells[1].outputs = [nbformat.v4.new_output("stream", name="stdout", text="hi\n")]
    nb.cells[1].execution_count = 3
    dirty = tmp_path / "dirty.ipynb"
    nbformat.write(nb, dirty)
    tool = [sys.executable, str(NOTEBOOKS.parent / "tools" / "strip_notebooks.py")]
    check = subprocess.run(tool + ["--check", str(dirty)], capture_output=True, text=True)
    assert check.returncode == 1 and "has outputs" in check.stdout
    assert subprocess.run(tool + [str(dirty)], capture_output=True).returncode == 0
    stripped = nbformat.read(dirty, as_version=4)
    assert [c.source for c in stripped.cells] == [c.source for c in nb.cells]
    assert subprocess.run(tool + ["--check", str(dirty)]).returncode == 0
    assert subprocess.run(tool + ["--check"]).returncode == 0  # the stored notebooks


def test_jupyterlab_save_hook_strips_only_the_kits_notebooks(tmp_path):
    from ssvp_core.reports.notebook import strip_outputs_on_save

    def model():
        return {"type": "notebook", "content": {"cells": [{"cell_type": "code", "outputs": [{"x": 1}],
                                                           "execution_count": 4, "source": "1"}]}}

    class Manager:
        root_dir = str(NOTEBOOKS.parent)

    kits, other = model(), model()
    strip_outputs_on_save(kits, "notebooks/table1.ipynb", Manager())
    strip_outputs_on_save(other, "elsewhere/mine.ipynb", Manager())
    assert kits["content"]["cells"][0]["outputs"] == [] and kits["content"]["cells"][0]["execution_count"] is None
    assert other["content"]["cells"][0]["outputs"] == [{"x": 1}]
    config = (NOTEBOOKS.parent / "jupyter_server_config.py").read_text()
    assert "c.FileContentsManager.pre_save_hook = strip_outputs_on_save" in config
    assert "--config=jupyter_server_config.py" in (NOTEBOOKS.parent / "Makefile").read_text()


class _Handle:
    def __init__(self):
        self.updates = []

    def update(self, obj, raw=False):
        self.updates.append(obj)


def test_notebook_bar_redraws_at_most_every_refresh_and_clears_at_the_end(monkeypatch):
    from IPython import display as ipy_display

    from ssvp_core.reports import notebook

    handle = _Handle()
    shown = []
    monkeypatch.setattr(ipy_display, "display", lambda obj, raw=False, display_id=False: shown.append(obj) or handle)
    now = [0.0]
    monkeypatch.setattr(notebook.NotebookBar, "clock", staticmethod(lambda: now[0]))
    bar = notebook.NotebookBar(total=4, desc="train ssvp", unit="step")
    assert "train ssvp: 0/4 step" in shown[0]["text/plain"] and "<progress value='0' max='4'" in shown[0]["text/html"]
    for t, step in ((0.1, bar.update), (0.2, bar.update), (0.5, lambda: bar.set_postfix(loss="0.5")),
                    (0.6, bar.update), (0.7, bar.update)):
        now[0] = t  # redrawn at 0.5 (REFRESH_S after the first draw) and at 0.7 (the last step is always drawn)
        step()
    assert [u["text/plain"].split(" [")[0] for u in handle.updates] == ["train ssvp: 2/4 step", "train ssvp: 4/4 step"]
    assert "loss=0.5" in handle.updates[-1]["text/plain"]
    bar.close()
    bar.close()
    assert handle.updates[-1] == {"text/plain": ""} and len(handle.updates) == 3  # cleared once


def test_progress_bars_follow_the_installed_class_and_tqdm_disable(monkeypatch):
    from ssvp_core import progress

    made = []

    class Recorder:
        def __init__(self, **kwargs):
            made.append(kwargs)
            self.n = 0

        def update(self, n=1):
            self.n += n

        def close(self):
            made.append("closed")

    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    with progress.draw_with(Recorder):
        assert list(progress.iterate([1, 2, 3], desc="eval")) == [1, 2, 3]
        assert not isinstance(progress.bar(total=1, disable=True), Recorder)  # an explicitly disabled bar is tqdm's
        monkeypatch.setenv("TQDM_DISABLE", "1")
        assert not isinstance(progress.bar(total=1), Recorder)
    assert made == [{"total": 3, "desc": "eval", "leave": False, "initial": 0, "unit": "it"}, "closed"]
    assert progress._factory is None


def test_a_kernel_keeps_no_progress_output_once_the_work_is_done(tmp_path):
    """In a real kernel (as papermill runs one), a Study installs the notebook bar; training shows it live and the
    saved notebook holds only the cleared line."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(
        "import os\nos.environ.pop('TQDM_DISABLE', None)\n"
        "from ssvp_core import progress\nfrom ssvp_core.reports import Study\nStudy('smoke')\n"
        "shown = progress.bar(total=2)\nprint(type(shown).__name__)\nshown.close()\n"
        "for _ in progress.iterate(range(3), desc='work'):\n    pass")]
    path = tmp_path / "bar.ipynb"
    nbformat.write(nb, path)
    started = time.time()
    pm.execute_notebook(str(path), str(path), kernel_name="python3", progress_bar=False, cwd=str(tmp_path))
    outputs = nbformat.read(path, as_version=4).cells[0].outputs
    text = json.dumps(outputs)
    assert "NotebookBar" in text and "work:" not in text and time.time() - started < 120
    cleared = [o for o in outputs if o.output_type == "display_data"]
    assert cleared and all(o.data == {"text/plain": ""} for o in cleared)
