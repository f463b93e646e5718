"""APRIL-GAN and WinCLIP against formulas written out here: their prompt ensembles, APRIL-GAN's map (logits upsampled
with align_corners=True before the softmax, summed over layers), image score and loss, WinCLIP's window embeddings,
window scores, scale rule and harmonic fusion with the image score; their released defaults (backbones, precision,
smoothing, per-dataset epochs), the mosaic augmentation, and reduced precision against fp32."""
import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from tiny import SIZE, random_batch, smoke_config, tiny_backbone
from ssvp_core.config import load_config
from ssvp_core.data.loader import AnomalyDataset
from ssvp_core.data.mosaic import MosaicDataset
from ssvp_core.data.records import Sample
from ssvp_core.engine.train import train
from ssvp_core.methods.aprilgan import APRILGAN, APRILGANOptions
from ssvp_core.methods.base import Output
from ssvp_core.methods.common import layer_maps, prompt_class_names
from ssvp_core.methods.winclip import (WINCLIP_ON_KIT_BACKBONE, WinCLIP, WinCLIPOptions, grid_scales, harmonic_fusion,
                                       window_indices)
from ssvp_core.prompts import APRILGAN_ENSEMBLE, WINCLIP_ENSEMBLE, ensemble_feature


def batch(n=2, seed=0):
    return random_batch(n, seed, defect="x", box=(40, 60, 40, 70))


# ---- prompt ensembles ------------------------------------------------------------------------------------------

def test_prompt_ensembles_are_the_authors_lists():
    normal, anomalous = APRILGAN_ENSEMBLE.texts("metal_nut")
    assert (len(normal), len(anomalous)) == (7 * 35, 5 * 35)
    assert normal[0] == "a bad photo of a metal_nut." and normal[35] == "a bad photo of a flawless metal_nut."
    assert anomalous[35] == "a bad photo of a broken metal_nut." and normal[-1] == "this is one metal_nut without damage in the scene."
    normal, anomalous = WINCLIP_ENSEMBLE.texts("bottle")
    assert (len(normal), len(anomalous)) == (7 * 21, 4 * 21)
    assert not any("broken" in s for s in anomalous) and anomalous[0] == "a cropped photo of the damaged bottle."
    assert normal.count("a jpeg corrupted photo of the bottle.") == 2  # anomalib's list has it twice


def test_ensemble_feature_normalised_or_raw_mean():
    f = torch.tensor([[3.0, 0.0], [0.0, 1.0]])
    assert torch.allclose(ensemble_feature(f, "normalised"), torch.tensor([0.5, 0.5]) / math.sqrt(0.5))
    assert torch.allclose(ensemble_feature(f, "raw"), torch.tensor([1.5, 0.5]) / math.sqrt(2.5))


def test_text_features_of_both_methods_written_out():
    apr = APRILGAN(APRILGANOptions(), tiny_backbone(), SIZE)
    win = WinCLIP(WinCLIPOptions(), tiny_backbone(), SIZE)
    with torch.no_grad():
        for det, ens, per_sentence_norm in ((apr, APRILGAN_ENSEMBLE, True), (win, WINCLIP_ENSEMBLE, False)):
            sides = []
            for texts in ens.texts("metal_nut"):
                e = det.clip.encode_text(texts)
                e = e / e.norm(dim=-1, keepdim=True) if per_sentence_norm else e
                m = e.mean(0)
                sides.append(m / m.norm())
            assert torch.allclose(det.text(["metal_nut"])[0], torch.stack(sides), atol=1e-6)


def test_prompt_class_names_raw_mapped_or_run_wide():
    b = {"cls": ["pcb1", "metal_nut"]}
    assert prompt_class_names(b, "raw") == ["pcb1", "metal_nut"]
    assert prompt_class_names(b, "mapped") == ["printed circuit board", "metal nut"]
    assert prompt_class_names(b, "raw", "object") == ["object", "object"]
    det = APRILGAN(APRILGANOptions(), tiny_backbone(), SIZE)
    assert det.class_names(b) == ["pcb1", "metal_nut"]  # their meta.json names, as is


# ---- APRIL-GAN --------------------------------------------------------------------------------------------------

def up3(g: torch.Tensor) -> torch.Tensor:
    """Bilinear 2x2 -> 3x3 with align_corners=True, written out: corners kept, edges the mean of two, centre of four."""
    mid = lambda a, b: (a + b) / 2  # noqa: E731
    return torch.stack([torch.stack([g[0, 0], mid(g[0, 0], g[0, 1]), g[0, 1]]),
                        torch.stack([mid(g[0, 0], g[1, 0]), g.mean(), mid(g[0, 1], g[1, 1])]),
                        torch.stack([g[1, 0], mid(g[1, 0], g[1, 1]), g[1, 1]])])


def test_aprilgan_map_upsamples_logits_before_the_softmax_and_sums_layers():
    g = torch.Generator().manual_seed(0)
    text = F.normalize(torch.randn(2, 3, generator=g), dim=-1)  # [normal, anomalous]
    layers = [F.normalize(torch.randn(1, 4, 3, generator=g), dim=-1) for _ in range(2)]  # 2x2 grid
    maps = layer_maps(layers, text, 0.01, (2, 2), 3, softmax_first=False)
    expected = 0
    for p in layers:
        logits = 100 * p[0] @ text.T  # (4, 2)
        up = torch.stack([up3(logits[:, c].view(2, 2)) for c in range(2)])  # (2, 3, 3)
        expected = expected + (up[1].exp() / up.exp().sum(0))
    assert torch.allclose(torch.stack([m[0, 1] for m in maps]).sum(0), expected, atol=1e-6)
    # the order matters: softmax first, then upsampling, is another map
    other = layer_maps(layers, text, 0.01, (2, 2), 3, softmax_first=True)
    assert not torch.allclose(torch.stack([m[0, 1] for m in other]).sum(0), expected, atol=1e-3)


def test_aprilgan_forward_written_out():
    torch.manual_seed(0)
    det = APRILGAN(APRILGANOptions(), tiny_backbone(), SIZE).eval()
    b = batch()
    with torch.no_grad():
        out = det(b)
        text = det.text(["bottle"])[0]  # (2, D)
        visual = det.clip.model.visual
        feats = det.clip.image_features(b["image"])
        expected = 0
        for lin, tap in zip(det.linear, feats.taps):
            p = lin(tap[:, 1:])
            logits = 100 * (p / p.norm(dim=-1, keepdim=True)) @ text.T  # (B, N, 2)
            grid = logits.transpose(1, 2).reshape(2, 2, *det.clip.grid)
            up = F.interpolate(grid, size=(SIZE, SIZE), mode="bilinear", align_corners=True)
            expected = expected + up.softmax(1)[:, 1]
        cls = visual.ln_post(feats.final[:, 0]) @ visual.proj
        score = (100 * F.normalize(cls, dim=-1) @ text.T).softmax(-1)[:, 1]
    assert torch.allclose(out.anomaly_map, expected, atol=1e-5)
    assert torch.allclose(out.score, score, atol=1e-6)


def test_aprilgan_loss_is_focal_plus_dice_per_layer():
    det = APRILGAN(APRILGANOptions(), tiny_backbone(), SIZE)
    p = torch.tensor([0.8, 0.3])  # anomalous probability of two pixels; the first is anomalous
    m = torch.stack([1 - p, p]).view(1, 2, 1, 2)
    mask = torch.tensor([[[1.0, 0.0]]])
    s = 1e-5  # their focal loss's label smoothing, also added to pt
    pt = torch.tensor([s * 0.2 + (1 - s) * 0.8 + s, (1 - s) * 0.7 + s * 0.3 + s])
    focal = (-(1 - pt) ** 2 * pt.log()).mean()
    dice = 1 - (2 * 0.8 + 1) / (0.8 + 0.3 + 1 + 1)
    parts = det.loss(Output(torch.zeros(1), torch.zeros(1), {"layer_maps": [m, m], "logits": None}), {"mask": mask})
    assert torch.allclose(parts["total"], 2 * (focal + dice), atol=1e-6)


def test_aprilgan_released_defaults_and_per_dataset_epochs():
    cfg = load_config("paper", "aprilgan")
    assert cfg.train.dataset == "visa" and cfg.train.epochs == 15 and cfg.train.mosaic == 0.0
    assert cfg.backbone.clip.activation == "gelu" and cfg.backbone.precision == "fp16" and cfg.eval.sigma == 0.0
    assert (cfg.train.batch_size, cfg.train.lr_head, tuple(cfg.train.betas), cfg.train.schedule) == (8, 1e-3, (0.5, 0.999), "constant")
    mvtec = load_config("paper", "aprilgan", ["train.dataset=mvtec", "train.root=data/mvtec"])
    assert (mvtec.train.epochs, mvtec.train.mosaic) == (3, 0.2)
    assert load_config("paper", "aprilgan", ["train.dataset=mvtec", "train.epochs=5"]).train.epochs == 5  # overrides win
    assert smoke_config("aprilgan").train.epochs == 4  # a preset's epochs win too
    other = load_config("paper", "anomalyclip", ["train.dataset=mvtec"])
    assert other.train.epochs == 15 and other.train.mosaic == 0.0  # other methods untouched


# ---- WinCLIP ----------------------------------------------------------------------------------------------------

def test_window_scale_rule():
    assert grid_scales((2, 3), (15, 15), "relative", 15) == (2, 3)  # WinCLIP's own 15x15 grid at 240 px
    assert grid_scales((2, 3), (37, 37), "relative", 15) == (5, 7)  # 2/15 and 3/15 of the image at 518 px
    assert grid_scales((2, 3), (8, 8), "relative", 15) == (1, 2)
    assert grid_scales((2, 3), (37, 37), "absolute", 15) == (2, 3)


def test_harmonic_fusion_includes_the_image_score():
    fused = harmonic_fusion(torch.tensor([0.5]), [torch.tensor([[0.25, 1.0]]), torch.tensor([[1.0, 0.5]])])
    assert torch.allclose(fused, torch.tensor([[3 / (2 + 4 + 1), 3 / (2 + 1 + 2)]]))


def test_winclip_window_embedding_score_and_map_written_out():
    torch.manual_seed(0)
    det = WinCLIP(WinCLIPOptions(), tiny_backbone(), SIZE).eval()
    assert det.scales == (2, 3)  # 16x16 grid: round(2 * 16 / 15), round(3 * 16 / 15)
    b = batch()
    with torch.no_grad():
        out = det(b)
        text = det.text(["bottle"])[0]
        visual = det.clip.model.visual
        tokens = det.clip.embed_image(b["image"])  # after ln_pre, which is per token
        # the top-left 2x2 window: CLS and patches (0, 0), (0, 1), (1, 0), (1, 1) through the tower alone
        grid_w = det.clip.grid[1]
        window = torch.cat([tokens[:, :1], tokens[:, 1 + torch.tensor([0, 1, grid_w, grid_w + 1])]], 1)
        emb = visual.ln_post(visual.transformer(window)[:, 0]) @ visual.proj
        win_score = (F.normalize(emb, dim=-1) @ text.T / 0.07).softmax(-1)[:, 1]
        cls = visual.ln_post(visual.transformer(tokens)[:, 0]) @ visual.proj
        score = (F.normalize(cls, dim=-1) @ text.T / 0.07).softmax(-1)[:, 1]
    assert torch.allclose(out.score, score, atol=1e-6)
    assert torch.allclose(out.aux["scale_maps"][0][:, 0], win_score, atol=1e-5)  # only this window covers patch 0
    s2, s3 = out.aux["scale_maps"]
    fused = 3 / (1 / score[:, None] + 1 / s2 + 1 / s3)
    expected = F.interpolate(fused.view(2, 1, *det.clip.grid), size=(SIZE, SIZE), mode="bilinear", align_corners=False)[:, 0]
    assert torch.allclose(out.anomaly_map, expected, atol=1e-6)


def test_winclip_window_indices_with_stride():
    w = window_indices((4, 4), 2, 2)
    assert w.tolist() == [[0, 1, 4, 5], [2, 3, 6, 7], [8, 9, 12, 13], [10, 11, 14, 15]]


def test_winclip_released_defaults_and_kit_backbone_switch():
    cfg = load_config("paper", "winclip")
    clip = cfg.backbone.clip
    assert (clip.model, clip.pretrained, clip.image_size, clip.activation) == ("ViT-B-16-plus-240", "laion400m_e31", 240, "model")
    assert cfg.backbone.precision == "fp32" and cfg.eval.sigma == 0.0
    kit = load_config("paper", "winclip", list(WINCLIP_ON_KIT_BACKBONE)).backbone.clip
    assert (kit.model, kit.pretrained, kit.image_size) == ("ViT-L-14-336-quickgelu", "openai", 518)
    assert smoke_config("winclip").backbone.clip.model == "ssvp-tiny-clip"  # a preset's backbone wins


# ---- the mosaic augmentation --------------------------------------------------------------------------------------

def mosaic_samples(root) -> list[Sample]:
    """Class "a": three normal images in solid colours and one anomalous one whose mask is its left half."""
    colours = {"good_0": (255, 0, 0), "good_1": (0, 255, 0), "good_2": (0, 0, 255), "crack_0": (255, 255, 255)}
    samples = []
    for name, colour in colours.items():
        path = root / f"{name}.png"
        Image.new("RGB", (20, 20), colour).save(path)
        mask = None
        if name.startswith("crack"):
            mask = root / f"{name}_mask.png"
            arr = np.zeros((20, 20), np.uint8)
            arr[:, :10] = 255
            Image.fromarray(arr).save(mask)
        samples.append(Sample(path, mask, "a", int(mask is not None), name.split("_")[0], "d"))
    return samples


@pytest.mark.parametrize("draw", ["defect_folder", "image"])
def test_mosaic_tiles_four_images_of_the_class_with_their_masks(tmp_path, draw):
    samples = mosaic_samples(tmp_path)
    base = AnomalyDataset(samples, 64, [32])
    mosaic = MosaicDataset(base, rate=1.0, seed=0, draw=draw, label="any_tile")
    colours = {tuple(np.asarray(Image.open(s.image))[0, 0]): s for s in samples}
    seen_anomalous = False
    for epoch in range(4):
        mosaic.epoch = epoch
        item = mosaic[1]
        assert item["image"].shape == (3, 64, 64) and item["views"][32].shape == (3, 32, 32)
        tiles = []
        for row in range(2):
            for col in range(2):
                centre = (item["image"][:, row * 32 + 16, col * 32 + 16] * 255).round().int().tolist()
                tile = colours[tuple(centre)]
                tiles.append(tile)
                left = item["mask"][row * 32 + 16, col * 32 + 4]
                right = item["mask"][row * 32 + 16, col * 32 + 28]
                assert (left, right) == ((1.0, 0.0) if tile.mask is not None else (0.0, 0.0))
        assert item["label"] == max(t.label for t in tiles)
        if draw == "image":  # AdaCLIP's random.sample: the four images of the class, each once
            assert sorted(t.image.name for t in tiles) == sorted(s.image.name for s in samples)
        seen_anomalous |= item["label"] == 1
        mosaic.epoch = epoch
        assert torch.equal(mosaic[1]["image"], item["image"])  # reproducible from (seed, epoch, index)
    assert seen_anomalous
    untouched = MosaicDataset(base, rate=0.0, seed=0)[2]
    assert torch.equal(untouched["image"], base[2]["image"]) and torch.equal(untouched["mask"], base[2]["mask"])


def test_mosaic_keeps_the_items_label_and_spares_other_datasets(tmp_path):
    """Both releases keep the replaced item's label (AdaCLIP's image loss reads it); AdaCLIP's pooled second training
    set gets no mosaics."""
    samples = mosaic_samples(tmp_path)
    base = AnomalyDataset(samples, 64)
    mosaic = MosaicDataset(base, rate=1.0, seed=0, draw="image")
    assert [int(mosaic[i]["label"]) for i in range(4)] == [s.label for s in samples]
    assert not torch.equal(mosaic[0]["image"], base[0]["image"])
    spared = MosaicDataset(base, rate=1.0, seed=0, datasets={"another"})
    assert all(torch.equal(spared[i]["image"], base[i]["image"]) for i in range(4))


def test_adaclip_trains_on_mvtec_with_its_released_mosaic():
    mvtec = load_config("paper", "adaclip", ["train.dataset=mvtec"])
    assert (mvtec.train.mosaic, mvtec.train.mosaic_draw, mvtec.train.mosaic_label) == (0.2, "image", "item")
    assert load_config("paper", "adaclip", ["train.dataset=visa"]).train.mosaic == 0.0


def test_training_with_mosaic_runs_through_the_engine(synth_root, tmp_path):
    cfg = smoke_config("aprilgan", f"out_dir={tmp_path}", "train.epochs=1", "train.mosaic=0.5",
                       f"train.root={synth_root}/synth-a")
    result = train(cfg, progress=False, max_steps=2)
    assert len(result.history) == 2 and all(math.isfinite(h["total"]) for h in result.history)


# ---- reduced precision -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_aprilgan_reduced_precision_forward_and_training_step(precision):
    b = batch()
    runs = {}
    for prec in ("fp32", precision):
        torch.manual_seed(0)
        det = APRILGAN(APRILGANOptions(), dataclasses.replace(tiny_backbone(), precision=prec), SIZE).train()
        out = det(b)
        loss = det.loss(out, b)["total"]
        loss.backward()
        runs[prec] = (out, loss.item(), [p.grad for p in det.linear.parameters()])
    (ref, ref_loss, ref_grads), (low, low_loss, low_grads) = runs["fp32"], runs[precision]
    for m32, m16 in zip(ref.aux["layer_maps"], low.aux["layer_maps"]):
        assert (m32 - m16).abs().max() <= 2e-2  # per-layer probabilities
    assert (ref.anomaly_map - low.anomaly_map).abs().max() <= 2e-2 * ref.anomaly_map.abs().max()  # sum of 4 layers
    assert abs(ref_loss - low_loss) <= 1e-2 * ref_loss
    for g32, g16 in zip(ref_grads, low_grads):
        assert torch.isfinite(g16).all() and (g32 - g16).abs().max() <= 5e-2 * g32.abs().max()


def test_winclip_bf16_forward_close_to_fp32():
    b = batch()
    maps = {}
    for prec in ("fp32", "bf16"):
        det = WinCLIP(WinCLIPOptions(), dataclasses.replace(tiny_backbone(), precision=prec), SIZE).eval()
        with torch.no_grad():
            maps[prec] = det(b)
    assert (maps["fp32"].anomaly_map - maps["bf16"].anomaly_map).abs().max() <= 2e-2
    assert (maps["fp32"].score - maps["bf16"].score).abs().max() <= 2e-2
