"""Analyses behind SSVP's Table 4 (semantic-visual alignment, Eqs. 23-24) and Figure 6 (t-SNE of prompts).

TIR-FG (Eq. 23): mean over ground-truth anomaly pixels of the cosine between the patch feature (V_syn^local,
averaged over the tapped layers, upsampled) and the abnormal prompt (mean of the three abnormal T_final).
SCD (Eq. 24): || t_final - t_static ||_2 with t_static the embedding of a handcrafted prompt, "a photo of a normal
<class>." or "a photo of a damaged <class>." (the paper leaves t_static undefined, SSVP.md §8.4), averaged over
test images, separately for the normal and the abnormal prompt.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..data.loader import AnomalyDataset
from ..data.registry import read_dataset
from ..engine.infer import collate, to_device
from . import experiments


def _batches(det, cfg, samples, batch_size: int = 8):
    dataset = AnomalyDataset(samples, cfg.image_size, det.input_sizes())
    device = next(det.parameters()).device
    for start in range(0, len(dataset), batch_size):
        batch = to_device(collate([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]), device)
        with torch.inference_mode():
            yield batch, det(batch)


def alignment(profile: str, target: str, overrides: tuple[str, ...] = (), seed: int | None = None) -> dict[str, float]:
    cfg = experiments.run_config(profile, "ssvp", target, tuple(overrides), seed)
    det = experiments.detector(cfg)
    samples = read_dataset(target, experiments.dataset_root(profile, target))
    n = det.options.n_prompts
    fg_sum, fg_count, scd_n, scd_a = 0.0, 0, [], []
    static_cache: dict[str, torch.Tensor] = {}
    for batch, out in _batches(det, cfg, samples):
        cos = F.interpolate(out.aux["abn_cos_map"][:, None], size=(cfg.image_size,) * 2, mode="bilinear", align_corners=True)[:, 0]
        fg = batch["mask"] > 0.5
        fg_sum += float(cos[fg].sum())
        fg_count += int(fg.sum())
        t = out.aux["t_final"]
        t_n, t_a = F.normalize(t[:, :n].mean(1), dim=-1), F.normalize(t[:, n:].mean(1), dim=-1)
        for name, tn, ta in zip(det.class_names(batch), t_n, t_a):
            if name not in static_cache:
                with torch.no_grad():
                    static_cache[name] = F.normalize(det.clip.encode_text([f"a photo of a normal {name}.", f"a photo of a damaged {name}."]).float(), dim=-1)
            static = static_cache[name].to(tn.device)
            scd_n.append(float((tn - static[0]).norm()))
            scd_a.append(float((ta - static[1]).norm()))
    return {"tir_fg": fg_sum / max(fg_count, 1), "scd_normal": float(np.mean(scd_n)), "scd_abnormal": float(np.mean(scd_a))}


def prompt_embeddings(profile: str, target: str, overrides: tuple[str, ...] = (), seed: int | None = None,
                      max_images: int = 200) -> tuple[np.ndarray, list[str]]:
    """Per test image, the normal and the abnormal prompt embedding (mean of T_final per state) with labels such as
    "[Normal capsule]" / "[Anomaly capsule]" (Figure 6)."""
    cfg = experiments.run_config(profile, "ssvp", target, tuple(overrides), seed)
    det = experiments.detector(cfg)
    samples = read_dataset(target, experiments.dataset_root(profile, target))
    rng = np.random.default_rng(0)
    if len(samples) > max_images:
        samples = [samples[i] for i in sorted(rng.choice(len(samples), max_images, replace=False))]
    n = det.options.n_prompts
    vectors, labels = [], []
    for batch, out in _batches(det, cfg, samples):
        t = out.aux["t_final"]
        for cls, tn, ta in zip(batch["cls"], F.normalize(t[:, :n].mean(1), dim=-1), F.normalize(t[:, n:].mean(1), dim=-1)):
            vectors += [tn.cpu().numpy(), ta.cpu().numpy()]
            labels += [f"[Normal {cls}]", f"[Anomaly {cls}]"]
    return np.stack(vectors), labels


def tsne(vectors: np.ndarray, seed: int = 0) -> np.ndarray:
    from sklearn.manifold import TSNE

    perplexity = float(min(30, max(2, len(vectors) // 4)))
    jitter = np.random.default_rng(seed).normal(0, 1e-6, vectors.shape)  # identical prompts (no VCPG) still embed
    return TSNE(n_components=2, perplexity=perplexity, random_state=seed, init="pca").fit_transform(vectors + jitter)
