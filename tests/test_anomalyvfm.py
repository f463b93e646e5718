"""AnomalyVFM pieces pinned against formulas written out here (its parity with the released code is
tests/parity/test_parity_anomalyvfm.py): the LoRA / DoRA adapters, the focal loss, the map post-processing, RADIO's
bilinear position grid (NVlabs' hub code, not runnable here), DINOv3's train-mode RoPE rescaling, the settings that
select each backbone, and the engine's step-counted runs (`train.steps`, as the release counts its 200-500 steps)."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tiny import random_batch, smoke_config
from ssvp_core.engine import checkpoint as ckpt
from ssvp_core.engine.train import train
from ssvp_core.errors import ConfigError
from ssvp_core.methods import build_detector
from ssvp_core.methods.adapters import LowRankAdapter
from ssvp_core.methods.anomalyvfm import VFM_SETTINGS, vfm_overrides
from ssvp_core.methods.anomalyvfm_release import _resize_grid
from ssvp_core.methods.losses import sigmoid_focal


def _adapter(kind, fused, seed=0):
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(12 if fused else 4, 4, generator=g)
    adapter = LowRankAdapter(weight, kind, rank=2, alpha=3.0, parts=("q", "v") if fused else ("",))
    with torch.no_grad():
        for p in adapter.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    return adapter, weight, torch.randn(4 if not fused else 12, generator=g), torch.randn(5, 4, generator=g)


def test_lora_adds_the_scaled_low_rank_product_to_q_and_v_only():
    adapter, w, b, x = _adapter("lora", fused=True)
    s = 3.0 / 2
    expected = x @ w.T + b
    expected[:, :4] += s * x @ adapter.lora_a_q.T @ adapter.lora_b_q.T
    expected[:, 8:] += s * x @ adapter.lora_a_v.T @ adapter.lora_b_v.T
    assert torch.allclose(adapter(x, w, b), expected, atol=1e-5)
    single, w1, b1, x1 = _adapter("lora", fused=False)
    assert torch.allclose(single(x1, w1, b1), x1 @ (w1 + s * single.lora_b @ single.lora_a).T + b1, atol=1e-5)


def test_dora_rescales_each_adapted_row_to_its_magnitude():
    adapter, w, b, x = _adapter("dora", fused=True, seed=1)
    s = 3.0 / 2
    rows = []
    for part, block in (("q", w[:4]), ("k", w[4:8]), ("v", w[8:])):
        if part == "k":
            rows.append(block)  # k stays frozen
            continue
        adapted = block + s * getattr(adapter, f"lora_b_{part}") @ getattr(adapter, f"lora_a_{part}")
        norms = torch.sqrt((adapted ** 2).sum(1, keepdim=True)) + 1e-8
        rows.append(getattr(adapter, f"magnitude_{part}")[:, None] * adapted / norms)
    assert torch.allclose(adapter(x, w, b), x @ torch.cat(rows).T + b, atol=1e-5)


@pytest.mark.parametrize("kind", ["lora", "dora"])
def test_adapters_start_as_the_frozen_layer(kind):
    w, b, x = torch.randn(12, 8), torch.randn(12), torch.randn(3, 8)
    adapter = LowRankAdapter(w, kind, rank=4, alpha=1.0, parts=("q", "v"))
    assert torch.allclose(adapter(x, w, b), x @ w.T + b, atol=1e-5)  # B = 0; DoRA's m = the rows' norms


def test_sigmoid_focal_is_torchvisions():
    from torchvision.ops import sigmoid_focal_loss

    logits, target = torch.randn(4, 1, 6, 6) * 3, (torch.rand(4, 1, 6, 6) > 0.7).float()
    assert torch.allclose(sigmoid_focal(logits, target), sigmoid_focal_loss(logits, target, reduction="none"), atol=1e-7)


@pytest.fixture(scope="module")
def smoke_detector():
    torch.manual_seed(0)
    return build_detector(smoke_config("anomalyvfm")).eval()


def test_map_is_the_mean_filtered_sigmoid_upsampled_and_the_score_a_sigmoid(smoke_detector):
    det = smoke_detector
    with torch.no_grad():
        out = det(random_batch(2))
    probs = torch.sigmoid(out.aux["mask_logits"])[:, 0]
    n = probs.shape[-1]
    padded = torch.zeros(2, n + 4, n + 4)
    padded[:, 2:-2, 2:-2] = probs  # zero padding, counted in the 25-pixel mean (nn.AvgPool2d's default)
    mean = torch.stack([padded[:, i:i + n, j:j + n] for i in range(5) for j in range(5)]).mean(0)
    expected = F.interpolate(mean[:, None], size=(det.image_size,) * 2, mode="bilinear", align_corners=False)[:, 0]
    assert n == 2 * det.grid[0]  # one up block: twice the grid
    assert torch.allclose(out.anomaly_map, expected, atol=1e-6)
    assert torch.allclose(out.score, torch.sigmoid(out.aux["score_logit"]))


def _bilinear_1d(n_in: int, n_out: int) -> np.ndarray:
    """Interpolation matrix of bilinear resizing with align_corners=False, written out."""
    m = np.zeros((n_out, n_in))
    for i in range(n_out):
        x = min(max((i + 0.5) * n_in / n_out - 0.5, 0.0), n_in - 1)
        lo = int(np.floor(x))
        hi = min(lo + 1, n_in - 1)
        m[i, lo] += 1 - (x - lo)
        m[i, hi] += x - lo
    return m


def test_radio_bilinear_position_grid_is_nvlabs_eval_resize():
    """NVlabs' RADIO (eval mode, what test.py ran): the 128x128 grid resized bilinearly to a square of the input's
    largest side, then its top-left corner; here a 6x6 grid to 4x4."""
    grid = torch.randn(36, 3, dtype=torch.float64)
    ours = _resize_grid(grid.float(), (4, 4), "bilinear", crop_square=True).double()
    m = _bilinear_1d(6, 4)
    expected = np.einsum("ia,jb,abc->ijc", m, m, grid.numpy().reshape(6, 6, 3)).reshape(16, 3)
    assert np.abs(ours.numpy() - expected).max() < 1e-5


def test_each_backbone_has_its_settings_and_a_mismatch_names_them():
    assert set(VFM_SETTINGS) == {"dinov3", "dinov2", "clip", "siglip2", "radio"}
    assert VFM_SETTINGS["dinov2"]["backbone.dino.image_size"] == 672 and VFM_SETTINGS["radio"]["train.steps"] == 200
    with pytest.raises(ConfigError, match="options.vfm=dinov2 but backbone.dino.model='vit_small_patch16_dinov3'.*"
                                          "backbone.dino.model=vit_large_patch14_reg4_dinov2"):
        build_detector(smoke_config("anomalyvfm", "options.vfm=dinov2"))
    assert vfm_overrides("clip")[0] == "options.vfm=clip"


def test_radio_evaluates_released_weights_only():
    cfg = smoke_config("anomalyvfm", "options.vfm=radio", "backbone.dino.model=vit_large_patch16_radio_v3",
                       "backbone.dino.kwargs={embed_dim: 64, depth: 1, num_heads: 2, patch_size: 8, init_values: 0}")
    det = build_detector(cfg)
    with pytest.raises(ConfigError, match="radio evaluates released weights only"):
        det.param_groups(cfg.train)


def test_dinov3_rope_rescaling_acts_in_training_once_per_block_and_chunk(monkeypatch):
    torch.manual_seed(0)
    det = build_detector(smoke_config("anomalyvfm", "options.forward_chunk=2"))
    with torch.no_grad():  # timm's initialisation (layer scale 1e-5, small q and k) hides the attention's positions
        for blk in det.vfm.model.blocks:
            blk.attn.qkv.base.weight.mul_(30)
            blk.gamma_1.fill_(1.0)
    images = random_batch(4)["image"][:, :, :64, :64]
    rope = det.vfm.model.rope
    calls = []
    original = rope.get_embed
    monkeypatch.setattr(rope, "get_embed", lambda *a, **k: calls.append(1) or original(*a, **k))
    det.eval()
    with torch.no_grad():
        a, b = det.features(images)[1], det.features(images)[1]
    assert torch.equal(a, b) and len(calls) == 2  # eval: one unaugmented embedding per forward
    det.train()
    calls.clear()
    with torch.no_grad():
        torch.manual_seed(1)
        c = det.features(images)[1]
        torch.manual_seed(2)
        d = det.features(images)[1]
    depth = len(det.vfm.model.blocks)
    assert len(calls) == 2 * depth * 2  # two forwards x two chunks of 2 images x one draw per block
    assert (c - a).abs().max() > 1e-4 and (c - d).abs().max() > 1e-4
    off = build_detector(smoke_config("anomalyvfm", "options.dinov3_rope_rescale=1"))
    off.load_state_dict(det.state_dict())
    with torch.no_grad():
        assert torch.allclose(off.train().features(images)[1], a, atol=1e-6)  # no rescaling: as in eval


def test_steps_count_updates_across_epochs_and_resume(synth_root, tmp_path):
    """train.steps=5 with 2 steps per epoch: two full epochs and one step of the third; a run interrupted after
    step 3 and resumed ends where the uninterrupted one does."""
    def cfg(out, *extra):
        return smoke_config("anomalyvfm", f"out_dir={out}", "train.steps=5", "train.batch_size=8",
                            "train.classes=[weave]", "options.rank=2", *extra, root=synth_root)

    full = train(cfg(tmp_path / "a"), progress=False)
    assert [h["step"] for h in full.history] == [1, 2, 3, 4, 5] and [h["epoch"] for h in full.history] == [1, 1, 2, 2, 3]
    partial = cfg(tmp_path / "b", "train.checkpoint_every=1")
    train(partial, progress=False, max_steps=3)
    resumed = train(partial, progress=False)
    a, b = ckpt.load(full.checkpoint), ckpt.load(resumed.checkpoint)
    assert resumed.resumed_from == 3 and b["state"]["global_step"] == 5 and b["state"]["complete"]
    for k in a["trainable"]:
        assert torch.allclose(a["trainable"][k], b["trainable"][k], atol=1e-6), k
    with pytest.raises(ConfigError, match="train.steps=-1"):
        train(cfg(tmp_path / "c", "train.steps=-1"), progress=False)


def test_epoch_counted_runs_keep_their_fingerprints():
    """`train.steps` joins the fingerprint only when set, so every earlier run folder stays valid."""
    cfg = smoke_config("aprilgan")
    import hashlib
    import json

    d = cfg.to_dict()
    for key in ("eval", "device", "out_dir", "profile", "workspace"):
        d.pop(key)
    for key in ("num_workers", "checkpoint_every", "feature_cache", "feature_cache_dir", "feature_cache_ram_gb",
                "feature_cache_max_gb", "extra", "steps"):
        d["train"].pop(key)
    d["backbone"].pop("compile")
    assert cfg.fingerprint() == hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:12]
    assert smoke_config("aprilgan", "train.steps=3").fingerprint() != cfg.fingerprint()


def test_dinov3_rope_periods_are_rounded_as_metas_checkpoint_holds_them():
    """DINOv3's RoPE periods 100^(2k / (head_dim / 2)): Meta's checkpoint (which the release loads) stores them
    rounded through bf16, timm recomputes them in float32; `options.dinov3_rope_periods` picks."""
    rounded = build_detector(smoke_config("anomalyvfm")).vfm.model.rope.periods
    exact = build_detector(smoke_config("anomalyvfm", "options.dinov3_rope_periods=fp32")).vfm.model.rope.periods
    head_dim = 64 // 2  # the smoke backbone: width 64, 2 heads
    formula = 100.0 ** (2 * torch.arange(head_dim // 4, dtype=torch.float64) / (head_dim // 2))
    assert torch.allclose(exact.double(), formula, rtol=1e-6)
    assert torch.equal(rounded, formula.to(torch.bfloat16).float()) and not torch.equal(rounded, exact)
