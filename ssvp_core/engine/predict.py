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

Outputs under `out`: predictions.csv (one row per file of the folder: file, status, score, label, map maximum and
the files written), heatmaps/ (the map over the image, one colour scale for the whole run), masks/ (0/255 PNG, only
with calibration), images/ (thumbnails), calibration.json and index.html, a gallery that opens in any browser (click
a column header to sort). Without `normal_dir` there is no threshold: scores and heat maps only.

Files that do not decode (truncated, empty, not an image) cost their own result, not the run's: each is listed with
the reason (predictions.csv `status` = "unreadable: truncated PNG", a list at the top of the gallery), and the
returned `PredictionRun` says so, for the CLI's summary line and exit status. Normal images that do not decode are
left out of the calibration and listed (calibration.json, gallery); a normal folder in which none decodes is refused.
Files of the folder without an image name (.txt, .csv) are listed as `ignored` and not read. `strict=True` stops at
the first unreadable file instead.
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
from ..data.images import list_images, open_rgb, other_files
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


@dataclass(frozen=True)
class Unreadable:
    """A file a run could not decode and left out, with the reason in a few words ("truncated PNG")."""

    file: Path
    reason: str

    def __str__(self) -> str:
        return f"{self.file.name} ({self.reason})"


def score_images(detector, cfg, paths: list[Path], class_name: str, device: torch.device | None = None,
                 skip_unreadable: bool = False):
    """Score image files in order: (positions in `paths` that were scored, their scores (n,), their smoothed maps
    (n, S, S) float32, the files left out as [Unreadable]). Without `skip_unreadable` the first file that does not
    decode raises UnreadableFile (a DataError naming it)."""
    device = device or next(iter(detector.parameters()), torch.zeros(0)).device
    samples = [Sample(p, None, class_name, 0, "unknown", "user") for p in paths]
    dataset = AnomalyDataset(samples, cfg.image_size, detector.input_sizes(), skip_unreadable=skip_unreadable)
    loader = torch.utils.data.DataLoader(dataset, batch_size=cfg.eval.batch_size, collate_fn=collate)
    kept, maps, scores, unreadable = [], [], [], []
    detector.eval()
    for batch in loader:
        unreadable += [Unreadable(Path(file), reason) for _, file, reason in batch.get("unreadable", ())]
        if "index" not in batch:
            continue
        with torch.inference_mode():
            o = detector(to_device(batch, device))
        kept += batch["index"].tolist()
        maps.append(smooth(o.anomaly_map.float().cpu().numpy(), map_sigma(cfg)))
        scores.append(o.score.float().cpu().numpy())
    if not kept:
        return kept, np.zeros(0), np.zeros((0, cfg.image_size, cfg.image_size), np.float32), unreadable
    return kept, np.concatenate(scores).astype(np.float64), np.concatenate(maps).astype(np.float32), unreadable


def _images(folder: Path, what: str) -> list[Path]:
    paths = list_images(Path(folder))
    if not paths:
        others = other_files(Path(folder))
        found = (f" (only files without an image name: {', '.join(p.name for p in others[:5])}"
                 f"{' ...' if len(others) > 5 else ''})") if others else ""
        raise DataError(f"{folder}: no images (.png/.jpg/.jpeg/.bmp/.tif) found{found}; pass a folder of {what}")
    return paths


NAMES_SHOWN = 10  # the summary line names this many left-out files, then counts the rest


def _named(files: list, shown: int = NAMES_SHOWN) -> str:
    more = f" and {len(files) - shown} more" if len(files) > shown else ""
    return ", ".join(str(f) for f in files[:shown]) + more


@dataclass
class PredictionRun:
    """What `predict_folder` wrote, and what it could not read."""

    out: Path
    gallery: Path
    images: int  # image files in the folder
    unreadable: list[Unreadable]  # of those, the ones that did not decode (listed in predictions.csv and the gallery)
    normal_unreadable: list[Unreadable]  # normal images left out of the calibration (calibration.json, gallery)
    ignored: list[Path]  # files of the folder without an image name (.txt, ...): listed, not read

    @property
    def complete(self) -> bool:
        return not self.unreadable and not self.normal_unreadable

    def summary(self) -> str:
        """One line on what was left out or not read; empty when every file of the folder was read."""
        parts = []
        if self.unreadable:
            scored = self.images - len(self.unreadable)
            parts.append(f"{len(self.unreadable)} of {self.images} files could not be read: {_named(self.unreadable)}; "
                         + (f"results for the other {scored} are in {self.out}" if scored else
                            f"no results (the reasons are in {self.out / 'predictions.csv'})"))
        if self.normal_unreadable:
            n = len(self.normal_unreadable)
            parts.append(f"{n} normal image{'s' * (n > 1)} could not be read and {'were' if n > 1 else 'was'} left "
                         f"out of the calibration: {_named(self.normal_unreadable)}")
        if self.ignored:
            n = len(self.ignored)
            parts.append(f"{n} file{'s' * (n > 1)} without an image name {'were' if n > 1 else 'was'} not read: "
                         f"{_named([p.name for p in self.ignored])}")
        return "; ".join(parts)


def _status(unreadable: Unreadable | None) -> str:
    return "ok" if unreadable is None else f"unreadable: {unreadable.reason}"


def predict_folder(detector, cfg, images_dir: str | Path, out: str | Path, class_name: str = "object",
                   device: torch.device | None = None, progress: bool = True, normal_dir: str | Path | None = None,
                   quantile: float = 0.99, pixel_quantile: float | None = None, strict: bool = False) -> PredictionRun:
    """Score `images_dir`; with `normal_dir`, calibrate thresholds on it and write labels and masks.

    A file that does not decode is left out and listed (predictions.csv `status`, the top of the gallery, the
    returned run's `unreadable`); `strict` stops at the first one instead (UnreadableFile). Calibration uses the
    normal images that decode and refuses a normal folder in which none does."""
    out = Path(out)
    paths = _images(images_dir, "images to check")
    calibration = None
    normal_maps, normal_unreadable = [], []
    if normal_dir is not None:
        normals = _images(normal_dir, "normal images")
        _, normal_scores, normal_maps, normal_unreadable = score_images(detector, cfg, normals, class_name, device,
                                                                        skip_unreadable=not strict)
        if len(normal_unreadable) == len(normals):
            raise DataError(f"{normal_dir}: none of its {len(normals)} normal images could be read "
                            f"({_named(normal_unreadable, 5)}), so there is nothing to calibrate on. Replace them with "
                            "intact copies, pass another --normal-dir, or leave --normal-dir out for scores and heat "
                            "maps without a threshold.")
        calibration = calibrate(normal_scores, normal_maps, quantile, pixel_quantile)
        io.write_json(out / "calibration.json", {**asdict(calibration), "normal_dir": str(normal_dir),
                                                 "unreadable_normal_images": [{"file": str(u.file), "reason": u.reason}
                                                                              for u in normal_unreadable]})
    kept, scores, maps, unreadable = score_images(detector, cfg, paths, class_name, device, skip_unreadable=not strict)
    everything = np.concatenate([maps, normal_maps]) if len(normal_maps) else maps
    lo, hi = (float(everything.min()), float(everything.max())) if everything.size else (0.0, 0.0)
    rows = []
    for i, score, amap in zip(kept, scores, maps):
        path = paths[i]
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
        row = {"index": i, "file": str(path), "status": "ok", "score": float(score), "map_max": float(amap.max())}
        if calibration is not None:
            full = resize_map(amap, image.size)
            mask = full > calibration.pixel_threshold
            files["mask"] = f"masks/{stem}.png"
            io.save_image(Image.fromarray((mask * 255).astype(np.uint8), mode="L"), out / files["mask"])
            row.update(label="anomalous" if score > calibration.image_threshold else "normal",
                       anomalous_pixels=int(mask.sum()))
        rows.append({**row, **files})
    ignored = other_files(Path(images_dir))
    listed = rows + [{"file": str(u.file), "status": _status(u)} for u in unreadable]
    listed += [{"file": str(p), "status": "ignored: not an image file name"} for p in ignored]
    columns = ["file", "status", "score", "label", "map_max", "anomalous_pixels", "image", "heatmap", "mask"]
    if calibration is None:
        columns = [c for c in columns if c not in ("label", "anomalous_pixels", "mask")]
    buf = _io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore")
    w.writeheader()
    for r in sorted(listed, key=lambda r: r["file"]):  # every file of the folder, in name order
        w.writerow({k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in r.items()})
    io.write_text(out / "predictions.csv", buf.getvalue())
    run = PredictionRun(out, out / "index.html", len(paths), unreadable, normal_unreadable, ignored)
    io.write_text(run.gallery, gallery_html(rows, calibration, str(images_dir), run))
    return run


GALLERY_CSS = """body{font-family:sans-serif;margin:20px}table{border-collapse:collapse}
th{cursor:pointer;background:#eee;position:sticky;top:0}th,td{border:1px solid #ccc;padding:4px;text-align:center}
td img{max-width:256px;max-height:256px}tr.anomalous td.label{color:#b00020;font-weight:bold}
tr.normal td.label{color:#1b5e20}.rule{background:#f5f5f5;padding:8px;max-width:1100px}
.unreadable{background:#fff3e0;border:1px solid #e65100;padding:8px;max-width:1100px;margin-bottom:12px}
.unreadable h2{font-size:1.1em;color:#b33c00;margin:4px 0}.unreadable th{cursor:default;position:static}
.unreadable td{text-align:left}"""
GALLERY_JS = """function sortBy(col, numeric) {
  var body = document.getElementById('rows'), rows = Array.prototype.slice.call(body.rows);
  var th = document.getElementById('results').getElementsByTagName('th')[col];
  var asc = th.getAttribute('data-dir') !== 'asc';
  rows.sort(function (a, b) {
    var x = a.cells[col].getAttribute('data-v'), y = b.cells[col].getAttribute('data-v');
    if (numeric) { x = parseFloat(x); y = parseFloat(y); }
    return (x < y ? -1 : x > y ? 1 : 0) * (asc ? 1 : -1);
  });
  th.setAttribute('data-dir', asc ? 'asc' : 'desc');
  rows.forEach(function (r) { body.appendChild(r); });
}"""


def _left_out_html(run: PredictionRun | None) -> str:
    """The files a run could not read (or did not read), with the reasons: the first thing on the page."""
    if run is None or (run.complete and not run.ignored):
        return ""
    esc = html.escape

    def table(files: list[Unreadable]) -> str:
        body = "".join(f"<tr><td>{esc(u.file.name)}</td><td>{esc(u.reason)}</td></tr>" for u in files)
        return f"<table><thead><tr><th>file</th><th>reason</th></tr></thead><tbody>{body}</tbody></table>"

    parts = []
    if run.unreadable:
        parts.append(f"<h2>{len(run.unreadable)} of {run.images} files could not be read and have no result</h2>"
                     + table(run.unreadable))
    if run.normal_unreadable:
        n = len(run.normal_unreadable)
        parts.append(f"<h2>{n} normal image{'s' * (n > 1)} could not be read and {'were' if n > 1 else 'was'} left "
                     "out of the calibration</h2>" + table(run.normal_unreadable))
    if run.ignored:
        parts.append(f"<p>Not read, no image file name (.png/.jpg/.jpeg/.bmp/.tif): "
                     f"{esc(', '.join(p.name for p in run.ignored))}</p>")
    return f"<section class='unreadable' id='unreadable'>{''.join(parts)}</section>"


def gallery_html(rows: list[dict], calibration: Calibration | None, source: str,
                 run: PredictionRun | None = None) -> str:
    """A self-contained page: the files that could not be read first, then one row per scored image (picture, heat
    map, mask, score, label), sortable by any column."""
    esc = html.escape
    heads = [("#", True), ("file", False), ("score", True)]
    if calibration is not None:
        heads += [("label", False), ("anomalous pixels", True)]
    heads += [("image", False), ("heat map", False)] + ([("mask", False)] if calibration is not None else [])
    th = "".join(f"<th onclick='sortBy({i}, {str(num).lower()})'>{esc(h)}</th>" for i, (h, num) in enumerate(heads))
    body = []
    for r in sorted(rows, key=lambda r: -r["score"]):
        i, name = r["index"], esc(Path(r["file"]).name)
        cells = [f"<td data-v='{i}'>{i}</td>", f"<td data-v='{name}'>{name}</td>",
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
            f"<h1>ssvp predict: {esc(source)}</h1>{_left_out_html(run)}{rule}<p>Click a column header to sort. Heat "
            "maps share one colour scale (minimum to maximum over all maps of this run).</p>"
            f"<table id='results'><thead><tr>{th}</tr></thead><tbody id='rows'>{''.join(body)}</tbody></table>"
            "</body></html>")
