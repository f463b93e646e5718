"""What a training or an evaluation costs, before it runs: FLOPs counted by the kit on its own models, images per
epoch, epochs, and GPU-hours under a stated assumption (or a measured GPU table).

Counting. `count_flops` builds a method exactly as a run would (random weights, the profile's sizes) and counts
matrix products and convolutions with torch.utils.flop_counter (element-wise work is not counted, as on the
efficiency page) on real batches of the synthetic benchmark through the training loader:
* evaluation: one inference forward of one image and of two images of the same class, after a first forward (what
  a method keeps between batches, such as the text features of fixed prompts, is then in place); their difference
  is the cost per image, the rest the cost per class present in a batch (the text prompts of that class);
* training step: forward, loss and backward in train mode at one and two images, split the same way. A method whose
  frozen features are cacheable (engine/feature_cache.py) is counted on its heads only, and its frozen forward is
  counted separately: with the cache, training pays that once per image of the training set, then every epoch runs
  the heads alone; without it (cache off, mosaics) every step pays both.
Counts are integers that depend on shapes only, so one CPU run gives the numbers of every device. Full-size models
cannot be counted on the meta device (methods read tensor values, e.g. `.item()`), so the counts of the paper
profile are measured once on the CPU and stored as data (`data/costs.csv`, with the command that wrote them:
`python tools/measure_costs.py --profile paper`).

Identity. A count belongs to a method, its backbone settings (models, sizes, taps) and the image size
(`cost_key`). Method options (an ablation switch, a sensitivity value) are not part of it: a model is counted at
its method's cost for those backbones, which for SSVP's switched-off components over-counts a little (the heads
are 9% of SSVP's time, README "Speed").

Time. GPU-hours = FLOPs / sustained rate. With a measured GPU table (`bench/gpu.py --out bench/results/gpu.md`),
a method's rate is its own: inference GFLOPs per image / measured ms per image. Otherwise the rate is a GPU
class's dense peak for the method's backbone precision (`GPU_CLASSES`) times an assumed utilisation. Data loading,
metrics (AUPRO, bootstrap) and start-up are not counted.
"""
from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import subprocess
import sys
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from ..config import RunConfig
from ..io import atomic_path

COSTS_CSV = Path(__file__).with_name("data") / "costs.csv"
SIZES_CSV = Path(__file__).with_name("data") / "dataset_sizes.csv"

# dense (no sparsity) peak TFLOP/s by the precision the frozen backbones run at; fp32 without TF32, PyTorch's
# default for matrix products. Vendors' data sheets.
GPU_CLASSES = {
    "A100": {"bf16": 312.0, "fp16": 312.0, "fp32": 19.5},
    "H100": {"bf16": 989.0, "fp16": 989.0, "fp32": 67.0},
    "L40S": {"bf16": 362.0, "fp16": 362.0, "fp32": 91.6},
}
DEFAULT_GPU = "A100"
DEFAULT_UTILISATION = 0.4  # share of the peak a ViT-L forward/backward sustains (assumed, not measured here)


@dataclass(frozen=True)
class FlopCount:
    """GFLOPs of one configuration (see the module docstring); `per_class` parts are paid once per class present in
    a batch (the text prompts of that class)."""

    profile: str
    method: str
    cost_key: str
    eval_per_image: float
    eval_per_class: float  # paid once per class present in a batch (its text prompts)
    frozen_per_image: float  # 0 unless the method's frozen features are cacheable
    step_per_image: float
    step_per_class: float
    cacheable: bool
    backbones: str  # in words, for the table

    @classmethod
    def from_row(cls, row: dict) -> "FlopCount":
        kinds = {f.name: f.type for f in fields(cls)}
        out = {}
        for name, kind in kinds.items():
            value = row[name]
            out[name] = (value in (True, "True", "true", "1")) if kind == "bool" else (
                float(value) if kind == "float" else str(value))
        return cls(**out)


def cost_key(cfg: RunConfig) -> str:
    """What a FLOP count depends on: the method, its backbone settings and the image size (not the weights' values,
    compile or precision, which leave the shapes as they are)."""
    backbone = cfg.to_dict()["backbone"]
    for key in ("compile", "precision"):
        backbone.pop(key, None)
    for tower in ("clip", "dino"):
        backbone[tower].pop("pretrained", None)
    identity = {"method": cfg.method, "backbone": backbone, "image_size": cfg.image_size}
    used, fixed = _towers(cfg)
    if used != fixed:
        # VisualAD and AnomalyVFM build one tower or the other by an option; the methods with fixed towers keep the
        # keys their stored counts were written under
        identity["towers"] = list(used)
    text = json.dumps(identity, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _towers(cfg: RunConfig) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The backbones a run with this config builds (VisualAD and AnomalyVFM choose by an option), and the method's
    declared ones."""
    from ..methods import method_spec

    spec = method_spec(cfg.method)
    return tuple(spec.cls.backbones_used(spec.options_from(cfg.options))), tuple(spec.cls.uses_backbones)


def describe_backbones(cfg: RunConfig) -> str:
    uses, _ = _towers(cfg)
    parts = []
    if "clip" in uses:
        parts.append(f"{cfg.backbone.clip.model}@{cfg.backbone.clip.image_size}")
    if "dino" in uses:
        parts.append(f"{cfg.backbone.dino.model}@{cfg.backbone.dino.image_size}")
    return " + ".join(parts)


# -- counting --------------------------------------------------------------------------------------------------------
_CHILD = r"""
import json, sys, tempfile, torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode
from ssvp_core.config import load_config
from ssvp_core.data.loader import AnomalyDataset
from ssvp_core.data.registry import read_dataset
from ssvp_core.data.synthetic import generate
from ssvp_core.engine.batches import collate
from ssvp_core.methods import build_detector
REGISTRY = FlopCounterMode(display=False).flop_registry  # the efficiency page's formulas (products, convolutions)
class Counter(TorchDispatchMode):  # FlopCounterMode without its module tracker, which fails on some graphs
    # (Bayes-PFL's flows); like FlopCounterMode it sees nothing under inference_mode, so inference runs in no_grad
    def __init__(self):
        super().__init__()
        self.total = 0
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = REGISTRY.get(func._overloadpacket)
        if formula is not None:
            self.total += formula(*args, **kwargs, out_val=out)
        return out
profile, method, overrides = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
torch.manual_seed(0)
cfg = load_config(profile, method, overrides + ["device=cpu", "backbone.precision=fp32", "backbone.compile=false"])
det = build_detector(cfg)
with tempfile.TemporaryDirectory() as tmp:
    root = generate(tmp, seed=0, size=64, n_train_good=1, n_test_good=1, n_per_defect=1, sets=("synth-a",))["synth-a"]
    samples = read_dataset("synth-a", root)
    bad = next(s for s in samples if s.label == 1)
    good = next(s for s in samples if s.label == 0 and s.cls == bad.cls)  # one class: its prompts are paid once
    data = AnomalyDataset([bad, good], cfg.image_size, det.input_sizes())
    items = [data[i] for i in range(2)]
def batch(n):
    return collate(items[:n])
def counted(fn):
    with Counter() as counter:
        fn()
    return counter.total / 1e9
# one pass before counting fills what a method keeps between batches (text features of a class, when its prompts
# are fixed), so that the counts are those of the batches after the first
det.eval()
with torch.no_grad():
    det(batch(1))
    e1, e2 = counted(lambda: det(batch(1))), counted(lambda: det(batch(2)))
    if det.cacheable:  # the frozen pass is linear in the images: count two, reuse them for the steps below
        with Counter() as counter:
            features = det.frozen_features(batch(2))
        f1 = counter.total / 1e9 / 2
    else:
        f1 = 0.0
def step(n):
    b = batch(n)
    if det.cacheable:
        b["features"] = {k: v[:n] for k, v in features.items()}
    def run():
        out = det(b)
        det.loss(out, b)["total"].backward()
    return run
s1 = s2 = 0.0
if det.trainable:
    det.train()
    det.start_epoch(0, cfg.train.epochs)
    step(1)()
    s1, s2 = counted(step(1)), counted(step(2))
print(json.dumps({"eval_per_image": e2 - e1, "eval_per_class": 2 * e1 - e2, "frozen_per_image": f1,
                  "step_per_image": s2 - s1, "step_per_class": 2 * s1 - s2, "cacheable": bool(det.cacheable)}))
"""


def count_flops(profile: str, method: str, overrides: list[str] | None = None) -> FlopCount:
    """Count one configuration in a fresh process (its memory is its own; full-size models need several GB)."""
    from ..config import load_config

    overrides = list(overrides or [])
    cfg = load_config(profile, method, overrides)
    env = {**os.environ, "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")}
    proc = subprocess.run([sys.executable, "-c", _CHILD, profile, method, json.dumps(overrides)],
                          capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"counting the FLOPs of {method} ({profile}, {overrides}) failed:\n{proc.stderr[-3000:]}")
    counts = json.loads(proc.stdout.strip().splitlines()[-1])
    return FlopCount(profile=cfg.profile, method=method, cost_key=cost_key(cfg), backbones=describe_backbones(cfg),
                     **{k: (round(v, 6) if isinstance(v, float) else v) for k, v in counts.items()})


def read_counts(path: str | os.PathLike = COSTS_CSV) -> dict[str, FlopCount]:
    """Stored counts by cost key (none when the file does not exist)."""
    path = Path(path)
    if not path.is_file():
        return {}
    with path.open(newline="") as f:
        return {row["cost_key"]: FlopCount.from_row(row) for row in csv.DictReader(f)}


def write_counts(counts: list[FlopCount], path: str | os.PathLike = COSTS_CSV) -> Path:
    """Merge `counts` into the stored table (a count replaces the one with the same key), sorted, atomically."""
    merged = read_counts(path)
    merged.update({c.cost_key: c for c in counts})
    rows = sorted(merged.values(), key=lambda c: (c.profile, c.method, c.backbones, c.cost_key))
    with atomic_path(path) as tmp:
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=[f.name for f in fields(FlopCount)], lineterminator="\n")
            writer.writeheader()
            for row in rows:
                writer.writerow(asdict(row))
    return Path(path)


# -- dataset sizes ---------------------------------------------------------------------------------------------------
def published_sizes(path: str | os.PathLike = SIZES_CSV) -> dict[str, tuple[int, int, str]]:
    """Test-split sizes of the benchmarks as published (name -> (images, classes, source)), for datasets not on
    disk."""
    with Path(path).open(newline="") as f:
        return {row["dataset"]: (int(row["test_images"]), int(row["classes"]), row["source"]) for row in csv.DictReader(f)}


# -- time ------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Throughput:
    """How GFLOPs become seconds: a GPU class at an assumed utilisation, or a measured GPU table's rates."""

    gpu: str = DEFAULT_GPU
    utilisation: float = DEFAULT_UTILISATION
    measured: dict | None = None  # method -> {"ms_per_image": .., "peak_memory_MB": ..} from bench/gpu.py's table
    measured_on: str = ""

    def tflops(self, method: str, precision: str, eval_gflops_per_image: float) -> tuple[float, str]:
        """Sustained TFLOP/s of `method` and where the number comes from."""
        row = (self.measured or {}).get(method)
        if row and row.get("ms_per_image") and eval_gflops_per_image > 0:
            return eval_gflops_per_image / row["ms_per_image"], f"measured ({self.measured_on})"
        peaks = GPU_CLASSES[self.gpu]
        return peaks.get(precision, peaks["fp32"]) * self.utilisation, f"{self.gpu} {precision} x {self.utilisation:g}"

    def peak_memory_mb(self, method: str) -> float:
        row = (self.measured or {}).get(method) or {}
        return float(row.get("peak_memory_MB", math.nan))

    @classmethod
    def from_gpu_table(cls, path: str | os.PathLike, **kwargs) -> "Throughput":
        """Rates from the Markdown table `bench/gpu.py --out` wrote (ms/img, peak memory per method), if it exists."""
        from .efficiency import read_gpu_table

        table = read_gpu_table(path)
        if table is None:
            return cls(**kwargs)
        device, frame = table
        measured = {}
        for _, row in frame.iterrows():
            measured[str(row["method"])] = {"ms_per_image": float(row["ms/img"]),
                                            "peak_memory_MB": float(row.get("peak memory (MiB)", math.nan))}
        return cls(measured=measured, measured_on=device, **kwargs)


def resolved_precision(cfg: RunConfig) -> str:
    """The precision the frozen backbones run at on a GPU (`auto` is bf16 autocast there)."""
    precision = cfg.backbone.precision
    return "bf16" if precision == "auto" else precision


__all__ = ["FlopCount", "Throughput", "count_flops", "read_counts", "write_counts", "cost_key", "published_sizes",
           "GPU_CLASSES", "DEFAULT_GPU", "DEFAULT_UTILISATION", "resolved_precision", "describe_backbones"]
