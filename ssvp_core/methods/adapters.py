"""Low-rank adapters of frozen linear layers: LoRA (Hu et al., ICLR 2022, Eq. 3) and DoRA (Liu et al., ICML 2024,
Eq. 5), in the form AnomalyVFM releases them (MaticFuc/AnomalyVFM @4da96b4, peft_local/lora.py and dora.py).

    LoRA   y = W x + b + s B A x
    DoRA   y = m * (W + s B A) / ||W + s B A||_row x + b, with ||.||_row + 1e-8 the norm of each output row

s = alpha / rank, A (rank x in) drawn from N(0, 0.01^2), B (out x rank) zero, m initialised to the row norms of W, so
that both start as the frozen layer. A fused qkv projection is adapted on its q and v thirds only (k stays frozen),
with a separate A, B (and m) per third. The frozen weight and bias are arguments of `forward`, never stored here, so
the same adapter serves a timm Linear (wrapped in place by `AdaptedLinear`) and the packed projections of
`nn.MultiheadAttention` (open_clip's CLIP), without copying or modifying the frozen parameters.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

PEFT_KINDS = ("dora", "lora")
INIT_STD = 0.01
NORM_EPS = 1e-8


class LowRankAdapter(nn.Module):
    """LoRA or DoRA for a frozen (out x in) weight; `parts` names the row blocks adapted (("",) = the whole weight,
    ("q", "v") = the first and last third of a fused qkv weight). Parameters: lora_a{_p}, lora_b{_p}, magnitude{_p}."""

    def __init__(self, weight: torch.Tensor, kind: str, rank: int, alpha: float, parts: tuple[str, ...] = ("",)):
        super().__init__()
        if kind not in PEFT_KINDS:
            raise ValueError(f"adapter kind {kind!r}: choose one of {PEFT_KINDS}")
        if rank <= 0:
            raise ValueError(f"adapter rank {rank}: must be positive")
        self.kind, self.rank, self.alpha, self.parts = kind, int(rank), float(alpha), tuple(parts)
        self.scaling = self.alpha / self.rank
        out_rows = weight.shape[0] // (3 if self.fused else 1)
        blocks = self._blocks(weight.detach())
        for part in self.parts:
            suffix = f"_{part}" if part else ""
            setattr(self, f"lora_a{suffix}", nn.Parameter(torch.randn(self.rank, weight.shape[1]) * INIT_STD))
            setattr(self, f"lora_b{suffix}", nn.Parameter(torch.zeros(out_rows, self.rank)))
            if kind == "dora":
                setattr(self, f"magnitude{suffix}", nn.Parameter(blocks[part].float().norm(dim=1).clone()))

    @property
    def fused(self) -> bool:
        return self.parts != ("",)

    def _blocks(self, weight: torch.Tensor) -> dict[str, torch.Tensor]:
        if not self.fused:
            return {"": weight}
        q, k, v = weight.chunk(3, dim=0)
        return {"q": q, "k": k, "v": v}

    def _params(self, part: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        suffix = f"_{part}" if part else ""
        return (getattr(self, f"lora_a{suffix}"), getattr(self, f"lora_b{suffix}"),
                getattr(self, f"magnitude{suffix}", None))

    def forward(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if self.kind == "dora":
            blocks = self._blocks(weight)
            for part in self.parts:
                a, b, m = self._params(part)
                adapted = blocks[part] + (b @ a) * self.scaling
                blocks[part] = m.unsqueeze(1) * (adapted / (adapted.norm(dim=1, keepdim=True) + NORM_EPS))
            full = blocks[""] if not self.fused else torch.cat([blocks["q"], blocks["k"], blocks["v"]], dim=0)
            return F.linear(x, full, bias)
        out = F.linear(x, weight, bias)
        if not self.fused:
            a, b, _ = self._params("")
            return out + self.scaling * F.linear(F.linear(x, a), b)
        q, k, v = out.chunk(3, dim=-1)
        a, b, _ = self._params("q")
        q = q + self.scaling * F.linear(F.linear(x, a), b)
        a, b, _ = self._params("v")
        v = v + self.scaling * F.linear(F.linear(x, a), b)
        return torch.cat([q, k, v], dim=-1)


class AdaptedLinear(nn.Module):
    """A frozen nn.Linear (`base`) followed by its adapter; a drop-in replacement inside a private timm model."""

    def __init__(self, base: nn.Linear, adapter: LowRankAdapter):
        super().__init__()
        self.base = base
        self.adapter = adapter

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.adapter(x, self.base.weight, self.base.bias)
