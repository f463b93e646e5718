"""DAPO (DAPO.md): hybrid defect-aware prompts, progressive layer tokens, adapters, K+1-way maps, multi-type
metrics against scikit-learn."""
import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score
from sklearn.preprocessing import label_binarize

from tiny import SIZE, random_batch, smoke_config, tiny_backbone
from ssvp_core.data.defects import MVTEC_TRAIN, vocabulary
from ssvp_core.engine.infer import evaluate
from ssvp_core.engine.multitype import multitype_hook
from ssvp_core.errors import ConfigError
from ssvp_core.methods.dapo import DAPO, DAPOOptions
from ssvp_core.metrics.multitype import multitype_metrics


def make(**o):
    torch.manual_seed(0)
    return DAPO(DAPOOptions(**o), tiny_backbone(), SIZE)


def batch(n=3):
    return random_batch(n, seed=2, classes=("weave",), defect="hole", dataset="synth-a", box=(10, 30, 10, 30))


def test_progressive_token_update():
    from ssvp_core.prompts import deep_token_hook

    m = make()
    hook = deep_token_hook(m.visual_tokens, "blend", 0.01)
    x = torch.randn(2, 1 + 9, m.clip.width)
    inserted = hook(0, x)
    assert inserted.shape == (2, 1 + 4 + 9, m.clip.width)
    assert torch.equal(inserted[:, 1:5], m.visual_tokens[0].expand(2, -1, -1)) and torch.equal(inserted[:, 5:], x[:, 1:])
    blended = hook(3, inserted)
    assert torch.allclose(blended[:, 1:5], 0.01 * inserted[:, 1:5] + 0.99 * m.visual_tokens[3])
    assert torch.equal(blended[:, 0], inserted[:, 0]) and torch.equal(blended[:, 5:], inserted[:, 5:])


def test_text_features_per_dataset_anchor_list():
    m = make().eval()
    t = m.text_features("synth-a")
    assert t.shape == (1 + len(vocabulary("synth-a").anchors), m.clip.embed_dim)
    assert torch.allclose(t.norm(dim=-1), torch.ones(len(t)), atol=1e-5)
    clean = make(text_path="clean").eval().text_features("synth-a")
    assert not torch.allclose(t, clean)  # faithful: no causal mask and the unshifted EOT position
    m.train()
    assert m.vocabulary("mvtec") is MVTEC_TRAIN  # training anchors differ from MVTec's test anchors
    with pytest.raises(ConfigError, match="no defect-type anchors"):
        m.text_features("btad")
    assert make(anchors={"btad": ["dent", "stain"]}).text_features("btad").shape[0] == 3


def test_maps_scores_and_gradients_through_the_frozen_tower():
    m = make().train()
    b = batch()
    out = m(b)
    L = len(out.aux["layer_probs"])
    assert out.anomaly_map.shape == (3, SIZE, SIZE) and (out.anomaly_map >= 0).all() and (out.anomaly_map <= L).all()
    assert torch.allclose(out.anomaly_map, torch.stack([1 - p[:, 0] for p in out.aux["layer_probs"]]).sum(0))
    parts = m.loss(out, b)
    assert torch.isfinite(parts["total"]) and torch.allclose(parts["total"], 4 * parts["local"] + parts["image"])
    parts["total"].backward()
    assert m.visual_tokens.grad.abs().sum() > 0 and m.text_tokens.grad.abs().sum() > 0
    assert m.ctx_abnormal.grad.abs().sum() > 0 and m.adapters[0].weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in m.clip.parameters())


def test_gradient_checkpointing_gives_the_same_gradients():
    grads = []
    for ckpt in (False, True):
        m = make().train()
        m.grad_checkpointing = ckpt
        b = batch()
        m.loss(m(b), b)["total"].backward()
        grads.append(m.visual_tokens.grad.clone())
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def _sklearn_multitype(scores, labels):
    C = scores.shape[1]
    onehot = label_binarize(labels, classes=range(C))
    return (roc_auc_score(onehot, scores, average="macro"), average_precision_score(onehot, scores, average="macro"),
            f1_score(labels, scores.argmax(1), average="macro"))


@pytest.mark.parametrize("seed", range(5))
def test_multitype_metrics_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    C, P = int(rng.integers(3, 6)), 400
    labels = rng.integers(0, C, P)
    labels[:C] = np.arange(C)
    scores = rng.random((P, C)) + np.eye(C)[labels] * rng.uniform(0, 1.5)
    if seed % 2:
        scores = np.round(scores, 1)  # ties
    ours = multitype_metrics(scores, labels)
    auroc, ap, f1 = _sklearn_multitype(scores, labels)
    assert abs(ours["auroc"] - auroc) < 1e-9 and abs(ours["ap"] - ap) < 1e-9 and abs(ours["f1"] - f1) < 1e-12


def test_multitype_evaluation_on_synthetic_objects(synth_root, tmp_path):
    cfg = smoke_config("dapo", f"out_dir={tmp_path}", root=synth_root)
    det = DAPO(DAPOOptions(), cfg.backbone, cfg.image_size)
    hook = multitype_hook(det, "synth-b")
    result = evaluate(det, cfg.eval.datasets[0], cfg, progress=False, hooks=[hook])
    objects = result.extra["MultiTypeEvaluation"]["objects"]
    assert set(objects.cls) == {"twill", "granite", "mesh", "capsule", "bracket", "mean"}
    assert objects.drop(columns="cls").iloc[:-1][["auroc", "ap", "f1"]].apply(lambda c: c.between(0, 1)).all().all()
    types = result.extra["MultiTypeEvaluation"]["types"]
    assert {"normal", "hole", "stain"} <= set(types.defect)


def test_cli_train_and_multitype_eval_in_the_smoke_profile(synth_root, tmp_path, capsys):
    from ssvp_core.cli import main

    common = ["--profile", "smoke", "--quiet", "--set", f"out_dir={tmp_path}", "--set", "train.epochs=1",
              "--train-on", f"synth-a={synth_root / 'synth-a'}", "--eval-on", f"synth-b={synth_root / 'synth-b'}"]
    for method in ("dapo", "vip2clip"):
        assert main(["train", "--method", method, *common]) == 0
    capsys.readouterr()
    assert main(["eval", "--method", "dapo", *common, "--multitype", "--out", str(tmp_path / "d.csv")]) == 0
    out = capsys.readouterr().out
    assert "multi-type segmentation on synth-b" in out and (tmp_path / "d.multitype-synth-b.csv").is_file()
    assert main(["eval", "--method", "vip2clip", *common, "--multitype"]) == 2  # no defect anchors for ViP2-CLIP
    assert main(["eval", "--method", "vip2clip", *common]) == 0
