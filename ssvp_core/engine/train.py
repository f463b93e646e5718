"""Training on the auxiliary dataset's test split (the papers' zero-shot protocol).

Length: `train.epochs` passes over the data, or exactly `train.steps` optimiser steps when that is set (the passes
it needs, the last one cut short; AnomalyVFM counts steps). Determinism and resume: the data order of epoch e is a permutation drawn from a generator seeded with
(seed, e), and the global RNG is reseeded from (seed, step, rank) before every step, so a run resumed from a
mid-epoch checkpoint draws exactly the same batches and noise as an uninterrupted run and ends with the same
parameters. Optimiser: Adam(betas 0.5, 0.999) with per-group learning rates (prompts / heads / temperatures),
cosine decay after a linear warm-up (SSVP.md §6). A non-finite loss stops the run with the step that produced it.
Under torchrun the trainable heads are wrapped in DistributedDataParallel and each rank takes an interleaved
slice of every global batch. `train.mosaic` > 0 replaces that share of the items by 2x2 mosaics of their class
(APRIL-GAN's augmentation, data/mosaic.py), drawn from (seed, epoch, index).
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import io
from .. import progress as progress_bars
from ..config import RunConfig
from ..data.loader import AnomalyDataset
from ..data.mosaic import MosaicDataset
from ..data.registry import read_dataset
from ..errors import ConfigError, DataError, TrainingDiverged
from ..methods import build_detector, method_spec
from . import checkpoint as ckpt
from .batches import collate, to_device
from .feature_cache import shared_cache
from .runtime import DistInfo, barrier, dist_info, init_distributed, resolve_device, seed_everything, step_seed

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    checkpoint: Path
    detector: object
    history: list[dict]
    resumed_from: int  # global step the run resumed at (0 = fresh)


def run_dir(cfg: RunConfig) -> Path:
    return cfg.path(cfg.out_dir) / cfg.profile / cfg.method / cfg.fingerprint()


def make_optimizer(detector, cfg: RunConfig):
    groups = detector.param_groups(cfg.train)
    if not groups:
        raise ConfigError(f"method {cfg.method!r} has nothing to train")
    t = cfg.train
    if t.optimizer == "adam":
        return torch.optim.Adam(groups, betas=tuple(t.betas), weight_decay=t.weight_decay)
    if t.optimizer == "adamw":
        return torch.optim.AdamW(groups, betas=tuple(t.betas), weight_decay=t.weight_decay)
    raise ConfigError(f"train.optimizer={t.optimizer!r}: choose adam or adamw")


def make_scheduler(optimizer, cfg: RunConfig, total_steps: int):
    t = cfg.train
    if t.schedule not in ("cosine", "constant"):  # configs built in code skip the load-time check
        raise ConfigError(f"train.schedule={t.schedule!r}: choose cosine or constant")
    warmup = int(round(t.warmup_frac * total_steps))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if t.schedule == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    def epoch_cosine(group: dict):
        """torch's CosineAnnealingLR(T_max=epochs, eta_min=group["min_lr"]) stepped once per epoch (VisualAD)."""
        base, floor, epochs = group["lr"], group["min_lr"], max(1, t.epochs)
        steps_per_epoch = max(1, total_steps // epochs)
        return lambda step: (floor + (base - floor) * 0.5 * (1 + math.cos(math.pi * min(step // steps_per_epoch, epochs)
                                                                           / epochs))) / base

    # a parameter group marked {"schedule": "constant"} keeps its lr (Bayes-PFL's stage-2 optimiser has no schedule);
    # one marked {"schedule": "epoch_cosine", "min_lr": x} follows epoch_cosine
    factors = [(lambda step: 1.0) if g.get("schedule") == "constant" else epoch_cosine(g)
               if g.get("schedule") == "epoch_cosine" else factor for g in optimizer.param_groups]
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factors)


def planned_length(cfg: RunConfig, steps_per_epoch: int) -> tuple[int, int]:
    """(epochs to run, optimiser steps in all): `train.epochs` full passes, or exactly `train.steps` steps when set,
    the last epoch cut short."""
    if cfg.train.steps < 0:
        raise ConfigError(f"train.steps={cfg.train.steps}: must be >= 0 (0 = train.epochs full passes)")
    if cfg.train.steps:
        return math.ceil(cfg.train.steps / steps_per_epoch), cfg.train.steps
    return cfg.train.epochs, steps_per_epoch * cfg.train.epochs


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    g = torch.Generator().manual_seed(seed * 1_000 + epoch)
    return torch.randperm(n, generator=g).tolist()


def run_lock(folder: Path):
    """An exclusive lock on a run folder: concurrent jobs needing the same checkpoint train it once."""
    return io.file_lock(Path(folder) / ".lock")


def run_busy(folder: Path) -> bool:
    """Whether another process holds the run folder's lock now (it is training that model): a caller with other
    models to train can do those first instead of waiting."""
    return io.lock_busy(Path(folder) / ".lock")


def train(cfg: RunConfig, resume: bool = True, progress: bool = True, max_steps: int | None = None,
          checkpoint_path: Path | None = None) -> TrainResult:
    """Train `cfg.method` on the auxiliary dataset (see `_train`); holds the run folder's lock while it works."""
    path = Path(checkpoint_path) if checkpoint_path else run_dir(cfg) / ckpt.CHECKPOINT_NAME
    if dist_info().enabled:
        return _train(cfg, resume, progress, max_steps, path)
    with run_lock(path.parent):
        return _train(cfg, resume, progress, max_steps, path)


def _train(cfg: RunConfig, resume: bool, progress: bool, max_steps: int | None, path: Path) -> TrainResult:
    """Train `cfg.method` on the auxiliary dataset; returns the final checkpoint.

    resume: continue from `checkpoint.pt` in the run folder when it exists (a complete run is not repeated).
    max_steps: stop after this many global steps (tests use it to simulate an interruption).
    """
    info = dist_info()
    device = resolve_device(cfg.device, info.local_rank)
    init_distributed(info, device)
    seed_everything(cfg.train.seed)
    detector = build_detector(cfg)
    if not detector.trainable:
        raise ConfigError(f"method {cfg.method!r} is training-free; evaluate it directly (ssvp eval)")
    detector.to(device)
    samples = read_dataset(cfg.train.dataset, cfg.path(cfg.train.root), "test", cfg.train.classes or None)
    for ref in cfg.train.extra:
        samples += read_dataset(ref.name, cfg.path(ref.root), "test", ref.classes or None)
    unmasked = [s for s in samples if s.label == 1 and s.mask is None]
    if unmasked:
        raise DataError(f"training needs a mask for every anomalous image: {len(unmasked)} training images have none "
                        f"(e.g. {unmasked[0].image} of {unmasked[0].dataset or cfg.train.dataset}). Add a masks/ folder "
                        "(one mask per abnormal image, same name) or train on a dataset with masks.")
    batch_size = cfg.train.batch_size
    if batch_size % info.world:
        raise ConfigError(f"train.batch_size={batch_size} must be divisible by the number of processes ({info.world})")
    steps_per_epoch = math.ceil(len(samples) / batch_size)
    epochs, total_steps = planned_length(cfg, steps_per_epoch)
    optimizer = make_optimizer(detector, cfg)
    scheduler = make_scheduler(optimizer, cfg, total_steps)
    state = ckpt.TrainState()
    if resume and path.is_file():
        payload = ckpt.load(path)
        if payload["fingerprint"] != cfg.fingerprint():
            raise ckpt.CheckpointError(f"{path} belongs to another configuration (fingerprint {payload['fingerprint']} "
                                       f"vs {cfg.fingerprint()}); use another out_dir or delete it")
        detector.load_trainable_state_dict(payload["trainable"])
        optimizer.load_state_dict(payload["optimizer"])
        scheduler.load_state_dict(payload["scheduler"])
        state = ckpt.state_of(payload)
        log.info("resuming %s at epoch %d step %d", path, state.epoch, state.step_in_epoch)
    resumed_from = state.global_step
    started = time.time()  # a record's elapsed_s includes building the feature cache
    # mosaics change the pixels every epoch, so the features of an image are not fixed: no cache then
    cache = None if state.complete or cfg.train.mosaic > 0 else shared_cache(detector, samples, cfg, device, info, progress)
    # with a cache the loader reads masks and labels only; the features stand in for the pixels
    dataset = AnomalyDataset(samples, cfg.image_size, detector.input_sizes(), images=cache is None)
    if cfg.train.mosaic > 0:
        # mosaics only for the primary training set (AdaCLIP pools ColonDB / ClinicDB without them)
        dataset = MosaicDataset(dataset, cfg.train.mosaic, cfg.train.seed, cfg.train.mosaic_draw, cfg.train.mosaic_label,
                                {cfg.train.dataset})
    model = detector
    if info.enabled:
        model = torch.nn.parallel.DistributedDataParallel(detector, device_ids=[device.index] if device.type == "cuda" else None,
                                                          find_unused_parameters=True, broadcast_buffers=False)
    detector.train()
    bar = progress_bars.bar(total=total_steps, initial=state.global_step, desc=f"train {cfg.method}", unit="step",
                            disable=not (progress and info.main))
    while not state.complete and state.epoch < epochs:
        detector.start_epoch(state.epoch, epochs)
        order = epoch_order(len(samples), cfg.train.seed, state.epoch)
        if isinstance(dataset, MosaicDataset):
            dataset.epoch = state.epoch
        first = state.step_in_epoch
        # each rank takes an interleaved slice of every global batch; resuming skips the batches already done
        # a step-counted run (train.steps) stops inside its last epoch
        last = min(steps_per_epoch, total_steps - state.epoch * steps_per_epoch)
        batches = [order[s * batch_size:(s + 1) * batch_size][info.rank::info.world] for s in range(first, last)]
        loader = torch.utils.data.DataLoader(dataset, batch_sampler=batches, num_workers=cfg.train.num_workers,
                                             collate_fn=collate, persistent_workers=False)
        for step, batch in enumerate(loader, start=first):
            if max_steps is not None and state.global_step >= max_steps:
                bar.close()
                return TrainResult(path, detector, state.history, resumed_from)
            batch = to_device(batch, device)
            if cache is not None:
                batch["features"] = cache.take(batch["index"], device)
            torch.manual_seed(step_seed(cfg.train.seed, state.global_step, info.rank))
            out = model(batch)
            parts = detector.loss(out, batch)
            loss = parts["total"]
            if not torch.isfinite(loss):
                values = {k: float(v.detach()) for k, v in parts.items()}
                raise TrainingDiverged(f"non-finite loss at epoch {state.epoch + 1}, step {step + 1} "
                                       f"(global step {state.global_step + 1}): {values}. Lower the learning rates "
                                       f"(train.lr_head / train.lr_prompt) or enable train.grad_clip; the last good "
                                       f"checkpoint is {path if path.is_file() else 'not written yet'}.")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.train.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], cfg.train.grad_clip)
            detector.before_optimizer_step()
            optimizer.step()
            scheduler.step()
            state.global_step += 1
            state.step_in_epoch = step + 1
            record = {"step": state.global_step, "epoch": state.epoch + 1, **{k: float(v.detach()) for k, v in parts.items()},
                      "lr": optimizer.param_groups[0]["lr"], "elapsed_s": round(time.time() - started, 4)}
            state.history.append(record)
            bar.update(1)
            bar.set_postfix(loss=f"{record['total']:.4f}")
            if cfg.train.checkpoint_every and state.global_step % cfg.train.checkpoint_every == 0 and info.main:
                ckpt.save(path, detector, optimizer, scheduler, state, cfg)
        state.epoch += 1
        state.step_in_epoch = 0
        state.complete = state.epoch >= epochs
        if info.main:
            ckpt.save(path, detector, optimizer, scheduler, state, cfg)
        barrier(info)
    bar.close()
    if info.enabled:
        _check_replicas_agree(detector)
    log.info("trained %s for %d steps in %.1f s -> %s", cfg.method, state.global_step - resumed_from, time.time() - started, path)
    return TrainResult(path, detector, state.history, resumed_from)


def _check_replicas_agree(detector) -> None:
    """DDP keeps replicas identical; verify it once at the end (a cheap guard against silent divergence)."""
    import torch.distributed as dist

    total = torch.stack([p.detach().double().sum() for p in detector.parameters() if p.requires_grad]).sum().reshape(1)
    gathered = [torch.zeros_like(total) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, total)
    if not all(torch.allclose(g, gathered[0], rtol=1e-9, atol=1e-9) for g in gathered):
        raise RuntimeError(f"DDP replicas diverged: parameter checksums {[float(g) for g in gathered]}")


def load_trained(path: str | Path, device: str = "auto", overrides: RunConfig | None = None):
    """Rebuild a detector from a checkpoint (its stored config decides the architecture; `overrides` gives the
    evaluation and device settings). A file that is not an ssvp checkpoint is read with the `read_released` of
    `overrides.method`, when that method has one (an authors' released checkpoint): the detector is then built from
    `overrides` as a whole and the file's state loaded with strict key checks."""
    try:
        payload = ckpt.load(path)
    except ckpt.CheckpointError as not_ssvp:
        spec = method_spec(overrides.method) if overrides is not None else None
        if spec is None or spec.read_released is None or not Path(path).is_file():
            raise
        return _load_released(Path(path), spec, overrides, device, not_ssvp)
    cfg = ckpt.config_of(payload)
    # the stored workspace may be another machine's: paths resolve in the caller's workspace
    cfg.workspace = overrides.workspace if overrides is not None else ""
    if overrides is not None:
        cfg.eval, cfg.device = overrides.eval, overrides.device
    detector = build_detector(cfg)
    detector.load_trainable_state_dict(payload["trainable"])
    return detector.to(resolve_device(device if device != "auto" else cfg.device)).eval(), cfg


def _load_released(path: Path, spec, cfg: RunConfig, device: str, not_ssvp: Exception):
    try:
        state = spec.read_released(path)
    except ckpt.CheckpointError as e:
        raise ckpt.CheckpointError(f"{e} (read as an ssvp checkpoint: {not_ssvp})") from None
    detector = build_detector(cfg)
    try:
        detector.load_trainable_state_dict(state)
    except (ckpt.CheckpointError, RuntimeError) as e:
        raise ckpt.CheckpointError(f"{path}: the released {spec.name} checkpoint does not fit the detector the "
                                   f"{cfg.profile!r} profile builds ({e}). Choose the profile / --set options and "
                                   "backbone settings the file was trained with.") from None
    log.info("%s: released %s checkpoint, detector built from the %s profile", path, spec.name, cfg.profile)
    return detector.to(resolve_device(device if device != "auto" else cfg.device)).eval(), cfg


__all__ = ["train", "TrainResult", "run_dir", "load_trained", "DistInfo"]
