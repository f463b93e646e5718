"""VisualAD against numbers from its released code (7HHHHH/VisualAD @8479132, run on the parity CLIP; see
visualad/PROVENANCE.md).

The fixture holds what their test.py computed (maps before the Gaussian, image scores after it, with the pretrained
ln_post as test.py leaves it, and with the trained one), the same at 140 px (their forward resizes the position
embedding bilinearly), the loss of one train.py step and its gradients with dropout off, the same step with dropout
on from a fixed seed, the token gradients after their per-token clipping, their optimiser's per-parameter settings,
their learning rates per epoch, and the layout of the checkpoint file their save_checkpoint writes.
The learnable parameters (about 4 M values at width 256, most of them SCA's 1536 positions) are not stored: both sides
draw them from `draw_parameters` (numpy's PCG64, fixed seed). Gradients of the W x W matrices are stored as 8 random
projections of their rows (`gradient_record`), every other gradient in full.
"""
from __future__ import annotations

import dataclasses
import hashlib
import math

import numpy as np
import pytest
import torch

from parity_common import (GRAD_RTOL, IMAGE_SIZE, LOSS_RTOL, MAP_RTOL, SCORE_RTOL, assert_rel_close, fixture_batch,
                           load_fixture, parity_backbone)
from ssvp_core.config import load_config
from ssvp_core.methods.visualad import VisualAD, VisualADOptions, read_released
from visualad_release import write_released_checkpoint

PARAM_SEED, SKETCH_SEED = 20261204, 20261205
SKETCH_COLUMNS, FULL_LIMIT = 8, 20_000
RELEASED_SIGMA = 4.0  # test.py --sigma, in pixels of whatever size it runs at
DROPOUT_SEED = 1234
CLIP_TEST_SCALE = 3.0


def _scale(name: str, shape: tuple[int, ...]) -> tuple[float, float]:
    """(mean, std) per parameter: sizeable everywhere, so that every path (SCA's residual, its positions, the gate,
    ln_post) moves the outputs by more than the tolerances."""
    width = shape[-1]
    if name.endswith("res_scale"):
        return 0.5, 0.1
    if "norm" in name or name.startswith("ln_post"):
        return (1.0, 0.1) if name.endswith("weight") else (0.0, 0.05)
    if name.endswith(("token",)):
        return 0.0, width ** -0.5
    if name.endswith(("anchors", "positions")):
        return 0.0, 0.5
    if name.endswith("gate.bias"):
        return 0.0, 0.5
    if name.endswith("bias"):
        return 0.0, 0.02
    return 0.0, width ** -0.5


def draw_parameters(shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """float32 values for every trainable parameter, in sorted name order from one PCG64 stream."""
    rng = np.random.Generator(np.random.PCG64(PARAM_SEED))
    out = {}
    for name in sorted(shapes):
        mean, std = _scale(name, shapes[name])
        out[name] = (mean + std * rng.standard_normal(shapes[name])).astype(np.float32)
    return out


def parameters_digest(params: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for name in sorted(params):
        h.update(name.encode())
        h.update(np.ascontiguousarray(params[name]).tobytes())
    return h.hexdigest()[:16]


def sketch_matrix(columns: int) -> np.ndarray:
    rng = np.random.Generator(np.random.PCG64(SKETCH_SEED + columns))
    return rng.standard_normal((columns, SKETCH_COLUMNS)) / math.sqrt(columns)


def gradient_record(name: str, grad: np.ndarray, n_patches: int) -> dict[str, np.ndarray]:
    """What the fixture keeps of one gradient: SCA positions up to the grid's patch count (the rest gets none), large
    matrices as row projections, everything else in full."""
    grad = np.asarray(grad, dtype=np.float64)
    if name.endswith("positions"):
        return {f"grad/{name}": grad[:, :n_patches]}
    if grad.size > FULL_LIMIT:
        return {f"grad_sketch/{name}": grad.reshape(grad.shape[0], -1) @ sketch_matrix(grad.reshape(grad.shape[0], -1).shape[1])}
    return {f"grad/{name}": grad}


def parity_detector(weights, image_size: int = IMAGE_SIZE, **options) -> VisualAD:
    backbone = parity_backbone(weights)
    backbone = dataclasses.replace(backbone, clip=dataclasses.replace(backbone.clip, image_size=image_size,
                                                                       pos_embed_interpolation="bilinear"))
    # test.py's sigma 4 is in pixels of the map it filters; ours is stated for 518 px and scaled to the image size
    opts = VisualADOptions(score_sigma=RELEASED_SIGMA * 518 / image_size, **options)
    return VisualAD(opts, backbone, image_size)


def trainable_shapes(det: VisualAD) -> dict[str, tuple[int, ...]]:
    return {n: tuple(p.shape) for n, p in det.named_parameters() if p.requires_grad}


def set_drawn_parameters(det: VisualAD, data: dict) -> dict[str, np.ndarray]:
    params = draw_parameters(trainable_shapes(det))
    assert parameters_digest(params) == str(data["meta/params_digest"]), "draw_parameters changed: regenerate the fixture"
    own = dict(det.named_parameters())
    with torch.no_grad():
        for name, value in params.items():
            own[name].copy_(torch.from_numpy(value))
    return params


def no_dropout(det: VisualAD) -> VisualAD:
    for m in det.modules():
        if isinstance(m, torch.nn.Dropout):
            m.eval()
    return det


def setup(weights, image_size: int = IMAGE_SIZE, **options):
    data = load_fixture("visualad", weights)
    det = parity_detector(weights, image_size, **options)
    params = set_drawn_parameters(det, data)
    return data, det, params


@pytest.mark.parametrize("ln_post", ["pretrained", "trained"])
def test_parity_visualad_maps_and_scores(parity_weights, ln_post):
    data, det, _ = setup(parity_weights, test_ln_post=ln_post)
    key = "out/" if ln_post == "pretrained" else "out/trained_ln_post/"
    det.eval()
    batch = fixture_batch(data)
    with torch.no_grad():
        for i in range(2):  # their test.py runs one image per batch
            out = det({k: v[i:i + 1] for k, v in batch.items()})
            assert_rel_close(out.anomaly_map[0], data[key + "map"][i], MAP_RTOL, f"{ln_post} map {i}")
            assert_rel_close(out.score[0], data[key + "score"][i], SCORE_RTOL, f"{ln_post} score {i}")
        out = det(batch)
    assert_rel_close(out.anomaly_map, data[key + "map"], MAP_RTOL, f"{ln_post} maps, batched")
    assert_rel_close(out.score, data[key + "score"], SCORE_RTOL, f"{ln_post} scores, batched")


def test_parity_visualad_bilinear_position_embedding(parity_weights):
    """At 140 px their forward resizes the 8x8 position embedding to 10x10 bilinearly; ours does at load."""
    data, det, _ = setup(parity_weights, image_size=140)
    image = torch.from_numpy(data["input/image_140"].astype(np.float32))
    with torch.no_grad():
        out = det.eval()({"image": image, "cls": ["object"] * 2})
    assert_rel_close(out.anomaly_map, data["out/size140/map"], MAP_RTOL, "maps at 140 px")
    assert_rel_close(out.score, data["out/size140/score"], SCORE_RTOL, "scores at 140 px")


def _train_step(det: VisualAD, data: dict, scale: float = 1.0):
    batch = fixture_batch(data)
    parts = det.loss(det(batch), batch)
    (scale * parts["total"]).backward()
    return parts


def test_parity_visualad_loss_and_gradients(parity_weights):
    data, det, _ = setup(parity_weights)
    parts = _train_step(no_dropout(det.train()), data)
    for part in ("local", "image", "contrast", "total"):
        assert_rel_close(parts[part], data["loss/" + part], LOSS_RTOL, f"loss {part}")
    n_patches = det.grid[0] * det.grid[1]
    checked = 0
    for name, p in det.named_parameters():
        if not p.requires_grad:
            continue
        assert p.grad is not None, f"no gradient reached {name}"
        if name.endswith("positions"):
            assert not p.grad[:, n_patches:].any(), f"{name}: positions beyond the grid got a gradient"
        for key, ours in gradient_record(name, p.grad.numpy(), n_patches).items():
            if name.endswith("k_norm.bias"):
                # q.(k + b) shifts every logit of a query by the same q.b: the softmax, hence the loss, ignores the
                # key bias, and both gradients are float32 rounding noise around 0 (measured ~1e-11)
                assert np.abs(ours).max() < 1e-8 and np.abs(data[key]).max() < 1e-8, key
            else:
                assert_rel_close(ours, data[key], GRAD_RTOL, key)
            checked += 1
    assert checked == len([k for k in data if k.startswith(("grad/", "grad_sketch/"))]) == 76


def test_parity_visualad_dropout_and_token_clipping(parity_weights):
    """With dropout on, the same seed draws the same masks in both (SCA's per token, then SAF's on the whole sequence,
    layer by layer, as train.py calls them); validate_gradients clips each token's gradient to norm 1 on its own (the
    loss is scaled by CLIP_TEST_SCALE in both so that the bound binds; a joint clip would leave each below 1)."""
    data, det, _ = setup(parity_weights)
    torch.manual_seed(DROPOUT_SEED)
    parts = _train_step(det.train(), data, CLIP_TEST_SCALE)
    assert_rel_close(parts["total"], data["loss_dropout/total"], LOSS_RTOL, "loss with dropout")
    assert abs(float(parts["total"].detach()) - float(data["loss/total"])) > 20 * LOSS_RTOL * abs(float(data["loss/total"]))
    raw = {name: float(getattr(det, name).grad.norm()) for name in ("anomaly_token", "normal_token")}
    det.before_optimizer_step()
    for name, norm in raw.items():
        grad = getattr(det, name).grad
        assert_rel_close(grad, data[f"grad_clipped/{name}"], GRAD_RTOL, f"clipped {name}")
        assert norm > 1.2 and float(grad.norm()) == pytest.approx(1.0, rel=1e-5)


def test_parity_visualad_optimiser_and_schedule(parity_weights):
    """The engine's optimiser for visualad's paper settings has their create_optimizer's lr, weight decay and betas
    per parameter; its learning rates per epoch are their CosineAnnealingLR(T_max=epochs, eta_min=1e-4)."""
    from ssvp_core.engine.train import make_optimizer, make_scheduler

    data, det, _ = setup(parity_weights)
    for dataset, epochs in (("mvtec", 2), ("visa", 1), ("btad", 15)):
        cfg = load_config("paper", "visualad", [f"train.dataset={dataset}"])
        assert cfg.train.epochs == epochs
        optimizer = make_optimizer(det, cfg)
        names = {id(p): n for n, p in det.named_parameters()}
        for group in optimizer.param_groups:
            for p in group["params"]:
                ours = [group["lr"], group["weight_decay"], *group["betas"]]
                np.testing.assert_allclose(ours, data[f"optim/{names[id(p)]}"], rtol=1e-12, err_msg=names[id(p)])
        assert type(optimizer).__name__ == "AdamW"
        steps_per_epoch = 3
        scheduler = make_scheduler(optimizer, cfg, steps_per_epoch * epochs)
        seen = []
        for step in range(steps_per_epoch * epochs):
            if step % steps_per_epoch == 0:
                seen.append([g["lr"] for g in optimizer.param_groups])  # groups: tokens, then the rest
            optimizer.step()
            scheduler.step()
        np.testing.assert_allclose(np.array(seen), data[f"schedule/epochs{epochs}"], rtol=1e-12)


def test_released_checkpoint_layout_is_read(parity_weights, tmp_path):
    """A file with the layout their save_checkpoint writes (keys, nesting, dtypes recorded from running it) loads
    into our names with the values where they belong; the forward then matches their test.py."""
    data, det, params = setup(parity_weights)
    layout = write_released_checkpoint({k: torch.from_numpy(v) for k, v in params.items()}, [i + 1 for i in det.taps],
                                       tmp_path / "CLIP.pth", image_size=IMAGE_SIZE)
    assert layout == sorted(str(s) for s in data["released/layout"])
    state = read_released(tmp_path / "CLIP.pth")
    assert sorted(state) == sorted(params)
    for name, value in params.items():
        assert torch.equal(state[name], torch.from_numpy(value)), name
    fresh = parity_detector(parity_weights)
    fresh.load_trainable_state_dict(state)
    with torch.no_grad():
        out = fresh.eval()(fixture_batch(data))
    assert_rel_close(out.anomaly_map, data["out/map"], MAP_RTOL, "maps from the released-format file")
