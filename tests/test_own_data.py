"""Your own data: the `folder` layout through every command, and `ssvp predict` calibrated on normal images only.

* the folder reader pairs masks by name, lists missing and orphan masks, reads products under their own names;
* `data verify / summary`, `eval` (image metrics only, and saying so, without masks), `train` (refused without
  masks, runs with them) all take a folder;
* `predict --normal-dir`: the image threshold is the q-quantile ('higher') of the normal scores and the pixel
  threshold the q-quantile of the normal maps' maxima, checked on images whose scores and maps are known exactly.
"""
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from ssvp_core.cli import main
from ssvp_core.config import load_config
from ssvp_core.data import read_dataset
from ssvp_core.data.verify import verify_dataset
from ssvp_core.engine.predict import calibrate, predict_folder
from ssvp_core.methods.base import Output


def make_folder(synth_root: Path, dst: Path, masks: bool = True, cls: str = "capsule") -> Path:
    """normal/, abnormal/ (and masks/) from a synthetic class, files renamed as a user would have them."""
    src = synth_root / "synth-b" / cls
    (dst / "normal").mkdir(parents=True)
    (dst / "abnormal").mkdir()
    for p in sorted((src / "test" / "good").glob("*.png")):
        shutil.copy(p, dst / "normal" / f"ok_{p.name}")
    for defect in sorted(d for d in (src / "test").iterdir() if d.name != "good"):
        for p in sorted(defect.glob("*.png")):
            shutil.copy(p, dst / "abnormal" / f"{defect.name}_{p.name}")
            if masks:
                (dst / "masks").mkdir(exist_ok=True)
                shutil.copy(src / "ground_truth" / defect.name / f"{p.stem}_mask.png", dst / "masks" / f"{defect.name}_{p.stem}.png")
    return dst


def test_folder_reader_pairs_masks_by_name_and_names_the_product(synth_root, tmp_path):
    root = make_folder(synth_root, tmp_path / "caps")
    samples = read_dataset("folder", root)
    assert {s.cls for s in samples} == {"caps"}
    abnormal = [s for s in samples if s.label == 1]
    assert abnormal and all(s.mask is not None and s.mask.stem == s.image.stem for s in abnormal)
    assert [s.mask for s in samples if s.label == 0] == [None] * sum(s.label == 0 for s in samples)
    assert read_dataset("folder", root, "train") == [s for s in samples if s.label == 0]
    # any name reads a folder layout; several products side by side
    multi = tmp_path / "line"
    shutil.copytree(root, multi / "cap_a")
    shutil.copytree(root, multi / "cap_b")
    assert {s.cls for s in read_dataset("screws", multi)} == {"cap_a", "cap_b"}


def test_folder_problems_are_listed(synth_root, tmp_path):
    root = make_folder(synth_root, tmp_path / "caps")
    masks = sorted((root / "masks").iterdir())
    masks[0].unlink()
    shutil.copy(masks[1], root / "masks" / "no_such_image.png")
    kinds = sorted(p.kind for p in verify_dataset("folder", root, progress=False))
    assert kinds == ["missing-mask", "orphan-mask"]
    assert main(["data", "verify", "folder", str(root)]) == 1


def test_folder_without_masks_evaluates_image_metrics_only_and_says_so(synth_root, tmp_path, capsys):
    root = make_folder(synth_root, tmp_path / "caps", masks=False)
    assert verify_dataset("folder", root, progress=False) == []
    assert main(["data", "summary", "folder", str(root)]) == 0
    assert "image metrics only" in capsys.readouterr().out
    out = tmp_path / "m.csv"
    assert main(["eval", "--method", "reference", "--profile", "smoke", "--quiet", "--eval-on", f"folder={root}",
                 "--out", str(out), "--ci"]) == 0
    printed = capsys.readouterr().out
    table = pd.read_csv(out)
    assert set(table.metric) == {"image_auroc", "image_ap", "image_f1_max"}
    assert "no masks for the anomalous images of caps" in printed and "image metrics only" in printed
    assert "95% confidence intervals" in printed
    with_masks = make_folder(synth_root, tmp_path / "caps2")
    assert main(["eval", "--method", "reference", "--profile", "smoke", "--quiet", "--eval-on", f"caps2={with_masks}",
                 "--out", str(out)]) == 0
    assert {"pixel_auroc", "pixel_aupro"} <= set(pd.read_csv(out).metric)


def test_training_needs_masks_and_runs_on_a_folder_with_them(synth_root, tmp_path, capsys):
    common = ["--method", "aprilgan", "--profile", "smoke", "--quiet", "--set", f"out_dir={tmp_path / 'runs'}",
              "--set", "train.epochs=1"]
    bare = make_folder(synth_root, tmp_path / "bare", masks=False)
    assert main(["train", *common, "--train-on", f"folder={bare}"]) == 2
    assert "training needs a mask for every anomalous image" in capsys.readouterr().err
    masked = make_folder(synth_root, tmp_path / "masked")
    assert main(["train", *common, "--train-on", f"folder={masked}"]) == 0
    assert Path(capsys.readouterr().out.strip().splitlines()[-1]).is_file()


# ---- predict: thresholds from normal images, on a detector whose outputs are known exactly ---------------------
class MeanIntensity(torch.nn.Module):
    """score = mean intensity of the image, map = per-pixel mean over the colour channels."""

    name = "mean-intensity"

    def input_sizes(self):
        return []

    def forward(self, batch):
        x = batch["image"]
        return Output(x.mean(1), x.mean((1, 2, 3)))


def _constant(path: Path, value: int, size: int = 32, square: tuple[int, int] | None = None) -> Path:
    arr = np.full((size, size, 3), value, np.uint8)
    if square:
        y, x = square
        arr[y:y + 8, x:x + 8] = 200
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def test_calibration_rule_is_the_higher_quantile():
    assert calibrate([0.5, 0.1, 0.3, 0.2, 0.4], [np.full((2, 2), v) for v in (1, 2, 3, 4, 5)], 0.5).image_threshold == 0.3
    c = calibrate([0.5, 0.1, 0.3, 0.2, 0.4], [np.full((2, 2), v) for v in (1, 2, 3, 4, 5)], 0.7, pixel_quantile=0.2)
    # 'higher' at 0.7 of 5 sorted values: index ceil(0.7 * 4) = 3 -> 0.4; pixel: ceil(0.2 * 4) = 1 -> 2
    assert (c.image_threshold, c.pixel_threshold) == (0.4, 2.0)
    assert calibrate([0.1, 0.9], [np.zeros(1)] * 2, 0.99).image_threshold == 0.9  # few normals: the largest


def test_predict_labels_masks_and_gallery_on_a_known_answer(tmp_path):
    normals = tmp_path / "normals"
    for i, v in enumerate((25, 51, 76, 102, 127)):
        _constant(normals / f"n{i}.png", v)
    images = tmp_path / "check"
    _constant(images / "a_dim.png", 70)
    _constant(images / "b_equal.png", 76)  # exactly at the threshold: not above it, so normal
    _constant(images / "c_bright.png", 90)
    _constant(images / "d_spot.png", 20, square=(4, 12))  # dark with a bright 8x8 square: normal score, masked spot
    cfg = load_config("smoke", "reference", ["eval.sigma=0", "image_size=32"])
    gallery = predict_folder(MeanIntensity(), cfg, images, tmp_path / "out", normal_dir=normals, quantile=0.5).gallery
    out = tmp_path / "out"
    calib = json.loads((out / "calibration.json").read_text())
    assert calib["image_threshold"] == pytest.approx(76 / 255, rel=1e-6)  # third of five normal scores
    assert calib["pixel_threshold"] == pytest.approx(76 / 255, rel=1e-6)  # third of five normal map maxima
    pred = pd.read_csv(out / "predictions.csv")
    assert list(pred.label) == ["normal", "normal", "anomalous", "normal"]
    assert pred.score.tolist() == pytest.approx([70 / 255, 76 / 255, 90 / 255, (20 * 960 + 200 * 64) / 1024 / 255], rel=1e-5)
    spot = np.asarray(Image.open(out / pred.loc[3, "mask"])) > 0
    expected = np.zeros((32, 32), bool)
    expected[4:12, 12:20] = True
    assert np.array_equal(spot, expected)
    assert (np.asarray(Image.open(out / pred.loc[2, "mask"])) > 0).all()  # 90 > 76 everywhere
    assert not (np.asarray(Image.open(out / pred.loc[0, "mask"])) > 0).any()
    page = gallery.read_text()
    assert page.count("<tr class=") == 4 and "sortBy(" in page and "1 of 4 images anomalous" in page
    for col in ("image", "heatmap", "mask"):
        assert all((out / f).is_file() for f in pred[col])


def test_predict_cli_with_a_training_free_method(synth_root, tmp_path, capsys):
    normals, check = tmp_path / "normals", tmp_path / "check"
    normals.mkdir()
    check.mkdir()
    cls = synth_root / "synth-b" / "mesh" / "test"
    for p in sorted((cls / "good").glob("*.png")):
        shutil.copy(p, normals / p.name)
    for p in sorted(cls.glob("*/*.png"))[:4]:
        shutil.copy(p, check / f"{p.parent.name}_{p.name}")
    assert main(["predict", str(check), "--method", "reference", "--normal-dir", str(normals), "--out", str(tmp_path / "o"),
                 "--quantile", "0.9"]) == 0
    assert capsys.readouterr().out.strip().endswith("index.html")
    pred = pd.read_csv(tmp_path / "o" / "predictions.csv")
    assert len(pred) == 4 and set(pred.label) <= {"normal", "anomalous"}
    assert main(["predict", str(check), "--method", "ssvp", "--out", str(tmp_path / "o2")]) == 2  # trained: needs a checkpoint
