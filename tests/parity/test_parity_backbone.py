"""The parity CLIP loads through open_clip's file path unchanged, both activations are what they claim, and the
taps are the residual stream after each block (the convention every fixture relies on)."""
import torch
import torch.nn.functional as F

from parity_common import IMAGE_SIZE, fixture_batch, parity_backbone
from parity_weights import parity_state_dict
from ssvp_core.backbones import ClipBackbone


def test_parity_clip_loads_the_weights_exactly(parity_weights):
    clip = ClipBackbone(parity_backbone(parity_weights).clip)
    state = parity_state_dict()
    ours = clip.model.state_dict()
    assert set(state) <= set(ours)
    for name, value in state.items():
        assert torch.equal(ours[name], value), name


def test_parity_clip_activation_switch_gives_exact_gelu(parity_weights):
    quick = ClipBackbone(parity_backbone(parity_weights).clip)
    exact = ClipBackbone(parity_backbone(parity_weights, activation="gelu").clip)
    x = fixture_batch()["image"]
    with torch.no_grad():
        h = quick.embed_image(x)
        blk_q, blk_e = quick.blocks[0], exact.blocks[0]
        inner = blk_q.mlp.c_fc(blk_q.ln_2(h))
        # the MLP activation, written out: QuickGELU x*sigmoid(1.702x) and exact GELU
        assert torch.allclose(blk_q.mlp.gelu(inner), inner * torch.sigmoid(1.702 * inner), atol=1e-6)
        assert torch.allclose(blk_e.mlp.gelu(inner), F.gelu(inner), atol=1e-6)
        fq, fe = quick.image_features(x), exact.image_features(x)
    assert quick.grid == (IMAGE_SIZE // 14,) * 2
    assert (fq.final - fe.final).abs().max() > 1e-3  # the switch reaches the forward pass
