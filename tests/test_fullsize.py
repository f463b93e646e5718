"""The paper's architectures at full size (random weights, one image): 37x37 grids on both backbones and the
output shapes SSVP.md §2 gives."""
import pytest
import torch

from ssvp_core.config import load_config
from ssvp_core.methods import build_detector


@pytest.mark.slow
def test_full_size_ssvp_grids_and_shapes():
    cfg = load_config("paper", "ssvp", ["backbone.clip.pretrained=none", "backbone.dino.pretrained=none",
                                        "device=cpu", "backbone.precision=fp32"])
    det = build_detector(cfg).eval()
    assert det.clip.grid == (37, 37) and det.aux.grid == (37, 37)
    assert det.clip.width == 1024 and det.clip.embed_dim == 768 and det.aux.width == 1024
    assert len(det.aux.model.blocks) == 24 and det.aux.model.num_prefix_tokens == 5
    assert det.input_sizes() == [518, 592]
    batch = {"image": torch.rand(1, 3, 518, 518), "views": {592: torch.rand(1, 3, 592, 592)}, "cls": ["bottle"]}
    with torch.inference_mode():
        f_cl, f_cg, f_dl, f_dg = det.split_features(det.frozen_features(batch))
        out = det(batch)
    assert [t.shape for t in f_cl] == [torch.Size([1, 1369, 768])] * 4 and f_cg.shape == (1, 768)
    assert [t.shape for t in f_dl] == [torch.Size([1, 1369, 1024])] * 4 and f_dg.shape == (1, 1024)
    assert out.anomaly_map.shape == (1, 518, 518) and out.score.shape == (1,)
    assert [p.shape for p in out.aux["layer_maps"]] == [torch.Size([1, 1, 37, 37])] * 4
    assert out.aux["t_final"].shape == (1, 6, 768)
