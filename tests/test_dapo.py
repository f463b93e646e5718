"""DAPO (DAPO.md): text path, progressive layer tokens, tap slicing, image-score and map rules, loss components, each
against a formula written out here; defect vocabularies (VisA's verbose labels, MVTec's screw, Real-IAD's lists);
multi-type evaluation and metrics against scikit-learn. The end-to-end comparison with the authors' code is
tests/parity/test_parity_dapo.py."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score
from sklearn.preprocessing import label_binarize

from tiny import SIZE, random_batch, smoke_config, tiny_backbone
from ssvp_core.config import load_config
from ssvp_core.data.defects import (MVTEC_TEST, MVTEC_TRAIN, REAL_IAD, REAL_IAD_MULTITYPE, VISA, VISA_MULTITYPE,
                                    VISA_VERBOSE, vocabulary)
from ssvp_core.data.realiad import CODES
from ssvp_core.engine.infer import evaluate
from ssvp_core.engine.multitype import MultiTypeEvaluation, multitype_hook, object_type_scores
from ssvp_core.errors import ConfigError, MetricUndefinedWarning
from ssvp_core.methods.dapo import DAPO, DAPOOptions
from ssvp_core.metrics.multitype import multitype_metrics
from ssvp_core.prompts import deep_token_hook

TAU = 0.07


def make(**o):
    torch.manual_seed(0)
    return DAPO(DAPOOptions(**o), tiny_backbone(), SIZE)


def batch(n=3, dataset="synth-a", classes=("weave",), defect="hole"):
    return random_batch(n, seed=2, classes=classes, defect=defect, dataset=dataset, box=(10, 30, 10, 30))


# ---- text path -------------------------------------------------------------------------------------------------
def reference_text_features(m, anchors):
    """model.py encode_learn_prompts written out, one sentence at a time: "X*5 flawless object" with V_e and
    "X*5 <anchor> anomaly object" with W_e (the same W for every anchor); positional embedding; the 4 layer tokens
    inserted after SOT (77 -> 81 tokens) and blended 0.01 / 0.99 before blocks 1..depth-1; NO attention mask; pooled
    at the template's end-of-text index (not shifted by the 4 tokens); projected; mean over E; L2 norm."""
    clip, E, T = m.clip, m.options.ensembles, m.text_tokens
    states = ["flawless object"] + [f"{a} anomaly object" for a in anchors]
    out = []
    for s, state in enumerate(states):
        ids = clip.tokenize(["X X X X X " + state])
        eot = int(ids.argmax())
        emb = clip.model.token_embedding(ids)[0]
        ctx = m.ctx_normal if s == 0 else m.ctx_abnormal
        per_ensemble = []
        for e in range(E):
            x = torch.cat([emb[:1], ctx[e], emb[6:]]) + clip.model.positional_embedding
            x = torch.cat([x[:1], T[0], x[1:]])[None]
            for j, blk in enumerate(clip.text_blocks):
                if 0 < j < len(T):
                    x = torch.cat([x[:, :1], 0.01 * x[:, 1:5] + 0.99 * T[j], x[:, 5:]], 1)
                x = blk(x)
            per_ensemble.append(clip.model.ln_final(x)[0, eot] @ clip.model.text_projection)
        out.append(F.normalize(torch.stack(per_ensemble).mean(0), dim=-1))
    return torch.stack(out)


def test_text_path_unshifted_eot_no_mask_ensemble_mean_and_shared_w():
    m = make().eval()
    anchors = ("hole", "scratch")
    with torch.no_grad():
        ours, ref = m.anchor_text_features(anchors), reference_text_features(m, anchors)
        assert torch.allclose(ours, ref, atol=1e-5)
        clean = make(text_path="clean").eval().anchor_text_features(anchors)
    assert not torch.allclose(ours, clean, atol=1e-3)  # the switch: causal mask and the shifted end-of-text index
    assert m.text_features("synth-a").shape == (1 + len(vocabulary("synth-a").anchors), m.clip.embed_dim)
    m.train()
    assert m.vocabulary("mvtec") is MVTEC_TRAIN  # training anchors differ from MVTec's test anchors
    with pytest.raises(ConfigError, match="no defect-type anchors"):
        m.text_features("btad")
    assert make(anchors={"btad": ["dent", "stain"]}).text_features("btad").shape[0] == 3


def test_progressive_token_update():
    m = make()
    hook = deep_token_hook(m.visual_tokens, "blend", 0.01)
    x = torch.randn(2, 1 + 9, m.clip.width)
    inserted = hook(0, x)
    assert inserted.shape == (2, 1 + 4 + 9, m.clip.width)
    assert torch.equal(inserted[:, 1:5], m.visual_tokens[0].expand(2, -1, -1)) and torch.equal(inserted[:, 5:], x[:, 1:])
    blended = hook(3, inserted)
    assert torch.allclose(blended[:, 1:5], 0.01 * inserted[:, 1:5] + 0.99 * m.visual_tokens[3])
    assert torch.equal(blended[:, 0], inserted[:, 0]) and torch.equal(blended[:, 5:], inserted[:, 5:])


# ---- image path, scores and maps -------------------------------------------------------------------------------
def reference_image_path(m, b):
    """z_x = normalize(ln_post(final CLS) @ proj); per tap: drop CLS and the 4 visual tokens, Linear, normalize."""
    feats = m.clip.image_features(b["image"], hook=deep_token_hook(m.visual_tokens, "blend", 0.01))
    n_patches = m.clip.grid[0] * m.clip.grid[1]
    assert all(t.shape[1] == 1 + 4 + n_patches for t in feats.taps)
    visual = m.clip.model.visual
    z_x = F.normalize(visual.ln_post(feats.final[:, 0]) @ visual.proj, dim=-1)
    patches = [F.normalize(a(t[:, 5:]), dim=-1) for a, t in zip(m.adapters, feats.taps)]
    return z_x, patches


def test_image_score_map_and_tap_slicing_against_formulas():
    m = make().eval()
    b = batch()
    with torch.no_grad():
        out = m(b)
        z_x, patches = reference_image_path(m, b)
        text = m.text_features("synth-a")
    z_defects = F.normalize(text[1:].mean(0), dim=-1)  # normalised mean of the defect embeddings, not of the logits
    logits = torch.stack([z_x @ text[0], z_x @ z_defects], -1) / TAU
    assert torch.allclose(out.aux["image_logits"], logits, atol=1e-4)
    assert torch.allclose(out.score, logits.softmax(-1)[:, 1], atol=1e-6)
    expected = 0
    for z in patches:
        grid = (z @ text.T / TAU).softmax(-1).transpose(1, 2).reshape(3, -1, *m.clip.grid)
        up = F.interpolate(grid, size=(SIZE, SIZE), mode="bilinear", align_corners=True)
        expected = expected + (1 - up[:, 0])  # sum over layers of 1 - P(normal)
    assert torch.allclose(out.anomaly_map, expected, atol=1e-5)


def toolbox_focal(probs, target, smooth=1e-5):
    C = probs.shape[1]
    p = probs.detach().permute(0, 2, 3, 1).reshape(-1, C).double()
    one_hot = torch.zeros_like(p).scatter_(1, target.reshape(-1, 1).long(), 1).clamp(smooth / (C - 1), 1 - smooth)
    pt = (one_hot * p).sum(1) + smooth
    return float((-(1 - pt) ** 2 * pt.log()).mean())


def binary_dice(p, g):
    p, g = p.detach().reshape(p.shape[0], -1).double(), g.reshape(g.shape[0], -1).double()
    return float((1 - (2 * (p * g).sum(1) + 1) / (p.sum(1) + g.sum(1) + 1)).mean())


def test_loss_components_against_formulas():
    m = make().train()
    b = batch()
    out = m(b)
    parts = m.loss(out, b)
    hole = vocabulary("synth-a").anchors.index("hole") + 1
    target = (b["mask"] > 0.5).long() * hole  # the anomalous image's pixels carry its type id
    local = sum(toolbox_focal(p, target) + binary_dice(p[:, 0], 1 - b["mask"]) + binary_dice(p[:, 1:].sum(1), b["mask"])
                for p in out.aux["layer_probs"])
    logits = out.aux["image_logits"].detach().double()
    image = float(-(logits.log_softmax(-1)[torch.arange(3), b["label"]]).mean())
    assert abs(float(parts["local"].detach()) - local) < 1e-4 and abs(float(parts["image"].detach()) - image) < 1e-5
    assert torch.allclose(parts["total"], 4 * parts["local"] + parts["image"])
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


def test_released_precision_default_and_bf16_forward_on_the_tiny_model():
    assert load_config("paper", "dapo").backbone.precision == "fp32"  # train.py: autocast off
    assert load_config("paper", "dapo").backbone.clip.pos_embed_interpolation == "bicubic"  # open_clip at load
    import dataclasses

    torch.manual_seed(0)
    m = DAPO(DAPOOptions(), dataclasses.replace(tiny_backbone(), precision="bf16"), SIZE).train()
    b = batch()
    parts = m.loss(m(b), b)  # crashed before (audit D-H1: z_x projected outside autocast)
    parts["total"].backward()
    assert torch.isfinite(m.visual_tokens.grad).all() and m.visual_tokens.grad.abs().sum() > 0


# ---- VisA's verbose labels -----------------------------------------------------------------------------------------
# The label strings of VisA's image_anno.csv per object (VisA's class maps, lowercased; "other" where VisA has it)
VISA_LABELS = {
    "candle": ["chunk of wax missing", "damaged corner of packaging", "weird candle wick", "different colour spot",
               "extra wax in candle", "foreign particals on candle", "wax melded out of the candle", "other"],
    "capsules": ["bubble", "discolor", "scratch", "leak", "misshape"],
    "cashew": ["burnt", "corner or edge breakage", "different colour spot", "middle breakage", "small holes",
               "small scratches", "stuck together", "same colour spot", "other"],
    "chewinggum": ["chunk of gum missing", "corner missing", "scratches", "similar colour spot", "small cracks", "other"],
    "fryum": ["burnt", "corner or edge breakage", "different colour spot", "fryum stuck together", "middle breakage",
              "similar colour spot", "small scratches", "other"],
    "macaroni1": ["chip around edge and corner", "different colour spot", "middle breakage", "similar colour spot",
                  "small cracks", "small scratches", "other"],
    "macaroni2": ["breakage down the middle", "color spot similar to the object", "different color spot",
                  "small chip around edge", "small cracks", "small scratches", "other"],
    "pcb1": ["bent", "melt", "scratch", "missing"], "pcb2": ["bent", "melt", "scratch", "missing"],
    "pcb3": ["bent", "melt", "scratch", "missing"],
    "pcb4": ["burnt", "scratch", "missing", "damage", "extra", "wrong place", "dirt"],
    "pipe_fryum": ["burnt", "corner and edge breakage", "different colour spot", "middle breakage", "similar colour spot",
                   "small scratches", "stuck together", "small cracks", "other"],
}
# The condensed types the released data/visa/meta.json gives each object's images (`defect_cls`)
VISA_META_TYPES = {
    "candle": {"damage", "extra", "melded", "missing", "partical", "spot", "weird wick"}, "capsules": {"bubble"},
    "cashew": {"breakage", "burnt", "hole", "scratch", "spot", "stuck"}, "chewinggum": {"missing", "scratch", "spot"},
    "fryum": {"breakage", "burnt", "scratch", "spot", "stuck"}, "macaroni1": {"chip", "crack", "scratch", "spot"},
    "macaroni2": {"breakage", "chip", "crack", "scratch", "spot"}, "pcb1": {"bent", "melt", "missing", "scratch"},
    "pcb2": {"bent", "melt", "missing", "scratch"}, "pcb3": {"bent", "melt", "missing", "scratch"},
    "pcb4": {"burnt", "damage", "extra", "missing", "scratch", "wrong place"},
    "pipe_fryum": {"breakage", "burnt", "scratch", "spot", "stuck"},
}


def test_every_visa_label_maps_to_the_released_condensed_types():
    used = {label for labels in VISA_LABELS.values() for label in labels}
    assert used == set(VISA_VERBOSE)  # the map covers exactly the 39 label strings VisA uses
    for obj, labels in VISA_LABELS.items():
        types = {VISA_MULTITYPE.anchors[VISA_MULTITYPE.type_index(lab) - 1] for lab in labels
                 if VISA_MULTITYPE.type_index(lab) is not None}
        assert VISA_META_TYPES[obj] <= types, obj  # every type meta.json gives the object comes from one of its labels
        assert set(VISA_MULTITYPE.objects[obj]) == VISA_META_TYPES[obj], obj
        for lab in labels:  # both VisA vocabularies give a label the same index
            assert VISA.type_index(lab) == VISA_MULTITYPE.type_index(lab)
    # the strings of audit D-H2, by index in the 18 types
    assert VISA.index("chunk of gum missing") == 18 and VISA.index("small scratches") == 2
    assert VISA.index("corner or edge breakage") == 3 and VISA.index("weird candle wick") == 5
    assert VISA.anchors[4] == "irregular wick" and VISA_MULTITYPE.anchors[4] == "weird wick"  # test.py vs multi-type
    assert VISA.type_index("discolor") is None and VISA.type_index("bubble, discolor") is None  # no single type
    assert VISA.type_index("middle breakage, corner or edge breakage") == 3  # several labels, one type
    assert VISA.type_index("small cracks", "chewinggum") is None and VISA.type_index("small cracks", "macaroni1") == 7
    with pytest.raises(ConfigError, match="image_anno.csv"):
        VISA.index("anomaly")  # no image_anno.csv: the reader's placeholder has no type


def test_visa_verbose_labels_through_training():
    """Images the released VisA training data leaves out (several labels, or a type outside the object's list)
    are left out of the loss; the rest train with their condensed type."""
    m = make().train()
    classes = ("chewinggum", "chewinggum", "capsules", "chewinggum")
    defects = ["chunk of gum missing", "small cracks", "bubble, discolor", "good"]
    b = batch(4, dataset="visa", classes=classes)
    b["defect"], b["label"] = defects, torch.tensor([1, 1, 1, 0])
    b["mask"][1:3] = b["mask"][0]
    parts = m.loss(m(b), b)
    keep = [0, 3]
    sub = {k: (v[keep] if torch.is_tensor(v) else [v[i] for i in keep]) for k, v in b.items()}
    reference = m.loss(m(sub), sub)
    assert torch.allclose(parts["total"], reference["total"], atol=1e-5) and torch.isfinite(parts["total"])
    none = {**b, "defect": ["small cracks", "bubble, discolor"], "label": torch.tensor([1, 1]),
            "cls": ["chewinggum", "capsules"], "image": b["image"][1:3], "mask": b["mask"][1:3], "dataset": ["visa"] * 2}
    zero = m.loss(m(none), none)
    zero["total"].backward()  # no usable image: a zero loss that still reaches every parameter
    assert float(zero["total"]) == 0 and m.adapters[0].weight.grad is not None


def visa_sample(defect):
    return SimpleNamespace(label=int(defect != "good"), defect=defect)


def test_multitype_visa_restricted_softmax_labels_and_left_out_images():
    grid, size = (4, 4), 8
    defects = ["good", "chunk of gum missing", "scratches", "small cracks", "scratches, similar colour spot",
               "corner missing"]
    masks = np.zeros((len(defects), size, size), bool)
    masks[1:, 2:5, 3:6] = True
    g = torch.Generator().manual_seed(0)
    aux = [{"type_logits": torch.randn(3, 16, 1 + 18, generator=g) * 2} for _ in defects]
    ev = MultiTypeEvaluation(VISA_MULTITYPE, size, grid)
    with pytest.warns(MetricUndefinedWarning, match="spot"):  # no kept image shows "spot"
        ev.add("chewinggum", [visa_sample(d) for d in defects], None, masks, aux)
    row = ev.result()["objects"].iloc[0]
    assert row.images_left_out == 2  # small cracks (crack is not a chewinggum type), two labels
    columns = [0, 2, 15, 18]  # normal, scratch, spot, missing
    kept = {0: 0, 1: 3, 2: 1, 5: 3}  # image -> class of its defect pixels
    scores, labels = [], []
    for i, cls in kept.items():
        logits = aux[i]["type_logits"][..., columns]
        prob = (logits.exp() / logits.exp().sum(-1, keepdim=True)).sum(0)  # restricted softmax, summed over layers
        up = F.interpolate(prob.T.reshape(1, 4, *grid), size=(size, size), mode="bilinear", align_corners=True)[0]
        assert torch.allclose(object_type_scores(aux[i]["type_logits"], columns, grid, size), up, atol=1e-6)
        full = aux[i]["type_logits"].softmax(-1)[..., columns].sum(0)  # a softmax over all 18 types is not it
        assert (full.T.reshape(4, *grid) - prob.T.reshape(4, *grid)).abs().max() > 1e-2
        scores.append(up.reshape(4, -1).T.numpy())
        labels.append(np.where(masks[i].reshape(-1), cls, 0))
    scores, labels = np.concatenate(scores), np.concatenate(labels)
    present = [c for c in range(4) if (labels == c).any()]  # "spot" never occurs: left out of the macro mean
    auroc = np.mean([roc_auc_score(labels == c, scores[:, c]) for c in present])
    ap = np.mean([average_precision_score(labels == c, scores[:, c]) for c in present])
    assert abs(row.auroc - auroc) < 1e-6 and abs(row.ap - ap) < 1e-6
    assert abs(row.f1 - f1_score(labels, scores.argmax(1), average="macro")) < 1e-9


def test_mvtec_screw_manipulated_front_is_fabric_in_multitype_only():
    assert MVTEC_TRAIN.index("manipulated_front") == MVTEC_TRAIN.anchors.index("bent") + 1  # train.py
    assert MVTEC_TEST.index("manipulated_front") == MVTEC_TEST.anchors.index("fabric") + 1  # test_multi_defect.py
    assert MVTEC_TEST.type_index("manipulated_front", "screw") is not None  # kept: fabric is a screw type
    ev = MultiTypeEvaluation(MVTEC_TEST, 8, (4, 4))
    masks = np.zeros((2, 8, 8), bool)
    masks[1, :4] = True
    aux = [{"type_logits": torch.randn(2, 16, 21)} for _ in range(2)]
    with pytest.warns(MetricUndefinedWarning, match="scratch"):
        ev.add("screw", [visa_sample("good"), visa_sample("manipulated_front")], None, masks, aux)
    row = ev.result()["objects"].iloc[0]
    assert row.images_left_out == 0 and not np.isnan(row.auroc)
    assert not np.isnan(ev.result()["types"].set_index("defect").loc["fabric", "auroc"])


# the official test_multi_defect.py lists (product_type2defect_type_real_iad), a sample of them written out
REAL_IAD_OFFICIAL = {
    "switch": ["missing", "contamination", "scratch"], "pcb": ["contamination", "scratch", "missing", "foreign"],
    "toothbrush": ["abrasion", "contamination", "missing"], "zipper": ["contamination", "deformation", "missing", "damage"],
    "tape": ["missing", "contamination", "damage"], "regulator": ["missing", "scratch"],
    "button_battery": ["abrasion", "contamination", "scratch", "pit"]}


def test_real_iad_multitype_uses_the_8_raw_types_and_all_30_objects():
    v = REAL_IAD_MULTITYPE
    assert v.anchors == ("pit", "deformation", "abrasion", "scratch", "damage", "missing", "foreign", "contamination")
    assert len(v.objects) == 30 and all(set(c) <= set(v.anchors) for c in v.objects.values())
    for obj, cands in REAL_IAD_OFFICIAL.items():
        assert list(v.objects[obj]) == cands
    assert {v.index(name) for name in CODES.values()} == set(range(1, 9))  # every raw type is its own class
    assert REAL_IAD.anchors == ("hole", "deformed", "scratch", "damage", "missing parts", "contamination")  # test.py
    assert vocabulary("real-iad", multitype=True) is v and vocabulary("real-iad") is REAL_IAD


def test_eval_forward_scores_the_multitype_anchors_and_the_hook_ignores_the_mode():
    m = make().eval()
    b = batch(2, dataset="visa", classes=("candle",), defect="weird candle wick")
    with torch.no_grad():
        out = m(b)
        _, patches = reference_image_path(m, b)
        multi = m.anchor_text_features(VISA_MULTITYPE.anchors)
        binary = m.text_features("visa")
    expected = torch.stack([z @ multi.T / TAU for z in patches], 1)
    assert torch.allclose(out.aux["type_logits"], expected, atol=1e-4)  # "weird wick", not test.py's "irregular wick"
    assert not torch.allclose(multi[5], binary[5], atol=1e-3) and torch.allclose(multi[:5], binary[:5])
    with torch.no_grad():
        riad = m({**b, "dataset": ["real-iad"] * 2})
    assert riad.aux["type_logits"].shape[-1] == 1 + 8 and len(m.text_features("real-iad")) == 1 + 6
    # audit D-L6: the hook's vocabulary does not depend on the detector's mode
    m.train()
    assert multitype_hook(m, "mvtec").vocabulary is MVTEC_TEST and multitype_hook(m, "visa").vocabulary is VISA_MULTITYPE
    train_out = m(batch(2))
    assert "type_logits" not in train_out.aux
    ev = multitype_hook(m, "synth-a")
    with pytest.raises(ConfigError, match="eval mode"):
        ev.add("weave", [visa_sample("good")], None, np.zeros((1, SIZE, SIZE), bool), [{}])


# ---- multi-type metrics and the smoke pipeline -------------------------------------------------------------------
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
    assert (objects.images_left_out == 0).all()
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
