"""Analyses behind SSVP's Table 4 (semantic-visual alignment, Eqs. 23-24) and Figure 6 (t-SNE of prompts).

TIR-FG (Eq. 23): mean over ground-truth anomaly pixels of the cosine between the patch feature v_u (V_syn^local,
upsampled bilinearly to the mask) and the abnormal prompt t_abn (the normalised mean of the three abnormal T_final).
The paper does not say which tapped layer v_u comes from: `tir_layers` = "mean" (the cosine averaged over the
tapped layers, default), "last" (the deepest tapped layer) or an integer index into the tapped layers.
SCD (Eq. 24): || t_final - t_static ||_2 per state (t_final = the normalised mean of the state's three T_final),
averaged over test images, separately for the normal and the abnormal prompt. The paper leaves t_static undefined
(SSVP.md §8.4): `t_static` = "handcrafted" (the embedding of "a photo of a normal <class>." / "a photo of a damaged
<class>.", default) or "t_init" (the learned static prompts T_init before VCPG; zero for a model without VCPG).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..data.loader import AnomalyDataset
from ..engine.infer import collate, to_device
from ..errors import ConfigError
from .experiments import Model, Study


def _batches(det, cfg, samples, batch_size: int = 8):
    dataset = AnomalyDataset(samples, cfg.image_size, det.input_sizes())
    device = next(det.parameters()).device
    for start in range(0, len(dataset), batch_size):
        batch = to_device(collate([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]), device)
        with torch.inference_mode():
            yield batch, det(batch)


TIR_LAYERS = ("mean", "last")  # or an int: one tapped layer
T_STATIC = ("handcrafted", "t_init")


def layer_cosines(cos_maps: torch.Tensor, layers: str | int = "mean") -> torch.Tensor:
    """(B, L, h, w) per-layer cosines with t_abn -> (B, h, w) for Eq. 23's v_u (see `tir_layers`)."""
    if layers == "mean":
        return cos_maps.mean(1)
    if layers == "last":
        return cos_maps[:, -1]
    if isinstance(layers, int) and not isinstance(layers, bool) and -cos_maps.shape[1] <= layers < cos_maps.shape[1]:
        return cos_maps[:, layers]
    raise ConfigError(f"tir_layers={layers!r}: choose {' or '.join(TIR_LAYERS)} or an index below {cos_maps.shape[1]}")


def tir_fg_sums(cos_maps: torch.Tensor, masks: torch.Tensor, layers: str | int = "mean") -> tuple[float, int]:
    """Eq. 23's numerator and |Omega_fg| for one batch: cosines upsampled to the masks' size, summed over mask > 0.5."""
    cos = layer_cosines(cos_maps, layers)[:, None]
    cos = F.interpolate(cos, size=tuple(masks.shape[-2:]), mode="bilinear", align_corners=True)[:, 0]
    fg = masks > 0.5
    return float(cos[fg].sum()), int(fg.sum())


def state_prototypes(t: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 2n, D) prompt embeddings (normal first) -> the normalised mean per state, (B, D) each."""
    return F.normalize(t[:, :n].mean(1), dim=-1), F.normalize(t[:, n:].mean(1), dim=-1)


def scd(t_final: torch.Tensor, t_static: torch.Tensor) -> torch.Tensor:
    """Eq. 24 per row: || t_final - t_static ||_2."""
    return (t_final - t_static).norm(dim=-1)


def alignment(study: Study, model: Model, tir_layers: str | int = "mean",
              t_static: str = "handcrafted") -> dict[str, float]:
    """TIR-FG and SCD (normal, abnormal) of an SSVP model over its target's test images."""
    if t_static not in T_STATIC:
        raise ConfigError(f"t_static={t_static!r}: choose {' or '.join(T_STATIC)}")
    cfg = study.config(model)
    det = study.detector(model)
    samples = study.samples(model.target)
    n = det.options.n_prompts
    fg_sum, fg_count, scd_n, scd_a = 0.0, 0, [], []
    static_cache: dict[str, torch.Tensor] = {}
    for batch, out in _batches(det, cfg, samples):
        s, c = tir_fg_sums(out.aux["abn_cos_maps"], batch["mask"], tir_layers)
        fg_sum, fg_count = fg_sum + s, fg_count + c
        t_n, t_a = state_prototypes(out.aux["t_final"], n)
        if t_static == "t_init":
            s_n, s_a = state_prototypes(out.aux["t_init"], n)
        else:
            for name in det.class_names(batch):
                if name not in static_cache:
                    with torch.no_grad():
                        texts = [f"a photo of a normal {name}.", f"a photo of a damaged {name}."]
                        static_cache[name] = F.normalize(det.clip.encode_text(texts).float(), dim=-1)
            static = torch.stack([static_cache[name] for name in det.class_names(batch)]).to(t_n.device)
            s_n, s_a = static[:, 0], static[:, 1]
        scd_n += scd(t_n, s_n).tolist()
        scd_a += scd(t_a, s_a).tolist()
    return {"tir_fg": fg_sum / max(fg_count, 1), "scd_normal": float(np.mean(scd_n)), "scd_abnormal": float(np.mean(scd_a))}


def prompt_embeddings(study: Study, model: Model, max_images: int = 200) -> tuple[np.ndarray, list[str]]:
    """Per test image of the model's target, the normal and the abnormal prompt embedding (mean of T_final per
    state) with labels such as "[Normal capsule]" / "[Anomaly capsule]" (Figure 6)."""
    cfg = study.config(model)
    det = study.detector(model)
    samples = study.samples(model.target)
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


def tsne_panel(study: Study, model: Model, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """Figure 6's panel of one model: the t-SNE coordinates of its prompt embeddings and their labels."""
    vectors, labels = prompt_embeddings(study, model)
    return tsne(vectors, seed), labels
