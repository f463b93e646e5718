"""Training engine: resume equals an uninterrupted run, divergence stops with the step, checkpoints hold only
trainable parameters plus the config, torchrun (gloo, 2 CPU processes) trains and shards evaluation, CLI."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from rounding import assert_metrics_equal_to_rounding
from tiny import smoke_config
from ssvp_core.cli import main
from ssvp_core.engine import checkpoint as ckpt
from ssvp_core.engine.train import load_trained, run_dir, train
from ssvp_core.errors import CheckpointError, TrainingDiverged


def _cfg(root, out, *extra):
    return smoke_config("ssvp", f"out_dir={out}", "train.epochs=2", "train.batch_size=4", "options.vae_hidden=32",
                        "train.classes=[weave, washer]", *extra, root=root)


def test_resume_mid_epoch_gives_the_same_result(synth_root, tmp_path):
    full = train(_cfg(synth_root, tmp_path / "a"), progress=False)
    cfg = _cfg(synth_root, tmp_path / "b", "train.checkpoint_every=3")
    partial = train(cfg, progress=False, max_steps=4)  # "interrupted" after step 4 of 5; last checkpoint at step 3
    assert ckpt.state_of(ckpt.load(partial.checkpoint)).global_step == 3
    resumed = train(cfg, progress=False)
    assert resumed.resumed_from == 3
    a, b = ckpt.load(full.checkpoint), ckpt.load(resumed.checkpoint)
    assert a["state"]["global_step"] == b["state"]["global_step"] == len(full.history)
    for k in a["trainable"]:
        assert torch.equal(a["trainable"][k], b["trainable"][k]), k
    assert [h["total"] for h in full.history] == [h["total"] for h in b["state"]["history"]]
    # a finished run is not repeated
    again = train(cfg, progress=False)
    assert again.resumed_from == len(full.history) and again.history == b["state"]["history"]


def test_checkpoint_holds_trainable_parameters_and_config(synth_root, tmp_path):
    result = train(_cfg(synth_root, tmp_path, "train.epochs=1"), progress=False)
    payload = ckpt.load(result.checkpoint)
    trainable = {n for n, p in result.detector.named_parameters() if p.requires_grad}
    assert set(payload["trainable"]) == trainable
    assert not any(k.startswith(("clip.", "aux.")) for k in payload["trainable"])
    assert payload["config"]["options"]["vae_hidden"] == 32 and payload["method"] == "ssvp"
    assert result.checkpoint.parent == run_dir(ckpt.config_of(payload))
    detector, cfg = load_trained(result.checkpoint)
    b = {k: v for k, v in detector.trainable_state_dict().items()}
    assert all(torch.equal(b[k], payload["trainable"][k]) for k in b)


def test_truncated_or_foreign_checkpoint_is_a_clear_error(synth_root, tmp_path):
    bad = tmp_path / "checkpoint.pt"
    bad.write_bytes(b"\x00" * 10)
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        ckpt.load(bad)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        ckpt.load(tmp_path / "missing.pt")
    first = train(_cfg(synth_root, tmp_path / "x", "train.epochs=1"), progress=False)
    other = _cfg(synth_root, tmp_path / "x", "train.epochs=1", "options.gamma=0.3")
    with pytest.raises(CheckpointError, match="another configuration"):
        train(other, progress=False, checkpoint_path=first.checkpoint)


def test_non_finite_loss_stops_with_the_step(synth_root, tmp_path, monkeypatch):
    from ssvp_core.methods.ssvp import SSVP

    original, calls = SSVP.loss, {"n": 0}

    def poisoned(self, out, batch):
        parts = original(self, out, batch)
        calls["n"] += 1
        if calls["n"] == 3:
            parts["total"] = parts["total"] * float("nan")
        return parts

    monkeypatch.setattr(SSVP, "loss", poisoned)
    with pytest.raises(TrainingDiverged, match=r"non-finite loss at epoch 1, step 3 \(global step 3\)"):
        train(_cfg(synth_root, tmp_path), progress=False)


def _torchrun(args, env_extra=None, timeout=600):
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", **(env_extra or {})}
    cmd = [str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "ssvp_core.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)


@pytest.mark.slow
def test_torchrun_ddp_training_and_sharded_evaluation(synth_root, tmp_path):
    common = ["--profile", "smoke", "--quiet", "--set", f"out_dir={tmp_path}", "--set", "options.vae_hidden=32",
              "--train-on", f"synth-a={synth_root / 'synth-a'}", "--eval-on", f"synth-b={synth_root / 'synth-b'}"]
    ddp = _torchrun(["train", "--method", "ssvp", *common, "--set", "train.epochs=1", "--set", "train.batch_size=4"])
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    lines = ddp.stdout.strip().splitlines()
    assert len(lines) == 1, ddp.stdout  # rank 0 alone prints the checkpoint
    path = Path(lines[0])
    payload = ckpt.load(path)
    assert payload["state"]["complete"] and payload["state"]["global_step"] > 0
    sharded = _torchrun(["eval", "--checkpoint", str(path), *common, "--out", str(tmp_path / "sharded.csv")])
    assert sharded.returncode == 0, sharded.stderr[-3000:]
    assert sharded.stdout.count("image_auroc") == 1, sharded.stdout  # rank 0 alone prints the merged table
    assert main(["eval", "--checkpoint", str(path), *common, "--out", str(tmp_path / "single.csv")]) == 0
    a, b = pd.read_csv(tmp_path / "sharded.csv"), pd.read_csv(tmp_path / "single.csv")
    # shards form other batches, so maps can differ in the last float bits (issue 17)
    assert_metrics_equal_to_rounding(a, b)


def test_cli_train_eval_predict(synth_root, tmp_path, capsys):
    common = ["--profile", "smoke", "--quiet", "--set", f"out_dir={tmp_path}", "--set", "options.vae_hidden=32",
              "--set", "train.epochs=1", "--train-on", f"synth-a={synth_root / 'synth-a'}",
              "--eval-on", f"synth-b={synth_root / 'synth-b'}"]
    assert main(["eval", "--method", "ssvp", *common]) == 2  # no checkpoint yet: a clear error
    assert "needs training first" in capsys.readouterr().err
    assert main(["train", "--method", "ssvp", *common]) == 0
    path = Path(capsys.readouterr().out.strip().splitlines()[-1])
    assert main(["eval", "--method", "ssvp", *common, "--out", str(tmp_path / "m.csv")]) == 0
    table = pd.read_csv(tmp_path / "m.csv")
    assert set(table.cls) >= {"twill", "mesh", "mean"} and "pixel_aupro" in set(table.metric)
    images = tmp_path / "mine"
    images.mkdir()
    for p in list((synth_root / "synth-b" / "capsule" / "test").rglob("*.png"))[:3]:
        shutil.copy(p, images / f"{p.parent.name}_{p.name}")
    assert main(["predict", str(images), "--checkpoint", str(path), "--out", str(tmp_path / "pred")]) == 0
    scores = pd.read_csv(tmp_path / "pred" / "predictions.csv")
    assert len(scores) == 3 and scores.score.between(0, 1).all() and "label" not in scores  # no normals: no threshold
    assert len(list((tmp_path / "pred" / "heatmaps").glob("*.png"))) == 3
    assert main(["predict", str(tmp_path / "empty-dir"), "--checkpoint", str(path), "--out", str(tmp_path / "p2")]) == 2


def test_only_rank_0_writes_reports_and_predictions(tmp_path, monkeypatch, capsys):
    """Under torchrun the other ranks of `reproduce` and `predict` exit at once: no second writer of the same files."""
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("SSVP_WORKSPACE", str(tmp_path))
    assert main(["reproduce", "--profile", "smoke", "--only", "tsne"]) == 0
    assert main(["predict", str(tmp_path), "--checkpoint", str(tmp_path / "absent.pt"), "--out", str(tmp_path / "out")]) == 0
    assert list(tmp_path.iterdir()) == [] and capsys.readouterr().out == ""
