"""Resolve backbone weights without surprises.

A `pretrained` setting is one of:
  * a hub tag (CLIP: "openai"; timm: "lvd1689m", "lvd142m", "mae", ...): looked up in the Hugging Face cache first,
    downloaded only when the hub is reachable;
  * a local file: open_clip `.bin` / `.pth` / `.safetensors`, OpenAI's TorchScript `ViT-L-14-336px.pt`,
    timm `.safetensors` / `.bin`, or Meta's original DINOv3 `.pth` (converted by timm's checkpoint filter);
  * a local folder (a downloaded hub repository);
  * "none": random initialisation (tiny test backbones, smoke profile).
With no network (or HF_HUB_OFFLINE=1) a missing weight fails within seconds with a message listing these ways,
instead of the libraries' ~50 s of download retries.
"""
from __future__ import annotations

import os
import socket
import zipfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from .errors import WeightsError

CLIP_HUB_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
TIMM_HUB_FILES = ("model.safetensors", "pytorch_model.bin")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt")


@dataclass(frozen=True)
class WeightSource:
    kind: str  # none | file | hub
    path: Path | None = None  # file to load (kind == file, or a cached hub file)
    tag: str | None = None
    repo: str | None = None
    torchscript: bool = False  # OpenAI's original .pt archive


def is_random(pretrained: str | None) -> bool:
    return pretrained is None or str(pretrained).strip().lower() in ("", "none", "random", "false")


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def hub_reachable(timeout: float = 3.0) -> bool:
    """True when the Hugging Face endpoint accepts a TCP connection within `timeout` seconds."""
    if hub_offline():
        return False
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    parsed = urlparse(endpoint)
    host, port = parsed.hostname or "huggingface.co", parsed.port or (443 if parsed.scheme != "http" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def cached_hub_file(repo: str, filenames: tuple[str, ...]) -> Path | None:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - huggingface_hub is a dependency
        return None
    for name in filenames:
        hit = try_to_load_from_cache(repo, name)
        if isinstance(hit, str) and Path(hit).is_file():
            return Path(hit)
    return None


def is_torchscript_archive(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(n.endswith("constants.pkl") or "/code/" in n for n in z.namelist())


def _local(path: Path, names: tuple[str, ...], what: str) -> WeightSource:
    if path.is_dir():
        for name in names:
            if (path / name).is_file():
                return WeightSource("file", path / name)
        found = sorted(p for p in path.iterdir() if p.suffix in WEIGHT_SUFFIXES)
        if len(found) == 1:
            return WeightSource("file", found[0])
        raise WeightsError(f"{path}: folder holds no {what} weights (looked for {', '.join(names)}"
                           f"{' or exactly one *.safetensors/.bin/.pth/.pt' if not found else f'; found several: {[p.name for p in found]}'}). "
                           "Point the setting at the weight file itself.")
    if path.suffix not in WEIGHT_SUFFIXES:
        raise WeightsError(f"{path}: not a weight file (expected one of {WEIGHT_SUFFIXES})")
    return WeightSource("file", path, torchscript=path.suffix == ".pt" and is_torchscript_archive(path))


def looks_like_path(value: str) -> bool:
    return any(sep in value for sep in ("/", "\\")) or value.startswith(".") or value.endswith(WEIGHT_SUFFIXES)


def resolve(pretrained: str | None, what: str, repo: str | None, hub_files: tuple[str, ...], setting: str) -> WeightSource:
    """Turn a `pretrained` setting into something loadable, or fail fast with the ways to fix it."""
    if is_random(pretrained):
        return WeightSource("none")
    value = str(pretrained)
    if looks_like_path(value) or Path(value).exists():
        path = Path(value).expanduser()
        if not path.exists():
            raise WeightsError(f"{setting}={value}: no such file or folder. Check the path.")
        return _local(path, hub_files, what)
    if repo is None:
        raise WeightsError(f"{setting}={value}: unknown tag for {what}. Use a hub tag the library knows, a local file or folder, or 'none'.")
    cached = cached_hub_file(repo, hub_files)
    if cached is not None:
        return WeightSource("hub", cached, tag=value, repo=repo)
    if not hub_reachable():
        raise WeightsError(missing_weights_message(what, repo, hub_files, setting))
    return WeightSource("hub", None, tag=value, repo=repo)


def missing_weights_message(what: str, repo: str, files: tuple[str, ...], setting: str) -> str:
    why = "HF_HUB_OFFLINE=1 is set" if hub_offline() else "the Hugging Face hub cannot be reached from this machine"
    hf_home = os.environ.get("HF_HOME", "~/.cache/huggingface")
    return (
        f"weights for {what} are not available: {why} and they are not in the Hugging Face cache ({hf_home}/hub).\n"
        f"Provide them in one of these ways:\n"
        f"  1. on a machine with internet: `huggingface-cli download {repo}` (or `hf download {repo}`), then copy\n"
        f"     its cache folder models--{repo.replace('/', '--')} to {hf_home}/hub on this machine (or set HF_HOME);\n"
        f"  2. download {repo} file {files[0]} (https://huggingface.co/{repo}) and set {setting}=/path/to/{files[0]};\n"
        f"  3. download the whole repository folder and set {setting}=/path/to/folder;\n"
        f"  4. for tests and the smoke profile, use random weights: {setting}=none (numbers then mean nothing)."
    )


def clip_repo(model: str, tag: str) -> str | None:
    import open_clip

    cfg = open_clip.get_pretrained_cfg(model, tag) or {}
    hub = cfg.get("hf_hub") or ""
    return hub.rstrip("/") or None


def timm_repo(model: str, tag: str) -> str | None:
    import timm

    cfg = timm.models.get_pretrained_cfg(f"{model}.{tag}")
    return getattr(cfg, "hf_hub_id", None) if cfg is not None else None


def resolve_clip(model: str, pretrained: str | None, setting: str = "backbone.clip.pretrained") -> WeightSource:
    repo = None if is_random(pretrained) or looks_like_path(str(pretrained)) else clip_repo(model, str(pretrained))
    return resolve(pretrained, f"CLIP {model}", repo, CLIP_HUB_FILES, setting)


def resolve_timm(model: str, pretrained: str | None, setting: str = "backbone.dino.pretrained") -> WeightSource:
    repo = None if is_random(pretrained) or looks_like_path(str(pretrained)) else timm_repo(model, str(pretrained))
    return resolve(pretrained, f"timm {model}", repo, TIMM_HUB_FILES, setting)
