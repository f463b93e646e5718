"""`ssvp predict`: score a folder of your own images; given a folder of normal images, also decide.

Calibration (`normal_dir`, normal images only; no anomalous example is needed):

* image threshold = the q-quantile of the normal images' scores (q = `quantile`, default 0.99), computed with
  numpy's "higher" method, so it is one of the observed normal scores. An image is *anomalous* when its score is
  strictly above it. At most a fraction 1 - q of the normal images themselves lie above (with fewer than 1/(1 - q)
  normal images the threshold is the largest normal score: none of them is flagged).
* pixel threshold = the q'-quantile ("higher") of the normal images' per-image maxima of the smoothed anomaly map
  (q' = `pixel_quantile`, default q). A pixel is anomalous when its map value is strictly above it; at most a fraction
  1 - q' of the normal images would get any pixel marked. The map is resized (bilinear) to the image's own size
  before thresholding, so the mask PNG has the image's size.

Outputs under `out`: predictions.csv (file, score, label, map maximum and the files written), heatmaps/ (the map
over the image, one colour scale for the whole run), masks/ (0/255 PNG, only with calibration), images/
(thumbnails), calibration.json and index.html, a gallery that opens in any browser (click a column header to sort).
Without `normal_dir` there is no threshold: scores and heat maps only.
"""
from __future__ import annotations

import csv
import html
import io as _io
from dataclasses import asdict, dataclass
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

THUMBNAIL = 256  # longest side of the gallery pictures


@dataclass
class Calibration:
    quantile: float
    pixel_quantile: float
    image_threshold: float
    pixel_threshold: float
    normal_images: int
    rule: str = ("image anomalous when score > image_threshold = quantile(normal scores, q, method='higher'); "
                 "pixel anomalous when map value > pixel_threshold = quantile(per-image max of the normal maps, "
                 "q_pixel, method='higher')")


def calibrate(normal_scores, normal_maps, quantile: float = 0.99, pixel_quantile: float | None = None) -> Calibration:
    """Thresholds from normal images only (the module docstring states the rule)."""
    scores = np.asarray(normal_scores, dtype=np.float64).reshape(-1)
    if scores.size == 0:
        raise DataError("calibration needs at least one normal image")
    pixel_quantile = quantile if pixel_quantile is None else pixel_quantile
    for name, q in (("quantile", quantile), ("pixel quantile", pixel_quantile)):
        if not 0.0 <= q <= 1.0:
            raise DataError(f"{name} must lie in [0, 1], got {q}")
    maxima = np.asarray([float(np.max(m)) for m in normal_maps], dtype=np.float64)
    return Calibration(quantile, pixel_quantile, float(np.quantile(scores, quantile, method="higher")),
                       float(np.quantile(maxima, pixel_quantile, method="higher")), int(scores.size))


def overlay(image: Image.Image, heat: np.ndarray, alpha: float = 0.5) -> Image.Image:
    """Blend a [0, 1] heat map (jet colours) over an RGB image at the image's size."""
    rgb = (colormaps["jet"](np.clip(heat, 0, 1))[..., :3] * 255).astype(np.uint8)
    heat_img = Image.fromarray(rgb).resize(image.size, Image.BILINEAR)
    return Image.blend(image.convert("RGB"), heat_img, alpha)


def resize_map(amap: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a float map to (width, height)."""
    if (amap.shape[1], amap.shape[0]) == tuple(size):
        return np.asarray(amap, dtype=np.float32)
    return np.asarray(Image.fromarray(np.asarray(amap, dtype=np.float32), mode="F").resize(size, Image.BILINEAR))


def score_images(detector, cfg, paths: list[Path], class_name: str, device: torch.device | None = None):
    """(scores (n,), smoothed maps (n, S, S) float32) of image files, in order."""
    device = device or next(iter(detector.parameters()), torch.zeros(0)).device
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
    return np.concatenate(scores).astype(np.float64), np.concatenate(maps).astype(np.float32)


def _images(folder: Path, what: str) -> list[Path]:
    paths = list_images(Path(folder))
    if not paths:
        raise DataError(f"{folder}: no images (.png/.jpg/.jpeg/.bmp/.tif) found; pass a folder of {what}")
    return paths


def predict_folder(detector, cfg, images_dir: str | Path, out: str | Path, class_name: str = "object",
                   device: torch.device | None = None, progress: bool = True, normal_dir: str | Path | None = None,
                   quantile: float = 0.99, pixel_quantile: float | None = None) -> Path:
    """Score `images_dir`; with `normal_dir`, calibrate thresholds on it and write labels and masks. Returns the
    gallery (index.html)."""
    out = Path(out)
    paths = _images(images_dir, "images to check")
    calibration = None
    normal_maps = []
    if normal_dir is not None:
        normal_scores, normal_maps = score_images(detector, cfg, _images(normal_dir, "normal images"), class_name, device)
        calibration = calibrate(normal_scores, normal_maps, quantile, pixel_quantile)
        io.write_json(out / "calibration.json", {**asdict(calibration), "normal_dir": str(normal_dir)})
    scores, maps = score_images(detector, cfg, paths, class_name, device)
    everything = np.concatenate([maps, normal_maps]) if len(normal_maps) else maps
    lo, hi = float(everything.min()), float(everything.max())
    rows = []
    for i, (path, score, amap) in enumerate(zip(paths, scores, maps)):
        stem = f"{i:04d}_{path.stem}"
        image = open_rgb(path)
        heat = (amap - lo) / (hi - lo) if hi > lo else np.zeros_like(amap)
        files = {"image": f"images/{stem}.png", "heatmap": f"heatmaps/{stem}.png"}
        thumb = image.copy()
        thumb.thumbnail((THUMBNAIL, THUMBNAIL))
        io.save_image(thumb, out / files["image"])
        shown = overlay(image, heat)
        shown.thumbnail((2 * THUMBNAIL, 2 * THUMBNAIL))
        io.save_image(shown, out / files["heatmap"])
        row = {"file": str(path), "score": float(score), "map_max": float(amap.max())}
        if calibration is not None:
            full = resize_map(amap, image.size)
            mask = full > calibration.pixel_threshold
            files["mask"] = f"masks/{stem}.png"
            io.save_image(Image.fromarray((mask * 255).astype(np.uint8), mode="L"), out / files["mask"])
            row.update(label="anomalous" if score > calibration.image_threshold else "normal",
                       anomalous_pixels=int(mask.sum()))
        rows.append({**row, **files})
    columns = ["file", "score", "label", "map_max", "anomalous_pixels", "image", "heatmap", "mask"]
    columns = [c for c in columns if c in rows[0]]
    buf = _io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in r.items()})
    io.write_text(out / "predictions.csv", buf.getvalue())
    return io.write_text(out / "index.html", gallery_html(rows, calibration, str(images_dir)))


GALLERY_CSS = """body{font-family:sans-serif;margin:20px}table{border-collapse:collapse}
th{cursor:pointer;background:#eee;position:sticky;top:0}th,td{border:1px solid #ccc;padding:4px;text-align:center}
td img{max-width:256px;max-height:256px}tr.anomalous td.label{color:#b00020;font-weight:bold}
tr.normal td.label{color:#1b5e20}.rule{background:#f5f5f5;padding:8px;max-width:1100px}"""
GALLERY_JS = """function sortBy(col, numeric) {
  var body = document.getElementById('rows'), rows = Array.prototype.slice.call(body.rows);
  var th = document.getElementsByTagName('th')[col], asc = th.getAttribute('data-dir') !== 'asc';
  rows.sort(function (a, b) {
    var x = a.cells[col].getAttribute('data-v'), y = b.cells[col].getAttribute('data-v');
    if (numeric) { x = parseFloat(x); y = parseFloat(y); }
    return (x < y ? -1 : x > y ? 1 : 0) * (asc ? 1 : -1);
  });
  th.setAttribute('data-dir', asc ? 'asc' : 'desc');
  rows.forEach(function (r) { body.appendChild(r); });
}"""


def gallery_html(rows: list[dict], calibration: Calibration | None, source: str) -> str:
    """A self-contained page: one row per image (picture, heat map, mask, score, label), sortable by any column."""
    esc = html.escape
    heads = [("#", True), ("file", False), ("score", True)]
    if calibration is not None:
        heads += [("label", False), ("anomalous pixels", True)]
    heads += [("image", False), ("heat map", False)] + ([("mask", False)] if calibration is not None else [])
    th = "".join(f"<th onclick='sortBy({i}, {str(num).lower()})'>{esc(h)}</th>" for i, (h, num) in enumerate(heads))
    body = []
    order = sorted(range(len(rows)), key=lambda i: -rows[i]["score"])
    for rank, i in enumerate(order):
        r = rows[i]
        cells = [f"<td data-v='{i}'>{i}</td>", f"<td data-v='{esc(Path(r['file']).name)}'>{esc(Path(r['file']).name)}</td>",
                 f"<td data-v='{r['score']:.8g}'>{r['score']:.4f}</td>"]
        if calibration is not None:
            cells += [f"<td class='label' data-v='{r['label']}'>{r['label']}</td>",
                      f"<td data-v='{r['anomalous_pixels']}'>{r['anomalous_pixels']}</td>"]
        cells += [f"<td data-v='{i}'><img src='{r['image']}' alt='image {i}'></td>",
                  f"<td data-v='{i}'><img src='{r['heatmap']}' alt='heat map {i}'></td>"]
        if calibration is not None:
            cells.append(f"<td data-v='{i}'><img src='{r['mask']}' alt='mask {i}'></td>")
        body.append(f"<tr class='{r.get('label', '')}'>{''.join(cells)}</tr>")
    if calibration is not None:
        flagged = sum(r["label"] == "anomalous" for r in rows)
        rule = (f"<p class='rule'><b>{flagged} of {len(rows)} images anomalous.</b> Calibrated on "
                f"{calibration.normal_images} normal images: image threshold {calibration.image_threshold:.6g} (the "
                f"{calibration.quantile:g}-quantile of their scores, numpy 'higher'; anomalous when the score is above "
                f"it); pixel threshold {calibration.pixel_threshold:.6g} (the {calibration.pixel_quantile:g}-quantile of "
                "their per-image map maxima; a pixel is marked when its map value is above it).</p>")
    else:
        rule = "<p class='rule'>No normal images given (--normal-dir): scores and heat maps only, no threshold.</p>"
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>ssvp predict: {esc(source)}</title>"
            f"<style>{GALLERY_CSS}</style><script>{GALLERY_JS}</script></head><body>"
            f"<h1>ssvp predict: {esc(source)}</h1>{rule}<p>Click a column header to sort. Heat maps share one colour "
            "scale (minimum to maximum over all maps of this run).</p>"
            f"<table><thead><tr>{th}</tr></thead><tbody id='rows'>{''.join(body)}</tbody></table></body></html>")
