"""Notebooks, the papermill runner and the HTML report.

* every notebook has a `parameters` cell and no stored outputs, and calls its page function;
* one notebook runs through papermill with non-default parameters that take effect, and its rendered outputs hold
  no warning, no traceback and no number with more than 2 decimals; Table 1 carries CIs, a reference paper column
  without delta (smoke), its bar chart and the index summary;
* `reproduce` writes the executed notebook, its HTML, tables and figures, skips unchanged work, marks a failing
  notebook failed while keeping its earlier good outputs, and keeps the kernels' noise out of the terminal;
* the index (with Table 1's summary) and the `ssvp predict` gallery render in headless Chromium: no console error,
  every image loads, the screenshot is not blank.
"""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

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


@pytest.fixture(scope="module")
def table1_run(workdir):
    """Table 1 through papermill with two training-free methods and a smaller evaluation batch."""
    import papermill as pm

    out = workdir / "custom-out"
    params = {"profile": "smoke", "out_dir": str(out), "methods": ["reference", "winclip"],
              "overrides": ["eval.batch_size=4", "eval.bootstrap=200"]}
    executed = workdir / "table1-run.ipynb"
    pm.execute_notebook(str(DEFAULT_NOTEBOOKS / "table1.ipynb"), str(executed), parameters=params, kernel_name="python3",
                        progress_bar=False, cwd=str(workdir))
    return out, executed


def test_papermill_parameters_take_effect(table1_run, workdir):
    out, executed = table1_run
    nb = nbformat.read(executed, as_version=4)
    assert nb.metadata.papermill.parameters["methods"] == ["reference", "winclip"]
    table = pd.read_csv(out / "table1_image.csv")
    assert set(table.method) == {"reference", "winclip"}  # the default would be the six Table-1 methods
    manifest = json.loads((out / "manifest.json").read_text())
    assert [t["name"] for t in manifest["tables"]] == ["table1_image", "table1_pixel"]
    assert any("200 resamples" in n for n in manifest["notes"])  # the override reached the bootstrap
    cached = list((workdir / "runs" / "smoke" / "winclip").rglob("eval/*.pkl"))
    assert cached  # evaluations are cached for the next notebook


LONG_DECIMAL = re.compile(r"(?<![\w.])\d+\.\d{3,}(?![\w.])")


def _outputs(nb) -> list[dict]:
    return [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]


def test_rendered_notebook_is_clean_and_tables_show_two_decimals(table1_run):
    out, executed = table1_run
    outputs = _outputs(nbformat.read(executed, as_version=4))
    assert outputs
    assert not [o for o in outputs if o.output_type == "error"]
    assert not [o for o in outputs if o.output_type == "stream" and o.name == "stderr"]
    text = json.dumps([o.get("data", {}).get("text/html", "") + o.get("text", "") for o in outputs])
    for noise in ("Warning", "Traceback", "IProgress", "NaN", "nan<"):
        assert noise not in text
    for name in ("table1_image", "table1_pixel"):
        fragment = (out / f"{name}.table.html").read_text()
        numbers = [n for n in re.findall(r"<td>([^<]*)</td>", fragment)]
        assert numbers and not [n for n in numbers if LONG_DECIMAL.search(n)]
        assert "95% CI" in fragment and "paper, MVTec-AD (reference)" in fragment and "delta" not in fragment
    data = pd.read_csv(out / "table1_image.csv")
    assert (data.ci_low <= data.reproduced + 1e-9).all() and (data.reproduced <= data.ci_high + 1e-9).all()
    assert data.delta.isna().all() and (data.paper_dataset == "mvtec").all()  # synthetic vs MVTec: no delta
    assert (out / "table1_bars.png").is_file() and (out / "summary.html").is_file()


def test_table_fragment_never_collides_with_the_exported_notebook(tmp_path, monkeypatch):
    """Table 2's page has a table named table2; the runner exports the notebook as table2.html beside it."""
    from ssvp_core.reports import experiments, pages

    monkeypatch.setattr(experiments, "ensure_profile_data", lambda profile: None)
    page = pages.Page("table2", "smoke", str(tmp_path), ())
    page.table("table2", "t", pd.DataFrame({"x": [1.0]}))
    assert page.manifest["tables"][0]["html"] == "table2.table.html" and not (tmp_path / "table2.html").exists()


def test_number_formatting():
    from ssvp_core.reports.pages import format_p, table_html

    html = table_html(pd.DataFrame({"a": [66.666667, float("nan")], "b": ["x", None], "n": [3, 4]}))
    assert "66.67" in html and "66.666" not in html and "—" in html and "nan" not in html.lower().replace("nan;", "")
    assert format_p(0.0019) == "< 0.01" and format_p(0.4321) == "0.43" and format_p(float("nan")) == "—"


@pytest.fixture(scope="module")
def reproduce_run(workdir):
    """`ssvp reproduce` of the t-SNE page (a figure) with one-epoch training, as a user runs it, from the work
    directory; returns the finished process (its terminal output is checked)."""
    return subprocess.run([sys.executable, "-m", "ssvp_core.cli", "reproduce", "--profile", "smoke", "--only", "tsne",
                           "--set", "train.epochs=1"], cwd=workdir, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def report(reproduce_run, workdir):
    assert reproduce_run.returncode == 0, reproduce_run.stderr[-3000:]
    return workdir / "reports" / "smoke" / "index.html"


def test_reproduce_writes_notebook_html_figures_and_index(report):
    folder = report.parent / "tsne"
    assert (folder / "tsne.ipynb").is_file() and (folder / "tsne.html").is_file() and (folder / "figure6.png").is_file()
    status = json.loads((report.parent / "status.json").read_text())
    assert status["tsne"]["status"] == "ok"
    page = report.read_text()
    assert "SMOKE PROFILE" in page and "tsne/figure6.png" in page and "not run" in page  # other notebooks listed as not run
    html = (folder / "tsne.html").read_text()
    assert "SMOKE PROFILE" in html and "data:image/png;base64" in html


def test_reproduce_skips_unchanged_and_keeps_good_outputs_when_a_notebook_fails(report, workdir, tmp_path):
    # A private copy: the failed run below rewrites status.json, which the other tests of the module read.
    workdir = Path(shutil.copytree(workdir, tmp_path / "work"))
    report = workdir / report.relative_to(report.parents[2])
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
window.__errors = [];
window.addEventListener('error', function (e) { window.__errors.push(String(e.message || e.type)); }, true);
var _consoleError = console.error;
console.error = function () { window.__errors.push(Array.prototype.join.call(arguments, ' ')); _consoleError.apply(console, arguments); };
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var broken = imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0); }).map(function (i) { return i.getAttribute('src'); });
  document.body.setAttribute('data-images', String(imgs.length));
  document.body.setAttribute('data-broken', JSON.stringify(broken));
  document.body.setAttribute('data-errors', JSON.stringify(window.__errors));
  document.body.setAttribute('data-text', String(document.body.innerText.length));
});
</script>"""
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync", "--allow-file-access-from-files"]


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's chromium (.ci/run installs it); the rendering tests are skipped on a machine without it."""
    found = shutil.which("chromium")
    if not found:
        pytest.skip("chromium is not installed (apt-get install chromium); .ci/run installs it")
    return found


def render(chromium: str, page, tmp_path) -> dict:
    """Open `page` in headless Chromium: image count, broken images, JS/console errors, text length, and a
    screenshot's pixels."""
    checked = page.with_name(f".check-{page.name}")
    checked.write_text(page.read_text().replace("</body>", CHECK + "</body>"))
    profile = ["--user-data-dir=" + str(tmp_path / f"profile-{page.stem}")]
    try:
        run = subprocess.run([chromium, *CHROMIUM_FLAGS, *profile, "--enable-logging=stderr", "--v=0",
                              "--virtual-time-budget=10000", "--dump-dom", checked.as_uri()],
                             capture_output=True, text=True, timeout=180)
    finally:
        checked.unlink()
    body = run.stdout.split("<body", 1)[1].split(">", 1)[0]
    attrs = {k: json.loads(html_unescape(v)) for k, v in re.findall(r'(data-[a-z]+)="([^"]*)"', body)}
    console = [line for line in run.stderr.splitlines() if ":CONSOLE" in line]
    shot = tmp_path / f"{page.stem}.png"
    subprocess.run([chromium, *CHROMIUM_FLAGS, *profile, "--window-size=1200,1600", f"--screenshot={shot}", page.as_uri()],
                   capture_output=True, timeout=180)
    attrs["pixels"] = np.asarray(Image.open(shot).convert("L"), dtype=np.float32)
    attrs["console"] = console
    return attrs


def html_unescape(text: str) -> str:
    import html

    return html.unescape(text)


def _assert_renders(result: dict, min_images: int = 1) -> None:
    assert result["data-images"] >= min_images
    assert result["data-broken"] == []
    assert result["data-errors"] == [] and result["console"] == []
    assert result["data-text"] > 200
    assert result["pixels"].std() > 10  # not a blank page


@pytest.fixture(scope="module")
def full_report(report, table1_run):
    """The t-SNE report plus the Table 1 page of the papermill run, indexed together."""
    from ssvp_core.reports.site import build_index

    out, _ = table1_run
    shutil.copytree(out, report.parent / "table1", dirs_exist_ok=True)
    status = json.loads((report.parent / "status.json").read_text())
    status["table1"] = {"status": "ok", "seconds": 1.0, "finished": "now", "error": ""}
    return build_index(report.parent, "smoke", status)


def test_index_summary_lists_reproduced_against_paper(full_report):
    page = full_report.read_text()
    assert "Summary: reproduced vs paper" in page and page.index("Summary") < page.index("<section id='table1'>")
    assert "★" in page and "MVTec-AD, for reference only" in page and "table1/table1_bars.png" in page


def test_index_renders_in_headless_chromium(full_report, chromium, tmp_path):
    _assert_renders(render(chromium, full_report, tmp_path), min_images=2)


def test_predict_gallery_renders_in_headless_chromium(synth_root, chromium, tmp_path):
    from ssvp_core.config import load_config
    from ssvp_core.engine.predict import predict_folder
    from ssvp_core.methods import build_detector

    cls = synth_root / "synth-b" / "granite" / "test"
    cfg = load_config("smoke", "reference")
    images = shutil.copytree(cls / "hole", tmp_path / "hole")
    whole = sorted(images.glob("*.png"))[0].read_bytes()
    (images / "cut.png").write_bytes(whole[: len(whole) // 2])  # listed at the top of the page, with its reason
    run = predict_folder(build_detector(cfg), cfg, images, tmp_path / "gallery", normal_dir=cls / "good")
    assert [str(u) for u in run.unreadable] == ["cut.png (truncated PNG)"]
    result = render(chromium, run.gallery, tmp_path)
    _assert_renders(result, min_images=3 * len(list((cls / "hole").glob("*.png"))))


def test_reproduce_keeps_kernel_noise_out_of_the_terminal(reproduce_run, report):
    terminal = reproduce_run.stdout + reproduce_run.stderr
    assert "tsne: ok in" in terminal and "report: " in terminal
    for noise in ("Kernel is running over TCP", "KeyboardInterrupt", "IPKernelApp", "WARNING"):
        assert noise not in terminal
    assert (report.parent / "tsne" / "kernel.log").is_file()  # what the kernel printed went here


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


def test_efficiency_page_shows_the_gpu_table_bench_gpu_wrote(tmp_path, monkeypatch):
    """bench/gpu.py --out writes a Markdown table; the efficiency page shows it as a table with its device, or says
    how to make it."""
    from ssvp_core.reports import efficiency, experiments, pages

    measured = pd.DataFrame([{"method": "ssvp", "total_params_M": 1.0, "ms_per_image": 2.0}])
    monkeypatch.setattr(efficiency, "measure", lambda *args, **kwargs: measured)
    real_section = experiments.section
    monkeypatch.setattr(experiments, "section", lambda profile, key, default=None:
                        None if key == "synthetic" else real_section(profile, key, default))
    table = tmp_path / "gpu.md"
    table.write_text("Device: NVIDIA H100 80GB HBM3 (cuda)\n\n| method | ms/img | precision |\n|:--|--:|:--|\n"
                     "| ssvp | 41.27 | bf16 |\n| winclip | 3.50 | fp32 |\n")
    pages.efficiency("smoke", out_dir=str(tmp_path / "with"), gpu_table=str(table))
    pages.efficiency("smoke", out_dir=str(tmp_path / "without"), gpu_table=str(tmp_path / "absent.md"))
    manifest = json.loads((tmp_path / "with" / "manifest.json").read_text())
    gpu, = [t for t in manifest["tables"] if t["name"] == "gpu"]
    assert "NVIDIA H100 80GB HBM3 (cuda)" in gpu["title"]
    shown = pd.read_csv(tmp_path / "with" / gpu["csv"])
    assert shown.to_dict("list") == {"method": ["ssvp", "winclip"], "ms/img": [41.27, 3.5], "precision": ["bf16", "fp32"]}
    without = json.loads((tmp_path / "without" / "manifest.json").read_text())
    assert [t["name"] for t in without["tables"]] == ["efficiency"]
    assert "No GPU measurement" in without["notes"][-1]
    assert f"bench/gpu.py --out {tmp_path / 'absent.md'}" in without["notes"][-1]
    table.write_text("Device: x\n\nnot a table\n")
    with pytest.raises(ValueError, match="bench/gpu.py --out"):
        efficiency.read_gpu_table(table)


def test_a_new_gpu_table_reruns_the_efficiency_notebook_only(tmp_path, monkeypatch):
    """`ssvp reproduce` skips unchanged notebooks; the GPU table is an input of the efficiency page, so writing one
    (bench/gpu.py --out, relative to where reproduce runs) must re-run that page and no other."""
    from ssvp_core.reports.efficiency import GPU_TABLE
    from ssvp_core.reports.runner import DEFAULT_NOTEBOOKS, notebook_key

    monkeypatch.chdir(tmp_path)

    def keys():
        return {n: notebook_key(n, DEFAULT_NOTEBOOKS, "smoke", [], "digest") for n in ("efficiency", "table1")}

    before = keys()
    (tmp_path / GPU_TABLE).parent.mkdir(parents=True)
    (tmp_path / GPU_TABLE).write_text("Device: cuda\n\n| method | ms/img |\n|:--|--:|\n| ssvp | 1.00 |\n")
    after = keys()
    assert after["efficiency"] != before["efficiency"] and after["table1"] == before["table1"]
    (tmp_path / GPU_TABLE).write_text("Device: cuda\n\n| method | ms/img |\n|:--|--:|\n| ssvp | 2.00 |\n")
    assert keys()["efficiency"] != after["efficiency"]
