"""The frozen-feature cache: it reads back bit for bit what the backbone gave; training and evaluation with it give,
to float32 rounding, the losses, models and numbers they give without it (their batches differ, issue 17); it is
built once and shared by runs with the same backbones and images, it is never read half-written, and it is rebuilt
when anything that changes the features changes."""
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from rounding import assert_equal_to_rounding, assert_metrics_equal_to_rounding, rounding_rtol
from tiny import smoke_config
from ssvp_core.data.loader import AnomalyDataset
from ssvp_core.data.registry import read_dataset
from ssvp_core.engine import feature_cache
from ssvp_core.engine.batches import collate
from ssvp_core.engine.infer import evaluate
from ssvp_core.engine.train import train
from ssvp_core.methods import build_detector


def _cfg(root, out, *extra):
    return smoke_config("ssvp", f"out_dir={out}", "train.epochs=2", "train.batch_size=4", "options.vae_hidden=32",
                        "train.classes=[weave, washer]", *extra, root=root)


def _params(result):
    return {k: v for k, v in result.detector.trainable_state_dict().items()}


def _folders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


def test_training_with_the_cache_follows_training_without_it(synth_root, tmp_path):
    plain = train(_cfg(synth_root, tmp_path / "off", "train.feature_cache=off"), progress=False)
    assert not (tmp_path / "off" / "features").exists()
    exact = train(_cfg(synth_root, tmp_path / "auto"), progress=False)  # fp32 backbone: stored in fp32
    rounded = train(_cfg(synth_root, tmp_path / "fp16", "train.feature_cache_dtype=fp16"), progress=False)
    assert len(_folders(tmp_path / "auto" / "features")) == 1
    # Without the cache the features are computed in the shuffled training batches (4 images), with it in batches of 8:
    # they agree to float32 rounding, not bit for bit on every CPU (issue 17). Measured with +-2 ulps of noise on every
    # cached feature: each step's loss moves <= 1.5e-7 relative, but Adam divides every gradient by its own running
    # RMS, so a tensor whose gradients are ~0 amplifies the noise: up to 9e-3 of its largest value after these 10 steps
    # (global_fusion.q_d). fp16 storage moves the losses by up to 1.1e-4 and the parameters by 1.6e-2; another seed
    # moves the losses by 0.1-0.3 and the parameters by 2.
    losses = [[h["total"] for h in r.history] for r in (plain, exact, rounded)]
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)  # the same data, order and draws: the same training
    assert losses[2] == pytest.approx(losses[0], rel=1e-3)  # fp16 storage rounds the features (~5e-4 relative)
    a, b, c = _params(plain), _params(exact), _params(rounded)
    worst_exact = max(float((a[k] - b[k]).abs().max() / a[k].abs().max().clamp_min(1e-12)) for k in a)
    worst_fp16 = max(float((a[k] - c[k]).abs().max() / a[k].abs().max().clamp_min(1e-12)) for k in a)
    assert worst_exact < 5e-2 and worst_fp16 < 5e-2, (worst_exact, worst_fp16)


def test_the_cache_is_built_once_and_shared_by_runs_with_the_same_features(synth_root, tmp_path, monkeypatch):
    calls = []
    original = feature_cache.build_or_open

    def counting(detector, samples, cfg, device, progress=True, **kw):
        calls.append(any(p.name.startswith(".") for p in _folders(tmp_path / "features")))
        return original(detector, samples, cfg, device, progress, **kw)

    first = train(_cfg(synth_root, tmp_path), progress=False)
    folder, = _folders(tmp_path / "features")
    stamp = (folder / "meta.json").stat().st_mtime_ns
    # another seed and another head option: same frozen features, so the same cache, read not rewritten
    second = train(_cfg(synth_root, tmp_path, "train.seed=5", "options.gamma=0.3"), progress=False)
    assert second.checkpoint != first.checkpoint
    assert _folders(tmp_path / "features") == [folder] and (folder / "meta.json").stat().st_mtime_ns == stamp
    # a changed image changes the key: a second cache, the first one untouched
    image = next((synth_root / "synth-a" / "weave" / "test").rglob("*.png"))
    copy = tmp_path / "synth"
    shutil.copytree(synth_root, copy)
    changed = copy / image.relative_to(synth_root)
    os.utime(changed, (1, 1))
    train(_cfg(copy, tmp_path), progress=False)
    assert len(_folders(tmp_path / "features")) == 2


def test_a_cache_built_for_one_method_is_never_read_by_another(synth_root, tmp_path):
    """APRIL-GAN and Bayes-PFL tap the same backbone the same way, but their "global" features differ (normalised
    or not): a Bayes-PFL run after an APRIL-GAN one builds its own cache and reads its own features."""
    device = torch.device("cpu")

    def cached(method):
        # the same backbone settings for both, as the smoke and rehearsal presets give them
        cfg = smoke_config(method, f"out_dir={tmp_path}", "train.classes=[weave]", "backbone.precision=fp32",
                           "backbone.clip.activation=gelu", root=synth_root)
        detector = build_detector(cfg).eval()
        samples = read_dataset(cfg.train.dataset, cfg.path(cfg.train.root), "test", cfg.train.classes)
        return detector, samples, cfg, feature_cache.build_or_open(detector, samples, cfg, device, progress=False)

    cached("aprilgan")
    detector, samples, cfg, cache = cached("bayes_pfl")
    assert len(_folders(tmp_path / "features")) == 2  # one per method
    dataset = AnomalyDataset(samples, cfg.image_size, detector.input_sizes(), masks=False)
    direct = detector.frozen_features(collate([dataset[0], dataset[1]]))["global"]
    # another batch composition than the build's: float32 rounding of sums up to the tiny towers' MLP width (512)
    assert_equal_to_rounding(cache.take([0, 1], device)["global"], direct, rounding_rtol(512), "global")
    assert (direct.norm(dim=-1) - 1).abs().min() > 1e-2  # Bayes-PFL's own, not APRIL-GAN's unit vectors


def test_an_interrupted_build_leaves_nothing_that_would_be_read(synth_root, tmp_path, monkeypatch):
    cfg = _cfg(synth_root, tmp_path)
    det = build_detector(cfg)
    real = det.frozen_features
    seen = []

    def failing(batch):
        seen.append(1)
        if len(seen) == 3:  # the probe, the first batch, then the interruption
            raise KeyboardInterrupt
        return real(batch)

    monkeypatch.setattr(det, "frozen_features", failing)
    from ssvp_core.data.registry import read_dataset

    samples = read_dataset("synth-a", str(synth_root / "synth-a"), "test", ["weave", "washer"])
    with pytest.raises(KeyboardInterrupt):
        feature_cache.build_or_open(det, samples, cfg, torch.device("cpu"), progress=False)
    assert _folders(tmp_path / "features") == []  # no folder, not even the temporary one
    monkeypatch.setattr(det, "frozen_features", real)
    cache = feature_cache.build_or_open(det, samples, cfg, torch.device("cpu"), progress=False)
    assert len(cache) == len(samples) and len(_folders(tmp_path / "features")) == 1


def test_large_caches_are_announced_and_oversized_ones_skipped(synth_root, tmp_path, monkeypatch, capsys):
    from ssvp_core.data.registry import read_dataset

    samples = read_dataset("synth-a", str(synth_root / "synth-a"), "test", ["weave"])
    monkeypatch.setattr(feature_cache, "LARGE_BYTES", 1)
    cfg = _cfg(synth_root, tmp_path)
    det = build_detector(cfg)
    assert feature_cache.build_or_open(det, samples, cfg, torch.device("cpu"), progress=False) is not None
    err = capsys.readouterr().err
    assert f"({len(samples)} images" in err and "feature cache: writing" in err and str(tmp_path) in err
    tiny = _cfg(synth_root, tmp_path / "b", "train.feature_cache_max_gb=0.000001")
    assert feature_cache.build_or_open(det, samples, tiny, torch.device("cpu"), progress=False) is None
    assert "exceeds train.feature_cache_max_gb" in capsys.readouterr().err
    assert not (tmp_path / "b" / "features").exists()
    # a disk without room for it: no cache, no half-written files, the way out named
    monkeypatch.setattr(shutil, "disk_usage", lambda path: SimpleNamespace(total=100, used=99, free=1))
    full = _cfg(synth_root, tmp_path / "c")
    assert feature_cache.build_or_open(det, samples, full, torch.device("cpu"), progress=False) is None
    err = capsys.readouterr().err
    assert "free on" in err and str(tmp_path / "c" / "features") in err and "train.feature_cache_dir" in err
    assert _folders(tmp_path / "c" / "features") == []


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_the_default_storage_gives_back_exactly_what_the_backbone_computed(synth_root, tmp_path, precision):
    """`auto` storage is lossless: `take` reads back, bit for bit and in the dtype the backbone gave, what
    `frozen_features` returned for each image while the cache was built. A direct pass of the same images in another
    batch (two images; the build ran all five at once) agrees to rounding only: the BLAS may block a 2-row product
    differently from a 5-row one, so on some CPUs the last bits differ (issue 17)."""
    from ssvp_core.data.registry import read_dataset
    from ssvp_core.engine.batches import collate

    samples = read_dataset("synth-a", str(synth_root / "synth-a"), "test", ["weave"])[:5]
    cfg = _cfg(synth_root, tmp_path, f"backbone.precision={precision}")
    det = build_detector(cfg).eval()
    backbone = det.frozen_features
    given = {}  # sample position -> what the backbone returned for it during the build (the last pass wins)

    def recording(batch):
        out = backbone(batch)
        for row, position in enumerate(batch["index"].tolist()):
            given[position] = {name: value[row].clone() for name, value in out.items()}
        return out

    det.frozen_features = recording
    cache = feature_cache.build_or_open(det, samples, cfg, torch.device("cpu"), progress=False)
    del det.frozen_features
    read = cache.take([3, 1], torch.device("cpu"))
    assert sorted(given) == list(range(5)) and set(read) == set(given[3])
    for name, value in read.items():
        built = torch.stack([given[3][name], given[1][name]])
        assert value.dtype == built.dtype and torch.equal(value, built), name
    dataset = feature_cache.AnomalyDataset(samples, cfg.image_size, det.input_sizes(), masks=False)
    with torch.inference_mode():
        direct = det.frozen_features(collate([dataset[i] for i in (3, 1)]))
    assert set(direct) == set(read)
    # fp32: sums of up to 512 products (the tiny towers' MLP width) in another order; bf16 autocast: products
    # accumulate in fp32 and round once to bf16, so another order moves a value by about one bf16 ulp, a few after the
    # layers. Both bounds stay far below the gap between two images' features (~0.3 of their scale).
    rtol = rounding_rtol(512) if precision == "fp32" else rounding_rtol(1, torch.bfloat16, ulps=4)
    for name, value in read.items():
        assert_equal_to_rounding(value, direct[name], rtol, name)


def test_evaluation_with_the_cache_gives_the_same_metrics(synth_root, tmp_path):
    cfg = _cfg(synth_root, tmp_path, "train.epochs=1", "eval.feature_cache=on")
    det = train(cfg, progress=False).detector
    ref = cfg.eval.datasets[0]
    cached = evaluate(det, ref, cfg, progress=False)
    cfg.eval.feature_cache = False
    plain = evaluate(det, ref, cfg, progress=False)
    assert len(_folders(tmp_path / "features")) == 2  # the training set's and the evaluation set's
    # the cache was built in batches of 8, the plain pass runs eval.batch_size: equal to float32 rounding (issue 17)
    assert cached.samples.score.to_numpy() == pytest.approx(plain.samples.score.to_numpy(), rel=1e-5)
    assert_metrics_equal_to_rounding(cached.metrics, plain.metrics)


def test_gpu_bench_runs_its_cpu_check_and_refuses_without_cuda(tmp_path):
    """bench/gpu.py is only timed on a GPU; here its code path runs on tiny models (no timing is asserted)."""
    import subprocess
    import sys

    script = Path(__file__).parents[1] / "bench" / "gpu.py"
    out = tmp_path / "gpu.md"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}
    run = subprocess.run([sys.executable, str(script), "--cpu-check", "--methods", "ssvp", "--batch", "2", "--repeats", "1",
                          "--out", str(out)], capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    text = out.read_text()
    assert text.startswith("CPU check on tiny random models") and "Device: cpu" in text
    for column in ("ms/img", "img/s", "peak memory (MiB)", "precision", "batch"):
        assert column in text
    assert "| ssvp " in text and "|       2 |" in text
    from ssvp_core.reports.efficiency import read_gpu_table  # what the efficiency page reads back

    device, table = read_gpu_table(out)
    assert device == "cpu" and table["method"].tolist() == ["ssvp"] and table["batch"].tolist() == [2]
    assert (table["ms/img"] > 0).all() and table["precision"].tolist() == ["fp32"]
    refused = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=300)
    assert refused.returncode == 2 and "needs a CUDA device" in refused.stderr


@pytest.mark.slow
def test_compiled_backbones_give_the_eager_maps():
    """backbone.compile=true compiles every vision block (both towers of SSVP); inductor may reorder float sums, so the
    maps agree to a stated 1e-4 of their range, not bit for bit."""
    from tiny import random_batch

    eager = build_detector(smoke_config("ssvp", "options.vae_hidden=32")).eval()
    compiled = build_detector(smoke_config("ssvp", "options.vae_hidden=32", "backbone.compile=true")).eval()
    assert type(compiled.clip.blocks[0]).__name__ == "OptimizedModule" and compiled.clip is not eager.clip
    batch = random_batch(2)
    with torch.inference_mode():
        a, b = eager(batch), compiled(batch)
    span = float(a.anomaly_map.max() - a.anomaly_map.min())
    assert float((a.anomaly_map - b.anomaly_map).abs().max()) <= 1e-4 * span
    assert torch.allclose(a.score, b.score, atol=1e-5)


CACHEABLE = ("anomalyclip", "aprilgan", "bayes_pfl", "ssvp", "vip2clip")


def test_which_methods_are_cacheable():
    """Frozen and unaugmented vision paths only: AdaCLIP and DAPO train tokens inside the tower, WinCLIP trains
    nothing (and its window passes depend on nothing a cache would hold across runs)."""
    from ssvp_core.methods import REGISTRY

    assert sorted(n for n, spec in REGISTRY.items() if spec.cls.cacheable) == sorted(CACHEABLE)


@pytest.mark.parametrize("method", CACHEABLE)
def test_heads_on_frozen_features_are_the_whole_forward_pass(method):
    """What a cache stores is all the frozen part computes: the heads on `frozen_features`, given a batch without any
    pixels, give the forward pass's maps, scores, loss and gradients."""
    from tiny import random_batch

    det = build_detector(smoke_config(method)).train()
    batch = random_batch(3, classes=("bottle", "metal_nut"))
    torch.manual_seed(0)
    whole = det(batch)
    loss = det.loss(whole, batch)["total"]
    loss.backward()
    grads = {n: p.grad.clone() for n, p in det.named_parameters() if p.grad is not None}
    det.zero_grad()
    with torch.no_grad():
        features = det.frozen_features(batch)
    pixel_free = {k: v for k, v in batch.items() if k not in ("image", "views")}
    torch.manual_seed(0)
    split = det({**pixel_free, "features": features})
    split_loss = det.loss(split, batch)["total"]
    split_loss.backward()
    assert torch.allclose(split.anomaly_map, whole.anomaly_map, atol=1e-6)
    assert torch.allclose(split.score, whole.score, atol=1e-6)
    assert float(split_loss.detach()) == pytest.approx(float(loss.detach()), rel=1e-6)
    assert grads and all(torch.allclose(p.grad, grads[n], atol=1e-6) for n, p in det.named_parameters() if n in grads)
