"""The tiny CLIP and the fixed inputs every parity fixture was produced with.

`ssvp-parity-clip` (ssvp_core/configs/models) is an OpenAI-format ViT CLIP small enough for seconds on a CPU and
shaped so that every authors' loader can infer it from the state dict: 4 blocks per tower, vision width 256 with
64-wide heads (OpenAI's `build_model` takes heads = width // 64), patch 14 at 112 px (an 8x8 grid), text width 128
(2 heads), joint width 128 (= text width, which AdaCLIP's code assumes), the real 49408-token vocabulary and 77-token
context so that the real tokenizer applies.

Values come from numpy's PCG64 stream (stable across numpy and torch versions) in sorted key order and are rounded
to float16, because three of the authors' loaders round weights through fp16 (OpenAI's own checkpoints are fp16, so
this changes nothing for real weights). The parameter names are OpenAI's, which open_clip also uses, so the same
dict loads into both. `weights_digest` fingerprints the dict; each fixture stores the digest it was made with.
"""
from __future__ import annotations

import hashlib
import math

import numpy as np
import torch

MODEL = "ssvp-parity-clip"
IMAGE_SIZE = 112
GRID = 8
WEIGHTS_SEED = 20260601
INPUTS_SEED = 7


def _scale(name: str, shape: tuple[int, ...]) -> tuple[float, float]:
    """(mean, std) of one tensor: LayerNorm gains near 1, small biases, fan-in scaled matrices."""
    if name.endswith("logit_scale"):
        return math.log(100.0), 0.0
    parts = name.split(".")
    if len(parts) > 1 and parts[-2].startswith("ln"):  # LayerNorm: ln_pre, ln_1, ln_2, ln_post, ln_final
        return (1.0, 0.1) if name.endswith("weight") else (0.0, 0.05)
    if name.endswith("bias"):
        return 0.0, 0.02
    if name.endswith(("class_embedding", "positional_embedding")):
        return 0.0, shape[-1] ** -0.5
    if name.endswith("token_embedding.weight"):
        return 0.0, 0.02
    if name.endswith(("text_projection", "visual.proj")):
        return 0.0, shape[0] ** -0.5
    fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else shape[0]
    return 0.0, fan_in ** -0.5


def parity_state_dict(seed: int = WEIGHTS_SEED) -> dict[str, torch.Tensor]:
    """OpenAI-named float32 tensors (values exactly representable in float16) for `ssvp-parity-clip`."""
    import open_clip

    from ssvp_core.backbones import _quiet, register_tiny_models

    register_tiny_models()
    with _quiet():
        shapes = {k: tuple(v.shape) for k, v in open_clip.create_model(MODEL, pretrained=None).state_dict().items()}
    rng = np.random.Generator(np.random.PCG64(seed))
    out = {}
    for name in sorted(shapes):
        mean, std = _scale(name, shapes[name])
        values = np.asarray(mean + std * rng.standard_normal(shapes[name]))
        out[name] = torch.from_numpy(values.astype(np.float16).astype(np.float32))
    return out


def weights_digest(state: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(state):
        h.update(name.encode())
        h.update(state[name].numpy().tobytes())
    return h.hexdigest()[:16]


def parity_inputs(n: int = 2, seed: int = INPUTS_SEED) -> dict[str, np.ndarray]:
    """Images in [0, 1] (n, 3, 112, 112), the first one anomalous inside a box; masks (n, 112, 112); labels."""
    rng = np.random.Generator(np.random.PCG64(seed))
    images = rng.random((n, 3, IMAGE_SIZE, IMAGE_SIZE)).astype(np.float32)
    masks = np.zeros((n, IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)
    masks[0, 30:62, 40:80] = 1.0
    images[0, :, 30:62, 40:80] = np.clip(images[0, :, 30:62, 40:80] * 0.3 + 0.6, 0, 1)
    labels = np.array([1] + [0] * (n - 1), dtype=np.int64)
    return {"image": images, "mask": masks, "label": labels}


if __name__ == "__main__":  # write the weights for a generating procedure outside the repository
    import sys

    state = parity_state_dict()
    torch.save(state, sys.argv[1])
    print(sys.argv[1], weights_digest(state))
