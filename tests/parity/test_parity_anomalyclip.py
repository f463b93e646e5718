"""AnomalyCLIP against the authors' released code (zqhang/AnomalyCLIP @45ed4dd) on the parity CLIP.

The fixture (tests/parity/anomalyclip/, see its PROVENANCE.md) holds what their test.py and train.py computed with
DPAM on blocks 2-4 of the 4-block tower (DPAM_layer=4, three V-V blocks, so the side stream's input matters): maps
(unsmoothed) and image scores for the published layer setting (last layer) and the nominal one (all four layers), at
112 px and, for the bilinear position-embedding resize, at 140 px; the training loss and the gradients of the
context vectors and deep text prompts for one step on the 2-image batch.
"""
import dataclasses

import numpy as np
import pytest
import torch

from parity_common import (GRAD_RTOL, IMAGE_SIZE, LOSS_RTOL, MAP_RTOL, SCORE_RTOL, assert_gradients, assert_rel_close,
                           fixture_batch, load_fixture, parity_backbone, set_parameters)
from ssvp_core.config import load_config
from ssvp_core.methods.anomalyclip import AnomalyCLIP, AnomalyCLIPOptions

DPAM_START = 2  # their DPAM_layer=4 on 4 blocks: n_blocks - dpam_start + 2


def detector(weights, data, layers: str, image_size: int = IMAGE_SIZE) -> AnomalyCLIP:
    backbone = parity_backbone(weights)
    backbone = dataclasses.replace(backbone, clip=dataclasses.replace(
        backbone.clip, image_size=image_size, pos_embed_interpolation="bilinear"))
    det = AnomalyCLIP(AnomalyCLIPOptions(dpam_start=DPAM_START, layers=layers), backbone, image_size)
    set_parameters(det, data)
    return det


def subset(data: dict, prefix: str, as_prefix: str) -> dict:
    return {as_prefix + k[len(prefix):]: v for k, v in data.items() if k.startswith(prefix)}


@pytest.mark.parametrize("layers", ["published", "nominal"])
def test_parity_anomalyclip_maps_and_scores(parity_weights, layers):
    data = load_fixture("anomalyclip", parity_weights)
    out_key = "out/" if layers == "published" else "out/nominal/"
    det = detector(parity_weights, data, layers).eval()
    with torch.no_grad():
        assert_rel_close(det.text_features(), data[out_key + "text_features"], MAP_RTOL, "text features")
        for i in range(2):  # their test.py scores one image per batch
            single = fixture_batch(data)
            single = {k: v[i:i + 1] for k, v in single.items()}
            out = det(single)
            assert_rel_close(out.anomaly_map[0], data[out_key + "map"][i], MAP_RTOL, f"{layers} map {i}")
            assert_rel_close(out.score[0], data[out_key + "score"][i], SCORE_RTOL, f"{layers} score {i}")
        out = det(fixture_batch(data))  # and batched, as our engine runs it
    assert_rel_close(out.anomaly_map, data[out_key + "map"], MAP_RTOL, f"{layers} maps, batched")
    assert_rel_close(out.score, data[out_key + "score"], SCORE_RTOL, f"{layers} scores, batched")


@pytest.mark.parametrize("layers", ["published", "nominal"])
def test_parity_anomalyclip_loss_and_gradients(parity_weights, layers):
    data = load_fixture("anomalyclip", parity_weights)
    loss_key, grad_key = ("loss/", "grad/") if layers == "published" else ("loss/nominal/", "grad_nominal/")
    det = detector(parity_weights, data, layers).train()
    batch = fixture_batch(data)
    parts = det.loss(det(batch), batch)
    for part in ("image", "local", "total"):
        assert_rel_close(parts[part], data[loss_key + part], LOSS_RTOL, f"{layers} loss {part}")
    parts["total"].backward()
    # the fixture's deep-prompt gradient is dL/d(inserted tokens) in fp32; their autograd additionally rounds it
    # through the fp16 cast of the prompts (relative ~4e-4), which ours matches only to fp16 resolution
    assert_gradients(det, subset(data, grad_key, "grad/"), GRAD_RTOL)
    autograd_key = "grad_autograd_fp16/" if layers == "published" else "grad_nominal_autograd_fp16/"
    assert_rel_close(det.deep_text.grad, data[autograd_key + "deep_text"], 1e-3, f"{layers} deep-prompt grad vs fp16 autograd")


def test_parity_anomalyclip_bilinear_position_embedding(parity_weights):
    """At 140 px their forward resizes the 8x8 position embedding to 10x10 bilinearly; ours does at load."""
    data = load_fixture("anomalyclip", parity_weights)
    det = detector(parity_weights, data, "published", image_size=140).eval()
    image = torch.from_numpy(data["input/image_140"].astype(np.float32))
    with torch.no_grad():
        out = det({"image": image, "cls": ["object"] * 2})
    assert_rel_close(out.anomaly_map, data["out/size140/map"], MAP_RTOL, "maps at 140 px")
    assert_rel_close(out.score, data["out/size140/score"], SCORE_RTOL, "scores at 140 px")


def test_anomalyclip_released_backbone_defaults():
    """The paper profile builds AnomalyCLIP's CLIP as its release does: fp32, bilinear position embedding."""
    cfg = load_config("paper", "anomalyclip")
    assert cfg.backbone.precision == "fp32"
    assert cfg.backbone.clip.pos_embed_interpolation == "bilinear"
    assert load_config("paper", "ssvp").backbone.clip.pos_embed_interpolation == "bicubic"  # other methods untouched
