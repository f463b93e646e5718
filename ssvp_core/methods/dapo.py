"""DAPO: defect-aware hybrid prompt optimisation with progressive tuning (arXiv 2512.09446; DAPO.md).

    prompts (§3.2)  normal "[V_1..V_5] flawless object" and, for each defect-type anchor D_k,
                    "[W_1..W_5] <D_k> anomaly object" (W shared by every anchor); E = 10 ensembles per state, averaged.
    progressive     deep layer tokens in both encoders (§3.3): 4 tokens inserted after the first token before block 0,
    tuning          and before every later block the slots are reset to 0.01 * (previous output) + 0.99 * (new token).
    adapters (§3.4) one Linear(width -> joint) per tapped layer on the raw residual stream (no CLS, no ln_post).
    scoring (§3.5)  image: softmax([z_x.z_N, z_x.mean(z_D)] / 0.07); pixels: (1+K)-way softmax per layer,
                    binary map = sum over layers of (1 - P(normal)), no smoothing; multi-type maps per anchor.
    loss (§6)       CE(image) + 4 * sum_l [multi-class focal + dice(normal) + dice(sum of defect channels)].

The vision tower is frozen but gradients pass through it to the visual tokens: set train.grad_checkpointing=true to
recompute block activations in the backward pass (needed for batch 8 at 518 px on a 24 GB GPU).
Code quirks (DAPO.md §12) are options: `text_path=faithful` (default) runs the prompt path without a causal mask and
pools at the template's EOT position (not shifted by the 4 inserted tokens), as the released code does;
`text_path=clean` uses a causal mask and the shifted EOT. `normal_anchor` is "flawless" (code) or "normal" (paper).
Precision: the released code runs fp32 with autocast off (train.py), the method's default `backbone.precision=fp32`;
under bf16/fp16 the frozen vision tower (and its backward pass to the visual tokens) runs in autocast, the global
feature is projected inside it, and every trainable part (adapters, text path, scores, loss) runs in fp32.
Anchors (data/defects.py): training uses train.py's list, scoring test.py's, and in eval mode the forward also
returns `type_logits` against test_multi_defect.py's list for the multi-type evaluation (engine/multitype.py).
Training images without a single DAPO type in their object's list (VisA images with several labels, or labels
DAPO has no type for) are left out of the loss: the released VisA meta.json does not contain them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..backbones import autocast_context
from ..data.defects import DefectVocabulary, vocabulary
from ..data.loader import batch_view
from ..errors import ConfigError
from ..prompts import PromptEncoder, deep_token_hook, placeholder_template
from .base import ClipDetector, Output
from .losses import dice, multiclass_focal


@dataclass
class DAPOOptions:
    ensembles: int = 10  # E
    ctx_len: int = 5  # l learnable tokens before the anchor words
    text_depth: int = 12  # blocks with deep text tokens (capped at the text tower's depth)
    vision_depth: int = 24  # blocks with deep visual tokens (capped at the vision tower's depth)
    n_tokens: int = 4  # tokens per layer in both encoders
    blend: float = 0.01  # alpha of the progressive update
    temperature: float = 0.07
    normal_anchor: Literal["flawless", "normal"] = "flawless"  # §14 #2: flawless (code) | normal (paper)
    abnormal_template: str = "{defect} anomaly object"  # §14 #3 (code wording)
    text_path: Literal["faithful", "clean"] = "faithful"  # §14 #4: faithful (no causal mask, unshifted EOT) | clean
    lambda_local: float = 4.0
    lambda_image: float = 1.0
    anchors: dict = field(default_factory=dict)  # dataset -> [anchor words] for datasets without a built-in list


class DAPO(ClipDetector):
    name = "dapo"
    eval_aux_keys = ("type_logits",)

    def __init__(self, options: DAPOOptions, backbone, image_size: int):
        super().__init__(options, backbone, image_size)
        o = options
        w, vw, d = self.clip.text_width, self.clip.width, self.clip.embed_dim
        self.prompt_encoder = PromptEncoder(self.clip)
        mean, std = self.clip.model.token_embedding.weight.mean(0), self.clip.model.token_embedding.weight.std(0)
        self.ctx_normal = nn.Parameter(torch.randn(o.ensembles, o.ctx_len, w) * std + mean)
        self.ctx_abnormal = nn.Parameter(torch.randn(o.ensembles, o.ctx_len, w) * std + mean)
        self.text_tokens = nn.Parameter(torch.randn(min(o.text_depth, len(self.clip.text_blocks)), o.n_tokens, w) * std + mean)
        patch = self.clip.model.visual.conv1.kernel_size[0]
        bound = math.sqrt(6.0 / (3 * patch * patch + vw))  # VPT initialisation
        self.visual_tokens = nn.Parameter(torch.empty(min(o.vision_depth, len(self.clip.blocks)), o.n_tokens, vw).uniform_(-bound, bound))
        self.adapters = nn.ModuleList(nn.Linear(vw, d) for _ in backbone.clip.layers)
        self._text_cache: dict[tuple[str, ...], torch.Tensor] = {}

    def prompt_parameters(self):
        return [self.ctx_normal, self.ctx_abnormal, self.text_tokens, self.visual_tokens]

    def train(self, mode: bool = True):
        self._text_cache.clear()  # text features depend on trained tokens
        return super().train(mode)

    # ---- vocabularies ---------------------------------------------------------------------------------------
    def vocabulary(self, dataset: str) -> DefectVocabulary:
        """The anchors the binary prompts and training targets use: train.py's in training mode, test.py's in eval."""
        if dataset in self.options.anchors:
            return DefectVocabulary(tuple(self.options.anchors[dataset]))
        return vocabulary(dataset, training=self.training)

    def multitype_vocabulary(self, dataset: str) -> DefectVocabulary:
        """test_multi_defect.py's anchors and per-object lists, whatever the mode (the eval forward scores them)."""
        if dataset in self.options.anchors:
            return DefectVocabulary(tuple(self.options.anchors[dataset]))
        return vocabulary(dataset, multitype=True)

    # ---- text ---------------------------------------------------------------------------------------------
    def text_features(self, dataset: str) -> torch.Tensor:
        """[z_N; z_D1..z_DK] (1 + K, D), L2-normalised, for the anchors of `dataset`."""
        return self.anchor_text_features(self.vocabulary(dataset).anchors)

    def anchor_text_features(self, anchors: tuple[str, ...]) -> torch.Tensor:
        """[z_N; z_D1..z_DK] (1 + K, D): per state, the E ensemble sentences through the text tower with the deep
        tokens, projected, averaged over E, then L2-normalised (model.py encode_learn_prompts; train.py)."""
        if not self.training and anchors in self._text_cache:
            return self._text_cache[anchors]
        o = self.options
        states = [f"{o.normal_anchor} object"] + [o.abnormal_template.format(defect=a) for a in anchors]
        E = o.ensembles
        texts = [placeholder_template(o.ctx_len, s) for s in states for _ in range(E)]
        slots = torch.cat([self.ctx_normal, self.ctx_abnormal.repeat(len(anchors), 1, 1)])  # ((1+K)E, l, W)
        emb, eot = self.prompt_encoder.embed(texts, slots)
        clean = o.text_path == "clean"
        feats = self.clip.encode_text_embeddings(emb, eot + (o.n_tokens if clean else 0), causal=clean,
                                                 hook=deep_token_hook(self.text_tokens, "blend", o.blend))
        feats = F.normalize(feats.float().view(len(states), E, -1).mean(1), dim=-1)
        if not self.training:
            self._text_cache[anchors] = feats
        return feats

    def forward(self, batch: dict) -> Output:
        o = self.options
        x = batch_view(batch, self.backbone_cfg.clip.image_size)
        datasets = set(batch.get("dataset") or ["?"])
        if len(datasets) != 1:
            raise ConfigError(f"dapo needs one dataset per batch (its anchors differ per dataset), got {sorted(datasets)}")
        dataset = datasets.pop()
        text = self.text_features(dataset)  # (1 + K, D)
        with autocast_context(x.device, self.backbone_cfg.precision):
            feats = self.clip.image_features(x, hook=deep_token_hook(self.visual_tokens, "blend", o.blend),
                                             checkpointing=getattr(self, "grad_checkpointing", False) and self.training)
            z_x = self.clip.project(feats.final[:, 0])  # ln_post(CLS) @ proj, inside autocast (dtype-safe)
        z_x = F.normalize(z_x.float(), dim=-1)
        image_logits = self.image_logits(z_x, text)
        n = o.n_tokens
        patches = [F.normalize(adapter(tap[:, 1 + n:].float()), dim=-1)  # prompt tokens and CLS dropped
                   for adapter, tap in zip(self.adapters, feats.taps)]
        layer_probs = self.layer_probs(patches, text)
        anomaly_map = torch.stack([1 - p[:, 0] for p in layer_probs]).sum(0)  # range 0..L
        score = image_logits.softmax(-1)[:, 1]
        aux = {"image_logits": image_logits, "layer_probs": layer_probs}
        if not self.training:  # the multi-type evaluation's logits, against test_multi_defect.py's anchors
            type_anchors = self.multitype_vocabulary(dataset).anchors
            type_text = text if type_anchors == self.vocabulary(dataset).anchors else self.anchor_text_features(type_anchors)
            aux["type_logits"] = torch.stack([z @ type_text.T / o.temperature for z in patches], 1)  # (B, L, N, 1+K)
        return Output(anomaly_map, score, aux)

    def image_logits(self, z_x: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """[z_x . z_N, z_x . normalize(mean_k z_Dk)] / tau (test.py forward_pass; train.py)."""
        z_defect = F.normalize(text[1:].mean(0), dim=-1)
        return torch.stack([z_x @ text[0], z_x @ z_defect], -1) / self.options.temperature

    def layer_probs(self, patches: list[torch.Tensor], text: torch.Tensor) -> list[torch.Tensor]:
        """Per layer: (1 + K)-way softmax of patch-text cosines / tau on the grid, then bilinear upsampling with
        align_corners=True (train.py compute_similarity / compute_similarity_map): (B, 1 + K, H, W)."""
        out = []
        for z in patches:
            prob = (z @ text.T / self.options.temperature).softmax(-1).transpose(1, 2)
            prob = prob.reshape(z.shape[0], -1, *self.clip.grid)
            out.append(F.interpolate(prob, size=(self.image_size,) * 2, mode="bilinear", align_corners=True))
        return out

    def loss(self, out: Output, batch: dict) -> dict[str, torch.Tensor]:
        """CE(image logits) + 4 * sum_l [focal(S_l, y_m) + dice(S_l[0], 1 - y_b) + dice(sum_k>0 S_l[k], y_b)]
        (train.py train_epoch); y_m gives each defect pixel its image's type."""
        o = self.options
        vocab = self.vocabulary(batch["dataset"][0])
        ids = [vocab.type_index(d, c) if int(y) else 0 for d, c, y in zip(batch["defect"], batch["cls"], batch["label"])]
        keep = [i for i, t in enumerate(ids) if t is not None]
        probs, image_logits, label = out.aux["layer_probs"], out.aux["image_logits"], batch["label"]
        mask = (batch["mask"] > 0.5).float()
        if len(keep) < len(ids):  # images the released training data does not contain
            if not keep:
                zero = image_logits.sum() * 0 + sum(p.sum() for p in probs) * 0  # keeps every parameter in the graph
                return {"local": zero, "image": zero, "total": zero}
            index = torch.tensor(keep, device=mask.device)
            probs, image_logits = [p[index] for p in probs], image_logits[index]
            label, mask = label[index], mask[index]
        type_ids = torch.tensor([ids[i] for i in keep], device=mask.device)
        target = mask.long() * type_ids[:, None, None]  # multi-class pixel target: the image's defect type
        local = 0
        for p in probs:
            local = local + multiclass_focal(p, target) + dice(p[:, 0], 1 - mask) + dice(p[:, 1:].sum(1), mask)
        image = F.cross_entropy(image_logits, label)
        return {"local": local, "image": image, "total": o.lambda_local * local + o.lambda_image * image}
