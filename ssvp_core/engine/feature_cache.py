"""Frozen-feature cache: what a method's frozen backbones give for each image, computed once and reused.

A method whose vision path has no learnable part and sees no augmentation (`Detector.cacheable`) splits its forward
pass into `frozen_features(batch) -> {name: (B, ...)}` and `heads(features, batch) -> Output`. The features of a
dataset split are then computed once, in one pass before training (or evaluation), and every epoch and every later
run that shares them reads them back instead of running the backbones again: Table 3's ablations, the seeds, the
sensitivity sweeps and Table 5 share one CLIP pass per image.

Identity. A cache folder is named by a fingerprint of everything that changes the features: the backbone config
(model, weights, sizes, taps, activation, precision), the identity of local weight files (size, mtime), the method's
`feature_spec()`, the input sizes, the loader's preprocessing version, the stored dtype and the images themselves
(path, size, mtime of every file). Change any of these and a new cache is built; nothing stale is ever read.

Storage. One array per feature name, (N, ...), as `.npy` files that are memory-mapped, or read into memory when the
whole cache is under `train.feature_cache_ram_gb`. `auto` (the default) stores each feature so that it reads back
exactly as the backbone gave it (fp16 as fp16, fp32 and bf16 as fp32): training and evaluation see what they would
see without the cache. Every method's `frozen_features` returns fp32 today (projections and norms end in fp32, also
under autocast), so `auto` means 4 bytes per value. `fp16` halves that at the price of rounding (~5e-4 relative,
which measurably moves a short training run's outcome: a 10-epoch ViP2-CLIP run, README "Speed"). The
folder is written under a temporary name and renamed when complete, so an interrupted run never leaves a
half-written cache where a good one would be read; the disk use is printed before a large cache is written, and a
cache over `feature_cache_max_gb` is not written at all (the run goes on without it).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .. import io
from .. import progress as progress_bars
from ..data.loader import AnomalyDataset
from ..data.records import Sample
from .batches import collate, to_device
from .runtime import DistInfo, barrier

log = logging.getLogger(__name__)
CACHE_VERSION = 2  # bump when the stored layout or the loader's preprocessing changes
LARGE_BYTES = 1 << 30  # announce caches from 1 GiB on
FREE_SHARE = 0.9  # a cache may take at most this share of the free disk space
STORED = {"fp16": "float16", "fp32": "float32"}  # an explicit train.feature_cache_dtype: every feature in that dtype
_TORCH = {"float16": torch.float16, "float32": torch.float32, "bfloat16": torch.bfloat16}


def feature_dtypes(probe: dict[str, torch.Tensor]) -> dict[str, str]:
    names = {v: k for k, v in _TORCH.items()}
    return {name: names.get(value.dtype, "float32") for name, value in probe.items()}


def storage_dtypes(given: dict[str, str], choice: str) -> dict[str, str]:
    """What each feature is stored as: the choice, or (`auto`) the narrowest dtype that holds it exactly."""
    return {name: STORED.get(choice) or ("float16" if dtype == "float16" else "float32") for name, dtype in given.items()}


def _file_identity(path: str) -> list:
    """A local weight file's identity (size and mtime); hub tags and `none` are their own identity."""
    p = Path(str(path)).expanduser()
    if p.is_file():
        st = p.stat()
        return [str(p.resolve()), st.st_size, int(st.st_mtime)]
    return [str(path)]


def cache_key(detector, samples: Sequence[Sample], dtype: str) -> str:
    backbone = asdict(detector.backbone_cfg)
    backbone.pop("compile")  # compiled blocks compute the same features
    weights = {k: _file_identity(v["pretrained"]) for k, v in backbone.items() if isinstance(v, dict) and "pretrained" in v}
    images = hashlib.sha256()
    for s in samples:
        st = Path(s.image).stat()
        images.update(f"{Path(s.image).resolve()}|{st.st_size}|{int(st.st_mtime)}\n".encode())
    # the method is part of the identity: methods name different things alike (APRIL-GAN's "global" is normalised,
    # Bayes-PFL's is not), so a cache one method built is never read by another
    spec = {"version": CACHE_VERSION, "method": detector.name, "method_features": detector.feature_spec(),
            "backbone": backbone, "weights": weights,
            "sizes": sorted(set(detector.input_sizes())), "dtype": dtype, "images": images.hexdigest()}
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:16]


class FeatureCache:
    """The frozen features of one list of samples, as arrays indexed by the sample's position in that list."""

    def __init__(self, folder: Path, arrays: dict[str, np.ndarray], given: dict[str, str]):
        self.folder = folder
        self.arrays = arrays
        self.given = given  # per feature: the dtype the backbone gave it, restored on reading

    def __len__(self) -> int:
        return len(next(iter(self.arrays.values())))

    def take(self, index: torch.Tensor | Sequence[int], device: torch.device) -> dict[str, torch.Tensor]:
        """The features of the given sample positions on `device`, in the dtype the backbone gave them."""
        idx = np.asarray(index.cpu() if torch.is_tensor(index) else index, dtype=np.int64)
        return {name: torch.from_numpy(np.ascontiguousarray(a[idx])).to(device=device, dtype=_TORCH[self.given[name]])
                for name, a in self.arrays.items()}


def _nbytes(shapes: dict[str, list[int]], stored: dict[str, str]) -> int:
    return sum(int(np.prod(shape)) * np.dtype(stored[name]).itemsize for name, shape in shapes.items())


def open_cache(folder: Path, ram_bytes: float) -> FeatureCache:
    meta = json.loads((folder / "meta.json").read_text())
    mode = None if _nbytes(meta["shapes"], meta["stored"]) <= ram_bytes else "r"
    arrays = {name: np.load(folder / f"{name}.npy", mmap_mode=mode) for name in meta["shapes"]}
    return FeatureCache(folder, arrays, meta["given"])


def build_or_open(detector, samples: Sequence[Sample], cfg, device: torch.device, progress: bool = True,
                  batch_size: int = 8, num_workers: int = 0) -> FeatureCache | None:
    """The cache of `samples` for `detector`, built now if needed; None when the method cannot use one, caching is off,
    or the cache would exceed `train.feature_cache_max_gb`."""
    t = cfg.train
    if not t.feature_cache or not detector.cacheable:
        return None
    root = cfg.path(t.feature_cache_dir or Path(cfg.out_dir) / "features")
    folder = root / cache_key(detector, samples, t.feature_cache_dtype)
    ram = t.feature_cache_ram_gb * (1 << 30)
    if (folder / "meta.json").is_file():
        return open_cache(folder, ram)
    dataset = AnomalyDataset(samples, cfg.image_size, detector.input_sizes(), masks=False)
    with torch.inference_mode():
        probe = detector.frozen_features(to_device(collate([dataset[0]]), device))
    shapes = {name: [len(samples), *v.shape[1:]] for name, v in probe.items()}
    given = feature_dtypes(probe)
    stored = storage_dtypes(given, t.feature_cache_dtype)
    total = _nbytes(shapes, stored)
    if total > t.feature_cache_max_gb * (1 << 30):
        print(f"feature cache: {total / (1 << 30):.1f} GiB for {len(samples)} images exceeds train.feature_cache_max_gb="
              f"{t.feature_cache_max_gb:g}; running without it", file=sys.stderr)
        return None
    root.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(root).free
    if total > FREE_SHARE * free:
        print(f"feature cache: {total / (1 << 30):.1f} GiB for {len(samples)} images, but only {free / (1 << 30):.1f} GiB "
              f"free on {root}; running without it (set train.feature_cache_dir to a larger disk, or "
              "train.feature_cache_dtype=fp16 to halve it)", file=sys.stderr)
        return None
    if total >= LARGE_BYTES:
        print(f"feature cache: writing {total / (1 << 30):.1f} GiB ({len(samples)} images, "
              f"{total / len(samples) / (1 << 20):.1f} MiB each) to {folder}", file=sys.stderr)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=root))
    try:
        arrays = {name: np.lib.format.open_memmap(tmp / f"{name}.npy", mode="w+", dtype=stored[name],
                                                  shape=tuple(shape)) for name, shape in shapes.items()}
        loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                                             collate_fn=collate)
        pos = 0
        for batch in progress_bars.iterate(loader, desc=f"caching {detector.name} features", disable=not progress):
            with torch.inference_mode():
                feats = detector.frozen_features(to_device(batch, device))
            n = len(batch["index"])
            for name, value in feats.items():
                arrays[name][pos:pos + n] = value.detach().float().cpu().numpy()  # cast to the stored dtype
            pos += n
        for a in arrays.values():
            a.flush()
        del arrays
        io.write_json(tmp / "meta.json", {"stored": stored, "given": given, "shapes": shapes, "method": detector.name,
                                          "samples": [str(s.image) for s in samples]})
        try:
            os.rename(tmp, folder)
        except OSError:  # another process finished the same cache first: theirs is as good as ours
            if not (folder / "meta.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("feature cache for %s: %d images, %.1f MiB at %s", detector.name, len(samples), total / (1 << 20), folder)
    return open_cache(folder, ram)


def shared_cache(detector, samples: Sequence[Sample], cfg, device: torch.device, info: DistInfo,
                 progress: bool) -> FeatureCache | None:
    """`build_or_open` under torchrun: rank 0 builds the cache while the other ranks wait, then every rank opens it
    (the cache folder must be on a file system all ranks see)."""
    cache = build_or_open(detector, samples, cfg, device, progress and info.main) if info.main else None
    barrier(info)
    if not info.main:
        cache = build_or_open(detector, samples, cfg, device, False)
    return cache
