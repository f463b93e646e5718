"""Bayes-PFL against the authors' released code (xiaozhen228/Bayes-PFL @ 8f155a0) on the parity CLIP.

tests/parity/bayes_pfl/fixture.npz holds what their code produced (PROVENANCE.md says how): the stage-2 test path of
test.py on six images of two classes (maps, the per-pair-softmax image score, the top-k term, the per-class min-max
mix of their metric code), and one training step of train.py's loop in stage 1 (loss parts, gradients of every
learnable parameter) and in stage 2. The standard-normal draws of their flows and the random prompt pair are stored
under input/ and replayed through the detector's seams (`standard_normal`, `training_pair`).

The learnable parameters are not stored: both sides set them from `parity_parameters` below (a numpy-seeded recipe
by parameter name; their names are mapped in the generating script) and the fixture keeps the recipe's digest.
"""
from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from parity_common import (GRAD_RTOL, IMAGE_SIZE, LOSS_RTOL, MAP_RTOL, SCORE_RTOL, assert_loss_close, assert_rel_close,
                           fixture_batch, load_fixture, parity_backbone)
from ssvp_core.methods.bayes_pfl import BayesPFL, BayesPFLOptions

PARAM_SEED = 20260602
N_FLOWS = 4  # fewer than the default 10 to keep the fixture small; the flow code is one loop over K
MC_TEST = 10


def parity_parameters(shapes: dict[str, tuple[int, ...]], seed: int = PARAM_SEED) -> dict[str, np.ndarray]:
    """Values in general position for every learnable parameter, by our name (sorted order, numpy PCG64): prompts
    spread around the code's means, Linear weights N(0, 0.02) as its init, non-zero biases, free flow parameters small
    enough that tanh does not saturate, temperatures off their initial value."""
    rng = np.random.Generator(np.random.PCG64(seed))
    out = {}
    for name in sorted(shapes):
        shape = shapes[name]
        z = rng.standard_normal(shape)
        leaf = name.split(".")[-1]
        if name in ("context", "state_normal", "state_abnormal"):
            v = {"context": 0.0, "state_normal": 0.5, "state_abnormal": -0.5}[name] + 0.3 * z
        elif name == "temperature_pixel":
            v = np.full(shape, np.log(1 / 0.07) + 0.3)
        elif name == "temperature_image":
            v = np.full(shape, np.log(1 / 0.07) - 0.2)
        elif leaf == "state":
            v = z
        elif leaf in ("u", "w"):
            v = 0.1 * z
        elif leaf == "b":
            v = 0.5 * z
        elif name == "rca.query.weight":
            v = 0.05 * z
        else:  # Linear weights and biases
            v = 0.02 * z
        out[name] = np.asarray(v, dtype=np.float32)
    return out


def parity_test_images(seed: int = 11) -> dict[str, np.ndarray]:
    """The six images of the test-path fixture (written as PNG files for the code's loader): two classes (one with
    the code's small-defect top-k) of three images each, the first anomalous with a brightened box."""
    rng = np.random.Generator(np.random.PCG64(seed))
    images, masks, labels, classes = [], [], [], []
    for cls in ("metal_nut", "screw"):
        for i in range(3):
            img = (rng.random((IMAGE_SIZE, IMAGE_SIZE, 3)) * 255).astype(np.uint8)
            mask = np.zeros((IMAGE_SIZE, IMAGE_SIZE), np.uint8)
            if i == 0:
                y0, x0 = (20, 50) if cls == "screw" else (40, 30)
                mask[y0:y0 + 30, x0:x0 + 36] = 1
                img[mask > 0] = (img[mask > 0] * 0.3 + 170).astype(np.uint8)
            images.append(img)
            masks.append(mask)
            labels.append(int(i == 0))
            classes.append(cls)
    return {"image": np.stack(images), "mask": np.stack(masks), "label": np.array(labels), "cls": classes}


def parameter_digest(values: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for name in sorted(values):
        h.update(name.encode())
        h.update(values[name].tobytes())
    return h.hexdigest()[:16]


class Replay:
    """The standard-normal draws the authors' flows made, by role (image / normal / abnormal)."""

    def __init__(self, data: dict, tag: str):
        self.draws = {role: torch.from_numpy(data[f"input/{tag}_eps_{role}"]) for role in ("image", "normal", "abnormal")}

    def __call__(self, role: str, shape, like: torch.Tensor) -> torch.Tensor:
        t = self.draws[role]
        assert tuple(t.shape) == tuple(shape), f"{role}: the code drew {tuple(t.shape)}, ours asks for {tuple(shape)}"
        return t.to(like)


def detector(weights, data) -> BayesPFL:
    backbone = parity_backbone(weights, layers=(1, 2, 3, 4), activation="gelu", precision="fp32")
    det = BayesPFL(BayesPFLOptions(n_flows=N_FLOWS, mc_test=MC_TEST, top_k_size=IMAGE_SIZE), backbone, IMAGE_SIZE)
    own = dict(det.named_parameters())
    trainable = {n: tuple(p.shape) for n, p in own.items() if p.requires_grad}
    values = parity_parameters(trainable)
    assert parameter_digest(values) == str(data["meta/param_digest"]), "parity_parameters changed: regenerate the fixture"
    with torch.no_grad():
        for name, v in values.items():
            own[name].copy_(torch.from_numpy(v))
    return det


@pytest.fixture(scope="module")
def data(parity_weights):
    return load_fixture("bayes_pfl", parity_weights)


def test_parity_bayes_pfl_test_path(parity_weights, data):
    """Maps, global and top-k terms and the per-class min-max scores of test.py (stage 2), six images in one batch
    (the code runs them one by one and reuses the first image's image-agnostic samples)."""
    det = detector(parity_weights, data).eval()
    det.standard_normal = Replay(data, "test")
    inputs = parity_test_images()
    images = torch.from_numpy(inputs["image"]).permute(0, 3, 1, 2).float() / 255  # as ToTensor reads the PNG files
    cls = inputs["cls"]
    batch = {"image": images, "mask": torch.from_numpy(inputs["mask"]).float(), "label": torch.from_numpy(inputs["label"]),
             "cls": cls, "defect": ["x"] * len(cls), "dataset": ["parity"] * len(cls)}
    with torch.no_grad():
        out = det(batch)
    assert_rel_close(out.anomaly_map, data["out/test_map"], MAP_RTOL, "anomaly map")
    assert_rel_close(out.aux["s_global"], data["out/test_s_global"], SCORE_RTOL, "global score")
    assert_rel_close(out.aux["s_local"], data["out/test_s_local"], SCORE_RTOL, "top-k score")
    scores = []
    for c in dict.fromkeys(cls):
        rows = [i for i, ci in enumerate(cls) if ci == c]
        scores.append(det.class_scores({k: out.aux[k][rows].numpy().astype(np.float64) for k in det.score_part_keys}))
    assert_rel_close(np.concatenate(scores), data["out/test_score"], SCORE_RTOL, "per-class min-max score")


def _train_step(det, data, tag):
    det.standard_normal = Replay(data, tag)
    det.training_pair = lambda device: int(data[f"input/{tag}_pair"])
    batch = fixture_batch(data, cls=("metal_nut", "screw"))
    parts = det.loss(det(batch), batch)
    parts["total"].backward()
    return parts


def test_parity_bayes_pfl_stage1_training_step(parity_weights, data):
    det = detector(parity_weights, data).train()
    parts = _train_step(det, data, "train")
    for name in ("total", "image", "local", "kl", "orthogonal"):
        assert_loss_close(parts[name].detach(), data[f"loss/train_{name}"], LOSS_RTOL, f"stage-1 loss {name}")
    reference = {k[len("grad/"):]: v for k, v in data.items() if k.startswith("grad/")}
    for name, p in det.named_parameters():
        if name in reference:
            assert p.grad is not None, f"no gradient reached {name}"
            assert_rel_close(p.grad, reference[name], GRAD_RTOL, f"grad {name}")
        elif p.requires_grad:  # the stage-2 modules: unused in stage 1 by the code too
            assert p.grad is None, f"{name} gets a gradient the code's stage 1 does not give it"
            assert name.startswith(("fuse.", "image_mapping.")), name


def test_parity_bayes_pfl_stage2_training_step(parity_weights, data):
    det = detector(parity_weights, data).train()
    det.stage = 2
    parts = _train_step(det, data, "train2")
    assert_loss_close(parts["total"].detach(), data["loss/train2_total"], LOSS_RTOL, "stage-2 loss")
    reference = {k[len("grad_stage2/"):]: v for k, v in data.items() if k.startswith("grad_stage2/")}
    assert reference
    for name, p in det.named_parameters():
        if name == "fuse.attention.bias":  # shifts every logit of a softmax: its exact gradient is 0 (both are ~1e-9)
            assert p.grad.abs().max() < 1e-6 and np.abs(reference[name]).max() < 1e-6
        elif name in reference:
            assert_rel_close(p.grad, reference[name], GRAD_RTOL, f"stage-2 grad {name}")
        else:  # the code's stage-2 optimiser holds only class_mapping, image_mapping and fuse
            assert p.grad is None, f"{name} would change in stage 2"
