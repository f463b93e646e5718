"""Backbone wrappers and weight resolution: same numbers as the libraries' own forward passes, local files of
every supported kind, and fast, helpful failures offline."""
import os
import subprocess
import sys
import time

import pytest
import torch
import torch.nn as nn

from tiny import TINY_DINO_KWARGS, tiny_backbone
from ssvp_core.backbones import AuxBackbone, ClipBackbone, register_tiny_models, resample_tokens
from ssvp_core.config import ClipConfig, DinoConfig
from ssvp_core.errors import ConfigError, WeightsError
from ssvp_core.weights import resolve_clip


@pytest.fixture(scope="module")
def clip():
    return ClipBackbone(tiny_backbone().clip)


@pytest.fixture(scope="module")
def dino():
    return AuxBackbone(tiny_backbone().dino)


def test_clip_taps_and_global_match_open_clip(clip):
    x = torch.rand(2, 3, 128, 128)
    with torch.no_grad():
        feats = clip.image_features(x)
        reference = clip.model.encode_image((x - clip.mean) / clip.std)
        # open_clip's own multi-layer path gives the same taps
        ref_taps = clip.model.visual.forward_intermediates((x - clip.mean) / clip.std, indices=[0, 1, 2, 3],
                                                           output_fmt="NLC", output_extra_tokens=True)
    assert clip.grid == (16, 16)
    assert [t.shape for t in feats.taps] == [torch.Size([2, 257, 128])] * 4
    assert torch.allclose(clip.project(feats.final[:, 0]), reference, atol=1e-5)
    for ours, theirs in zip(feats.taps, ref_taps["image_intermediates"]):
        assert torch.allclose(ours[:, 1:], theirs, atol=1e-5)
    assert clip.project(feats.taps[0][:, 1:]).shape == (2, 256, 64)


def test_clip_text_matches_open_clip(clip):
    texts = ["a photo of a damaged bottle", "x"]
    with torch.no_grad():
        ours = clip.encode_text(texts)
        theirs = clip.model.encode_text(clip.tokenize(texts))
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_dino_taps_drop_register_tokens(dino):
    assert dino.model.num_prefix_tokens == 5  # CLS + 4 registers, as DINOv3
    patches, cls = dino(torch.rand(2, 3, 128, 128))
    assert dino.grid == (16, 16) and [p.shape for p in patches] == [torch.Size([2, 256, 128])] * 4
    assert cls.shape == (2, 128)


def test_bad_sizes_and_layers_are_config_errors():
    with pytest.raises(ConfigError, match="not a multiple of the patch size 8"):
        AuxBackbone(DinoConfig(model="vit_small_patch16_dinov3", pretrained="none", image_size=130, layers=(0,), kwargs=TINY_DINO_KWARGS))
    with pytest.raises(ConfigError, match="out of range"):
        ClipBackbone(ClipConfig(model="ssvp-tiny-clip", pretrained="none", image_size=128, layers=(6, 12)))


def test_resample_tokens_identity_and_shape():
    t = torch.rand(2, 16, 5)
    assert resample_tokens(t, (4, 4), (4, 4)) is t
    assert resample_tokens(t, (4, 4), (8, 8)).shape == (2, 64, 5)


# ---- weights --------------------------------------------------------------------------------------------------

def test_clip_from_local_files_and_folder(clip, tmp_path):
    from safetensors.torch import save_file

    sd = {k: v.contiguous() for k, v in clip.model.state_dict().items()}
    torch.save(sd, tmp_path / "weights.bin")
    folder = tmp_path / "repo"
    folder.mkdir()
    save_file(sd, folder / "open_clip_model.safetensors")
    x = torch.rand(1, 3, 128, 128)
    with torch.no_grad():
        expected = clip.image_features(x).final
        for pretrained in (str(tmp_path / "weights.bin"), str(folder)):
            other = ClipBackbone(ClipConfig(model="ssvp-tiny-clip", pretrained=pretrained, image_size=128, layers=(1, 2, 3, 4)))
            assert torch.allclose(other.image_features(x).final, expected, atol=1e-6)
    # built at a larger size, the position embedding is interpolated on load (24x24 -> 37x37 in the paper profile)
    bigger = ClipBackbone(ClipConfig(model="ssvp-tiny-clip", pretrained=str(tmp_path / "weights.bin"), image_size=160, layers=(1, 2, 3, 4)))
    assert bigger.grid == (20, 20) and bigger.model.visual.positional_embedding.shape[0] == 401


def _torchscript_like_openai(state_dict: dict, path):
    """A TorchScript archive whose state_dict has OpenAI's keys (plus input_resolution & co), like ViT-L-14-336px.pt."""
    root = nn.Module()
    for key, value in state_dict.items():
        *parents, leaf = key.split(".")
        mod = root
        for p in parents:
            if not hasattr(mod, p):
                mod.add_module(p, nn.Module())
            mod = getattr(mod, p)
        mod.register_buffer(leaf, value.clone())
    root.register_buffer("input_resolution", torch.tensor(128))
    root.register_buffer("context_length", torch.tensor(77))
    root.register_buffer("vocab_size", torch.tensor(49408))

    class Wrapper(nn.Module):
        def __init__(self, inner):
            super().__init__()
            for name, child in inner.named_children():
                self.add_module(name, child)
            for name, buf in inner.named_buffers(recurse=False):
                self.register_buffer(name, buf)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    torch.jit.script(Wrapper(root)).save(str(path))


def test_openai_torchscript_archive_is_accepted(clip, tmp_path):
    sd = {k: v for k, v in clip.model.state_dict().items() if k != "attn_mask"}
    path = tmp_path / "ViT-tiny-openai.pt"
    _torchscript_like_openai(sd, path)
    src = resolve_clip("ssvp-tiny-clip", str(path))
    assert src.torchscript
    other = ClipBackbone(ClipConfig(model="ssvp-tiny-clip", pretrained=str(path), image_size=128, layers=(1, 2, 3, 4)))
    x = torch.rand(1, 3, 128, 128)
    with torch.no_grad():
        assert torch.allclose(other.image_features(x).final, clip.image_features(x).final, atol=1e-6)


def _meta_dinov3_state_dict(timm_sd: dict) -> dict:
    """Rename a timm DINOv3 state dict into Meta's original checkpoint format."""
    out = {}
    for k, v in timm_sd.items():
        if k.endswith("q_bias") or k.endswith("v_bias") or "rope" in k:
            continue
        k = k.replace("reg_token", "storage_tokens").replace("gamma_1", "ls1.gamma").replace("gamma_2", "ls2.gamma")
        out[k] = v
    return out


def test_dino_from_timm_file_and_meta_checkpoint(dino, tmp_path):
    from safetensors.torch import save_file

    sd = {k: v.contiguous() for k, v in dino.model.state_dict().items()}
    save_file(sd, tmp_path / "model.safetensors")
    torch.save({"model": _meta_dinov3_state_dict(sd)}, tmp_path / "dinov3_tiny_pretrain.pth")
    x = torch.rand(1, 3, 128, 128)
    with torch.no_grad():
        expected, _ = dino(x)
        for f in ("model.safetensors", "dinov3_tiny_pretrain.pth"):
            cfg = DinoConfig(model="vit_small_patch16_dinov3", pretrained=str(tmp_path / f), image_size=128,
                             layers=(0, 1, 2, 3), kwargs=dict(TINY_DINO_KWARGS))
            got, _ = AuxBackbone(cfg)(x)
            assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(got, expected)), f


def test_missing_local_file_names_it(tmp_path):
    with pytest.raises(WeightsError, match="no such file"):
        resolve_clip("ViT-L-14-336-quickgelu", str(tmp_path / "nope.bin"))


@pytest.mark.parametrize("which", ["clip", "dino"])
def test_offline_hub_request_fails_fast_with_the_fixes(which, tmp_path):
    """Real model names and hub tags, HF_HUB_OFFLINE=1 and an empty cache: a clear error in well under 10 s (the
    libraries alone retry for ~50 s). Timed from after the imports, which a loaded machine can slow by seconds."""
    code = (
        "import time\n"
        "from ssvp_core.config import ClipConfig, DinoConfig\n"
        "from ssvp_core.backbones import ClipBackbone, AuxBackbone\n"
        "from ssvp_core.errors import WeightsError\n"
        "import open_clip, timm\n"
        "t = time.time()\n"
        "try:\n"
        f"    {'ClipBackbone(ClipConfig())' if which == 'clip' else 'AuxBackbone(DinoConfig())'}\n"
        "except WeightsError as e:\n"
        "    print('ELAPSED', time.time() - t); print(e)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    started = time.time()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120).stdout
    assert "ELAPSED" in out, out
    assert float(out.split("ELAPSED")[1].split()[0]) < 10
    assert time.time() - started < 60
    repo = "timm/vit_large_patch14_clip_336.openai" if which == "clip" else "timm/vit_large_patch16_dinov3.lvd1689m"
    assert repo in out and "HF_HUB_OFFLINE=1" in out
    for way in ("huggingface-cli download", "=/path/to/", "=none"):
        assert way in out


def test_tiny_model_config_is_registered():
    import open_clip

    register_tiny_models()
    assert "ssvp-tiny-clip" in open_clip.list_models()


def test_position_embedding_interpolation_switch(tmp_path):
    """Bilinear (AnomalyCLIP / ViP2-CLIP resize in their forward pass) vs bicubic (open_clip's load-time resize):
    both start from the weights' own grid, the bilinear one equals F.interpolate written out here."""
    import dataclasses

    import torch.nn.functional as F

    register_tiny_models()
    base = tiny_backbone().clip  # ssvp-tiny-clip: 128 px, patch 8 -> a 16x16 grid
    native = ClipBackbone(base)
    path = tmp_path / "tiny.bin"
    torch.save(native.model.state_dict(), path)
    pos = native.model.visual.positional_embedding.detach()
    grid = pos[1:].reshape(1, 16, 16, -1).permute(0, 3, 1, 2)
    for mode in ("bilinear", "bicubic"):
        clip = ClipBackbone(dataclasses.replace(base, pretrained=str(path), image_size=160, pos_embed_interpolation=mode))
        got = clip.model.visual.positional_embedding.detach()
        expected = F.interpolate(grid, size=(20, 20), mode=mode, align_corners=False, antialias=mode == "bicubic")
        assert clip.grid == (20, 20) and got.shape == (401, pos.shape[1])
        assert torch.equal(got[0], pos[0])
        assert torch.allclose(got[1:], expected.flatten(2).transpose(1, 2)[0], atol=1e-6), mode
        assert clip.image_features(torch.rand(1, 3, 160, 160)).taps[0].shape == (1, 401, 128)
