"""AnomalyVFM against numbers from its released code (MaticFuc/AnomalyVFM @4da96b4, tiny backbones; see
anomalyvfm/PROVENANCE.md): for DINOv2 (DoRA and LoRA), DINOv3, CLIP and SigLIP2 the maps and scores of test.py and
the loss and gradients of one train.py step (two accumulation steps of one image); for RADIO the maps and scores of
the model hubconf / Hugging Face load (radio_local.py). Every backbone reaches our detector through `read_released`
from a file written in the authors' exact format (train.py's model.pkl, Hugging Face's model.safetensors); DINOv2 and
DINOv3 also through the kit's ordinary path (the frozen backbone as a Meta hub checkpoint that timm converts).

The fixture stores no weights: names, shapes and the (mean, std) each was drawn with from a seeded numpy stream,
rounded to float16, so the test redraws exactly the values their model ran with."""
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

from parity_common import GRAD_RTOL, LOSS_RTOL, MAP_RTOL, SCORE_RTOL, assert_rel_close
from ssvp_core.config import BackboneConfig, ClipConfig, DinoConfig
from ssvp_core.errors import CheckpointError
from ssvp_core.methods import method_spec
from ssvp_core.methods.anomalyvfm import AnomalyVFM, AnomalyVFMOptions
from ssvp_core.methods.anomalyvfm_release import RELEASED_PREFIX, read_released, trainable_name

HERE = Path(__file__).parent / "anomalyvfm"
TINY = {"embed_dim": 64, "depth": 2, "num_heads": 2}
# fixture key -> (family, peft, input size, our backbone)
RUNS = {
    "dinov2": ("dinov2", "dora", 112, DinoConfig(model="vit_small_patch14_reg4_dinov2", pretrained="none",
                                                  image_size=112, layers=(0,), kwargs=TINY)),
    "dinov2_lora": ("dinov2", "lora", 112, DinoConfig(model="vit_small_patch14_reg4_dinov2", pretrained="none",
                                                       image_size=112, layers=(0,), kwargs=TINY)),
    "dinov3": ("dinov3", "dora", 128, DinoConfig(model="vit_large_patch16_dinov3", pretrained="none", image_size=128,
                                                  layers=(0,), kwargs=TINY)),
    "clip": ("clip", "dora", 112, ClipConfig(model="ssvp-avfm-parity-clip", pretrained="none", image_size=112,
                                             layers=(1,), pos_embed_interpolation="bicubic_no_antialias")),
    "siglip2": ("siglip2", "dora", 128, DinoConfig(model="naflexvit_so400m_patch16_siglip", pretrained="none",
                                                    image_size=128, layers=(0,),
                                                    kwargs={**TINY, "pos_embed_grid_size": (4, 4)})),
    "radio": ("radio", "dora", 128, DinoConfig(model="vit_large_patch16_radio_v3", pretrained="none", image_size=128,
                                                layers=(0,), kwargs={**TINY, "init_values": 0})),
}
TRAINED = [k for k in RUNS if k != "radio"]


@pytest.fixture(scope="module")
def fixture() -> dict[str, np.ndarray]:
    if not (HERE / "PROVENANCE.md").is_file():
        raise AssertionError(f"{HERE}/PROVENANCE.md is missing: a fixture without provenance proves nothing")
    return dict(np.load(HERE / "fixture.npz", allow_pickle=False))


def release(data: dict, key: str) -> dict[str, OrderedDict]:
    """Their three state dicts (train.py's model.pkl sections), values redrawn as the generator drew them."""
    names, ndim = data[f"{key}/spec/names"], data[f"{key}/spec/ndim"]
    flat, mean, std = data[f"{key}/spec/shapes"], data[f"{key}/spec/mean"], data[f"{key}/spec/std"]
    rng = np.random.Generator(np.random.PCG64(int(data["meta/values_seed"])))
    tensors, pos = {}, 0
    for i, name in enumerate(names):
        shape = tuple(int(d) for d in flat[pos:pos + ndim[i]])
        pos += ndim[i]
        values = np.asarray(mean[i] + std[i] * rng.standard_normal(shape))
        tensors[str(name)] = torch.from_numpy(values.astype(np.float16).astype(np.float32))
    prefix = f"{key}/fixed/"
    tensors.update({k[len(prefix):]: torch.from_numpy(np.array(v)) for k, v in data.items() if k.startswith(prefix)})
    out = {s: OrderedDict() for s in ("model", "decoder", "predictor")}
    for name in sorted(tensors):
        section, rest = name.split("/", 1)
        out[section][rest] = tensors[name]
    return out


def write_pkl(path: Path, sections: dict) -> Path:
    torch.save({"model_state_dict": sections["model"], "decoder_state_dict": sections["decoder"],
                "predictor_state_dict": sections["predictor"]}, path)
    return path


def write_safetensors(path: Path, sections: dict) -> Path:
    from safetensors.torch import save_file

    save_file({f"{s}.{k}": v.contiguous() for s, sd in sections.items() for k, v in sd.items()}, str(path))
    return path


def detector(key: str, image_size: int, backbone=None, **options) -> AnomalyVFM:
    family, peft, _, cfg = RUNS[key]
    cfg = backbone or cfg
    bb = BackboneConfig(clip=cfg, precision="fp32") if family == "clip" else BackboneConfig(dino=cfg, precision="fp32")
    opts = AnomalyVFMOptions(vfm=family, peft=peft, rank=8, **({"radio_pos_embed": "bicubic"} if family == "radio" else {}),
                             **options)
    return AnomalyVFM(opts, bb, image_size)


def batch(data: dict, size: int) -> dict:
    image = torch.from_numpy(data[f"input/image_{size}"]).permute(0, 3, 1, 2).float() / 255
    return {"image": image, "mask": torch.from_numpy((data[f"input/mask_{size}"] > 127).astype(np.float32)),
            "label": torch.tensor([1, 0]), "cls": ["obj", "obj"]}


def released_detector(data, key, tmp_path, image_size, fmt="pkl", **options) -> AnomalyVFM:
    sections = release(data, key)
    path = (write_pkl(tmp_path / "model.pkl", sections) if fmt == "pkl"
            else write_safetensors(tmp_path / "model.safetensors", sections))
    det = detector(key, image_size, **options)
    det.load_trainable_state_dict(read_released(path))
    return det


@pytest.mark.parametrize("key", list(RUNS))
def test_anomalyvfm_parity_maps_and_scores(fixture, key, tmp_path):
    """test.py's 96x96-style map (here 16x16: twice the 8x8 grid, after the 5x5 mean) and sigmoid score."""
    size = RUNS[key][2]
    det = released_detector(fixture, key, tmp_path, image_size=2 * int(fixture["meta/grid"])).eval()
    with torch.no_grad():
        out = det(batch(fixture, size))
    assert_rel_close(out.anomaly_map, fixture[f"{key}/out/anomaly_map"], MAP_RTOL, f"{key} anomaly map")
    assert_rel_close(out.score, fixture[f"{key}/out/score"], SCORE_RTOL, f"{key} image score")


@pytest.mark.parametrize("key", TRAINED)
def test_anomalyvfm_parity_loss_and_gradients(fixture, key, tmp_path):
    """One train.py step: the loss summed over its two accumulation steps and the gradients before the update."""
    family, _, size, _ = RUNS[key]
    det = released_detector(fixture, key, tmp_path, image_size=size, forward_chunk=1).train()
    torch.manual_seed(int(fixture["meta/forward_seed"]))  # DINOv3's RoPE rescaling draws, as their first forward
    parts = det.loss(det(batch(fixture, size)), batch(fixture, size))
    assert_rel_close(parts["total"], fixture[f"{key}/loss/total"], LOSS_RTOL, f"{key} loss")
    parts["total"].backward()
    own = dict(det.named_parameters())
    grads = {k[len(f"{key}/grad/"):]: v for k, v in fixture.items() if k.startswith(f"{key}/grad/")}
    mapped = {}
    for theirs, reference in grads.items():
        section, name = theirs.split("/", 1)
        mapped[trainable_name(section, name[len("net."):] if section == "model" else name, family)] = (theirs, reference)
    adapters = {n for n, p in own.items() if p.requires_grad and (".adapter." in n or n.startswith("clip_adapters."))}
    assert adapters | {"score_head.weight", "score_head.bias"} <= set(mapped), "the fixture misses adapter gradients"
    largest = max(float(np.abs(r).max()) for _, r in mapped.values())
    for ours, (theirs, reference) in sorted(mapped.items()):
        grad = own[ours].grad
        assert grad is not None, f"no gradient reached {ours}"
        if np.abs(reference).max() < 1e-5 * largest:
            # zero in exact arithmetic (a conv bias before GroupNorm with one channel per group, tiny widths only):
            # both sides hold float32 rounding noise
            assert grad.abs().max() < 1e-5 * largest, f"{key} grad {ours}: should vanish, is {grad.abs().max():.3g}"
            continue
        assert_rel_close(grad, reference, GRAD_RTOL, f"{key} grad {ours} ({theirs})")


def test_anomalyvfm_parity_every_gradient_of_dinov2_is_compared(fixture):
    """The DINOv2 run stores every trainable gradient: their set maps one to one onto ours."""
    names = [k.split("/", 2)[2] for k in fixture if k.startswith("dinov2/grad/")]
    ours = {trainable_name(n.split("/", 1)[0], n.split("/", 1)[1].removeprefix("net."), "dinov2") for n in names}
    det = detector("dinov2", 16)
    assert ours == {n for n, p in det.named_parameters() if p.requires_grad}


def test_anomalyvfm_parity_hugging_face_format(fixture, tmp_path):
    """The Hugging Face model.safetensors (flat model.net.* / decoder.* / predictor.*) reads to the same model."""
    det = released_detector(fixture, "siglip2", tmp_path, image_size=16, fmt="safetensors").eval()
    with torch.no_grad():
        out = det(batch(fixture, 128))
    assert_rel_close(out.anomaly_map, fixture["siglip2/out/anomaly_map"], MAP_RTOL, "siglip2 map (safetensors)")


@pytest.mark.parametrize("key", ["dinov2", "dinov3"])
def test_anomalyvfm_parity_through_the_kits_backbone_weights(fixture, key, tmp_path):
    """Training starts from the backbone's own weights (backbone.dino.pretrained), not from a release: the frozen
    backbone as a Meta hub checkpoint, converted by timm, plus the trainable part of the release."""
    sections = release(fixture, key)
    hub = {k.replace(".layer.", "."): v for k, v in sections["model"].items()
           if k.rsplit(".", 1)[-1] not in ("lora_A", "lora_B", "magnitude", "lora_A_q", "lora_B_q", "mag_q",
                                            "lora_A_v", "lora_B_v", "mag_v")}
    weights = tmp_path / "hub.pth"
    torch.save({k[len("net."):]: v for k, v in hub.items()}, weights)
    _, _, size, cfg = RUNS[key]
    cfg = DinoConfig(**{**cfg.__dict__, "pretrained": str(weights)})
    # the tiny hub model's RoPE periods are float32 (Meta's released checkpoints hold them rounded through bf16)
    det = detector(key, 16, backbone=cfg, **({"dinov3_rope_periods": "fp32"} if key == "dinov3" else {})).eval()
    state = read_released(write_pkl(tmp_path / "model.pkl", sections))
    det.load_trainable_state_dict({k: v for k, v in state.items() if not k.startswith(RELEASED_PREFIX)})
    with torch.no_grad():
        out = det(batch(fixture, size))
    assert_rel_close(out.anomaly_map, fixture[f"{key}/out/anomaly_map"], MAP_RTOL, f"{key} map (hub weights)")
    assert_rel_close(out.score, fixture[f"{key}/out/score"], SCORE_RTOL, f"{key} score (hub weights)")


def test_anomalyvfm_siglip2_head_adapter_is_the_only_one_without_gradient(fixture):
    """Their DoRA on SigLIP2's pooling-head out_proj never acts (documented in anomalyvfm_release.py)."""
    inert = [str(n) for n in fixture["siglip2/meta/inert_adapters"]]
    assert inert and all("head.attention.out_proj" in n for n in inert)
    assert all(trainable_name("model", n.split("/", 1)[1].removeprefix("net."), "siglip2") is None for n in inert)


def test_read_released_refuses_wrong_files(fixture, tmp_path):
    sections = release(fixture, "dinov2")
    path = write_pkl(tmp_path / "model.pkl", sections)
    truncated = tmp_path / "cut.pkl"
    truncated.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="cut.pkl.*truncated"):
        read_released(truncated)
    torch.save({"format": "ssvp-checkpoint-1", "trainable": {}}, tmp_path / "ours.pt")
    with pytest.raises(CheckpointError, match="ours.pt.*ssvp checkpoint"):
        read_released(tmp_path / "ours.pt")
    bad = dict(sections)
    bad["decoder"] = OrderedDict(list(sections["decoder"].items()) + [("extra.weight", torch.zeros(1))])
    with pytest.raises(CheckpointError, match="bad.pkl.*unknown decoder entry 'extra.weight'"):
        read_released(write_pkl(tmp_path / "bad.pkl", bad))
    with pytest.raises(CheckpointError, match="missing.pkl: no such file"):
        read_released(tmp_path / "missing.pkl")


def test_released_weights_for_another_backbone_or_adapter_say_which_settings_fit(fixture, tmp_path):
    state = read_released(write_pkl(tmp_path / "model.pkl", release(fixture, "dinov2")))
    other = detector("dinov3", 16)
    with pytest.raises(CheckpointError, match="dinov2 backbone; this run builds dinov3.*options.vfm=dinov2"):
        other.load_trainable_state_dict(state)
    lora = detector("dinov2_lora", 16)
    with pytest.raises(CheckpointError, match="DORA adapters of rank 8.*options.peft=dora options.rank=8"):
        lora.load_trainable_state_dict(state)


def test_anomalyvfm_registers_the_reader():
    assert method_spec("anomalyvfm").read_released is read_released


def test_released_file_through_cli_eval(fixture, synth_root, tmp_path):
    """`ssvp eval --method anomalyvfm --checkpoint model.pkl`, with the --set options of the file's backbone (here the
    tiny DINOv2 the fixture's file holds, as README "Bringing weights" sets them for a real one), evaluates the
    detector `read_released` fills: the same metrics as loading the file by hand, and not the untrained ones."""
    import pandas as pd

    from ssvp_core.cli import main
    from ssvp_core.config import load_config
    from ssvp_core.engine.infer import evaluate
    from ssvp_core.methods import build_detector
    from ssvp_core.metrics import wide

    path = write_pkl(tmp_path / "model.pkl", release(fixture, "dinov2"))
    sets = ["options.vfm=dinov2", "options.peft=dora", "options.rank=8", "image_size=112",
            "backbone.dino.model=vit_small_patch14_reg4_dinov2", "backbone.dino.pretrained=none",
            "backbone.dino.image_size=112", "backbone.dino.layers=[0]",
            "backbone.dino.kwargs={embed_dim: 64, depth: 2, num_heads: 2}"]
    csv = tmp_path / "released.csv"
    assert main(["eval", "--method", "anomalyvfm", "--profile", "smoke", "--checkpoint", str(path), "--eval-on",
                 f"synth-b={synth_root / 'synth-b'}", "--out", str(csv), "--quiet"]
                + [a for s in sets for a in ("--set", s)]) == 0
    target = f"eval.datasets=[{{name: synth-b, root: '{synth_root / 'synth-b'}'}}]"
    cfg = load_config("smoke", "anomalyvfm", sets + [target])
    det = build_detector(cfg)
    untrained = evaluate(det.eval(), cfg.eval.datasets[0], cfg, progress=False).metrics
    det.load_trainable_state_dict(read_released(path))
    reference = evaluate(det.eval(), cfg.eval.datasets[0], cfg, progress=False).metrics
    merged = pd.read_csv(csv).merge(reference, on=["dataset", "cls", "metric"], suffixes=("_cli", "_ref"))
    assert len(merged) == len(reference) > 0
    np.testing.assert_allclose(merged.value_cli, merged.value_ref, rtol=1e-6, atol=1e-9)
    assert not np.allclose(wide(reference).pixel_auroc, wide(untrained).pixel_auroc)
