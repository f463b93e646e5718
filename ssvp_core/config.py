"""Configuration as dataclasses, with the `paper` and `smoke` presets held as data (ssvp_core/configs/*.yaml).

Resolution order for a run: dataclass defaults (the paper's settings) <- the method's own training, evaluation and
backbone defaults (e.g. ViP2-CLIP trains 10 epochs, Bayes-PFL's code builds CLIP with exact GELU), its training
defaults for the chosen auxiliary dataset (APRIL-GAN: 15 epochs on VisA, 3 on MVTec) <- the preset's
`train`/`eval`/`backbone` sections <- the preset's per-method section <- command-line overrides (`key.sub=value`).
Unknown keys are errors, never silently ignored.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import yaml

from .errors import ConfigError

PRESET_DIR = Path(__file__).parent / "configs"


@dataclass
class ClipConfig:
    """Frozen CLIP (open_clip). `layers` are 1-based transformer block outputs (SSVP.md §2.1)."""

    model: str = "ViT-L-14-336-quickgelu"  # OpenAI weights need QuickGELU
    pretrained: str = "openai"  # hub tag | file (.bin/.pth/.safetensors/OpenAI .pt) | folder | "none" (random init)
    image_size: int = 518  # 37x37 grid; position embedding interpolated from 24x24
    layers: tuple[int, ...] = (6, 12, 18, 24)
    # MLP activation of both towers: "model" keeps the open_clip config's own (QuickGELU for the -quickgelu configs);
    # "gelu" is exact GELU, which the released code of APRIL-GAN, AdaCLIP and Bayes-PFL builds even for OpenAI weights
    activation: Literal["model", "quick_gelu", "gelu"] = "model"
    # how the position embedding reaches image_size from the weights' grid: bicubic when loading (open_clip's
    # antialiased resize; Bayes-PFL), bilinear (align_corners=False) as AnomalyCLIP and ViP2-CLIP resize it in their
    # forward pass, or bicubic without antialiasing as Hugging Face transformers' `interpolate_pos_encoding` does
    # (AnomalyVFM's CLIP); the antialiased and plain bicubic kernels differ even when enlarging
    pos_embed_interpolation: Literal["bicubic", "bilinear", "bicubic_no_antialias"] = "bicubic"


@dataclass
class DinoConfig:
    """Frozen auxiliary ViT (timm): DINOv3 by default. `layers` are 0-based block indices (SSVP.md §11 #2)."""

    model: str = "vit_large_patch16_dinov3"
    pretrained: str = "lvd1689m"  # timm tag | file | folder | "none"
    image_size: int = 592  # 37x37 grid with 16-px patches
    layers: tuple[int, ...] = (3, 6, 9, 11)
    norm: bool = True  # final norm applied to every tap (get_intermediate_layers(norm=True))
    kwargs: dict = field(default_factory=dict)  # extra timm.create_model arguments (tiny test models)


@dataclass
class BackboneConfig:
    clip: ClipConfig = field(default_factory=ClipConfig)
    dino: DinoConfig = field(default_factory=DinoConfig)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"  # auto (bf16 autocast on GPU, fp32 on CPU) | fp32 | bf16 | fp16
    compile: bool = False  # torch.compile every transformer block of the frozen vision towers (first call compiles)


@dataclass
class DatasetRef:
    name: str
    root: str
    classes: list[str] = field(default_factory=list)


@dataclass
class TrainConfig:
    dataset: str = "visa"  # auxiliary dataset; its test split is the training data (SSVP.md §11 #15)
    root: str = "data/visa"
    classes: list[str] = field(default_factory=list)  # empty = all
    # further auxiliary datasets whose test splits join the training data (AdaCLIP trains on MVTec-AD + ColonDB)
    extra: list[DatasetRef] = field(default_factory=list)
    epochs: int = 15
    # > 0: train exactly this many optimiser steps, cycling through the data in `epochs`' per-epoch orders
    # (AnomalyVFM's releases count steps, not epochs); 0: `epochs` full passes
    steps: int = 0
    batch_size: int = 8
    lr_prompt: float = 5e-4  # learnable prompt embeddings
    lr_head: float = 1e-4  # everything else trainable
    optimizer: Literal["adam", "adamw"] = "adam"  # adam | adamw
    betas: tuple[float, float] = (0.5, 0.999)  # Bayes-PFL (SSVP.md §11 #16)
    weight_decay: float = 0.0
    schedule: Literal["cosine", "constant"] = "cosine"  # cosine | constant
    warmup_frac: float = 0.1
    seed: int = 111
    num_workers: int = 0
    grad_clip: float = 0.0  # 0 = off
    checkpoint_every: int = 0  # steps between mid-epoch checkpoints (0 = end of each epoch only)
    grad_checkpointing: bool = False  # for methods that backprop through a backbone (DAPO)
    # frozen-feature cache (engine/feature_cache.py) for methods whose vision path is frozen and unaugmented
    feature_cache: bool = True  # `--set train.feature_cache=off` disables it (YAML reads off as false)
    feature_cache_dtype: Literal["auto", "fp16", "fp32"] = "auto"  # auto: each feature as the backbone gave it (exact)
    feature_cache_dir: str = ""  # "" = <out_dir>/features
    feature_cache_ram_gb: float = 4.0  # caches up to this size are read into memory, larger ones memory-mapped
    feature_cache_max_gb: float = 500.0  # a cache larger than this is not written (the run goes on without it)
    # chance that a training item is replaced by a 2x2 mosaic of four images of its class (APRIL-GAN's --aug_rate,
    # data/mosaic.py); 0 = off
    mosaic: float = 0.0
    mosaic_draw: Literal["defect_folder", "image"] = "defect_folder"  # APRIL-GAN: a defect folder, then a file | AdaCLIP: 4 images
    mosaic_label: Literal["item", "any_tile"] = "item"  # the releases keep the replaced item's label


@dataclass
class EvalConfig:
    datasets: list[DatasetRef] = field(default_factory=lambda: [DatasetRef("mvtec", "data/mvtec")])
    sigma: float = 4.0  # test-time Gaussian smoothing in pixels of a 518x518 map (SSVP.md §11 #17), scaled to image_size; 0 = off
    fpr_limit: float = 0.3
    aupro: tuple[str, ...] = ("exact", "legacy_cflow200")
    batch_size: int = 8
    num_workers: int = 0
    seed: int = 333
    store_maps: bool = False
    # confidence intervals (metrics/bootstrap.py), computed when a caller asks for them: resamples and their seed
    bootstrap: int = 1000
    bootstrap_seed: int = 0
    feature_cache: bool = False  # reuse frozen features across evaluations (sweeps); stored as train.feature_cache_*


@dataclass
class RunConfig:
    profile: str = "paper"
    method: str = "ssvp"
    options: dict = field(default_factory=dict)  # method-specific options, validated by the method's dataclass
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    image_size: int = 518  # resolution of masks and anomaly maps, in training and for the metrics
    prompt_class_name: str = ""  # "" = each dataset's class names in the prompts; e.g. "object" for one generic name
    device: str = "auto"
    out_dir: str = "runs"
    # the folder relative paths of this config (dataset roots, out_dir, feature_cache_dir) resolve against
    # (workspace.py); "" = the workspace found from the environment when a path is resolved
    workspace: str = ""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def path(self, path: str) -> Path:
        """A path of this config, resolved against its workspace root (an absolute path stays as it is)."""
        from .workspace import resolve

        return resolve(path, self.workspace or None)

    def fingerprint(self) -> str:
        """Hash of everything that changes a trained model (not evaluation, device or output settings)."""
        d = self.to_dict()
        for key in ("eval", "device", "out_dir", "profile", "workspace"):
            d.pop(key)
        # how the run is executed, not what it learns (the feature cache's dtype stays: fp16 features round the inputs)
        for key in ("num_workers", "checkpoint_every", "feature_cache", "feature_cache_dir", "feature_cache_ram_gb",
                    "feature_cache_max_gb"):
            d["train"].pop(key)
        d["backbone"].pop("compile")
        if not d["train"]["extra"]:
            d["train"].pop("extra")  # single-source runs keep the fingerprints they had before `extra` existed
        if not d["train"]["steps"]:
            d["train"].pop("steps")  # epoch-counted runs keep the fingerprints they had before `steps` existed
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:12]


def from_dict(cls, data: dict | None, where: str = "config"):
    """Build dataclass `cls` from a dict, recursing into nested dataclasses; unknown keys raise ConfigError."""
    if data is None:
        return cls()
    if dataclasses.is_dataclass(data):
        return data
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; valid keys: {sorted(known)}")
    kwargs = {}
    hints = _type_hints(cls)
    for name, value in data.items():
        t = hints.get(name)
        if (name, cls) in (("datasets", EvalConfig), ("extra", TrainConfig)):
            kwargs[name] = [from_dict(DatasetRef, v, f"{where}.{name}") for v in value or []]
        elif dataclasses.is_dataclass(t):
            kwargs[name] = from_dict(t, value, f"{where}.{name}")
        elif isinstance(value, list) and typing.get_origin(t) is tuple:
            kwargs[name] = tuple(value)
        else:
            kwargs[name] = _scalar(value, t, f"{where}.{name}")
    return check_choices(cls(**kwargs), where)


def check_choices(obj, where: str = "config"):
    """Every field annotated `Literal[...]` must hold one of its choices; the error names the key and the choices.
    Returns `obj`, so dataclasses built in code (not from YAML) can be checked the same way."""
    for name, t in _type_hints(type(obj)).items():
        if typing.get_origin(t) is Literal:
            choices = typing.get_args(t)
            value = getattr(obj, name)
            if value not in choices:
                raise ConfigError(f"{where}.{name}={value!r} is not a valid choice; choose one of {', '.join(map(str, choices))}")
    return obj


def _scalar(value: Any, t: Any, where: str) -> Any:
    """Coerce YAML scalars to the field's type: PyYAML reads `1e-3` (no dot) as a string."""
    if t is float and isinstance(value, (str, int)) and not isinstance(value, bool):
        try:
            return float(value)
        except ValueError:
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if t is int and isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            raise ConfigError(f"{where}: expected an integer, got {value!r}") from None
    if t is int and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _type_hints(cls) -> dict:
    return typing.get_type_hints(cls)


def deep_merge(base: dict, update: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in (update or {}).items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k != "options":
            out[k] = deep_merge(out[k], v)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = {**out[k], **v}
        else:
            out[k] = copy.deepcopy(v)
    return out


def parse_override(text: str) -> dict:
    """`train.epochs=3` -> {"train": {"epochs": 3}} (values parsed as YAML)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key.sub=value")
    key, raw = text.split("=", 1)
    value = yaml.safe_load(raw) if raw.strip() else ""
    out: dict = {}
    cur = out
    parts = key.strip().split(".")
    for p in parts[:-1]:
        cur = cur.setdefault(p, {})
    cur[parts[-1]] = value
    return out


def load_preset(profile: str) -> dict:
    path = Path(profile)
    if not path.suffix:
        path = PRESET_DIR / f"{profile}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))
        raise ConfigError(f"no preset {profile!r} ({path}); known presets: {known}, or pass a YAML file path")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML ({e})") from None
    base = data.pop("base", None)
    if base:  # a preset derived from another: its keys are merged over the base's (lists and scalars replace)
        parent = load_preset(base if not Path(base).suffix else str(path.parent / base))
        parent.pop("profile", None)
        data = deep_merge(parent, data)
    data.setdefault("profile", path.stem)
    return data


def load_config(profile: str = "paper", method: str = "ssvp", overrides: list[str] | None = None,
                extra: dict | None = None, workspace: str | Path | None = None) -> RunConfig:
    """Resolve a run configuration (see the module docstring for the order). `workspace`: the root its relative
    paths resolve against (default: found from the environment, workspace.py), recorded in the config."""
    from .methods import method_spec  # late import: methods import config
    from .workspace import find

    preset = load_preset(profile)
    spec = method_spec(method)
    layers = [{section: preset[section]} for section in ("backbone", "train", "eval", "device", "out_dir", "image_size",
                                                         "prompt_class_name") if section in preset]
    layers.append((preset.get("methods") or {}).get(method) or {})
    layers += [extra or {}] + [parse_override(o) for o in overrides or []]

    def resolve(train_defaults: dict) -> dict:
        merged: dict = {"profile": preset.get("profile", profile), "method": method, "workspace": str(find(workspace).root)}
        merged = deep_merge(merged, {"train": train_defaults, "eval": spec.eval_defaults, "backbone": spec.backbone_defaults})
        for layer in layers:
            merged = deep_merge(merged, layer)
        return merged

    merged = resolve(spec.train_defaults)
    # the method's defaults for the auxiliary dataset the layers above chose (they still override them)
    dataset = str((merged.get("train") or {}).get("dataset", TrainConfig.dataset)).lower()
    if dataset in spec.train_defaults_by_dataset:
        merged = resolve(deep_merge(spec.train_defaults, spec.train_defaults_by_dataset[dataset]))
    cfg = from_dict(RunConfig, merged, f"config[{profile}/{method}]")
    spec.options_from(cfg.options)  # validate now, not deep inside model construction
    return cfg
