"""AdaCLIP against numbers produced by running its released code (caoyunkang/AdaCLIP @e27ee32) on the parity CLIP:
maps, image scores, one training step's loss and the gradients of every learnable parameter (adaclip/PROVENANCE.md).

The release casts its prompts to float16 (`.half()`) before inserting them into the float32 stream; the default
`prompt_rounding=fp16` does the same and is compared with the unmodified release. `prompt_rounding=none` is compared
with the same run with those casts made no-ops (`unrounded/*`).

Their HSF draws k-means++ labels from NumPy's global stream; the fixture stores the labels their run drew and the
`cluster_labels` seam of our detector replays them."""
import numpy as np
import torch

import ssvp_core.methods.adaclip as adaclip_module
from parity_common import (FP16_GRAD_RTOL, GRAD_RTOL, IMAGE_SIZE, LOSS_RTOL, MAP_RTOL, ROUNDED_LOSS_RTOL, SCORE_RTOL,
                           InsertedGradients, assert_gradients, assert_loss_close, assert_rel_close, fixture_batch,
                           load_fixture, parity_backbone, relative_difference, set_parameters)
from ssvp_core.methods.adaclip import AdaCLIP, AdaCLIPOptions


def detector(weights, data, depth=3, clusters=20, top=100, prefix="", rounding="fp16"):
    """Our AdaCLIP on the parity CLIP (exact GELU, as their model configs build it) with the fixture's parameters."""
    det = AdaCLIP(AdaCLIPOptions(depth=depth, hsf_clusters=clusters, hsf_top=top, prompt_rounding=rounding),
                  parity_backbone(weights, activation="gelu"), IMAGE_SIZE)
    params = {k[len(prefix):]: v for k, v in data.items() if k.startswith(prefix + "param/")}
    if prefix:  # the depth-4 case keeps the heads of the main case and has its own static prompts
        params = {**{k: v for k, v in data.items() if k.startswith("param/")}, **params}
    set_parameters(det, params)
    return det


def replay(det, labels):
    """Feed the k-means labels their run drew (one row per call: the label of each patch, -1 where their top k did not
    pick it), in call order, through the detector's seam."""
    queue = [torch.as_tensor(np.asarray(row), dtype=torch.long) for row in labels]
    seen = []

    def cluster_labels(features, patch_index):
        seen.append(tuple(features.shape))
        per_patch = queue.pop(0)
        assert sorted(patch_index.tolist()) == sorted(torch.nonzero(per_patch >= 0)[:, 0].tolist()), \
            "our top-k picked other patches than theirs"
        return per_patch[patch_index]

    det.cluster_labels = cluster_labels
    return seen


def test_adaclip_parity_maps_and_scores(parity_weights):
    data = load_fixture("adaclip", parity_weights)
    det = detector(parity_weights, data).eval()
    seen = replay(det, data["input/hsf_labels_eval"])
    batch = fixture_batch(data)  # both images in one batch: their code runs them one at a time
    with torch.no_grad():
        out = det(batch)
        g0 = det.clip.project(det.clip.image_features(batch["image"]).final[:, 0])
        text = det.text_features(g0, det.class_names(batch))
    assert seen == [(64, 4 * 128)] * 2  # all 64 patches (top 100 of an 8x8 grid), 4 taps concatenated
    assert_rel_close(text.transpose(1, 2), data["out/text_features"], MAP_RTOL, "text features")
    assert_rel_close(out.anomaly_map, data["out/anomaly_map"], MAP_RTOL, "anomaly map")
    assert_rel_close(out.score, data["out/score"], SCORE_RTOL, "image score")


def test_adaclip_parity_prompt_depth_4_and_top_k_selection(parity_weights):
    """The released depth 4 (every block of the parity CLIP prompted) and k = 8, so HSF keeps the top 40 of 64."""
    data = load_fixture("adaclip", parity_weights)
    det = detector(parity_weights, data, depth=4, clusters=8, top=40, prefix="depth4/").eval()
    seen = replay(det, data["input/depth4_hsf_labels_eval"])
    with torch.no_grad():
        out = det(fixture_batch(data))
    assert seen == [(40, 4 * 128)] * 2
    assert_rel_close(out.anomaly_map, data["depth4/out/anomaly_map"], MAP_RTOL, "anomaly map (depth 4)")
    assert_rel_close(out.score, data["depth4/out/score"], SCORE_RTOL, "image score (depth 4, top 40)")


def _single(batch, i):
    return {k: (v[i:i + 1] if torch.is_tensor(v) else v[i:i + 1]) for k, v in batch.items()}


def test_adaclip_parity_training_step(parity_weights, monkeypatch):
    """One step of their train_one_batch on the anomalous image (batch 1, their only batch size): loss and the
    gradients of every learnable parameter; the normal image's loss as well.

    Their `.half()` rounds the prompts' gradients through float16 in backward. Compared at GRAD_RTOL: the float32
    gradient reaching every inserted token block (before that rounding), and every parameter's gradient once their
    float32 gradients are handed to our rounding; end to end, the prompt parameters' gradients at float16 resolution
    (parity_common)."""
    data = load_fixture("adaclip", parity_weights)
    det = detector(parity_weights, data).train()
    replay(det, [data["input/hsf_labels_train"], data["input/hsf_labels_normal"]])
    inserted = InsertedGradients(adaclip_module.round_as_released)
    monkeypatch.setattr(adaclip_module, "round_as_released", inserted)
    batch = fixture_batch(data)
    parts = det.loss(det(_single(batch, 0)), _single(batch, 0))
    for key in ("total", "image", "local"):
        assert_loss_close(parts[key], data[f"loss/{key}"], ROUNDED_LOSS_RTOL, f"loss {key}")
    parts["total"].backward(retain_graph=True)
    trainable = {n for n, p in det.named_parameters() if p.requires_grad}
    assert trainable == {k[len("grad/"):] for k in data if k.startswith("grad/")}  # every learnable parameter
    # in forward order: the visual blocks 0..2 (one image), then the text blocks 1..2 (48 sentences each)
    theirs = list(torch.from_numpy(data["grad_inserted/visual"])) + list(torch.from_numpy(data["grad_inserted/text"]))
    assert [tuple(g.shape) for g in inserted.seen] == [tuple(g.shape) for g in theirs]
    for i, (ours, reference) in enumerate(zip(inserted.seen, theirs)):
        assert_rel_close(ours, reference, GRAD_RTOL, f"gradient reaching inserted prompt block {i}")
    through_rounding = {n for n in trainable if n.startswith(("static_", "dynamic_"))}
    for name, p in det.named_parameters():  # end to end: ours rounds our float32 gradients, theirs theirs
        if name in through_rounding:
            assert_rel_close(p.grad, data[f"grad/{name}"], FP16_GRAD_RTOL, f"grad {name} (end to end)")
    det.zero_grad()
    inserted.inject = theirs
    parts["total"].backward()
    assert_gradients(det, data, GRAD_RTOL)
    with torch.no_grad():
        normal = det.loss(det(_single(batch, 1)), _single(batch, 1))
    for key in ("total", "image", "local"):
        assert_loss_close(normal[key], data[f"loss/normal_{key}"], ROUNDED_LOSS_RTOL, f"normal-image loss {key}")


def test_adaclip_parity_unrounded_switch(parity_weights):
    """`prompt_rounding=none` equals their code with the three `.half()` casts made no-ops (maps, scores, loss, prompt
    and head gradients at the usual tolerances) and is measurably off the release as published (maps 6.7e-5 relative
    on these weights, PROVENANCE), where the default is within fp32 noise of it."""
    data = load_fixture("adaclip", parity_weights)
    batch = fixture_batch(data)

    def evaluated(rounding, labels):
        det = detector(parity_weights, data, rounding=rounding).eval()
        replay(det, data[labels])
        with torch.no_grad():
            return det(batch)

    unrounded = evaluated("none", "input/unrounded/hsf_labels_eval")
    assert_rel_close(unrounded.anomaly_map, data["unrounded/out/anomaly_map"], MAP_RTOL, "anomaly map (unrounded)")
    assert_rel_close(unrounded.score, data["unrounded/out/score"], SCORE_RTOL, "image score (unrounded)")
    off = relative_difference(unrounded.anomaly_map, data["out/anomaly_map"])
    on = relative_difference(evaluated("fp16", "input/hsf_labels_eval").anomaly_map, data["out/anomaly_map"])
    assert 2e-5 < off < 5e-4 and on < off / 10, f"maps vs the release: unrounded {off:.2g}, rounded {on:.2g}"

    det = detector(parity_weights, data, rounding="none").train()
    replay(det, [data["input/unrounded/hsf_labels_train"]])
    parts = det.loss(det(_single(batch, 0)), _single(batch, 0))
    for key in ("total", "image", "local"):
        assert_loss_close(parts[key], data[f"unrounded/loss/{key}"], LOSS_RTOL, f"loss {key} (unrounded)")
    parts["total"].backward()
    stored = {k[len("unrounded/"):]: v for k, v in data.items() if k.startswith("unrounded/grad/")}
    assert len(stored) == 2 + 2 * 5 + 4 + 2  # static prompts, every bias, the CLS head's weight
    assert_gradients(det, stored, GRAD_RTOL)
