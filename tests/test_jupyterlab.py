"""The notebooks as a reader meets them: JupyterLab started on the repository as `make lab` starts it (with the
repository's jupyter_server_config.py), a notebook opened in headless Chromium (Playwright driving Debian's
chromium) and run with "Run All Cells" through the menu.

After `ssvp reproduce` trained the page's models, the notebook runs without an error, shows the paper's numbers, its
steps and its table, reuses the models (trains nothing), publishes its page into the workspace's reports/ with the
index, and leaves notebooks/ exactly as it was, also after JupyterLab saves the notebook. Skipped where Chromium or
Playwright's Python package is missing (.ci/run installs both).
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from ssvp_core.reports.catalog import NOTEBOOKS
from ssvp_core.reports.runner import reproduce

pytestmark = pytest.mark.slow
REPO = NOTEBOOKS.parent
PAGE = "table4"  # two SSVP models and a table: the shortest page that trains
TOKEN = "ssvp-lab-test"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listing(folder: Path) -> dict[str, float]:
    return {str(p.relative_to(folder)): p.stat().st_mtime for p in sorted(folder.rglob("*"))}


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    chromium = shutil.which("chromium")
    if not chromium:
        pytest.skip("chromium is not installed (apt-get install chromium); .ci/run installs it")
    pytest.importorskip("playwright.sync_api", reason="pip install playwright (environment.yml) drives the browser")
    tmp = tmp_path_factory.mktemp("lab")
    workspace = tmp / "workspace"
    reproduce("smoke", only=[PAGE], workspace=workspace, log=lambda *_: None)  # what `make demo` leaves behind
    settings = tmp / "settings" / "@jupyterlab" / "notebook-extension"
    settings.mkdir(parents=True)
    # every cell stays in the page's DOM (JupyterLab may otherwise detach the cells scrolled out of view)
    (settings / "tracker.jupyterlab-settings").write_text(json.dumps({"windowingMode": "none"}))
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("TQDM_DISABLE",)}
    env.update(SSVP_WORKSPACE=str(workspace), JUPYTER_CONFIG_DIR=str(tmp / "config"),
               JUPYTER_RUNTIME_DIR=str(tmp / "runtime"), PYTHONPATH=str(REPO))
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--config=jupyter_server_config.py", "notebooks/", "--no-browser", "--allow-root", "--ServerApp.ip=127.0.0.1",
         f"--ServerApp.port={port}", f"--IdentityProvider.token={TOKEN}", f"--LabApp.user_settings_dir={tmp / 'settings'}",
         f"--LabApp.workspaces_dir={tmp / 'lab-workspaces'}", "--LabApp.news_url=None",
         "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
        cwd=REPO, env=env, stdout=open(tmp / "server.log", "w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"{url}/api/status?token={TOKEN}", timeout=2)
            break
        except OSError:
            time.sleep(0.5)
    else:
        server.kill()
        pytest.fail("JupyterLab did not start:\n" + (tmp / "server.log").read_text()[-3000:])
    yield {"url": url, "workspace": workspace, "chromium": chromium, "log": tmp / "server.log"}
    server.terminate()
    server.wait(timeout=30)


@pytest.fixture(scope="module")
def run_all(lab):
    """Open the notebook, Run All Cells from the menu, wait for the last cell, save; what the page showed."""
    from playwright.sync_api import sync_playwright

    report = lab["workspace"] / "reports" / "smoke"
    before = {"notebooks": _listing(NOTEBOOKS), "runs": _listing(lab["workspace"] / "runs"),
              "manifest": json.loads((report / PAGE / "manifest.json").read_text())}
    stored = (NOTEBOOKS / f"{PAGE}.ipynb").read_bytes()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=lab["chromium"], args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{lab['url']}/lab/tree/{PAGE}.ipynb?token={TOKEN}")
        # the kernel is up and connected when the status bar names it and says it is idle
        page.wait_for_function("""() => /Python 3.*\\|\\s*Idle/.test(document.querySelector('.jp-StatusBar-Widget')
            ? document.querySelector('#jp-main-statusbar').innerText : '')""", timeout=180_000)
        page.click(".lm-MenuBar-itemLabel:text-is('Run')")
        page.click(".lm-Menu-itemLabel:text-is('Run All Cells')")
        # every code cell numbered, or an error (Run All stops at the first failing cell)
        page.wait_for_function("""() => {
            const prompts = [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')].map(e => e.textContent.trim());
            const failed = document.querySelectorAll("[data-mime-type='application/vnd.jupyter.stderr']").length > 0;
            return failed || (prompts.length > 0 && prompts.every(t => /^\\[\\d+\\]:$/.test(t)));
        }""", timeout=600_000)
        cells = page.evaluate("""() => [...document.querySelectorAll('.jp-Notebook .jp-Cell')].map(cell => ({
            kind: cell.classList.contains('jp-CodeCell') ? 'code' : 'markdown',
            input: (cell.querySelector('.jp-InputArea-editor') || cell).innerText,
            output: [...cell.querySelectorAll('.jp-OutputArea-output')].map(o => o.innerText).join('\\n'),
            stderr: cell.querySelectorAll(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']").length,
        }))""")
        page.keyboard.press("Control+s")
        page.wait_for_timeout(3000)
        shot = lab["log"].with_name(f"{PAGE}.png")
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    return {"cells": cells, "before": before, "stored": stored, "report": report, "screenshot": shot}


def _output_of(cells, call: str) -> str:
    return next(c["output"] for c in cells if c["kind"] == "code" and call in c["input"])


def test_run_all_finishes_without_an_error_and_shows_the_reproduction(run_all):
    cells = run_all["cells"]
    assert cells and not [c for c in cells if c["stderr"]]
    text = "\n".join(c["input"] + "\n" + c["output"] for c in cells)
    for expected in ("The claim.", "What the paper reports", "0.3434", "0.4425",  # Table 4 as published
                     "The protocol of this run", "Step 2: train or load each model", "Table 4: semantic-visual alignment",
                     "What differs from the paper in this profile, and why", "Published to"):
        assert expected in text, expected
    assert "Traceback" not in text and "Error" not in "\n".join(c["output"] for c in cells)


def test_the_models_ssvp_reproduce_trained_are_reused(run_all, lab):
    shown = _output_of(run_all["cells"], "study.train(")
    assert shown.count("reused") == 2 and "trained\t" not in shown
    after = _listing(lab["workspace"] / "runs")
    checkpoints = [k for k in run_all["before"]["runs"] if k.endswith("checkpoint.pt")]
    assert len(checkpoints) == 2 and all(after[k] == run_all["before"]["runs"][k] for k in checkpoints)


def test_the_page_and_the_index_show_the_run(run_all):
    report = run_all["report"]
    manifest = json.loads((report / PAGE / "manifest.json").read_text())
    assert manifest["finished"] > run_all["before"]["manifest"].get("finished", "")
    assert [t["name"] for t in manifest["tables"]] == ["protocol", "table4"]
    status = json.loads((report / "status.json").read_text())
    assert status[PAGE]["status"] == "ok" and status[PAGE]["run_by"] == "notebook kernel"
    assert "notebook kernel" in (report / "index.html").read_text()


def test_notebooks_folder_is_left_as_it_was(run_all, lab):
    assert _listing(NOTEBOOKS).keys() == run_all["before"]["notebooks"].keys()  # no data/, runs/, checkpoints
    assert "Saving file at /table4.ipynb" in lab["log"].read_text()  # JupyterLab did save it ...
    assert (NOTEBOOKS / f"{PAGE}.ipynb").read_bytes() == run_all["stored"]  # ... as git has it
    assert list((lab["workspace"] / ".ipynb_checkpoints").glob(f"{PAGE}-checkpoint.ipynb"))
