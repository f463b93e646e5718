"""VisualAD beyond the parity test (tests/parity/test_parity_visualad.py): the score's Gaussian against scipy, the
test-time ln_post rule, the per-token gradient clipping written out, the DINOv2 variant against a reference written out
here, the released settings and protocol, and the authors' checkpoint files through `ssvp eval / predict`."""
import math
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import ndimage
from tiny import random_batch, smoke_config
from visualad_release import write_released_checkpoint

from ssvp_core.cli import main
from ssvp_core.config import load_config
from ssvp_core.engine.infer import evaluate
from ssvp_core.errors import CheckpointError
from ssvp_core.methods import build_detector, method_spec
from ssvp_core.methods.visualad import gaussian_filter, read_released, topk_mean
from ssvp_core.metrics import wide


@pytest.mark.parametrize("shape, sigma", [((40, 40), 4.0), ((7, 9), 4.0), ((33, 20), 0.6), ((16, 16), 2.5)])
def test_score_filter_is_scipys_gaussian_filter(shape, sigma):
    """test.py smooths with scipy.ndimage.gaussian_filter (reflect borders, truncate 4), also where the kernel is wider
    than the map (7x9 at sigma 4: radius 16)."""
    maps = np.random.default_rng(0).normal(size=(2, *shape)).astype(np.float32)
    ours = gaussian_filter(torch.from_numpy(maps), sigma).numpy()
    reference = np.stack([ndimage.gaussian_filter(m, sigma=sigma) for m in maps])
    np.testing.assert_allclose(ours, reference, rtol=0, atol=2e-6)


def test_topk_mean_is_the_mean_of_the_top_one_percent():
    maps = torch.from_numpy(np.random.default_rng(1).normal(size=(3, 37, 41)).astype(np.float32))
    k = math.ceil(37 * 41 * 0.01)  # 16: utils/scoring.py rounds up
    reference = np.sort(maps.flatten(1).numpy(), axis=1)[:, ::-1][:, :k].mean(1)
    np.testing.assert_allclose(topk_mean(maps, 0.01).numpy(), reference, rtol=1e-6)


@pytest.mark.parametrize("rule", ["pretrained", "trained"])
def test_test_time_ln_post_follows_the_release(rule):
    """train.py trains ln_post, test.py does not restore it: at test the pretrained one maps the tokens and patches
    (`test_ln_post=pretrained`), and changing the trained copy changes nothing; `trained` uses the copy."""
    det = build_detector(smoke_config("visualad", f"options.test_ln_post={rule}"))
    batch = random_batch(2)
    with torch.no_grad():
        before = det.eval()(batch)
        det.ln_post.weight.mul_(1.5).add_(0.1)
        after = det(batch)
        trained_mode = det.train()(batch)
    changed = (after.anomaly_map - before.anomaly_map).abs().max() > 1e-3
    assert bool(changed) == (rule == "trained")
    if rule == "pretrained":
        torch.testing.assert_close(after.anomaly_map, before.anomaly_map, rtol=0, atol=0)
    assert (trained_mode.anomaly_map - before.anomaly_map).abs().max() > 1e-3  # training always uses the copy


def test_each_token_gradient_is_clipped_on_its_own():
    """validate_gradients: clip_grad_norm_([token], 1) per token, i.e. g * min(1, 1 / (|g| + 1e-6))."""
    det = build_detector(smoke_config("visualad"))
    g = torch.randn(det.anomaly_token.shape[0], generator=torch.Generator().manual_seed(0))
    det.anomaly_token.grad = 3 * g / g.norm()
    det.normal_token.grad = 0.5 * g / g.norm()
    expected_normal = det.normal_token.grad.clone()
    det.before_optimizer_step()
    torch.testing.assert_close(det.anomaly_token.grad, 3 * g / g.norm() * (1 / (3 + 1e-6)), rtol=1e-6, atol=0)
    torch.testing.assert_close(det.normal_token.grad, expected_normal, rtol=0, atol=0)
    off = build_detector(smoke_config("visualad", "options.token_grad_clip=0"))
    off.anomaly_token.grad = 3 * g / g.norm()
    off.before_optimizer_step()
    assert float(off.anomaly_token.grad.norm()) == pytest.approx(3.0, rel=1e-6)


def test_dinov2_variant_against_a_reference_written_out():
    """backbone=dinov2 (no released code): the two tokens, with the CLS position, enter timm's DINOv2 before the CLS
    token; taps after the configured blocks and the two tokens after the last go through its final norm; then the
    same SCA, SAF and maps as the CLIP variant (parity-tested)."""
    cfg = smoke_config("visualad", "options.backbone=dinov2")
    det = build_detector(cfg).eval()
    batch = random_batch(2)
    model = det.aux.model
    with torch.no_grad():
        x = (batch["image"] - det.aux.mean) / det.aux.std
        patches = model.patch_embed(x) + model.pos_embed[:, 1:]
        cls = (model.cls_token + model.pos_embed[:, :1]).expand(2, -1, -1)
        pair = torch.stack([det.anomaly_token, det.normal_token]) + model.pos_embed[0, 0]
        seq = torch.cat([pair.expand(2, -1, -1), cls, patches], 1)
        taps = []
        for i, block in enumerate(model.blocks):
            seq = block(seq)
            if i in cfg.backbone.dino.layers:
                taps.append(model.norm(seq))
        tokens = [model.norm(seq[:, 0]), model.norm(seq[:, 1])]
        maps = []
        for sca, saf, tap in zip(det.sca, det.saf, taps):
            anomaly, normal = sca(tokens, tap[:, 3:])
            p = torch.nn.functional.normalize(saf(tap)[:, 3:], dim=-1)
            cos = [torch.einsum("bnc,bc->bn", p, torch.nn.functional.normalize(t, dim=-1)) for t in (anomaly, normal)]
            grid = (cos[0] - cos[1]).reshape(2, 1, *det.grid)
            maps.append(torch.nn.functional.interpolate(grid, size=(128, 128), mode="bilinear", align_corners=False)[:, 0])
        reference = torch.stack(maps).sum(0)
        out = det(batch)
    torch.testing.assert_close(out.anomaly_map, reference, rtol=1e-4, atol=1e-5)
    sigma = 4.0 * 128 / 518
    smoothed = np.stack([ndimage.gaussian_filter(m, sigma=sigma) for m in reference.numpy()])
    k = math.ceil(128 * 128 * 0.01)
    scores = np.sort(smoothed.reshape(2, -1), axis=1)[:, -k:].mean(1)
    np.testing.assert_allclose(out.score.numpy(), scores, rtol=1e-4)


def test_dinov2_variant_needs_an_absolute_position_embedding():
    from ssvp_core.errors import ConfigError

    with pytest.raises(ConfigError, match="absolute position embedding"):
        build_detector(smoke_config("visualad", "options.backbone=dinov2", "backbone.dino.model=vit_small_patch16_dinov3"))


def test_bf16_forward_and_training_step_stay_close_to_fp32():
    batch = random_batch(2)
    out = {}
    for precision in ("fp32", "bf16"):
        det = build_detector(smoke_config("visualad", f"backbone.precision={precision}"))
        with torch.no_grad():
            out[precision] = det.eval()(batch).anomaly_map
        det.train()
        loss = det.loss(det(batch), batch)["total"]
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(det.anomaly_token.grad).all()
    # the map sums, over the tapped layers, a difference of two cosines (each at most 1 in size): bf16's 8-bit
    # significand carries each cosine to within its unit roundoff 2^-9, so the bound is absolute, 2 L 2^-9, and not
    # relative to the map's own small values (about 0.06 here: nearly equal cosines subtracted); measured 3.3e-3 with
    # oneDNN's emulated bf16 (make test-portability), 5x inside
    layers = len(smoke_config("visualad").backbone.clip.layers)
    assert (out["bf16"] - out["fp32"]).abs().max() < 2 * layers * 2.0 ** -9


def test_released_settings_and_protocol():
    """train.py / training_utils.py / scripts/CLIP.sh / test.py, and the README's checkpoint table."""
    cfg = load_config("paper", "visualad")
    t = cfg.train
    assert (t.optimizer, t.betas, t.weight_decay, t.lr_prompt, t.lr_head, t.batch_size, t.seed) == \
        ("adamw", (0.9, 0.999), 0.01, 1e-3, 1e-4, 8, 111)
    assert (t.dataset, t.epochs) == ("visa", 1)
    assert load_config("paper", "visualad", ["train.dataset=mvtec"]).train.epochs == 2
    assert load_config("paper", "visualad", ["train.dataset=btad"]).train.epochs == 15  # train.py's default
    assert (cfg.eval.sigma, cfg.image_size, cfg.backbone.precision) == (4.0, 518, "fp32")
    assert (cfg.backbone.clip.model, cfg.backbone.clip.layers, cfg.backbone.clip.pos_embed_interpolation) == \
        ("ViT-L-14-336-quickgelu", (6, 12, 18, 24), "bilinear")
    assert (cfg.backbone.dino.model, cfg.backbone.dino.image_size, cfg.backbone.dino.layers) == \
        ("vit_large_patch14_dinov2", 518, (5, 11, 17, 23))
    from ssvp_core.reports import Study

    paper = Study("paper")
    for target in ("mvtec", "btad", "ksdd2", "dagm", "dtd", "mpdd"):
        assert paper.sources("visualad", target) == ["visa"], target
    assert paper.sources("visualad", "visa") == ["mvtec"]
    assert method_spec("visualad").read_released is read_released


def test_engine_schedule_switch():
    det = build_detector(smoke_config("visualad"))
    cfg = smoke_config("visualad")
    assert {g.get("schedule") for g in det.param_groups(cfg.train)} == {"epoch_cosine"}
    assert [g["min_lr"] for g in det.param_groups(cfg.train)] == pytest.approx([0.1 * cfg.train.lr_prompt] * 2)
    other = build_detector(smoke_config("visualad", "options.schedule=engine"))
    assert {g.get("schedule") for g in other.param_groups(cfg.train)} == {None}


# ---- the authors' checkpoint files ---------------------------------------------------------------------------------
def _released_state(det, seed: int = 5) -> dict[str, torch.Tensor]:
    """Values unlike any initialisation, for every trainable parameter of `det`."""
    g = torch.Generator().manual_seed(seed)
    return {n: (p.detach() + 0.3 * torch.randn(p.shape, generator=g)).float() for n, p in det.named_parameters()
            if p.requires_grad}


def _metrics(det, cfg) -> pd.DataFrame:
    return evaluate(det, cfg.eval.datasets[0], cfg, progress=False).metrics


def test_released_checkpoint_through_cli_eval_and_predict(synth_root, tmp_path, capsys):
    """`ssvp eval --method visualad --checkpoint CLIP.pth` reads a file in the release's layout (tiny weights for the
    smoke CLIP) and evaluates the detector the profile builds with the file's values; `ssvp predict` too."""
    eval_on = f"synth-b={synth_root / 'synth-b'}"
    cfg = smoke_config("visualad", f"eval.datasets=[{{name: synth-b, root: '{synth_root / 'synth-b'}'}}]")
    det = build_detector(cfg)
    state = _released_state(det)
    path = tmp_path / "CLIP.pth"
    write_released_checkpoint(state, [1, 2, 3, 4], path, image_size=cfg.image_size)
    csv = tmp_path / "released.csv"
    assert main(["eval", "--method", "visualad", "--profile", "smoke", "--checkpoint", str(path), "--eval-on", eval_on,
                 "--out", str(csv), "--quiet"]) == 0
    cli = pd.read_csv(csv)
    # the reference: the same values set by name, without the reader or the CLI
    own = dict(det.named_parameters())
    with torch.no_grad():
        for name, value in state.items():
            own[name].copy_(value)
    reference = _metrics(det.eval(), cfg)
    merged = cli.merge(reference, on=["dataset", "cls", "metric"], suffixes=("_cli", "_ref"))
    assert len(merged) == len(reference) > 0
    np.testing.assert_allclose(merged.value_cli, merged.value_ref, rtol=1e-6, atol=1e-9)
    untrained = wide(_metrics(build_detector(cfg).eval(), cfg))
    assert not np.allclose(wide(reference).image_auroc, untrained.image_auroc) or \
        not np.allclose(wide(reference).pixel_auroc, untrained.pixel_auroc)  # the file's values were used
    images = tmp_path / "mine"
    images.mkdir()
    for p in list((synth_root / "synth-b" / "capsule" / "test").rglob("*.png"))[:3]:
        shutil.copy(p, images / f"{p.parent.name}_{p.name}")
    assert main(["predict", str(images), "--checkpoint", str(path), "--method", "visualad", "--profile", "smoke",
                 "--out", str(tmp_path / "pred")]) == 0
    assert len(pd.read_csv(tmp_path / "pred" / "predictions.csv")) == 3


def test_released_checkpoint_errors_name_the_file_and_the_fix(tmp_path, capsys):
    def eval_error(path, *extra) -> str:
        code = main(["eval", *extra, "--profile", "smoke", "--checkpoint", str(path), "--quiet"])
        assert code == 2
        return capsys.readouterr().err

    pointer = tmp_path / "pointer.pth"
    pointer.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:596f3e\nsize 126119090\n")
    assert "git lfs pull" in eval_error(pointer, "--method", "visualad")
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(b"PK\x03\x04" + b"\x00" * 40)
    assert "cannot read it as a VisualAD checkpoint" in eval_error(truncated, "--method", "visualad")
    foreign = tmp_path / "foreign.pth"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, foreign)
    message = eval_error(foreign, "--method", "visualad")
    assert "not a VisualAD checkpoint" in message and str(foreign) in message
    assert "--method NAME" in eval_error(foreign) and "visualad" in eval_error(foreign)  # no --method: the hint
    det = build_detector(load_config("smoke", "visualad", ["backbone.clip.model=ssvp-parity-clip",
                                                           "backbone.clip.image_size=112", "image_size=112"]))
    wide_file = tmp_path / "width256.pth"
    write_released_checkpoint(_released_state(det), [1, 2, 3, 4], wide_file)
    assert "does not fit the detector" in eval_error(wide_file, "--method", "visualad")
    with pytest.raises(CheckpointError, match="no such file"):
        read_released(tmp_path / "missing.pth")
    no_sca = tmp_path / "no_sca.pth"
    small = build_detector(smoke_config("visualad"))
    write_released_checkpoint(_released_state(small), [1, 2, 3, 4], no_sca, sca=False)
    assert "does not fit" in eval_error(no_sca, "--method", "visualad")
    assert main(["eval", "--method", "visualad", "--profile", "smoke", "--set", "options.sca=false", "--checkpoint",
                 str(no_sca), "--eval-on", "x=/nonexistent", "--quiet"]) == 2  # the file loads; the data is missing
    assert "does not fit" not in capsys.readouterr().err
