"""A synthetic benchmark in the MVTec-AD layout, for tests and the smoke profile.

Two disjoint class sets, `synth-a` (5 classes) and `synth-b` (5 held-out classes), each with textures and objects,
so that the papers' cross-domain protocol (train on one set's test split, evaluate zero-shot on the other) can be simulated.
Each defect is painted through an exact pixel mask. Lighting gradients, per-image colour, pose, background and
bright as well as dark defects keep the defects from being found by a global colour threshold (tests check this).
Deterministic for a seed: every image has its own generator seeded from (seed, set, class, split, folder, index).
"""
from __future__ import annotations

import colorsys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from .. import io
from .meta import write_meta
from .mvtec import scan_mvtec_layout
from .records import raise_if_problems


@dataclass(frozen=True)
class SynthClass:
    name: str
    kind: str  # "texture" or "object"
    pattern: str
    shape: str | None
    defects: tuple[str, ...]
    hue: float  # base hue in [0, 1)
    saturation: float
    value: float
    frequency: float = 1.0  # scale of the surface pattern


SETS: dict[str, tuple[SynthClass, ...]] = {
    "synth-a": (
        SynthClass("weave", "texture", "weave", None, ("scratch", "hole", "stain"), 0.09, 0.35, 0.62),
        SynthClass("marble", "texture", "marble", None, ("crack", "color_shift", "scratch"), 0.60, 0.08, 0.78),
        SynthClass("grain", "texture", "grain", None, ("scratch", "hole", "crack"), 0.07, 0.50, 0.55),
        SynthClass("washer", "object", "brushed", "ring", ("scratch", "missing", "stain"), 0.58, 0.10, 0.70),
        SynthClass("tablet", "object", "speckle", "rounded_rect", ("crack", "hole", "color_shift"), 0.13, 0.30, 0.86),
    ),
    # held-out products: two share a surface family with set A at other scales and colours (as MVTec-AD and VisA
    # share an industrial vocabulary), one texture family (mesh) and the two object shapes are new
    "synth-b": (
        SynthClass("twill", "texture", "weave", None, ("stain", "crack", "hole"), 0.62, 0.30, 0.55, frequency=0.7),
        SynthClass("granite", "texture", "marble", None, ("hole", "scratch", "color_shift"), 0.02, 0.25, 0.60, frequency=1.7),
        SynthClass("mesh", "texture", "mesh", None, ("stain", "color_shift", "hole"), 0.33, 0.15, 0.50),
        SynthClass("capsule", "object", "speckle", "capsule", ("crack", "missing", "color_shift"), 0.97, 0.45, 0.75),
        SynthClass("bracket", "object", "brushed", "lshape", ("scratch", "hole", "stain"), 0.55, 0.05, 0.45),
    ),
}
GENERATOR_VERSION = 2  # bump whenever the images a seed produces change
DEFECT_TYPES = ("scratch", "hole", "crack", "stain", "color_shift", "missing")


def _smooth_noise(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    n = ndimage.gaussian_filter(rng.standard_normal((size, size)), sigma, mode="wrap")
    return (n - n.mean()) / (n.std() + 1e-8)


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, float(np.clip(s, 0, 1)), float(np.clip(v, 0, 1))), dtype=np.float32)


def _pattern(name: str, u: np.ndarray, v: np.ndarray, rng: np.random.Generator, size: int, frequency: float = 1.0) -> np.ndarray:
    """A texture field in about [-1, 1] on rotated coordinates (u, v) in [0, 1]."""
    f = rng.uniform(0.85, 1.15) * frequency
    turb = _smooth_noise(rng, size, size / 24)
    if name == "weave":
        k = 2 * np.pi * 18 * f
        return 0.6 * np.sin(k * u) * np.sign(np.sin(k * v / 2)) + 0.4 * np.sin(k * v) * np.sign(np.sin(k * u / 2))
    if name == "marble":
        return np.sin(2 * np.pi * (3 * f * u + 0.6 * turb)) * 0.8 + 0.2 * turb
    if name == "grain":
        r = np.sqrt((u - rng.uniform(-0.5, 1.5)) ** 2 * 0.15 + (v - 0.5) ** 2)
        return np.sin(2 * np.pi * 22 * f * r + 1.2 * turb) * 0.8 + 0.2 * turb
    if name == "mesh":
        k = 14 * f
        cell = (np.abs(((u * k) % 1) - 0.5) < 0.18) | (np.abs(((v * k) % 1) - 0.5) < 0.18)
        return np.where(cell, 0.7, -0.7) + 0.25 * turb
    if name == "brushed":
        streak = ndimage.gaussian_filter1d(rng.standard_normal((size, size)), size / 10, axis=1)
        streak = (streak - streak.mean()) / (streak.std() + 1e-8)
        return 0.5 * streak + 0.2 * turb
    if name == "speckle":
        return 0.6 * _smooth_noise(rng, size, 1.2) + 0.3 * turb
    raise ValueError(f"unknown pattern {name!r}")


def _shape_mask(shape: str, u: np.ndarray, v: np.ndarray, scale: float) -> np.ndarray:
    cu, cv = u - 0.5, v - 0.5
    s = scale
    if shape == "ring":
        r = np.sqrt(cu ** 2 + cv ** 2)
        return (r < 0.33 * s) & (r > 0.14 * s)
    if shape == "rounded_rect":
        a, b, rad = 0.32 * s, 0.2 * s, 0.08 * s
        du, dv = np.maximum(np.abs(cu) - (a - rad), 0), np.maximum(np.abs(cv) - (b - rad), 0)
        return (du ** 2 + dv ** 2 < rad ** 2) & (np.abs(cu) < a) & (np.abs(cv) < b)
    if shape == "capsule":
        a, rad = 0.22 * s, 0.13 * s
        du = np.maximum(np.abs(cu) - a, 0)
        return du ** 2 + cv ** 2 < rad ** 2
    if shape == "lshape":
        w = 0.11 * s
        vertical = (np.abs(cu + 0.15 * s) < w) & (np.abs(cv) < 0.33 * s)
        horizontal = (np.abs(cv - 0.33 * s + w) < w) & (cu > -0.26 * s) & (cu < 0.3 * s)
        return vertical | horizontal
    raise ValueError(f"unknown shape {shape!r}")


def _polyline_mask(points: list[tuple[float, float]], width: int, size: int) -> np.ndarray:
    canvas = Image.new("L", (size, size), 0)
    ImageDraw.Draw(canvas).line(points, fill=255, width=width, joint="curve")
    return np.asarray(canvas) > 0


def _disc(size: int, cx: float, cy: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size]
    return (xx - cx) ** 2 + (yy - cy) ** 2 < r ** 2


def _defect_region(kind: str, rng: np.random.Generator, size: int, support: np.ndarray) -> np.ndarray:
    """A boolean region for the defect, centred on a random point of `support`."""
    ys, xs = np.nonzero(support)
    i = rng.integers(len(ys))
    cy, cx = float(ys[i]), float(xs[i])
    width = max(1, int(round(size / 64)))
    if kind == "scratch":
        angle, length = rng.uniform(0, np.pi), rng.uniform(0.15, 0.35) * size
        pts = [(cx, cy)]
        for _ in range(3):
            angle += rng.normal(0, 0.25)
            step = length / 3
            pts.append((pts[-1][0] + step * np.cos(angle), pts[-1][1] + step * np.sin(angle)))
        return _polyline_mask(pts, width, size)
    if kind == "crack":
        pts, angle = [(cx, cy)], rng.uniform(0, 2 * np.pi)
        for _ in range(int(rng.integers(10, 18))):
            angle += rng.normal(0, 0.7)
            step = rng.uniform(0.012, 0.03) * size
            pts.append((pts[-1][0] + step * np.cos(angle), pts[-1][1] + step * np.sin(angle)))
        return _polyline_mask(pts, width + 1, size)
    if kind == "hole":
        return _disc(size, cx, cy, rng.uniform(0.04, 0.08) * size)
    if kind in ("stain", "color_shift"):
        r = rng.uniform(0.07, 0.14) * size
        blob = _smooth_noise(rng, size, size / 30) > -0.2
        return _disc(size, cx, cy, r) & blob | _disc(size, cx, cy, 0.4 * r)
    raise ValueError(kind)


def render(spec: SynthClass, defect: str | None, rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """One image (H, W, 3) float in [0, 1] and its boolean defect mask."""
    yy, xx = (np.mgrid[0:size, 0:size] + 0.5) / size
    angle = rng.uniform(0, 2 * np.pi) if spec.kind == "object" else rng.uniform(-0.3, 0.3)
    shift = rng.uniform(-0.08, 0.08, 2) if spec.kind == "object" else rng.uniform(0, 1, 2)
    cu, cv = xx - 0.5 - shift[0] * (spec.kind == "object"), yy - 0.5 - shift[1] * (spec.kind == "object")
    u = 0.5 + np.cos(angle) * cu + np.sin(angle) * cv + (shift[0] if spec.kind == "texture" else 0)
    v = 0.5 - np.sin(angle) * cu + np.cos(angle) * cv + (shift[1] if spec.kind == "texture" else 0)

    color = _hsv(spec.hue + rng.normal(0, 0.02), spec.saturation + rng.normal(0, 0.05), spec.value + rng.normal(0, 0.06))
    field = _pattern(spec.pattern, u, v, rng, size, spec.frequency)
    surface = color[None, None, :] * (1 + 0.18 * field[..., None])
    if spec.kind == "object":
        obj = _shape_mask(spec.shape, u, v, rng.uniform(0.9, 1.15))
        bg_color = _hsv(rng.uniform(0, 1), rng.uniform(0.0, 0.35), rng.uniform(0.15, 0.85))
        background = bg_color[None, None, :] * (1 + 0.1 * _smooth_noise(rng, size, size / 16)[..., None])
        edge = ndimage.binary_dilation(obj, iterations=2) & ~obj
        image = np.where(obj[..., None], surface, background)
        image[edge] *= 0.6
    else:
        obj = np.ones((size, size), bool)
        background = None
        image = surface

    mask = np.zeros((size, size), bool)
    if defect is not None:
        support = ndimage.binary_erosion(obj, iterations=max(1, size // 40)) if spec.kind == "object" else obj
        for _ in range(20):
            if defect == "missing":
                boundary = obj & ~ndimage.binary_erosion(obj, iterations=1)
                region = _defect_region("hole", rng, size, boundary)
                region = ndimage.binary_dilation(region, iterations=max(2, size // 20))
            else:
                region = _defect_region(defect, rng, size, support)
            mask = region & obj
            if mask.sum() >= max(6, size * size // 4000):
                break
        image = _paint_defect(defect, image, mask, background, rng)

    light = 1 + rng.uniform(-0.25, 0.25) * (xx - 0.5) * 2 + rng.uniform(-0.25, 0.25) * (yy - 0.5) * 2
    light *= 1 - rng.uniform(0.0, 0.25) * ((xx - 0.5) ** 2 + (yy - 0.5) ** 2) * 2
    image = image * light[..., None] + rng.normal(0, 0.012, image.shape)
    return np.clip(image, 0, 1).astype(np.float32), mask


def _paint_defect(defect: str, image: np.ndarray, mask: np.ndarray, background, rng: np.random.Generator) -> np.ndarray:
    out = image.copy()
    m = mask[..., None]
    if defect == "scratch":
        factor = rng.choice([rng.uniform(0.55, 0.72), rng.uniform(1.3, 1.5)])
        out = np.where(m, image * factor, image)
    elif defect == "crack":
        out = np.where(m, image * rng.uniform(0.35, 0.55), image)
    elif defect == "hole":
        size = mask.shape[0]
        depth = ndimage.distance_transform_edt(mask)
        shade = 0.2 + 0.3 * np.exp(-depth / max(1.0, size / 80))
        out = np.where(m, image * shade[..., None], image)
    elif defect == "stain":
        stain = _hsv(rng.uniform(0.02, 0.12), rng.uniform(0.4, 0.8), rng.uniform(0.2, 0.5))
        alpha = rng.uniform(0.35, 0.55)
        out = np.where(m, (1 - alpha) * image + alpha * stain[None, None, :], image)
    elif defect == "color_shift":
        tint = _hsv(rng.uniform(0, 1), rng.uniform(0.5, 0.8), 1.0)
        tint = tint / tint.mean()
        out = np.where(m, image * tint[None, None, :], image)
    elif defect == "missing":
        out = np.where(m, background, image)
    else:
        raise ValueError(f"unknown defect {defect!r}; known: {DEFECT_TYPES}")
    return out


def _save(image: np.ndarray, path: Path) -> None:
    io.save_image(Image.fromarray(np.round(image * 255).astype(np.uint8)), path)


def generate(out: str | Path, seed: int = 0, size: int = 192, n_train_good: int = 4, n_test_good: int = 6,
             n_per_defect: int = 4, sets: tuple[str, ...] = tuple(SETS)) -> dict[str, Path]:
    """Write every requested class set under `out/<set>/` (MVTec layout + meta.json); returns set -> root."""
    out = Path(out)
    roots = {}
    for set_idx, set_name in enumerate(SETS):
        if set_name not in sets:
            continue
        root = out / set_name
        for cls_idx, spec in enumerate(SETS[set_name]):
            jobs = [("train", "good", None, i) for i in range(n_train_good)]
            jobs += [("test", "good", None, i) for i in range(n_test_good)]
            jobs += [("test", d, d, i) for d in spec.defects for i in range(n_per_defect)]
            for split, folder, defect, i in jobs:
                folder_idx = 0 if defect is None else 1 + DEFECT_TYPES.index(defect)
                rng = np.random.default_rng([seed, set_idx, cls_idx, split == "test", folder_idx, i])
                image, mask = render(spec, defect, rng, size)
                _save(image, root / spec.name / split / folder / f"{i:03d}.png")
                if defect is not None:
                    _save(mask.astype(np.float32)[..., None].repeat(3, -1)[..., 0], root / spec.name / "ground_truth" / folder / f"{i:03d}_mask.png")
        splits = {s: raise_if_problems(scan_mvtec_layout(root, s, set_name), set_name, root) for s in ("train", "test")}
        write_meta(splits, root, dataset_name=set_name)
        roots[set_name] = root
    return roots
