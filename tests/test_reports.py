"""The notebooks as a user runs them, the papermill runner and the HTML report.

* a notebook run by papermill from another folder reads and writes the workspace (data, runs, reports), publishes
  its page into reports/<profile>/ with the index, creates nothing where it was started or under notebooks/, takes
  its parameters, and renders clean: no warning, no traceback, no progress residue, tables with 2 decimals, Table 1
  with CIs, a reference paper column without delta (smoke), its bar chart and the index summary;
* the steps a notebook shows are the ones the report reads: a model the CLI trained is reused, a table assembles
  from the evaluations its jobs list without computing anything else;
* `reproduce` (from any folder, with --workspace) writes the executed notebook, its HTML, tables and figures, skips
  unchanged work, marks a failing notebook failed while keeping its earlier good outputs, and keeps the kernels'
  noise out of the terminal;
* the index (with Table 1's summary) and the `ssvp predict` gallery render in headless Chromium: no console error,
  every image loads, the screenshot is not blank.
"""
import contextlib
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

from ssvp_core.errors import ConfigError
from ssvp_core.reports import EvalJob, Model, Study, tables
from ssvp_core.reports.catalog import NOTEBOOKS, PAGES
from ssvp_core.reports.runner import reproduce

REPO = NOTEBOOKS.parent


@contextlib.contextmanager
def environment(**values):
    """Set environment variables for a block (module-scoped fixtures cannot use monkeypatch)."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update({k: str(v) for k, v in values.items()})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """The workspace of this module's notebook runs: data/, runs/ and reports/ are created under it."""
    return tmp_path_factory.mktemp("workspace")


@pytest.fixture(scope="module")
def table1_run(workdir, tmp_path_factory):
    """Table 1 through papermill, started from another folder with the workspace in $SSVP_WORKSPACE and no out_dir
    (as a user runs it): two training-free methods and a smaller evaluation batch."""
    import papermill as pm

    elsewhere = tmp_path_factory.mktemp("started-here")
    notebooks_before = _listing(NOTEBOOKS)
    repo_runs_before = _listing(REPO / "runs") if (REPO / "runs").is_dir() else None  # make demo's, if it ran here
    params = {"methods": ["reference", "winclip"], "overrides": ["eval.batch_size=4", "eval.bootstrap=200"]}
    executed = elsewhere / "table1-run.ipynb"
    with environment(SSVP_WORKSPACE=workdir):
        pm.execute_notebook(str(NOTEBOOKS / "table1.ipynb"), str(executed), parameters=params, kernel_name="python3",
                            progress_bar=False, cwd=str(elsewhere))
    return {"out": workdir / "reports" / "smoke" / "table1", "executed": executed, "elsewhere": elsewhere,
            "notebooks_before": notebooks_before, "repo_runs_before": repo_runs_before}


def test_every_page_has_a_notebook():
    assert sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb")) == sorted(PAGES)


def test_papermill_from_another_folder_publishes_into_the_workspace(table1_run, workdir):
    out = table1_run["out"]
    nb = nbformat.read(table1_run["executed"], as_version=4)
    assert nb.metadata.papermill.parameters["methods"] == ["reference", "winclip"]
    assert set(pd.read_csv(out / "table1_image.csv").method) == {"reference", "winclip"}  # not the default six
    manifest = json.loads((out / "manifest.json").read_text())
    assert [t["name"] for t in manifest["tables"]] == ["protocol", "table1_image", "table1_pixel", "table1_test"]
    assert manifest["out_dir"] == str(out) and manifest["workspace"] == str(workdir)
    assert any("200 resamples" in n for n in manifest["notes"])  # the override reached the bootstrap
    assert manifest["differences"] and all(d["what"] and d["why"] for d in manifest["differences"])
    status = json.loads((workdir / "reports" / "smoke" / "status.json").read_text())
    assert status["table1"]["status"] == "ok" and status["table1"]["run_by"] == "notebook kernel"
    assert "table1/table1_bars.png" in (workdir / "reports" / "smoke" / "index.html").read_text()
    assert list((workdir / "runs" / "smoke" / "winclip").rglob("eval/*.pkl"))  # cached for the next notebook
    assert (workdir / "data" / "synth" / "synth-b").is_dir()
    assert _listing(table1_run["elsewhere"]) == ["table1-run.ipynb"]  # nothing written where papermill started
    assert _listing(NOTEBOOKS) == table1_run["notebooks_before"]
    repo_runs = _listing(REPO / "runs") if (REPO / "runs").is_dir() else None
    assert repo_runs == table1_run["repo_runs_before"]  # the repository's own runs/ untouched (absent in a clone)


LONG_DECIMAL = re.compile(r"(?<![\w.])\d+\.\d{3,}(?![\w.])")


def _outputs(nb) -> list[dict]:
    return [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]


def test_rendered_notebook_is_clean_and_tables_show_two_decimals(table1_run):
    out = table1_run["out"]
    outputs = _outputs(nbformat.read(table1_run["executed"], as_version=4))
    assert outputs
    assert not [o for o in outputs if o.output_type == "error"]
    assert not [o for o in outputs if o.output_type == "stream" and o.name == "stderr"]
    text = json.dumps([o.get("data", {}).get("text/html", "") + o.get("text", "") for o in outputs])
    for noise in ("Warning", "Traceback", "IProgress", "NaN", "nan<", "ssvp-progress"):
        assert noise not in text
    for name in ("table1_image", "table1_pixel"):
        fragment = (out / f"{name}.table.html").read_text()
        numbers = [n for n in re.findall(r"<td>([^<]*)</td>", fragment)]
        assert numbers and not [n for n in numbers if LONG_DECIMAL.search(n)]
        assert "95% CI" in fragment and "paper, MVTec-AD (reference)" in fragment and "delta" not in fragment
        assert fragment.split("<tbody>")[1].count("<tr>") == 2  # one row per (dataset, method, trained_on) there is
    data = pd.read_csv(out / "table1_image.csv")
    assert (data.ci_low <= data.reproduced + 1e-9).all() and (data.reproduced <= data.ci_high + 1e-9).all()
    assert data.delta.isna().all() and (data.paper_dataset == "mvtec").all()  # synthetic vs MVTec: no delta
    assert (out / "table1_bars.png").is_file() and (out / "summary.html").is_file()


def test_the_notebook_shows_the_papers_numbers_before_anything_runs(table1_run):
    """The first output after the setup is the paper's Table 1 (every published SSVP MVTec-AD number in it)."""
    nb = nbformat.read(table1_run["executed"], as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    paper_cell = next(i for i, c in enumerate(code) if "page.paper(" in c.source)
    train_cell = next(i for i, c in enumerate(code) if "study.train(" in c.source)
    assert paper_cell < train_cell
    shown = "".join(o.get("data", {}).get("text/html", "") for o in code[paper_cell].outputs)
    for value in ("93.00", "93.30", "96.70", "92.20", "89.00", "50.00"):  # SSVP's MVTec-AD row, SSVP v2 Table 1
        assert value in shown
    assert "Source: SSVP v2 Table 1" in shown


def test_table_fragment_never_collides_with_the_exported_notebook(workspace):
    """Table 2's page has a table named table2; the runner exports the notebook as table2.html beside it."""
    page = Study("smoke").page("table2", workspace / "out")
    page.table("table2", "t", pd.DataFrame({"x": [1.0]}))
    assert page.manifest["tables"][0]["html"] == "table2.table.html" and not (workspace / "out" / "table2.html").exists()


def test_a_page_opened_without_out_dir_is_published_by_its_last_step(workspace):
    """What JupyterLab does: the page is written into a work folder and moved into reports/ only by publish(), which
    records the run and rebuilds the index; an earlier page stays until then."""
    study = Study("smoke")
    final = workspace / "reports" / "smoke" / "table4"
    final.mkdir(parents=True)
    (final / "old.csv").write_text("x\n1\n")
    page = study.page("table4")
    page.table("table4", "Table 4", pd.DataFrame({"x": [1.0]}))
    assert (final / "old.csv").is_file() and not (final / "table4.csv").exists()
    page.publish()
    assert (final / "table4.csv").is_file() and not (final / "old.csv").exists()
    manifest = json.loads((final / "manifest.json").read_text())
    assert manifest["out_dir"] == str(final) and manifest["differences"]
    status = json.loads((final.parent / "status.json").read_text())
    assert status["table4"]["run_by"] == "notebook kernel" and status["table4"]["key"] is None
    assert "notebook kernel" in (final.parent / "index.html").read_text()
    assert not list((final.parent / ".work").glob("table4*"))


def test_number_formatting():
    from ssvp_core.reports.formatting import format_p, table_html

    html = table_html(pd.DataFrame({"a": [66.666667, float("nan")], "b": ["x", None], "n": [3, 4]}))
    assert "66.67" in html and "66.666" not in html and "—" in html and "nan" not in html.lower().replace("nan;", "")
    assert format_p(0.0019) == "< 0.01" and format_p(0.4321) == "0.43" and format_p(float("nan")) == "—"


def test_a_model_the_cli_trained_is_reused_by_the_notebook_steps(workspace, capsys):
    """`ssvp train` and a notebook's `study.train` resolve the same configuration in the same workspace: the second
    trains nothing, and says so."""
    from ssvp_core.cli import main

    assert main(["train", "--method", "aprilgan", "--profile", "smoke", "--quiet", "--set", "train.epochs=1"]) == 0
    checkpoint = Path(capsys.readouterr().out.strip())
    assert checkpoint.is_relative_to(workspace / "runs" / "smoke" / "aprilgan")
    study = Study("smoke", overrides=["train.epochs=1"])
    model = Model("aprilgan", "synth-b")
    assert study.run_dir(model) == checkpoint.parent and study.is_trained(model)
    done = study.train([EvalJob(model), EvalJob(model, bootstrap=True)])  # one model behind two jobs
    assert done[["method", "status", "trained_on", "epochs"]].to_dict("records") == [
        {"method": "aprilgan", "status": "reused", "trained_on": "synth-a", "epochs": 1}]
    assert study.protocol_table([model])["checkpoint"].tolist() == ["in the workspace"]


def test_a_table_reads_only_the_evaluations_its_jobs_list(workspace, monkeypatch):
    """The notebook evaluates the page's jobs in one step; assembling the table afterwards computes nothing."""
    from ssvp_core.engine import infer

    study = Study("smoke", overrides=["eval.bootstrap=20"])
    jobs = tables.table2_jobs(study, methods=["reference", "winclip"])
    assert jobs == [EvalJob(Model("reference", "synth-b"), bootstrap=True), EvalJob(Model("winclip", "synth-b"), bootstrap=True)]
    study.prepare_data(jobs)
    first = study.evaluate(jobs)
    assert first.status.tolist() == ["computed", "computed"]
    monkeypatch.setattr(infer, "evaluate", lambda *a, **k: pytest.fail("the table computed an evaluation"))
    frame = tables.table2(study, jobs)
    assert set(frame.method) == {"reference", "winclip"} and frame.ci_low.notna().all()
    again = study.evaluate(jobs)
    assert again.status.tolist() == ["read from cache"] * 2
    assert again.image_auroc.tolist() == first.image_auroc.tolist()  # the same stored numbers, read back


def test_a_sweep_point_at_the_profiles_value_is_the_model_other_pages_train(workspace):
    """Figures 7-8 sweep gamma and xi one at a time: the point at the value SSVP runs with (0.5 and 0.85, Eqs. 19 and
    12) is Table 1's model, not a second training of it; the other points are trainings of their own."""
    study = Study("smoke")
    assert study.option("ssvp", "synth-b", "gamma") == 0.5 and study.option("ssvp", "synth-b", "xi") == 0.85
    table1 = study.config(Model("ssvp", "synth-b")).fingerprint()
    gamma = tables.sensitivity_jobs(study, "gamma", [0.0, 0.5, 1.0])
    xi = tables.sensitivity_jobs(study, "xi", [0.75, 0.85, 0.95])
    fingerprints = {job.model.label: study.config(job.model).fingerprint() for job in gamma + xi}
    assert fingerprints["gamma=0.5"] == fingerprints["xi=0.85"] == table1
    assert len(set(fingerprints.values())) == 5
    assert study.config(gamma[0].model).options["gamma"] == 0.0
    assert Study("smoke", overrides=["options.gamma=0.4"]).option("ssvp", "synth-b", "gamma") == 0.4
    with pytest.raises(ConfigError, match="no option 'gama'"):
        study.option("ssvp", "synth-b", "gama")


def test_a_model_another_notebook_is_training_is_left_for_last_and_reused(workspace, monkeypatch):
    """Two notebooks side by side (`ssvp reproduce --jobs 2`) often need the same models: the train step trains the
    ones nobody else is training first, then waits for the busy one and reuses what the other process wrote."""
    import threading

    from ssvp_core.engine import train as engine_train

    study = Study("smoke", overrides=["train.epochs=1"])
    busy, free = Model("aprilgan", "synth-b"), Model("dapo", "synth-b")
    jobs = [EvalJob(busy), EvalJob(free)]
    study.prepare_data(jobs)
    folder = study.run_dir(busy)
    holding, started_free = threading.Event(), threading.Event()

    def other_notebook():  # holds the busy model's lock and trains it once this process has moved on to the other
        with engine_train.run_lock(folder):
            holding.set()
            started_free.wait(timeout=600)
            engine_train._train(study.config(busy), True, False, None, folder / "checkpoint.pt")

    trained_here = []
    real_train = engine_train.train

    def recording_train(cfg, **kwargs):
        trained_here.append(cfg.method)
        started_free.set()
        return real_train(cfg, **kwargs)

    monkeypatch.setattr(engine_train, "train", recording_train)
    other = threading.Thread(target=other_notebook)
    other.start()
    assert holding.wait(timeout=60) and engine_train.run_busy(folder)
    frame = study.train(jobs, progress=False)
    other.join()
    assert trained_here == ["dapo"]  # the busy model was not trained a second time
    assert frame.method.tolist() == ["aprilgan", "dapo"] and frame.status.tolist() == ["reused", "trained"]
    assert not engine_train.run_busy(folder) and study.is_trained(busy)


def test_an_evaluation_another_notebook_is_computing_is_left_for_last_and_read(workspace, monkeypatch):
    """The same for evaluations (Tables 1 and 2 evaluate the same models on the same target): computed once."""
    import threading

    from ssvp_core import io
    from ssvp_core.engine import infer

    study, other_study = Study("smoke"), Study("smoke")
    busy, free = EvalJob(Model("reference", "synth-b")), EvalJob(Model("winclip", "synth-b"))
    study.prepare_data([busy, free])
    holding, started_free = threading.Event(), threading.Event()

    def other_notebook():
        with io.file_lock(other_study._eval_lock(busy)):
            holding.set()
            started_free.wait(timeout=600)
            other_study._compute_evaluation(busy, False, False)

    computed_here = []
    real_evaluate = infer.evaluate

    def recording_evaluate(detector, *args, **kwargs):
        if threading.current_thread() is threading.main_thread():
            computed_here.append(type(detector).__name__)
            started_free.set()
        return real_evaluate(detector, *args, **kwargs)

    monkeypatch.setattr(infer, "evaluate", recording_evaluate)
    other = threading.Thread(target=other_notebook)
    other.start()
    assert holding.wait(timeout=60) and io.lock_busy(study._eval_lock(busy))
    frame = study.evaluate([busy, free], progress=False)
    other.join()
    assert len(computed_here) == 1  # WinCLIP only
    assert frame.method.tolist() == ["reference", "winclip"]
    assert frame.status.tolist() == ["read from cache", "computed"]


@pytest.fixture(scope="module")
def reproduce_run(workdir, tmp_path_factory):
    """`ssvp --workspace W reproduce` of the t-SNE page (a figure) with one-epoch training, as a user runs it from
    another folder; returns the finished process (its terminal output is checked)."""
    elsewhere = tmp_path_factory.mktemp("typed-here")
    run = subprocess.run([sys.executable, "-m", "ssvp_core.cli", "--workspace", str(workdir), "reproduce", "--profile",
                          "smoke", "--only", "tsne", "--set", "train.epochs=1"], cwd=elsewhere, capture_output=True,
                         text=True, timeout=900, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert _listing(elsewhere) == []
    return run


@pytest.fixture(scope="module")
def report(reproduce_run, workdir):
    assert reproduce_run.returncode == 0, reproduce_run.stderr[-3000:]
    return workdir / "reports" / "smoke" / "index.html"


def test_reproduce_writes_notebook_html_figures_and_index(report):
    folder = report.parent / "tsne"
    assert (folder / "tsne.ipynb").is_file() and (folder / "tsne.html").is_file() and (folder / "figure6.png").is_file()
    status = json.loads((report.parent / "status.json").read_text())
    assert status["tsne"]["status"] == "ok" and status["tsne"]["run_by"] == "ssvp reproduce"
    page = report.read_text()
    assert "SMOKE PROFILE" in page and "tsne/figure6.png" in page and "not run" in page  # other notebooks listed as not run
    html = (folder / "tsne.html").read_text()
    assert "SMOKE PROFILE" in html and "data:image/png;base64" in html and "What differs from the paper" in html
    executed = nbformat.read(folder / "tsne.ipynb", as_version=4)
    assert executed.metadata.papermill.parameters["workspace"] == str(report.parents[2])


def test_reproduce_skips_unchanged_and_keeps_good_outputs_when_a_notebook_fails(report, workdir, tmp_path):
    # A private copy: the failed run below rewrites status.json, which the other tests of the module read.
    workdir = Path(shutil.copytree(workdir, tmp_path / "work"))
    report = workdir / report.relative_to(report.parents[2])
    messages = []
    reproduce("smoke", only=["tsne"], overrides=["train.epochs=1"], log=messages.append, workspace=workdir)
    assert messages == ["tsne: unchanged since its last successful run, skipped"]
    before = (report.parent / "tsne" / "figure6.png").read_bytes()
    reproduce("smoke", only=["tsne"], overrides=["train.epoch=1"], log=messages.append, workspace=workdir)  # a typo
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
    """The t-SNE report (ssvp reproduce) and the Table 1 page (papermill) were published into the same workspace."""
    assert (report.parent / "table1" / "summary.html").is_file()
    return report


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


def test_vip2clip_page_leaves_out_medical_sets_not_on_disk(tmp_path):
    """The paper preset lists ViP2-CLIP's eight medical sets; a user who has only some of them still gets Table 1
    and a Table 2 of those present, with the missing ones (and where they were looked for) named on the page."""
    from ssvp_core.reports.catalog import PAGES

    (tmp_path / "data" / "headct").mkdir(parents=True)
    study = Study("paper", workspace=tmp_path)
    present, missing = tables.medical_datasets(study)
    assert present == ["headct"] and len(missing) == 7
    assert f"kvasir ({tmp_path / 'data' / 'kvasir'})" in missing
    planned = {(job.target, job.method) for job in PAGES["vip2clip"].jobs(study)}
    assert ("headct", "vip2clip") in planned and not any(t == "kvasir" for t, _ in planned)


def test_efficiency_page_shows_the_gpu_table_bench_gpu_wrote(workspace):
    """bench/gpu.py --out writes a Markdown table; the efficiency page shows it as a table with its device, or says
    how to make it."""
    from ssvp_core.reports import efficiency, pages

    table = workspace / "gpu.md"
    table.write_text("Device: NVIDIA H100 80GB HBM3 (cuda)\n\n| method | ms/img | precision |\n|:--|--:|:--|\n"
                     "| ssvp | 41.27 | bf16 |\n| winclip | 3.50 | fp32 |\n")
    study = Study("smoke")
    with_table = study.page("efficiency", workspace / "with")
    pages.gpu_table(with_table, table)
    without = study.page("efficiency", workspace / "without")
    pages.gpu_table(without, workspace / "absent.md")
    gpu, = [t for t in with_table.manifest["tables"] if t["name"] == "gpu"]
    assert "NVIDIA H100 80GB HBM3 (cuda)" in gpu["title"]
    shown = pd.read_csv(workspace / "with" / gpu["csv"])
    assert shown.to_dict("list") == {"method": ["ssvp", "winclip"], "ms/img": [41.27, 3.5], "precision": ["bf16", "fp32"]}
    assert without.manifest["tables"] == [] and "No GPU measurement" in without.manifest["notes"][-1]
    assert f"bench/gpu.py --out {workspace / 'absent.md'}" in without.manifest["notes"][-1]
    table.write_text("Device: x\n\nnot a table\n")
    with pytest.raises(ValueError, match="bench/gpu.py --out"):
        efficiency.read_gpu_table(table)


def test_a_new_gpu_table_reruns_the_efficiency_notebook_only(tmp_path):
    """`ssvp reproduce` skips unchanged notebooks; the GPU table is an input of the efficiency page, so writing one
    (bench/gpu.py --out, in the workspace) must re-run that page and no other."""
    from ssvp_core.reports.efficiency import GPU_TABLE
    from ssvp_core.reports.runner import notebook_key
    from ssvp_core.workspace import find

    ws = find(tmp_path)

    def keys():
        return {n: notebook_key(n, NOTEBOOKS, "smoke", [], "digest", ws) for n in ("efficiency", "table1")}

    before = keys()
    (tmp_path / GPU_TABLE).parent.mkdir(parents=True)
    (tmp_path / GPU_TABLE).write_text("Device: cuda\n\n| method | ms/img |\n|:--|--:|\n| ssvp | 1.00 |\n")
    after = keys()
    assert after["efficiency"] != before["efficiency"] and after["table1"] == before["table1"]
    (tmp_path / GPU_TABLE).write_text("Device: cuda\n\n| method | ms/img |\n|:--|--:|\n| ssvp | 2.00 |\n")
    assert keys()["efficiency"] != after["efficiency"]
