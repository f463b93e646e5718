"""Methods behind one Detector interface, registered by name.

    name          paper                                                  module
    reference     (none: training-free pixel statistics, a floor)        reference.py
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError
from .base import Detector, Output, options_from


@dataclass(frozen=True)
class MethodSpec:
    name: str
    cls: type
    options: type
    paper: str
    train_defaults: dict = field(default_factory=dict)
    eval_defaults: dict = field(default_factory=dict)

    def options_from(self, data: dict | None) -> Any:
        return options_from(self.options, data, f"options of method {self.name!r}")

    @property
    def trainable(self) -> bool:
        return bool(self.cls.trainable)


REGISTRY: dict[str, MethodSpec] = {}


def register(spec: MethodSpec) -> MethodSpec:
    REGISTRY[spec.name] = spec
    return spec


def method_spec(name: str) -> MethodSpec:
    key = name.lower().replace("-", "_")
    if key not in REGISTRY:
        raise ConfigError(f"unknown method {name!r}; registered: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[key]


def build_detector(cfg) -> Detector:
    """The detector a RunConfig describes, on CPU (the engine moves it)."""
    spec = method_spec(cfg.method)
    return spec.cls(spec.options_from(cfg.options), cfg.backbone, cfg.image_size)


from .reference import ReferenceOptions, ReferenceScorer  # noqa: E402

register(MethodSpec("reference", ReferenceScorer, ReferenceOptions, "training-free pixel statistics (no paper; a floor)"))

__all__ = ["Detector", "Output", "MethodSpec", "REGISTRY", "register", "method_spec", "build_detector"]
