"""Learnable-token prompts through the frozen CLIP text encoder (CoOp-style), shared by every prompted method.

A template is a sentence whose placeholder words ("X") mark learnable slots, e.g. "X X X X X X X X X X bottle"
(SSVP: 5 background + 5 state vectors then the class name) or "X X X X X X X good X X X" (ViP2-CLIP). The frozen
token embeddings of the tokenized template are computed once and cached; at every step the learnable vectors are
written into the slot positions, in order, and the sequence goes through the text transformer, pooled at the
end-of-text token and projected into the joint space. Gradients flow into the learnable vectors only.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .backbones import ClipBackbone

PLACEHOLDER = "X"


def placeholder_template(n_slots: int, text: str = "") -> str:
    return " ".join([PLACEHOLDER] * n_slots + ([text] if text else []))


class PromptEncoder(nn.Module):
    """Encodes templates with learnable slot vectors. Holds no trainable parameters itself."""

    def __init__(self, clip: ClipBackbone):
        super().__init__()
        self.clip = clip
        self._placeholder_id = int(clip.tokenize([PLACEHOLDER])[0, 1])
        self._cache: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def template(self, texts: list[str], device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(ids (P, L), frozen embeddings (P, L, W), slot mask (P, L)) for the given template texts."""
        missing = [t for t in dict.fromkeys(texts) if t not in self._cache]
        if missing:
            ids = self.clip.tokenize(missing).to(device)
            with torch.no_grad():
                emb = self.clip.token_embeddings(ids)
            for t, i, e in zip(missing, ids, emb):
                self._cache[t] = (i, e, i == self._placeholder_id)
        ids, emb, slots = zip(*(self._cache[t] for t in texts))
        return torch.stack(ids).to(device), torch.stack(emb).to(device), torch.stack(slots).to(device)

    def embed(self, texts: list[str], slot_vectors: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Token embeddings with slots filled: (P, L, W), and the EOT index (P,).

        slot_vectors: (P, S, W) with S equal to the number of placeholders of every template (or None).
        """
        device = slot_vectors.device if slot_vectors is not None else self.clip.mean.device
        ids, emb, slots = self.template(texts, device)
        if slot_vectors is not None:
            counts = slots.sum(1)
            if not bool((counts == slot_vectors.shape[1]).all()):
                raise ValueError(f"templates have {counts.tolist()} placeholder slots but {slot_vectors.shape[1]} vectors were given")
            emb = emb.clone().to(slot_vectors.dtype)
            emb[slots] = slot_vectors.reshape(-1, slot_vectors.shape[-1])
        return emb, ids.argmax(dim=-1)

    def forward(self, texts: list[str], slot_vectors: torch.Tensor | None = None, causal: bool = True,
                hook=None, eot_index: torch.Tensor | None = None) -> torch.Tensor:
        """Text features (P, D) of the templates with their slots filled (not normalised)."""
        emb, eot = self.embed(texts, slot_vectors)
        return self.clip.encode_text_embeddings(emb, eot if eot_index is None else eot_index, causal=causal, hook=hook)


def trunc_normal(shape: tuple[int, ...], std: float = 0.02, mean: float = 0.0) -> nn.Parameter:
    p = torch.empty(shape)
    nn.init.trunc_normal_(p, mean=mean, std=std, a=mean - 2 * std, b=mean + 2 * std)
    return nn.Parameter(p)
