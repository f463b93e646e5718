"""One workspace, whatever the current folder: the resolution rules of ssvp_core/workspace.py, configurations that
resolve their relative paths there, and the CLI and the notebooks' Study meeting the same data, runs and reports."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ssvp_core.config import load_config
from ssvp_core.reports import Model, Study
from ssvp_core.workspace import ENV, MARKER, PACKAGE_CHECKOUT, find, resolve


def test_resolution_order(tmp_path, monkeypatch):
    marked = tmp_path / "project"
    (marked / "notebooks" / "deep").mkdir(parents=True)
    (marked / MARKER).write_text("")
    monkeypatch.setenv(ENV, str(tmp_path / "from-env"))
    assert find(tmp_path / "given").root == tmp_path / "given"  # 1. explicit
    assert find(cwd=marked / "notebooks").root == tmp_path / "from-env"  # 2. the environment
    monkeypatch.delenv(ENV)
    ws = find(cwd=marked / "notebooks" / "deep")  # 3. the marker above the current folder
    assert ws.root == marked and str(marked / MARKER) in ws.found_by
    unmarked = tmp_path / "plain"
    unmarked.mkdir()
    fallback = find(cwd=unmarked)
    if (PACKAGE_CHECKOUT / MARKER).is_file():  # 4. the source checkout (this repository has the marker)
        assert fallback.root == PACKAGE_CHECKOUT and "source checkout" in fallback.found_by
    else:  # 5. an installed package: the current folder
        assert fallback.root == unmarked


def test_the_repository_is_a_workspace():
    assert (PACKAGE_CHECKOUT / MARKER).is_file()


def test_relative_paths_of_a_config_resolve_in_its_workspace_and_keep_its_fingerprint(tmp_path, monkeypatch):
    here = load_config("smoke", "ssvp", workspace=tmp_path / "a")
    there = load_config("smoke", "ssvp", workspace=tmp_path / "b")
    assert here.path(here.train.root) == tmp_path / "a" / "data" / "synth" / "synth-a"
    assert there.path(there.out_dir) == tmp_path / "b" / "runs"
    assert here.path("/abs/data") == Path("/abs/data") and resolve("x", tmp_path) == tmp_path / "x"
    assert here.fingerprint() == there.fingerprint()  # a moved workspace keeps its trained models
    monkeypatch.chdir(tmp_path)
    from ssvp_core.engine.train import run_dir

    assert run_dir(here).is_relative_to(tmp_path / "a" / "runs" / "smoke" / "ssvp")


def test_a_checkpoint_from_another_workspace_resolves_in_the_callers(workspace, tmp_path, synth_root):
    """A checkpoint's stored config names the workspace it was trained in; loaded elsewhere, its evaluation paths are
    the caller's."""
    from ssvp_core.engine.train import load_trained, train

    cfg = load_config("smoke", "aprilgan", ["train.epochs=1", f"train.root={synth_root / 'synth-a'}"],
                      workspace=tmp_path / "elsewhere")
    result = train(cfg, progress=False)
    _, loaded = load_trained(result.checkpoint)
    assert loaded.workspace == "" and loaded.path("data/x") == workspace / "data" / "x"
    here = load_config("smoke", "aprilgan")
    _, loaded = load_trained(result.checkpoint, overrides=here)
    assert loaded.workspace == str(workspace)


def test_study_dataset_roots_and_reports_are_in_its_workspace(tmp_path):
    study = Study("smoke", workspace=tmp_path)
    assert study.dataset_root("synth-b") == tmp_path / "data" / "synth" / "synth-b"
    assert study.reports == tmp_path / "reports" / "smoke"
    assert study.config(Model("ssvp", "synth-b")).workspace == str(tmp_path)


def _ssvp(args, cwd, env):
    return subprocess.run([sys.executable, "-m", "ssvp_core.cli", *args], cwd=cwd, capture_output=True, text=True,
                          env={**env, "PYTHONPATH": str(PACKAGE_CHECKOUT)}, timeout=600)


def test_the_cli_from_any_folder_meets_the_same_workspace(tmp_path):
    """`ssvp workspace` names the root and how it was found; `--workspace` and $SSVP_WORKSPACE agree; a path typed
    as an argument stays relative to the current folder."""
    env = {k: v for k, v in os.environ.items() if k != ENV}
    root, elsewhere = tmp_path / "ws", tmp_path / "elsewhere"
    (root / "notebooks").mkdir(parents=True)
    (root / MARKER).write_text("")
    elsewhere.mkdir()
    shown = _ssvp(["workspace"], root / "notebooks", env)
    assert shown.returncode == 0 and f"workspace: {root} (marker file" in shown.stdout
    assert f"reports {root / 'reports'} (not created yet)" in " ".join(shown.stdout.split())
    flag = _ssvp(["--workspace", str(root), "workspace"], elsewhere, env)
    via_env = _ssvp(["workspace"], elsewhere, {**env, ENV: str(root)})
    assert flag.stdout.splitlines()[1:] == via_env.stdout.splitlines()[1:] == shown.stdout.splitlines()[1:]
    made = _ssvp(["data", "synth", "mine", "--size", "48", "--n-test-good", "1", "--n-per-defect", "1"], elsewhere,
                 {**env, ENV: str(root)})
    assert made.returncode == 0 and (elsewhere / "mine" / "synth-a").is_dir() and not (root / "mine").exists()


@pytest.mark.slow
def test_ssvp_eval_from_another_folder_reads_the_workspaces_data_and_runs(tmp_path):
    env = {**{k: v for k, v in os.environ.items() if k != ENV}, ENV: str(tmp_path / "ws")}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    from ssvp_core.synthdata import ensure_synthetic

    ensure_synthetic(tmp_path / "ws" / "data" / "synth", seed=0, size=64, n_test_good=2, n_per_defect=1)
    trained = _ssvp(["train", "--method", "aprilgan", "--quiet", "--set", "train.epochs=1"], elsewhere, env)
    assert trained.returncode == 0, trained.stderr[-2000:]
    assert Path(trained.stdout.strip()).is_relative_to(tmp_path / "ws" / "runs" / "smoke" / "aprilgan")
    evaluated = _ssvp(["eval", "--method", "aprilgan", "--quiet", "--set", "train.epochs=1", "--eval-on", "synth-b"],
                      elsewhere / "..", env)
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    assert "pixel_auroc" in evaluated.stdout and sorted(p.name for p in elsewhere.iterdir()) == []

