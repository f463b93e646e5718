"""Readers for each benchmark layout, meta.json round trip, the loader's resizing rules and its errors."""
import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import write_image, write_mask
from ssvp_core.data import read_dataset, scan_dataset, summarize
from ssvp_core.data.loader import AnomalyDataset, batch_view
from ssvp_core.data.meta import write_meta
from ssvp_core.errors import DataError


def test_mvtec_layout_pairs_masks_by_name(tmp_path):
    root = tmp_path / "mvtec"
    for i in range(2):
        write_image(root / "bottle" / "train" / "good" / f"{i:03d}.png")
        write_image(root / "bottle" / "test" / "good" / f"{i:03d}.png")
    # image names whose sorted order differs from the masks' sorted order would break index pairing
    write_image(root / "bottle" / "test" / "broken" / "010.png")
    write_image(root / "bottle" / "test" / "broken" / "002.png")
    write_mask(root / "bottle" / "ground_truth" / "broken" / "002_mask.png", box=(0, 0, 3, 3))
    write_mask(root / "bottle" / "ground_truth" / "broken" / "010_mask.png", box=(5, 5, 9, 9))
    test = read_dataset("mvtec", root, "test")
    assert [(s.image.name, s.mask.name if s.mask else None, s.label, s.defect) for s in test] == [
        ("002.png", "002_mask.png", 1, "broken"), ("010.png", "010_mask.png", 1, "broken"),
        ("000.png", None, 0, "good"), ("001.png", None, 0, "good")]
    assert len(read_dataset("mvtec", root, "train")) == 2
    assert summarize(test) == {"bottle": {"images": 4, "anomalous": 2, "masks": 2}}


def test_missing_masks_are_all_listed(tmp_path):
    root = tmp_path / "mvtec"
    write_image(root / "cable" / "test" / "good" / "000.png")
    for i in range(3):
        write_image(root / "cable" / "test" / "cut" / f"{i:03d}.png")
    with pytest.raises(DataError) as err:
        read_dataset("mvtec", root)
    msg = str(err.value)
    assert msg.count("missing-mask") == 3 and "000_mask.png" in msg and "ssvp data verify" in msg


def test_unrecognized_layout_and_missing_root(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="unrecognized layout"):
        read_dataset("mvtec", tmp_path / "empty")
    with pytest.raises(DataError, match="does not exist"):
        read_dataset("mvtec", tmp_path / "nowhere")
    with pytest.raises(DataError, match="unknown dataset"):
        read_dataset("imagenet", tmp_path)


def test_btad_layout(tmp_path):
    root = tmp_path / "btad"
    write_image(root / "01" / "test" / "ok" / "0000.bmp")
    write_image(root / "01" / "test" / "ko" / "0001.bmp")
    write_mask(root / "01" / "ground_truth" / "ko" / "0001.png")
    samples = read_dataset("btad", root)
    assert [(s.label, s.defect, s.mask.name if s.mask else None) for s in samples] == [(1, "ko", "0001.png"), (0, "good", None)]


def test_visa_split_csv(tmp_path):
    root = tmp_path / "visa"
    write_image(root / "candle" / "Data" / "Images" / "Normal" / "0000.JPG")
    write_image(root / "candle" / "Data" / "Images" / "Anomaly" / "0001.JPG")
    write_mask(root / "candle" / "Data" / "Masks" / "Anomaly" / "0001.png", fg=1)  # VisA masks are not 0/255
    (root / "split_csv").mkdir(parents=True)
    with open(root / "split_csv" / "1cls.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["object", "split", "label", "image", "mask"])
        w.writerow(["candle", "test", "normal", "candle/Data/Images/Normal/0000.JPG", ""])
        w.writerow(["candle", "test", "anomaly", "candle/Data/Images/Anomaly/0001.JPG", "candle/Data/Masks/Anomaly/0001.png"])
        w.writerow(["candle", "train", "normal", "candle/Data/Images/Normal/0000.JPG", ""])
    with open(root / "candle" / "image_anno.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "label", "mask"])
        w.writerow(["candle/Data/Images/Anomaly/0001.JPG", "wax melded,weird wick", "x"])
    samples = read_dataset("visa", root)
    assert [(s.label, s.defect, s.mask_mode) for s in samples] == [(0, "good", "label"), (1, "wax melded, weird wick", "label")]
    item = AnomalyDataset(samples, 16)[1]
    assert item["mask"].sum() > 0  # value-1 masks count as anomalous
    with pytest.raises(DataError, match="split_csv/1cls.csv"):
        read_dataset("visa", tmp_path)


def test_ksdd2_published_layout(tmp_path):
    root = tmp_path / "ksdd2"
    write_image(root / "test" / "10000.png")
    write_mask(root / "test" / "10000_GT.png", box=(0, 0, 0, 0))  # all-zero GT: normal
    write_image(root / "test" / "10001.png")
    write_mask(root / "test" / "10001_GT.png")
    samples = read_dataset("ksdd2", root)
    assert [(s.image.name, s.label, s.mask is not None) for s in samples] == [("10000.png", 0, False), ("10001.png", 1, True)]


def test_rsdd_published_layout(tmp_path):
    root = tmp_path / "rsdd"
    t = root / "Type-I RSDDs dataset"
    write_image(t / "Rail surface images" / "rail_1.jpg")
    write_mask(t / "GroundTruth" / "rail_1.jpg")
    samples = read_dataset("rsdd", root)
    assert [(s.cls, s.label) for s in samples] == [("type-i", 1)]


def test_dagm_kaggle_layout(tmp_path):
    root = tmp_path / "dagm"
    write_image(root / "Class1" / "Test" / "0001.PNG")
    write_image(root / "Class1" / "Test" / "0002.PNG")
    write_mask(root / "Class1" / "Test" / "Label" / "0002_label.PNG")
    samples = read_dataset("dagm", root)
    assert [(s.image.name, s.label) for s in samples] == [("0001.PNG", 0), ("0002.PNG", 1)]


def test_processed_copies_fall_back_to_mvtec_layout(tmp_path):
    """Bayes-PFL's processed KSDD2/RSDD/DAGM: <cls>/test/{good,anomaly} + ground_truth/anomaly/<stem>.png."""
    root = tmp_path / "ksdd2"
    write_image(root / "Metal" / "test" / "good" / "a.png")
    write_image(root / "Metal" / "test" / "anomaly" / "b.png")
    write_mask(root / "Metal" / "ground_truth" / "anomaly" / "b.png")
    assert [(s.cls, s.label) for s in read_dataset("ksdd2", root)] == [("Metal", 1), ("Metal", 0)]


def test_meta_json_round_trip(synth_root, tmp_path):
    root = synth_root / "synth-a"
    test = read_dataset("synth-a", root)
    meta = json.loads((root / "meta.json").read_text())
    assert set(meta) >= {"train", "test"}
    entry = meta["test"][test[0].cls][0]
    assert set(entry) >= {"img_path", "mask_path", "cls_name", "specie_name", "anomaly"}
    assert not entry["img_path"].startswith("/")
    back = read_dataset("meta", root)
    assert sorted((s.image, s.mask, s.cls, s.label, s.defect) for s in back) == sorted((s.image, s.mask, s.cls, s.label, s.defect) for s in test)
    other = tmp_path / "elsewhere.json"
    write_meta({"test": test}, root, other)
    assert json.loads(other.read_text())["test"] == meta["test"]


def test_dataset_items_and_mask_resizing(synth_root):
    samples = read_dataset("synth-b", synth_root / "synth-b")
    ds = AnomalyDataset(samples, 48, view_sizes=(64,))
    anomalous = next(i for i, s in enumerate(samples) if s.label)
    item = ds[anomalous]
    assert item["image"].shape == (3, 48, 48) and 0 <= item["image"].min() and item["image"].max() <= 1
    assert item["views"][64].shape == (3, 64, 64)
    assert set(item["mask"].unique().tolist()) <= {0.0, 1.0} and item["mask"].sum() > 0
    # the mask follows bilinear resize of the 0/255 mask then > 0.5 (AnomalyCLIP protocol)
    raw = Image.open(samples[anomalous].mask).convert("L").resize((48, 48), Image.BILINEAR)
    assert torch.equal(item["mask"], torch.from_numpy((np.asarray(raw) / 255.0 > 0.5).astype(np.float32)))
    batch = {"image": item["image"][None], "views": {64: item["views"][64][None]}}
    assert batch_view(batch, 64).shape[-1] == 64 and batch_view(batch, 48).shape[-1] == 48


def test_loader_errors_name_the_file(tmp_path):
    root = tmp_path / "mvtec"
    write_image(root / "pill" / "test" / "crack" / "000.png", size=(24, 20))
    write_mask(root / "pill" / "ground_truth" / "crack" / "000_mask.png", size=(30, 20))
    write_image(root / "pill" / "test" / "good" / "001.png")
    (root / "pill" / "test" / "good" / "001.png").write_bytes(b"not an image")
    samples = read_dataset("mvtec", root)
    ds = AnomalyDataset(samples, 16)
    with pytest.raises(DataError, match=r"000_mask\.png: mask is 30x20 but image .*000\.png is 24x20"):
        ds[0]
    with pytest.raises(DataError, match=r"001\.png: cannot decode image"):
        ds[1]


def test_scan_reports_orphan_masks_and_empty_classes(tmp_path):
    root = tmp_path / "mvtec"
    write_image(root / "a" / "test" / "good" / "000.png")
    write_mask(root / "a" / "ground_truth" / "scratch" / "007_mask.png")
    (root / "b" / "test").mkdir(parents=True)
    kinds = sorted(p.kind for p in scan_dataset("mvtec", root).problems)
    assert kinds == ["empty-class", "orphan-mask"]


def test_realiad_json_layout(tmp_path):
    root = tmp_path / "realiad"
    write_image(root / "realiad_1024" / "switch" / "OK" / "S0001" / "a.jpg")
    write_image(root / "realiad_1024" / "switch" / "NG" / "HS" / "S0002" / "b.jpg")
    write_mask(root / "realiad_1024" / "switch" / "NG" / "HS" / "S0002" / "b.png")
    (root / "realiad_jsons").mkdir(parents=True)
    (root / "realiad_jsons" / "switch.json").write_text(json.dumps({
        "meta": {"prefix": "switch/", "normal_class": "OK"}, "train": [],
        "test": [{"category": "switch", "anomaly_class": "OK", "image_path": "OK/S0001/a.jpg", "mask_path": None},
                 {"category": "switch", "anomaly_class": "HS", "image_path": "NG/HS/S0002/b.jpg", "mask_path": "NG/HS/S0002/b.png"}]}))
    samples = read_dataset("real-iad", root)
    assert [(s.cls, s.label, s.defect) for s in samples] == [("switch", 0, "good"), ("switch", 1, "scratch")]


def test_ksdd1_published_layout(tmp_path):
    root = tmp_path / "ksdd"
    write_image(root / "kos01" / "Part0.jpg")
    write_mask(root / "kos01" / "Part0_label.bmp", box=(0, 0, 0, 0))
    write_image(root / "kos01" / "Part1.jpg")
    write_mask(root / "kos01" / "Part1_label.bmp")
    assert [(s.image.name, s.label) for s in read_dataset("ksdd", root)] == [("Part0.jpg", 0), ("Part1.jpg", 1)]


def test_unknown_name_with_meta_json_is_read_through_it(synth_root, tmp_path):
    meta_root = synth_root / "synth-b"
    samples = read_dataset("my-medical-set", meta_root)  # not a registered benchmark, but it has a meta.json
    assert samples and {s.dataset for s in samples} == {"my-medical-set"}
    with pytest.raises(DataError, match="unknown dataset"):
        read_dataset("my-medical-set", tmp_path)  # no meta.json there
