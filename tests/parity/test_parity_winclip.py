"""WinCLIP against numbers from anomalib's torch model (openvinotoolkit/anomalib @161bb3695, zero-shot, run on the
parity CLIP; see winclip/PROVENANCE.md): text features, per-scale harmonic maps, the fused map and the image score,
with its scales (2, 3) on the 8x8 grid and with (1, 2), which the default relative scale rule gives there."""
import pytest
import torch
import torch.nn.functional as F

from parity_common import IMAGE_SIZE, MAP_RTOL, SCORE_RTOL, assert_rel_close, fixture_batch, load_fixture, parity_backbone
from ssvp_core.methods.winclip import WinCLIP, WinCLIPOptions


@pytest.mark.parametrize("suffix, options", [("", {"scales": (2, 3), "scale_rule": "absolute"}),
                                             ("_scales_1_2", {})])
def test_winclip_parity_maps_and_scores(parity_weights, suffix, options):
    data = load_fixture("winclip", parity_weights)
    cls = str(data["meta/class_name"])
    det = WinCLIP(WinCLIPOptions(**options), parity_backbone(parity_weights), IMAGE_SIZE).eval()
    with torch.no_grad():
        out = det(fixture_batch(data, cls=(cls,)))
    scales = (2, 3) if not suffix else (1, 2)
    assert det.scales == scales
    assert_rel_close(det.text([cls])[0], F.normalize(torch.from_numpy(data["out/text"]), dim=-1), MAP_RTOL, "text")
    for s, scale_map in zip(scales, out.aux["scale_maps"]):
        assert_rel_close(scale_map, data[f"out/scale_map_{s}{suffix}"], MAP_RTOL, f"scale {s} map")
    assert_rel_close(out.anomaly_map, data[f"out/anomaly_map{suffix}"], MAP_RTOL, "anomaly map")
    assert_rel_close(out.score, data[f"out/score{suffix}"], SCORE_RTOL, "image score")
