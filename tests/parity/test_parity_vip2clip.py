"""ViP2-CLIP against the authors' released code (kim0806/ViP2-CLIP @4b5884f) on the parity CLIP: maps, image scores
and logits, one training step's loss and the gradients of every learnable parameter (vip2clip/PROVENANCE.md).
Our defaults are the released behaviour (normal_word=damaged, global feature without ln_post, align_corners=False);
only top-K is set (10 of the 8x8 = 64 patches, as the fixture was made)."""
import numpy as np
import pytest
import torch

from parity_common import (GRAD_RTOL, LOSS_RTOL, MAP_RTOL, SCORE_RTOL, assert_gradients, assert_loss_close,
                           assert_rel_close, fixture_batch, load_fixture, parity_backbone, set_parameters)
from parity_weights import IMAGE_SIZE
from ssvp_core.methods.vip2clip import ViP2CLIP, ViP2CLIPOptions


def build(weights, data, precision="fp32"):
    m = ViP2CLIP(ViP2CLIPOptions(top_k=int(data["meta/top_k"])), parity_backbone(weights, precision=precision), IMAGE_SIZE)
    set_parameters(m, data)
    return m


@pytest.fixture(scope="module")
def data(parity_weights):
    return load_fixture("vip2clip", parity_weights)


def test_parity_vip2clip_maps_and_scores(parity_weights, data):
    m = build(parity_weights, data).eval()
    with torch.no_grad():
        out = m(fixture_batch(data))
    assert_rel_close(out.anomaly_map, data["out/anomaly_map"], MAP_RTOL, "anomaly map")
    assert_rel_close(out.aux["logits"], data["out/image_logits"], SCORE_RTOL, "image logits")
    assert_rel_close(out.score, data["out/score"], SCORE_RTOL, "image score")


def test_parity_vip2clip_training_step(parity_weights, data):
    m = build(parity_weights, data).train()
    batch = fixture_batch(data)
    parts = m.loss(m(batch), batch)
    for ours, theirs in (("total", "total"), ("pixel", "pixel"), ("image", "image")):
        assert_loss_close(parts[ours].detach(), data[f"loss/{theirs}"], LOSS_RTOL, f"loss {ours}")
    parts["total"].backward()
    assert_gradients(m, data, GRAD_RTOL)
    # FGP's key bias: zero in exact arithmetic (softmax over patches ignores q.b_k); both codes give rounding noise
    assert float(m.fgp.k.bias.grad.abs().max()) < 1e-4 * float(np.abs(data["grad/fgp.k.weight"]).max())


def test_parity_vip2clip_bf16_forward_and_training_step(parity_weights, data):
    """backbone.precision=bf16 (autocast of the frozen vision tower; the GPU default of other methods): the maps stay
    within 2e-2 of fp32 (and of the authors' fp32 maps), and a training step runs with finite gradients."""
    m = build(parity_weights, data, precision="bf16").eval()
    with torch.no_grad():
        out = m(fixture_batch(data))
    assert out.anomaly_map.dtype == torch.float32
    assert_rel_close(out.anomaly_map, data["out/anomaly_map"], 2e-2, "bf16 anomaly map")
    assert_rel_close(out.score, data["out/score"], 2e-2, "bf16 score")
    m.train()
    batch = fixture_batch(data)
    parts = m.loss(m(batch), batch)
    assert abs(float(parts["total"].detach()) - float(data["loss/total"])) < 2e-2 * float(data["loss/total"])
    parts["total"].backward()
    grads = [p.grad for p in m.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    ref = data["grad/ctx_pos"]
    assert np.abs(m.ctx_pos.grad.numpy() - ref).max() < 0.1 * np.abs(ref).max()  # same direction, bf16 noise
