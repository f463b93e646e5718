"""AdaCLIP (Cao et al., ECCV 2024) as released: caoyunkang/AdaCLIP @e27ee32 (`method/adaclip.py`, `method/trainer.py`,
`train.py`; peers §2.1). A parity test pins it against numbers produced by running that code (tests/parity/adaclip).

    prompts   hybrid prompts of length 5 in the first `depth` = 4 blocks of both towers (`branch` VL): a static
              parameter per block plus (type SD) dynamic tokens, one Linear(D -> W) per prompt position, shared by all
              depths, applied to the unprompted frozen tower's global feature (ln_post, proj of the CLS; not
              normalised) (`PromptLayer`, `dynamic_*_prompt_generator`).
              Vision: the tokens are appended after the last patch before block 0, the last `length` tokens are
              replaced before blocks 1..depth-1 and left as they are afterwards; they never reach the taps.
              Text: block 0 runs unprompted; before blocks 1..depth-1 positions 1..length are OVERWRITTEN (the first
              words of each sentence give way; nothing is inserted, so the end-of-text position does not move), causal
              mask as in CLIP. (The release allocates a block-0 text prompt that its forward never reads; here the
              text prompts exist for blocks 1..depth-1 only.)
              Both towers: the release casts the tokens with `.half()` before inserting them into the float32 stream,
              which rounds them, and in backward their gradients, through fp16 (`prompt_rounding=fp16`, default;
              `none` keeps them fp32; prompts.round_as_released).
    text      the compositional ensemble (7 normal / 5 anomalous state phrases x 4 templates, `TextEmbebddingLayer`),
              every sentence through the prompted text tower, normalised, averaged per state, normalised; the class
              name is the dataset's own with "-" read as a space (`class_names` switch).
    features  taps after blocks n/4, n/2, 3n/4, n (6/12/18/24 of ViT-L: `backbone.clip.layers`), CLS and prompts
              dropped, each through a trainable Linear(width -> D) on the RAW tokens (no ln_post) (`patch_token_layer`);
              the prompted CLS through ln_post, proj and a trainable Linear(D -> D) (`cls_token_layer`); normalised.
    map       logits <patch, text> / T per tap with T = 0.01 (x100), upsampled bilinearly (align_corners=True),
              averaged over taps, soft-maxed; map = (p_anomalous + 1 - p_normal) / 2; sigma 4 at test.
    HSF       the top 100 patches by the tap-averaged anomaly probability; sklearn k-means++ (k = 20, n_init "auto")
              on their taps' tokens concatenated; each cluster's centre is the mean of its tokens over the taps; the
              release takes the MEAN of all centres (its comment: "slightly different to the reported one ... more
              stable"), normalises it and mixes it 0.2 : 0.8 into the CLS feature (normalised again). The paper's
              rule, the centre of the most anomalous cluster, is `hsf_rule=most_anomalous`.
    score     softmax(<mixed CLS, text> / T)[anomalous].
    loss      focal on the image probabilities + per tap (the release's aggregation=False: a softmax map per tap)
              focal + Dice(anomalous, mask) + Dice(normal, 1 - mask). The release runs only at batch 1, where its
              squeezed mask makes BinaryDiceLoss average a Dice per image ROW (`dice=rows`); `dice=image` is the
              per-image Dice it would compute at a larger batch.
    training  AdamW(0.5, 0.999), lr 0.01 for everything, weight decay 0.01 (AdamW's default), 5 epochs, batch 1, exact
              GELU, fp16 autocast (methods/__init__.py).
    precision the frozen towers run under `backbone.precision` (released: fp16 autocast). The trainable heads, the
              similarities, HSF and the maps run in float32, where the release autocasts them too: with logits x100,
              fp16 rounds them by ~0.05 and bf16 by ~0.4, which alone moves bf16 maps by several hundredths.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..backbones import autocast_context
from ..data.loader import batch_view
from ..prompts import ANOMALOUS_STATES, NORMAL_STATES, PromptRounding, round_as_released
from .base import ClipDetector, Output, upsample
from .losses import dice, multiclass_focal

# the four templates of AdaCLIP's TextEmbebddingLayer (the first four of WinCLIP's list)
ADACLIP_TEMPLATES = ("a bad photo of a {}.", "a low resolution photo of the {}.", "a bad photo of the {}.",
                     "a cropped photo of the {}.")


def ensemble_sentences(class_name: str) -> tuple[list[str], list[str]]:
    """(normal, anomalous) sentences: every state phrase in every template, states outermost (the release's order)."""
    return tuple([t.format(s.format(class_name)) for s in states for t in ADACLIP_TEMPLATES]
                 for states in (NORMAL_STATES, ANOMALOUS_STATES))


@dataclass
class AdaCLIPOptions:
    depth: int = 4  # blocks of each tower that receive prompts
    length: int = 5  # prompt tokens per block
    prompt_type: Literal["S", "D", "SD"] = "SD"  # S (static) | D (dynamic) | SD (both, summed)
    branch: Literal["V", "L", "VL"] = "VL"  # V | L | VL: which towers get prompts
    temperature: float = 0.01  # the release's fixed logit scale 100
    hsf: bool = True
    hsf_rule: Literal["mean_of_centroids", "most_anomalous"] = "mean_of_centroids"  # release | paper
    hsf_top: int = 100  # the release ties it to 5 x hsf_clusters
    hsf_clusters: int = 20
    hsf_alpha: float = 0.2
    hsf_seed: int | None = None  # k-means random_state; None: one drawn per image from torch's generator
    dice: Literal["rows", "image"] = "rows"  # rows: the release at its batch size 1 | image: per-image Dice
    # released: the dataset's class name with "-" read as a space (metal_nut, pcb1) | project: the shared mapping
    # (data.registry.prompt_name: "metal nut", "printed circuit board"); run.prompt_class_name overrides both
    class_names: Literal["released", "project"] = "released"
    prompt_rounding: PromptRounding = "fp16"  # fp16: prompts rounded through float16 as released (.half()) | none: fp32


def appended_prompt_hook(tokens: torch.Tensor, rounding: str):
    """Vision-tower hook for (B, depth, n, W) prompts: appended at the end before block 0, the last n tokens replaced
    before blocks 1..depth-1, untouched afterwards (AdaCLIP's `PromptLayer.forward_visual`); each image's tokens
    rounded as the release inserts them (`rounding`, prompts.round_as_released)."""
    depth, n = tokens.shape[1], tokens.shape[2]

    def hook(i: int, x: torch.Tensor) -> torch.Tensor:
        if i == 0:
            return torch.cat([x, round_as_released(tokens[:, 0], rounding).to(x.dtype)], 1)
        if i < depth:
            return torch.cat([x[:, :-n], round_as_released(tokens[:, i], rounding).to(x.dtype)], 1)
        return x

    return hook


def overwrite_prompt_hook(tokens: torch.Tensor, rounding: str):
    """Text-tower hook for (P, depth - 1, n, W) prompts: block 0 runs as is; before block j in 1..depth-1 positions
    1..n are overwritten with tokens[:, j - 1] (AdaCLIP's `PromptLayer.forward_text`); each sentence's tokens rounded
    as the release inserts them (`rounding`, prompts.round_as_released)."""
    n = tokens.shape[2]

    def hook(j: int, x: torch.Tensor) -> torch.Tensor:
        if 1 <= j <= tokens.shape[1]:
            return torch.cat([x[:, :1], round_as_released(tokens[:, j - 1], rounding).to(x.dtype), x[:, 1 + n:]], 1)
        return x

    return hook


def upsampled_logits(logits: list[torch.Tensor], grid: tuple[int, int], size: int) -> list[torch.Tensor]:
    """Per-tap patch logits (B, N, 2) -> (B, 2, size, size), bilinear with align_corners=True (no softmax yet)."""
    return [upsample(l.transpose(1, 2).reshape(l.shape[0], 2, *grid), size, align_corners=True) for l in logits]


def aggregated_map(upsampled: list[torch.Tensor]) -> torch.Tensor:
    """The release's test map (aggregation=True): average the taps' logits, soft-max, (p_anomalous + 1 - p_normal) / 2."""
    prob = torch.stack(upsampled).mean(0).softmax(1)
    return (prob[:, 1] + 1 - prob[:, 0]) / 2


def image_probabilities(cls: torch.Tensor, text: torch.Tensor, temperature: float) -> torch.Tensor:
    """[normal, anomalous] probabilities (B, 2) of the (HSF-mixed) global features (B, D) against the text (B, 2, D)."""
    return ((cls[:, None] @ text.transpose(1, 2))[:, 0] / temperature).softmax(-1)


def row_dice(prob: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Dice averaged over the rows of every map, what the release's BinaryDiceLoss computes on its batch-1 masks."""
    return dice(prob.reshape(-1, prob.shape[-1]), target.reshape(-1, target.shape[-1]))


class AdaCLIP(ClipDetector):
    name = "adaclip"

    def __init__(self, options: AdaCLIPOptions, backbone, image_size: int):
        super().__init__(options, backbone, image_size)
        o = options
        joint, text_width, width = self.clip.embed_dim, self.clip.text_width, self.clip.width
        vdepth, tdepth = min(o.depth, len(self.clip.blocks)), min(o.depth, len(self.clip.text_blocks))
        if "V" in o.branch:
            if "S" in o.prompt_type:
                self.static_visual = nn.Parameter(torch.randn(vdepth, o.length, width) * 0.02)
            if "D" in o.prompt_type:
                self.dynamic_visual = nn.ModuleList(nn.Linear(joint, width) for _ in range(o.length))
        if "L" in o.branch and tdepth > 1:
            if "S" in o.prompt_type:
                self.static_text = nn.Parameter(torch.randn(tdepth - 1, o.length, text_width) * 0.02)
            if "D" in o.prompt_type:
                self.dynamic_text = nn.ModuleList(nn.Linear(joint, text_width) for _ in range(o.length))
        self.patch_projection = nn.ModuleList(nn.Linear(width, joint) for _ in self.clip.tap_indices)
        self.cls_projection = nn.Linear(joint, joint)
        self._sentences: dict[str, tuple[torch.Tensor, torch.Tensor, int]] = {}
        self._fixed_text: dict[str, torch.Tensor] = {}

    def class_names(self, batch: dict) -> list[str]:
        if self.prompt_class_name or self.options.class_names == "project":
            return super().class_names(batch)
        return [c.replace("-", " ") for c in batch["cls"]]

    def prompt_parameters(self):
        return [p for n, p in self.named_parameters() if n.startswith("static_")]

    # ---- prompts ------------------------------------------------------------------------------------------------
    def prompt_tokens(self, g0: torch.Tensor | None, tower: str, depth: int) -> torch.Tensor | None:
        """(B, depth, length, W) tokens of one tower: static + dynamic (one Linear per position, same at every
        depth), or None when the tower is not prompted."""
        static, generator = getattr(self, f"static_{tower}", None), getattr(self, f"dynamic_{tower}", None)
        if static is None and generator is None:
            return None
        if generator is None:
            return static[None].expand(g0.shape[0] if g0 is not None else 1, -1, -1, -1)
        dynamic = torch.stack([lin(g0) for lin in generator], 1)[:, None]  # (B, 1, length, W)
        return dynamic + static if static is not None else dynamic.expand(-1, depth, -1, -1)

    # ---- text ---------------------------------------------------------------------------------------------------
    def _sentence_embeddings(self, name: str, device) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Frozen token embeddings (S, L, W) of a class's ensemble cut after the last end-of-text token (exact under
        the causal mask), their end-of-text positions (S,) and the number of normal sentences."""
        if name not in self._sentences:
            normal, anomalous = ensemble_sentences(name)
            ids = self.clip.tokenize(normal + anomalous).to(device)
            eot = ids.argmax(-1)
            keep = max(int(eot.max()) + 1, 1 + self.options.length)
            with torch.no_grad():
                emb = self.clip.token_embeddings(ids[:, :keep])
            self._sentences[name] = (emb, eot, len(normal))
        emb, eot, n_normal = self._sentences[name]
        return emb.to(device), eot.to(device), n_normal

    def _pool_states(self, feats: torch.Tensor, n_normal: int) -> torch.Tensor:
        """Sentence features (S, D) -> [normal, anomalous] (2, D): normalise, average per state, normalise."""
        feats = F.normalize(feats.float(), dim=-1)
        return F.normalize(torch.stack([feats[:n_normal].mean(0), feats[n_normal:].mean(0)]), dim=-1)

    def text_features(self, g0: torch.Tensor | None, class_names: list[str]) -> torch.Tensor:
        """Per-image [normal, anomalous] text features (B, 2, D) through the prompted text tower."""
        device = self.clip.mean.device
        tdepth = min(self.options.depth, len(self.clip.text_blocks))
        tokens = self.prompt_tokens(g0, "text", tdepth - 1)
        if tokens is None:  # unprompted text: fixed per class name
            for name in set(class_names) - set(self._fixed_text):
                emb, eot, n_normal = self._sentence_embeddings(name, device)
                with torch.no_grad():
                    with self._tower_precision():
                        feats = self.clip.encode_text_embeddings(emb, eot)
                    self._fixed_text[name] = self._pool_states(feats, n_normal)
            return torch.stack([self._fixed_text[name].to(device) for name in class_names])
        parts = [self._sentence_embeddings(name, device) for name in class_names]
        width = max(p[0].shape[1] for p in parts)
        emb = torch.cat([F.pad(e, (0, 0, 0, width - e.shape[1])) for e, _, _ in parts])  # padding sits after every EOT
        eot = torch.cat([e for _, e, _ in parts])
        counts = [p[0].shape[0] for p in parts]
        per_sentence = tokens.expand(len(class_names), -1, -1, -1).repeat_interleave(torch.tensor(counts, device=tokens.device), 0)
        hook = overwrite_prompt_hook(per_sentence, self.options.prompt_rounding)
        with self._tower_precision():
            feats = self.clip.encode_text_embeddings(emb, eot, hook=hook)
        return torch.stack([self._pool_states(f, n) for f, (_, _, n) in zip(feats.split(counts), parts)])

    # ---- forward ------------------------------------------------------------------------------------------------
    def forward(self, batch: dict) -> Output:
        x = batch_view(batch, self.backbone_cfg.clip.image_size)
        return self._forward(x, self.class_names(batch))

    def _tower_precision(self):
        return autocast_context(self.clip.mean.device, self.backbone_cfg.precision)

    def _forward(self, x: torch.Tensor, class_names: list[str]) -> Output:
        o = self.options
        visual_tokens_needed = hasattr(self, "static_visual") or hasattr(self, "dynamic_visual")
        plain, g0 = None, None
        if "D" in o.prompt_type or not visual_tokens_needed:
            with torch.no_grad(), self._tower_precision():  # the unprompted frozen pass: conditions the dynamic prompts
                plain = self.clip.image_features(x)
                g0 = self.clip.project(plain.final[:, 0]).float()
        vdepth = min(o.depth, len(self.clip.blocks))
        prompts = self.prompt_tokens(g0, "visual", vdepth)
        if prompts is not None:
            prompts = prompts.expand(x.shape[0], -1, -1, -1)
            with self._tower_precision():
                feats = self.clip.image_features(x, hook=appended_prompt_hook(prompts, o.prompt_rounding),
                                                 checkpointing=getattr(self, "grad_checkpointing", False))
        else:
            feats = plain
        n_patches = self.clip.grid[0] * self.clip.grid[1]
        patches = [F.normalize(proj(t[:, 1:1 + n_patches].float()), dim=-1) for proj, t in zip(self.patch_projection, feats.taps)]
        with self._tower_precision():
            pooled = self.clip.project(feats.final[:, 0])
        cls = F.normalize(self.cls_projection(pooled.float()), dim=-1)
        text = self.text_features(g0, class_names)  # (B, 2, D)
        logits = [p @ text.transpose(1, 2) / o.temperature for p in patches]  # per tap (B, N, 2)
        if o.hsf:
            cls = self.hybrid_semantic_fusion(cls, patches, logits)
        image_probs = image_probabilities(cls, text, o.temperature)
        up = upsampled_logits(logits, self.clip.grid, self.image_size)
        anomaly_map = aggregated_map(up)
        aux = {"image_probs": image_probs}
        if self.training:  # the release's aggregation=False: a softmax map per tap for the loss
            aux["layer_maps"] = [u.softmax(1) for u in up]
        return Output(anomaly_map.float(), image_probs[:, 1].float(), aux)

    # ---- hybrid semantic fusion ---------------------------------------------------------------------------------
    def cluster_labels(self, features: torch.Tensor, patch_index: torch.Tensor) -> torch.Tensor:
        """k-means++ labels (n,) of (n, d) features, sklearn KMeans(n_clusters=k, n_init="auto") as the release.
        The release leaves random_state unset (NumPy's global stream, seeded once by setup_seed(111)); here it is
        `hsf_seed` or a seed drawn from torch's generator (reseeded every training step). `patch_index` (n,) names
        the patch of each row; only tests use it, when this seam replays the labels the authors' run drew."""
        from sklearn.cluster import KMeans

        o = self.options
        k = min(o.hsf_clusters, features.shape[0])
        seed = o.hsf_seed if o.hsf_seed is not None else int(torch.randint(0, 2 ** 31 - 1, (1,)))
        labels = KMeans(n_clusters=k, n_init="auto", random_state=seed).fit_predict(features.float().cpu().numpy())
        return torch.as_tensor(labels, dtype=torch.long, device=features.device)

    def hybrid_semantic_fusion(self, cls: torch.Tensor, patches: list[torch.Tensor], logits: list[torch.Tensor]) -> torch.Tensor:
        """The CLS feature (B, D) mixed with the k-means summary of the most anomalous patches (module docstring)."""
        o = self.options
        prob = torch.stack(logits).mean(0).softmax(-1)[..., 1]  # (B, N)
        top = prob.topk(min(o.hsf_top, prob.shape[1]), dim=1).indices
        chosen = torch.stack([p.gather(1, top[..., None].expand(-1, -1, p.shape[-1])) for p in patches], 1)  # (B, L, k, D)
        centres = []
        for b in range(cls.shape[0]):
            labels = self.cluster_labels(chosen[b].detach().permute(1, 0, 2).flatten(1), top[b])  # taps concatenated
            ids = labels.unique()
            members = (labels[None] == ids[:, None]).to(chosen.dtype)  # (C, k): clusters with members only (sklearn
            # leaves none empty; an empty one would make the release's mean NaN)
            sizes = members.sum(1, keepdim=True)
            centroids = members @ chosen[b].mean(0) / sizes  # mean over taps and members
            if o.hsf_rule == "mean_of_centroids":
                centres.append(centroids.mean(0))
            else:
                scores = (members @ prob[b, top[b]].to(chosen.dtype)[:, None]) / sizes
                centres.append(centroids[scores[:, 0].argmax()])
        centre = F.normalize(torch.stack(centres), dim=-1)
        return F.normalize(o.hsf_alpha * centre + (1 - o.hsf_alpha) * cls, dim=-1)

    # ---- loss ---------------------------------------------------------------------------------------------------
    def loss(self, out: Output, batch: dict) -> dict[str, torch.Tensor]:
        mask = (batch["mask"] > 0.5).to(out.anomaly_map.dtype)
        dice_of = row_dice if self.options.dice == "rows" else dice
        local = sum(multiclass_focal(m, mask) + dice_of(m[:, 1], mask) + dice_of(m[:, 0], 1 - mask)
                    for m in out.aux["layer_maps"])
        label = (batch["label"] > 0.5).long()
        image = multiclass_focal(out.aux["image_probs"].float()[..., None, None], label[:, None, None])
        return {"local": local, "image": image, "total": local + image}
