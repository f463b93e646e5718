"""Notebooks, the papermill runner and the HTML report.

* every notebook has a `parameters` cell and no stored outputs, and calls its page function;
* one notebook runs through papermill with non-default parameters that take effect;
* `reproduce` writes the executed notebook, its HTML, tables and figures, skips unchanged work, marks a failing
  notebook failed while keeping its earlier good outputs;
* the index renders in headless Chromium: not blank, every image loads.
"""
import json
import os
import shutil
import subprocess

import nbformat
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from ssvp_core.reports.pages import PAGES
from ssvp_core.reports.runner import DEFAULT_NOTEBOOKS, reproduce

NOTEBOOKS = sorted(DEFAULT_NOTEBOOKS.glob("*.ipynb"))


def test_every_page_has_a_notebook():
    assert sorted(p.stem for p in NOTEBOOKS) == sorted(PAGES)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_has_parameters_and_no_outputs(path):
    nb = nbformat.read(path, as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1 and tagged[0].cell_type == "code"
    source = tagged[0].source
    for name in ("profile", "out_dir", "overrides", "device"):
        assert f"{name} = " in source
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None
    assert any(f"pages.{path.stem}(" in c.source for c in nb.cells if c.cell_type == "code")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A working directory for notebook runs: data/, runs/ and reports/ are created under it."""
    return tmp_path_factory.mktemp("reproduce")


def test_papermill_parameters_take_effect(workdir):
    import papermill as pm

    out = workdir / "custom-out"
    params = {"profile": "smoke", "out_dir": str(out), "methods": ["reference", "winclip"],
              "overrides": ["eval.batch_size=4"]}
    executed = workdir / "table1-run.ipynb"
    pm.execute_notebook(str(DEFAULT_NOTEBOOKS / "table1.ipynb"), str(executed), parameters=params, kernel_name="python3",
                        progress_bar=False, cwd=str(workdir))
    nb = nbformat.read(executed, as_version=4)
    assert nb.metadata.papermill.parameters["methods"] == ["reference", "winclip"]
    table = pd.read_csv(out / "table1_image.csv")
    assert set(table.method) == {"reference", "winclip"}  # the default would be the six Table-1 methods
    manifest = json.loads((out / "manifest.json").read_text())
    assert [t["name"] for t in manifest["tables"]] == ["table1_image", "table1_pixel"]
    cached = list((workdir / "runs" / "smoke" / "winclip").rglob("eval/*.pkl"))
    assert cached  # evaluations are cached for the next notebook


@pytest.fixture(scope="module")
def report(workdir):
    """`reproduce` of the t-SNE page (a figure) with one-epoch training, run from the work directory."""
    cwd = os.getcwd()
    os.chdir(workdir)
    try:
        index = reproduce("smoke", only=["tsne"], overrides=["train.epochs=1"], log=lambda *_: None)
    finally:
        os.chdir(cwd)
    return workdir / index


def test_reproduce_writes_notebook_html_figures_and_index(report):
    folder = report.parent / "tsne"
    assert (folder / "tsne.ipynb").is_file() and (folder / "tsne.html").is_file() and (folder / "figure6.png").is_file()
    status = json.loads((report.parent / "status.json").read_text())
    assert status["tsne"]["status"] == "ok"
    page = report.read_text()
    assert "SMOKE PROFILE" in page and "tsne/figure6.png" in page and "not run" in page  # other notebooks listed as not run
    html = (folder / "tsne.html").read_text()
    assert "SMOKE PROFILE" in html and "data:image/png;base64" in html


def test_reproduce_skips_unchanged_and_keeps_good_outputs_when_a_notebook_fails(report, workdir):
    cwd = os.getcwd()
    os.chdir(workdir)
    messages = []
    try:
        reproduce("smoke", only=["tsne"], overrides=["train.epochs=1"], log=messages.append)
        assert messages == ["tsne: unchanged since its last successful run, skipped"]
        before = (report.parent / "tsne" / "figure6.png").read_bytes()
        reproduce("smoke", only=["tsne"], overrides=["train.epoch=1"], log=messages.append)  # a typo: the notebook fails
    finally:
        os.chdir(cwd)
    status = json.loads((report.parent / "status.json").read_text())
    assert status["tsne"]["status"] == "failed" and "ConfigError" in status["tsne"]["error"] and "epoch" in status["tsne"]["error"]
    assert (report.parent / "tsne" / "figure6.png").read_bytes() == before
    assert (report.parent / "tsne.failed.ipynb").is_file()
    page = report.read_text()
    assert "failed" in page and "outputs of the last successful run" in page


CHECK = """<script>
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var broken = imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0); }).map(function (i) { return i.getAttribute('src'); });
  document.body.setAttribute('data-images', String(imgs.length));
  document.body.setAttribute('data-broken', JSON.stringify(broken));
  document.body.setAttribute('data-text', String(document.body.innerText.length));
});
</script>"""
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync", "--allow-file-access-from-files"]


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's chromium; installed when missing (the test machines allow apt as root)."""
    found = shutil.which("chromium")
    if not found:
        proc = subprocess.run("apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium",
                              shell=True, capture_output=True, text=True)
        found = shutil.which("chromium")
        if not found:
            pytest.fail(f"chromium is missing and could not be installed with apt-get:\n{proc.stderr[-2000:]}")
    return found


def test_index_renders_in_headless_chromium(report, chromium, tmp_path):
    checked = report.parent / "index-check.html"
    checked.write_text(report.read_text().replace("</body>", CHECK + "</body>"))
    profile = ["--user-data-dir=" + str(tmp_path / "profile")]
    dom = subprocess.run([chromium, *CHROMIUM_FLAGS, *profile, "--virtual-time-budget=10000", "--dump-dom", checked.as_uri()],
                         capture_output=True, text=True, timeout=180).stdout
    checked.unlink()
    attrs = dict(kv.split("=", 1) for kv in dom.split("<body", 1)[1].split(">", 1)[0].split() if "=" in kv)
    assert int(attrs["data-images"].strip('"')) >= 1
    assert json.loads(attrs["data-broken"].strip('"').replace("&quot;", '"')) == []
    assert int(attrs["data-text"].strip('"')) > 200
    shot = tmp_path / "page.png"
    subprocess.run([chromium, *CHROMIUM_FLAGS, *profile, "--window-size=1200,1600", f"--screenshot={shot}", report.as_uri()],
                   capture_output=True, timeout=180)
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float32)
    assert pixels.std() > 10  # not a blank page


def test_vip2clip_page_leaves_out_medical_sets_not_on_disk(tmp_path, monkeypatch):
    """The paper preset lists ViP2-CLIP's eight medical sets; a user who has only some of them still gets Table 1
    and a Table 2 of those present, with the missing ones (and where they were looked for) named on the page."""
    from ssvp_core.reports import experiments, pages, tables

    (tmp_path / "headct").mkdir()
    roots = {"headct": str(tmp_path / "headct"), "kvasir": str(tmp_path / "kvasir")}
    asked = []

    def fake_table(profile, datasets, methods=None, overrides=(), table="Table 1"):
        asked.append((table, list(datasets)))
        return pd.DataFrame([{"dataset": ds, "method": "vip2clip", "metric": m, "reproduced": 50.0, "paper": 60.0, "delta": -10.0}
                             for ds in datasets for m in ("image_auroc", "image_ap", "image_f1_max", "pixel_auroc",
                                                         "pixel_aupro_legacy", "pixel_f1_max")])

    monkeypatch.setattr(tables, "vip2clip_table", fake_table)
    monkeypatch.setattr(experiments, "dataset_root", lambda profile, name: roots.get(name, f"data/{name}"))
    real_section = experiments.section
    fake = {"vip2clip_medical": ["headct", "kvasir"], "synthetic": None}  # no synthetic data needed here
    monkeypatch.setattr(experiments, "section", lambda profile, key, default=None:
                        fake[key] if key in fake else real_section(profile, key, default))
    pages.vip2clip("smoke", out_dir=str(tmp_path / "out"), datasets=["synth-b"])
    assert asked == [("Table 1", ["synth-b"]), ("Table 2", ["headct"])]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert [t["name"] for t in manifest["tables"]] == ["vip2clip_image", "vip2clip_pixel", "vip2clip_medical"]
    assert any("kvasir" in note and roots["kvasir"] in note and "headct" not in note for note in manifest["notes"])
