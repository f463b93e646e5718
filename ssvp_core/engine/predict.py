"""`ssvp predict`: score a folder of a user's own images with a trained checkpoint.

Writes <out>/overlays/<name>.png (the image with the anomaly heat map blended over it) and <out>/scores.csv
(path, image score, map maximum). Heat maps share one colour scale across the folder (min-max over all maps), so
overlays of different images are comparable.
"""
from __future__ import annotations

import csv
import io as _io
from pathlib import Path

import numpy as np
import torch
from matplotlib import colormaps
from PIL import Image

from .. import io
from ..data.images import list_images, open_rgb
from ..data.loader import AnomalyDataset
from ..data.records import Sample
from ..errors import DataError
from .infer import collate, map_sigma, smooth, to_device


def overlay(image: Image.Image, heat: np.ndarray, alpha: float = 0.5) -> Image.Image:
    """Blend a [0, 1] heat map (jet colours) over an RGB image at the image's size."""
    rgb = (colormaps["jet"](np.clip(heat, 0, 1))[..., :3] * 255).astype(np.uint8)
    heat_img = Image.fromarray(rgb).resize(image.size, Image.BILINEAR)
    return Image.blend(image.convert("RGB"), heat_img, alpha)


def predict_folder(detector, cfg, images_dir: str | Path, out: str | Path, class_name: str = "object",
                   device: torch.device | None = None, progress: bool = True) -> Path:
    images_dir, out = Path(images_dir), Path(out)
    paths = list_images(images_dir)
    if not paths:
        raise DataError(f"{images_dir}: no images (.png/.jpg/.jpeg/.bmp/.tif) found; pass a folder of images")
    device = device or next(detector.parameters()).device
    samples = [Sample(p, None, class_name, 0, "unknown", "user") for p in paths]
    dataset = AnomalyDataset(samples, cfg.image_size, detector.input_sizes())
    loader = torch.utils.data.DataLoader(dataset, batch_size=cfg.eval.batch_size, collate_fn=collate)
    maps, scores = [], []
    detector.eval()
    for batch in loader:
        with torch.inference_mode():
            o = detector(to_device(batch, device))
        maps.append(smooth(o.anomaly_map.float().cpu().numpy(), map_sigma(cfg)))
        scores.append(o.score.float().cpu().numpy())
    maps_arr, scores_arr = np.concatenate(maps), np.concatenate(scores)
    lo, hi = float(maps_arr.min()), float(maps_arr.max())
    scale = (maps_arr - lo) / (hi - lo) if hi > lo else np.zeros_like(maps_arr)
    for path, heat in zip(paths, scale):
        io.save_image(overlay(open_rgb(path), heat), out / "overlays" / f"{path.stem}.png")
    buf = _io.StringIO()
    w = csv.writer(buf)
    w.writerow(["path", "score", "map_max"])
    for path, s, m in zip(paths, scores_arr, maps_arr):
        w.writerow([str(path), f"{float(s):.6f}", f"{float(m.max()):.6f}"])
    return io.write_text(out / "scores.csv", buf.getvalue())
