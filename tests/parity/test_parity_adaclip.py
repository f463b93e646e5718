"""AdaCLIP against numbers produced by running its released code (caoyunkang/AdaCLIP @e27ee32) on the parity CLIP:
maps, image scores, one training step's loss and the gradients of every learnable parameter (adaclip/PROVENANCE.md).

Their HSF draws k-means++ labels from NumPy's global stream; the fixture stores the labels their run drew and the
`cluster_labels` seam of our detector replays them."""
import numpy as np
import torch

from parity_common import (GRAD_RTOL, IMAGE_SIZE, LOSS_RTOL, MAP_RTOL, SCORE_RTOL, assert_gradients, assert_rel_close,
                           fixture_batch, load_fixture, parity_backbone, set_parameters)
from ssvp_core.methods.adaclip import AdaCLIP, AdaCLIPOptions


def detector(weights, data, depth=3, clusters=20, top=100, prefix=""):
    """Our AdaCLIP on the parity CLIP (exact GELU, as their model configs build it) with the fixture's parameters."""
    det = AdaCLIP(AdaCLIPOptions(depth=depth, hsf_clusters=clusters, hsf_top=top),
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


def test_adaclip_parity_training_step(parity_weights):
    """One step of their train_one_batch on the anomalous image (batch 1, their only batch size): loss and the
    gradients of every learnable parameter; the normal image's loss as well."""
    data = load_fixture("adaclip", parity_weights)
    det = detector(parity_weights, data).train()
    replay(det, [data["input/hsf_labels_train"], data["input/hsf_labels_normal"]])
    batch = fixture_batch(data)
    parts = det.loss(det(_single(batch, 0)), _single(batch, 0))
    for key in ("total", "image", "local"):
        assert_rel_close(parts[key], data[f"loss/{key}"], LOSS_RTOL, f"loss {key}")
    parts["total"].backward()
    trainable = {n for n, p in det.named_parameters() if p.requires_grad}
    assert trainable == {k[len("grad/"):] for k in data if k.startswith("grad/")}  # every learnable parameter
    assert_gradients(det, data, GRAD_RTOL)
    with torch.no_grad():
        normal = det.loss(det(_single(batch, 1)), _single(batch, 1))
    for key in ("total", "image", "local"):
        assert_rel_close(normal[key], data[f"loss/normal_{key}"], LOSS_RTOL, f"normal-image loss {key}")
