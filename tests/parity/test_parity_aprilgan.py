"""APRIL-GAN against numbers from its released code (ByChelsea/VAND-APRIL-GAN @f13b8a6, run on the parity CLIP; see
aprilgan/PROVENANCE.md): the prompt-ensemble text features, the zero-shot maps and image scores of test.py, and the
loss and Linear-layer gradients of one train.py step, with the Linear layers their code initialised."""
import torch

from parity_common import (IMAGE_SIZE, LOSS_RTOL, MAP_RTOL, SCORE_RTOL, assert_gradients, assert_loss_close,
                           assert_rel_close, fixture_batch, load_fixture, parity_backbone, set_parameters)
from ssvp_core.methods.aprilgan import APRILGAN, APRILGANOptions


def setup(weights):
    data = load_fixture("aprilgan", weights)
    # their loader builds exact GELU when the image size differs from the config's (518 vs 336 in the release)
    det = APRILGAN(APRILGANOptions(), parity_backbone(weights, activation="gelu"), IMAGE_SIZE)
    set_parameters(det, data)
    cls = str(data["meta/class_name"])
    return data, det, fixture_batch(data, cls=(cls,)), cls


def test_aprilgan_parity_text_maps_and_scores(parity_weights):
    data, det, batch, cls = setup(parity_weights)
    with torch.no_grad():
        out = det.eval()(batch)
    assert_rel_close(det.text([cls])[0], data["out/text"], MAP_RTOL, "text features")
    assert_rel_close(out.anomaly_map, data["out/anomaly_map"], MAP_RTOL, "anomaly map")
    assert_rel_close(out.score, data["out/score"], SCORE_RTOL, "image score")


def test_aprilgan_parity_loss_and_gradients(parity_weights):
    data, det, batch, _ = setup(parity_weights)
    det.train()
    loss = det.loss(det(batch), batch)["total"]
    assert_loss_close(loss, data["loss/total"], LOSS_RTOL, "loss")
    loss.backward()
    assert_gradients(det, data)
