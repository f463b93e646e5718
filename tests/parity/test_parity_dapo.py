"""DAPO against the authors' released code (boschresearch/defect-aware-prompt-optimization @ad2ceab) on the parity
CLIP: binary maps, image scores and logits, the per-object multi-type score volumes of test_multi_defect.py, one
training step's loss and the gradients of every learnable parameter (dapo/PROVENANCE.md). Default options."""
import numpy as np
import pytest
import torch

from parity_common import (GRAD_RTOL, LOSS_RTOL, MAP_RTOL, SCORE_RTOL, assert_gradients, assert_loss_close,
                           assert_rel_close, fixture_batch, load_fixture, parity_backbone, set_parameters)
from parity_weights import GRID, IMAGE_SIZE
from ssvp_core.engine.multitype import multitype_hook, object_type_scores
from ssvp_core.methods.dapo import DAPO, DAPOOptions


def build(weights, data, precision="fp32"):
    m = DAPO(DAPOOptions(), parity_backbone(weights, precision=precision), IMAGE_SIZE)
    set_parameters(m, data)
    return m


def batch_of(data):
    return fixture_batch(data, defect=str(data["input/defect"]), dataset="mvtec")


@pytest.fixture(scope="module")
def data(parity_weights):
    return load_fixture("dapo", parity_weights)


def test_parity_dapo_maps_scores_and_type_maps(parity_weights, data):
    m = build(parity_weights, data).eval()
    with torch.no_grad():
        out = m(batch_of(data))
    assert_rel_close(out.anomaly_map, data["out/anomaly_map"], MAP_RTOL, "anomaly map")
    assert_rel_close(out.score, data["out/score"], SCORE_RTOL, "image score")
    obj = str(data["meta/object"])
    vocab = multitype_hook(m, "mvtec").vocabulary
    columns = [0] + [vocab.anchors.index(c) + 1 for c in vocab.objects[obj]]
    ours = torch.stack([object_type_scores(t, columns, (GRID, GRID), IMAGE_SIZE) for t in out.aux["type_logits"]])
    assert_rel_close(ours.permute(0, 2, 3, 1), data["out/type_maps"], MAP_RTOL, f"per-defect-type maps of {obj}")


def test_parity_dapo_training_step(parity_weights, data):
    m = build(parity_weights, data).train()
    batch = batch_of(data)
    out = m(batch)
    assert_rel_close(out.aux["image_logits"].detach(), data["out/image_logits"], SCORE_RTOL, "image logits")
    parts = m.loss(out, batch)
    for name in ("total", "local", "image"):
        assert_loss_close(parts[name].detach(), data[f"loss/{name}"], LOSS_RTOL, f"loss {name}")
    parts["total"].backward()
    assert_gradients(m, data, GRAD_RTOL)


@pytest.mark.slow  # ~30 s: bf16 matmuls on a CPU, backward through the vision tower
def test_parity_dapo_bf16_forward_and_training_step(parity_weights, data):
    """backbone.precision=bf16 (the crash of audit D-H1): the forward runs, maps stay within 2e-2 of the fp32
    reference, and a training step sends finite gradients through the frozen tower to the visual tokens."""
    m = build(parity_weights, data, precision="bf16").eval()
    with torch.no_grad():
        out = m(batch_of(data))
    assert out.anomaly_map.dtype == torch.float32 and out.aux["type_logits"].dtype == torch.float32
    assert_rel_close(out.anomaly_map, data["out/anomaly_map"], 2e-2, "bf16 anomaly map")
    assert_rel_close(out.score, data["out/score"], 2e-2, "bf16 score")
    m.train()
    batch = batch_of(data)
    parts = m.loss(m(batch), batch)
    assert abs(float(parts["total"].detach()) - float(data["loss/total"])) < 2e-2 * float(data["loss/total"])
    parts["total"].backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters() if p.requires_grad)
    ref = data["grad/visual_tokens"]
    assert np.abs(m.visual_tokens.grad.numpy() - ref).max() < 0.1 * np.abs(ref).max()
