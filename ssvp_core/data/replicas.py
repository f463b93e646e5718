"""Miniature replicas of the real benchmarks' on-disk layouts, for the `rehearsal` profile and the tests.

Each replica has the real dataset's folder tree, file names and extensions, class names, defect folder names or
label strings, split files and index files, at a few images per class and a few dozen pixels per side. Pixels come
from the synthetic painter (`synthetic.render`), so every defect has an exact mask. The layouts follow the
published archives, not our readers (sources in brackets):

* mvtec: `<cls>/{train/good, test/<defect|good>}/000.png`, `<cls>/ground_truth/<defect>/000_mask.png`; grid, screw
  and zipper are single-channel PNGs [MVTec-AD archive; DAPO's data/mvtec/meta.json lists every folder].
* visa: `<cls>/Data/Images/{Normal/0000.JPG, Anomaly/000.JPG}`, `<cls>/Data/Masks/Anomaly/000.png` whose pixel values
  are the defect ids of spot-diff's id2class.json (not 0/255), `split_csv/1cls.csv` (object, split, label, image,
  mask; labels normal/anomaly) and `<cls>/image_anno.csv` (image, label, mask) with the verbose lower-case labels,
  several joined as "a, b" [amazon-science/spot-diff split_csv/1cls.csv, id2class.json].
* btad: `{01,02,03}/{train/ok, test/{ok,ko}}`, `ground_truth/ko/<stem>.png`; images .bmp (01, 03) or .png (02)
  [BTech_Dataset_transformed; anomalib's btech reader].
* mpdd: MVTec layout with MPDD's folders (scratches, bend_and_parts_mismatch, flattening, ...) [DAPO data/mpdd/meta.json].
* dtd: MVTec layout, 12 texture classes (Woven_001, ...), defect folder `bad` [AnomalyCLIP generate_dataset_json/DTD.py].
* ksdd2: `{train,test}/NNNNN.png` + `NNNNN_GT.png`, all-zero GT = normal, tall images [KolektorSDD2 release].
* ksdd: `kosNN/PartK.jpg` + `PartK_label.bmp` [KolektorSDD release].
* rsdd: `Type-I RSDDs dataset/{Rail surface images,GroundTruth}/rail_N.jpg` (the ground truth is a JPEG too), and
  Type-II; every image has a defect; long thin images [RSDDs release].
* dagm: `ClassN/{Train,Test}/NNNN.PNG` (grey), `{Train,Test}/Label/NNNN_label.PNG` for defective images and
  `Label/Labels.txt` [DAGM 2007 Kaggle upload; AnomalyCLIP generate_dataset_json/DAGM.py].
* mad-sim: `01Gorilla/...` class folders with a numeric prefix, `test/{good,Burrs,Missing,Stains}/N.png` and masks
  `ground_truth/<folder>/N_mask.png` for good images too [DAPO data/MAD-Sim/meta.json]; mad-real: `Bear/...`, .jpg
  images, masks `<N>.png` [DAPO data/MAD-Real/meta.json].
* real-iad: `realiad_jsons/realiad_jsons/<obj>.json` ({"meta": {"prefix", "normal_class": "OK"}, "train", "test":
  [{category, anomaly_class, image_path, mask_path}]}), images under `realiad_1024/<obj>/{OK,NG/<code>}/S0001/`
  [anomalib's Real-IAD reader].
* medical (headct, brainmri, br35h, isic, colondb, clinicdb, endo, kvasir): the AdaCLIP processed copies
  (`<cls>/test/<specie>/...`, `<cls>/ground_truth/<specie>/...`, meta.json with root-relative paths; image-level sets
  have no masks, pixel-level sets no normal images) [AdaCLIP data_preprocess/*.py]; kvasir as AnomalyCLIP's script
  writes it (`images/`, `masks/`, meta.json paths "./images/...", class colon, empty specie names)
  [AnomalyCLIP generate_dataset_json/kvasir.py]. The anomalous folder names of the AdaCLIP image-level sets are not
  in the scripts; `defect` is used.
"""
from __future__ import annotations

import csv
import io as _io
import json
import shutil
import tempfile
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from .. import io
from ..errors import DataError
from .synthetic import DEFECT_TYPES, SynthClass, _defect_region, _paint_defect, render

REPLICA_VERSION = 1  # bump whenever the files a seed produces change
STAMP = "replica.json"


@dataclass(frozen=True)
class ReplicaSize:
    """How much of each real dataset a replica holds (None = every class / every defect type)."""

    classes: int | None = None
    defect_types: int | None = None
    per_defect: int = 1  # anomalous test images per defect type
    test_good: int = 2
    train_good: int = 1
    size: int = 64  # long side of the images in pixels


# --- pixels -------------------------------------------------------------------------------------------------------

PATTERNS = ("weave", "marble", "grain", "mesh", "brushed", "speckle")
SHAPES = ("ring", "rounded_rect", "capsule", "lshape")
KIND_WORDS = (("missing", "missing"), ("hole", "hole"), ("poke", "hole"), ("pit", "hole"), ("bubble", "hole"),
              ("crack", "crack"), ("broken", "crack"), ("break", "crack"), ("chip", "crack"), ("cut", "crack"),
              ("split", "crack"), ("scratch", "scratch"), ("thread", "scratch"), ("bent", "scratch"),
              ("abrasion", "scratch"), ("wick", "scratch"), ("color", "color_shift"), ("colour", "color_shift"),
              ("burnt", "color_shift"), ("rust", "color_shift"), ("melt", "color_shift"), ("painting", "color_shift"),
              ("contamination", "stain"), ("stain", "stain"), ("spot", "stain"), ("glue", "stain"), ("oil", "stain"),
              ("liquid", "stain"), ("foreign", "stain"), ("partical", "stain"), ("dirt", "stain"))


def _hash(*parts) -> int:
    return zlib.crc32("/".join(map(str, parts)).encode())


def _spec(dataset: str, cls: str, texture: bool) -> SynthClass:
    h = _hash(dataset, cls)
    return SynthClass(cls, "texture" if texture else "object", PATTERNS[h % len(PATTERNS)],
                      None if texture else SHAPES[(h >> 4) % len(SHAPES)], (), ((h >> 8) % 100) / 100,
                      0.1 + ((h >> 16) % 40) / 100, 0.45 + ((h >> 20) % 40) / 100)


def painter_kind(folder: str, texture: bool) -> str:
    """The painter's defect type standing in for a real defect folder or label."""
    name = folder.lower()
    kind = next((k for word, k in KIND_WORDS if word in name), DEFECT_TYPES[_hash(name) % 5])
    return "hole" if kind == "missing" and texture else kind


def _rng(seed: int, *parts) -> np.random.Generator:
    return np.random.default_rng([seed, _hash(*parts)])


def _paint(spec: SynthClass, kinds: list[str], rng: np.random.Generator, width: int, height: int,
           grey: bool = False) -> tuple[Image.Image, list[np.ndarray]]:
    """An image of `width` x `height` and one boolean mask per requested defect (each non-empty after resizing)."""
    side = max(width, height)
    for _ in range(20):
        image, mask = render(spec, kinds[0] if kinds else None, rng, side)
        masks = [mask] if kinds else []
        for kind in kinds[1:]:  # further labels of the same image (VisA lists several): extra regions
            support = np.ones((side, side), bool) & ~masks[0]
            region = _defect_region("stain" if kind == "missing" else kind, rng, side, support) & ~masks[0]
            image = _paint_defect("stain" if kind == "missing" else kind, image, region, None, rng)
            masks.append(region)
        pil = Image.fromarray(np.round(image * 255).astype(np.uint8)).resize((width, height), Image.BICUBIC)
        resized = [np.asarray(Image.fromarray(m.astype(np.uint8) * 255).resize((width, height), Image.NEAREST)) > 0
                   for m in masks]
        if all(m.any() for m in resized):
            return (pil.convert("L") if grey else pil), resized
    raise RuntimeError(f"could not paint {kinds} on {spec.name} at {width}x{height}")


def _save(image: Image.Image, path: Path) -> None:
    io.save_image(image, path)


def _save_mask(mask: np.ndarray, path: Path, value: int = 255, mode: str = "L") -> None:
    io.save_image(Image.fromarray((mask.astype(np.uint8) * value)).convert(mode), path)


def _take(items, n: int | None):
    items = list(items)
    return items if n is None else items[:n]


# --- MVTec-style trees --------------------------------------------------------------------------------------------

MVTEC = {  # class -> (texture, grey, defect folders); order: a cheap prefix covers an object, a texture, a grey class
    "bottle": (False, False, ("broken_large", "broken_small", "contamination")),
    "carpet": (True, False, ("color", "cut", "hole", "metal_contamination", "thread")),
    "screw": (False, True, ("manipulated_front", "scratch_head", "scratch_neck", "thread_side", "thread_top")),
    "cable": (False, False, ("bent_wire", "cable_swap", "combined", "cut_inner_insulation", "cut_outer_insulation",
                             "missing_cable", "missing_wire", "poke_insulation")),
    "capsule": (False, False, ("crack", "faulty_imprint", "poke", "scratch", "squeeze")),
    "grid": (True, True, ("bent", "broken", "glue", "metal_contamination", "thread")),
    "hazelnut": (False, False, ("crack", "cut", "hole", "print")),
    "leather": (True, False, ("color", "cut", "fold", "glue", "poke")),
    "metal_nut": (False, False, ("bent", "color", "flip", "scratch")),
    "pill": (False, False, ("color", "combined", "contamination", "crack", "faulty_imprint", "pill_type", "scratch")),
    "tile": (True, False, ("crack", "glue_strip", "gray_stroke", "oil", "rough")),
    "toothbrush": (False, False, ("defective",)),
    "transistor": (False, False, ("bent_lead", "cut_lead", "damaged_case", "misplaced")),
    "wood": (True, False, ("color", "combined", "hole", "liquid", "scratch")),
    "zipper": (True, True, ("broken_teeth", "combined", "fabric_border", "fabric_interior", "rough", "split_teeth",
                            "squeezed_teeth")),
}
MPDD = {
    "bracket_black": (False, False, ("hole", "scratches")),
    "metal_plate": (True, False, ("major_rust", "scratches", "total_rust")),
    "bracket_brown": (False, False, ("bend_and_parts_mismatch", "parts_mismatch")),
    "bracket_white": (False, False, ("defective_painting", "scratches")),
    "connector": (False, False, ("parts_mismatch",)),
    "tubes": (False, False, ("flattening",)),
}
DTD = {name: (True, False, ("bad",)) for name in (
    "Woven_001", "Blotchy_099", "Fibrous_183", "Marbled_078", "Matted_069", "Mesh_114", "Perforated_037",
    "Stratified_154", "Woven_068", "Woven_104", "Woven_125", "Woven_127")}
BTAD = {"01": (True, False, ("ko",), ".bmp", (1.0, 1.0)), "02": (True, False, ("ko",), ".png", (1.0, 1.0)),
        "03": (True, False, ("ko",), ".bmp", (1.0, 0.75))}
MAD_SIM = ("Gorilla", "Unicorn", "Mallard", "Turtle", "Whale", "Bird", "Owl", "Sabertooth", "Swan", "Sheep", "Pig",
           "Zalika", "Pheonix", "Elephant", "Parrot", "Cat", "Scorpion", "Obesobeso", "Bear", "Puppy")
MAD_REAL = {"Bear": "Stains", "Bird": "Missing", "Elephant": "Missing", "Parrot": "Missing", "Pig": "Missing",
            "Puppy": "Stains", "Scorpion": "Missing", "Turtle": "Stains", "Unicorn": "Missing", "Whale": "Stains"}


def _mvtec_tree(root: Path, name: str, classes: dict, size: ReplicaSize, seed: int, *, normal: str = "good",
                ext: str = ".png", mask_suffix: str = "_mask", mask_ext: str = ".png", digits: int = 3,
                good_masks: bool = False, folders: dict | None = None) -> None:
    for cls, (texture, grey, defects, *rest) in _take(classes.items(), size.classes):
        cls_ext = rest[0] if rest else ext
        aspect = rest[1] if len(rest) > 1 else (1.0, 1.0)
        width, height = round(size.size * aspect[0]), round(size.size * aspect[1])
        folder = (folders or {}).get(cls, cls)
        spec = _spec(name, cls, texture)
        jobs = [("train", normal, None, i) for i in range(size.train_good)]
        jobs += [("test", normal, None, i) for i in range(size.test_good)]
        jobs += [("test", d, d, i) for d in _take(defects, size.defect_types) for i in range(size.per_defect)]
        counters: dict[tuple[str, str], int] = {}
        for split, sub, defect, i in jobs:
            index = counters[(split, sub)] = counters.get((split, sub), -1) + 1
            stem = f"{index:0{digits}d}" if digits else str(index)
            kinds = [painter_kind(defect, texture)] if defect else []
            image, masks = _paint(spec, kinds, _rng(seed, name, cls, split, sub, i), width, height, grey)
            _save(image, root / folder / split / sub / f"{stem}{cls_ext}")
            if split == "test" and (defect or good_masks):
                mask = masks[0] if masks else np.zeros((height, width), bool)
                _save_mask(mask, root / folder / "ground_truth" / sub / f"{stem}{mask_suffix}{mask_ext}")


def write_mvtec(root: Path, size: ReplicaSize, seed: int) -> None:
    _mvtec_tree(root, "mvtec", MVTEC, size, seed)
    io.write_text(root / "license.txt", "Replica of the MVTec-AD tree (synthetic pixels); not MVTec's data.\n")


def write_mpdd(root: Path, size: ReplicaSize, seed: int) -> None:
    _mvtec_tree(root, "mpdd", MPDD, size, seed)


def write_dtd(root: Path, size: ReplicaSize, seed: int) -> None:
    _mvtec_tree(root, "dtd", DTD, size, seed)


def write_btad(root: Path, size: ReplicaSize, seed: int) -> None:
    _mvtec_tree(root, "btad", BTAD, size, seed, normal="ok", mask_suffix="", digits=4)


def write_mad_sim(root: Path, size: ReplicaSize, seed: int) -> None:
    classes = {a: (False, False, ("Missing", "Burrs", "Stains")) for a in MAD_SIM}
    folders = {a: f"{i:02d}{a}" for i, a in enumerate(MAD_SIM, start=1)}
    _mvtec_tree(root, "mad-sim", classes, size, seed, digits=0, good_masks=True, folders=folders)


def write_mad_real(root: Path, size: ReplicaSize, seed: int) -> None:
    classes = {a: (False, False, (d,)) for a, d in MAD_REAL.items()}
    _mvtec_tree(root, "mad-real", classes, size, seed, ext=".jpg", mask_suffix="", digits=0, good_masks=True)


# --- VisA ---------------------------------------------------------------------------------------------------------

VISA_LABELS = {  # spot-diff id2class.json, in id order (mask value = position + 1), lower-cased as in image_anno.csv
    "candle": ("chunk of wax missing", "damaged corner of packaging", "weird candle wick", "different colour spot",
               "extra wax in candle", "foreign particals on candle", "wax melded out of the candle", "other"),
    "pcb4": ("burnt", "scratch", "missing", "damage", "extra", "wrong place", "dirt"),
    "chewinggum": ("chunk of gum missing", "corner missing", "scratches", "similar colour spot", "small cracks", "other"),
    "capsules": ("bubble", "discolor", "scratch", "leak", "misshape"),
    "cashew": ("burnt", "corner or edge breakage", "different colour spot", "middle breakage", "small holes",
               "small scratches", "stuck together", "same colour spot", "other"),
    "fryum": ("burnt", "corner or edge breakage", "different colour spot", "fryum stuck together", "middle breakage",
              "similar colour spot", "small scratches", "other"),
    "macaroni1": ("chip around edge and corner", "different colour spot", "middle breakage", "similar colour spot",
                  "small cracks", "small scratches", "other"),
    "macaroni2": ("breakage down the middle", "color spot similar to the object", "different color spot",
                  "small chip around edge", "small cracks", "small scratches", "other"),
    "pcb1": ("bent", "melt", "scratch", "missing"),
    "pcb2": ("bent", "melt", "scratch", "missing"),
    "pcb3": ("bent", "melt", "scratch", "missing"),
    "pipe_fryum": ("burnt", "corner and edge breakage", "different colour spot", "middle breakage",
                   "similar colour spot", "small scratches", "stuck together", "small cracks", "other"),
}


def write_visa(root: Path, size: ReplicaSize, seed: int) -> None:
    """VisA_20220922 with split_csv/1cls.csv; images are wider than tall, as VisA's (about 3:2)."""
    width, height = size.size, round(size.size * 2 / 3)
    split_rows = []
    for cls, labels in _take(VISA_LABELS.items(), size.classes):
        spec = _spec("visa", cls, False)
        anno = [("image", "label", "mask")]
        normals = [f"{cls}/Data/Images/Normal/{i:04d}.JPG" for i in range(size.train_good + size.test_good)]
        for i, rel in enumerate(normals):
            image, _ = _paint(spec, [], _rng(seed, "visa", cls, "normal", i), width, height)
            _save(image, root / rel)
            split_rows.append((cls, "train" if i < size.train_good else "test", "normal", rel, ""))
            anno.append((rel, "normal", ""))
        picked = _take(labels, size.defect_types)
        index = 0
        for j, label in enumerate(picked):
            for k in range(size.per_defect):
                names = [label] + ([picked[(j + 1) % len(picked)]] if (index % 2 == 1 and len(picked) > 1) else [])
                rel, mask_rel = f"{cls}/Data/Images/Anomaly/{index:03d}.JPG", f"{cls}/Data/Masks/Anomaly/{index:03d}.png"
                image, masks = _paint(spec, [painter_kind(n, False) for n in names], _rng(seed, "visa", cls, label, k),
                                      width, height)
                _save(image, root / rel)
                values = np.zeros((height, width), np.uint8)
                for name, mask in zip(names, masks):
                    values[mask & (values == 0)] = labels.index(name) + 1  # label image: the defect's id, not 255
                io.save_image(Image.fromarray(values, mode="L"), root / mask_rel)
                split_rows.append((cls, "test", "anomaly", rel, mask_rel))
                anno.append((rel, ", ".join(names), mask_rel))
                index += 1
        _write_csv(root / cls / "image_anno.csv", anno)
    _write_csv(root / "split_csv" / "1cls.csv", [("object", "split", "label", "image", "mask")] + split_rows)


def _write_csv(path: Path, rows) -> None:
    buffer = _io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    io.write_text(path, buffer.getvalue())


# --- single-product surface sets -----------------------------------------------------------------------------------

def _surface_counts(size: ReplicaSize) -> tuple[int, int]:
    """(anomalous, normal) test images of a single-class set."""
    return max(2, 2 * size.per_defect), max(1, size.test_good)


def write_ksdd2(root: Path, size: ReplicaSize, seed: int) -> None:
    """KolektorSDD2: 230 x ~630 px images; NNNNN.png with NNNNN_GT.png, all-zero GT for normal images."""
    width, height = round(size.size * 0.37), size.size
    spec = _spec("ksdd2", "ksdd2", True)
    bad, good = _surface_counts(size)
    number = 10000
    for split, n_bad, n_good in (("train", 1, size.train_good), ("test", bad, good)):
        for i in range(n_bad + n_good):
            defective = i < n_bad
            image, masks = _paint(spec, ["scratch"] if defective else [], _rng(seed, "ksdd2", split, i), width, height)
            _save(image, root / split / f"{number}.png")
            _save_mask(masks[0] if defective else np.zeros((height, width), bool), root / split / f"{number}_GT.png")
            number += 1


def write_ksdd(root: Path, size: ReplicaSize, seed: int) -> None:
    """KolektorSDD (v1): kosNN/PartK.jpg (about 500 x 1250 px) with PartK_label.bmp."""
    width, height = round(size.size * 0.4), size.size
    spec = _spec("ksdd", "electrical commutators", True)
    bad, good = _surface_counts(size)
    for i in range(bad + good):
        folder, part = root / f"kos{i // 8 + 1:02d}", i % 8
        defective = i < bad
        image, masks = _paint(spec, ["crack"] if defective else [], _rng(seed, "ksdd", i), width, height, grey=True)
        _save(image, folder / f"Part{part}.jpg")
        _save_mask(masks[0] if defective else np.zeros((height, width), bool), folder / f"Part{part}_label.bmp")


def write_rsdd(root: Path, size: ReplicaSize, seed: int) -> None:
    """RSDDs: Type-I (160 x 1000 px) and Type-II (55 x 1250 px) rails, every image defective; the ground truth is a
    JPEG named like its image."""
    types = (("Type-I RSDDs dataset", 0.16), ("Type-II RSDDs dataset", 0.1))
    for t, (folder, aspect) in enumerate(_take(types, size.classes)):
        width, height = max(8, round(size.size * aspect * 1.5)), round(size.size * 1.5)
        spec = _spec("rsdd", folder, True)
        for i in range(_surface_counts(size)[0]):
            image, masks = _paint(spec, ["hole" if i % 2 else "crack"], _rng(seed, "rsdd", t, i), width, height, grey=True)
            _save(image.convert("RGB"), root / folder / "Rail surface images" / f"rail_{i + 1}.jpg")
            _save_mask(masks[0], root / folder / "GroundTruth" / f"rail_{i + 1}.jpg")


def write_dagm(root: Path, size: ReplicaSize, seed: int) -> None:
    """DAGM 2007 (Kaggle upload): ClassN/{Train,Test}/NNNN.PNG grey 512 px, Label/NNNN_label.PNG, Label/Labels.txt."""
    for c in _take(range(1, 11), size.classes):
        cls = f"Class{c}"
        spec = _spec("dagm", cls, True)
        for split, n_bad, n_good in (("Train", 1, size.train_good), ("Test", *_surface_counts(size))):
            lines = ["1"]
            for i in range(n_bad + n_good):
                defective = i >= n_good
                name = f"{i + 1:04d}.PNG"
                image, masks = _paint(spec, [painter_kind("scratch" if c % 2 else "stain", True)] if defective else [],
                                      _rng(seed, "dagm", cls, split, i), size.size, size.size, grey=True)
                _save(image, root / cls / split / name)
                label = f"{i + 1:04d}_label.PNG" if defective else "0"
                if defective:
                    _save_mask(masks[0], root / cls / split / "Label" / label)
                lines.append(f"{i + 1}\t{int(defective)}\t{name}\t0\t{label}")
            io.write_text(root / cls / split / "Label" / "Labels.txt", "\n".join(lines) + "\n")


# --- Real-IAD -----------------------------------------------------------------------------------------------------

REAL_IAD = {  # object -> anomaly codes shown (AK pit, BX deformation, CH abrasion, HS scratch, PS damage, QS missing,
    # YW foreign, ZW contamination); Real-IAD's 30 objects
    "audiojack": ("AK", "HS", "QS"), "pcb": ("HS", "QS", "YW", "ZW"), "switch": ("HS", "QS", "ZW"),
    "bottle_cap": ("AK", "BX", "HS"), "button_battery": ("AK", "HS", "ZW"), "end_cap": ("AK", "BX", "QS"),
    "eraser": ("HS", "PS", "ZW"), "fire_hood": ("AK", "HS", "QS"), "mint": ("AK", "PS", "YW"),
    "mounts": ("AK", "HS", "PS"), "phone_battery": ("AK", "HS", "ZW"), "plastic_nut": ("AK", "PS", "QS"),
    "plastic_plug": ("AK", "HS", "QS"), "porcelain_doll": ("AK", "HS", "ZW"), "regulator": ("AK", "HS", "QS"),
    "rolled_strip_base": ("AK", "QS", "ZW"), "sim_card_set": ("AK", "HS", "ZW"), "tape": ("AK", "PS", "ZW"),
    "terminalblock": ("AK", "HS", "QS"), "toothbrush": ("CH", "QS", "ZW"), "toy": ("HS", "PS", "QS"),
    "toy_brick": ("AK", "HS", "PS"), "transistor1": ("AK", "BX", "QS"), "u_block": ("AK", "HS", "PS"),
    "usb": ("AK", "HS", "QS"), "usb_adaptor": ("AK", "HS", "PS"), "vcpill": ("AK", "HS", "QS"),
    "wooden_beads": ("AK", "PS", "YW"), "woodstick": ("AK", "CH", "PS"), "zipper": ("AK", "BX", "QS"),
}
REAL_IAD_WORDS = {"AK": "pit", "BX": "deformation", "CH": "abrasion", "HS": "scratch", "PS": "damage",
                  "QS": "missing", "YW": "foreign", "ZW": "contamination"}


def write_realiad(root: Path, size: ReplicaSize, seed: int) -> None:
    for obj, codes in _take(REAL_IAD.items(), size.classes):
        spec = _spec("real-iad", obj, False)
        doc: dict = {"meta": {"prefix": obj, "normal_class": "OK"}, "train": [], "test": []}
        sample = 0
        jobs = [("train", "OK", i) for i in range(size.train_good)] + [("test", "OK", i) for i in range(size.test_good)]
        jobs += [("test", code, i) for code in _take(codes, size.defect_types) for i in range(size.per_defect)]
        for split, code, i in jobs:
            sample += 1
            stamp = f"20230922{(93357 + 137 * sample) % 240000:06d}"
            folder = "OK" if code == "OK" else f"NG/{code}"
            stem = f"{obj}_{sample:04d}_{'OK' if code == 'OK' else 'NG_' + code}_C1_{stamp}"
            rel = f"{folder}/S{sample:04d}/{stem}.jpg"
            kinds = [] if code == "OK" else [painter_kind(REAL_IAD_WORDS[code], False)]
            image, masks = _paint(spec, kinds, _rng(seed, "real-iad", obj, split, code, i), size.size, size.size)
            _save(image, root / "realiad_1024" / obj / rel)
            mask_rel = None
            if code != "OK":
                mask_rel = rel[:-4] + ".png"
                _save_mask(masks[0], root / "realiad_1024" / obj / mask_rel)
            doc[split].append({"category": obj, "anomaly_class": code, "image_path": rel, "mask_path": mask_rel})
        io.write_json(root / "realiad_jsons" / "realiad_jsons" / f"{obj}.json", doc)


# --- medical sets (AnomalyCLIP-style meta.json) -----------------------------------------------------------------------

MEDICAL = {  # name -> (class folder, image-level only, anomalous specie, image ext, mask ext, grey)
    "headct": ("headct", True, "defect", ".png", None, True),
    "brainmri": ("brain_mri", True, "defect", ".jpg", None, True),
    "br35h": ("br35h", True, "defect", ".jpg", None, True),
    "isic": ("isic", False, "defect", ".jpg", ".png", False),
    "colondb": ("ColonDB", False, "defect", ".png", ".png", False),
    "clinicdb": ("ClinicDB", False, "defect", ".png", ".png", False),
    "endo": ("endo", False, "defect", ".jpg", ".png", False),
}


def _medical_writer(name: str) -> Callable[[Path, ReplicaSize, int], None]:
    cls, image_level, specie, ext, mask_ext, grey = MEDICAL[name]

    def write(root: Path, size: ReplicaSize, seed: int) -> None:
        spec = _spec(name, cls, True)
        entries = []
        bad = _surface_counts(size)[0]
        jobs = [("defect", i) for i in range(bad)] + ([("good", i) for i in range(size.test_good)] if image_level else [])
        for sub, i in jobs:
            anomalous = sub != "good"
            folder = specie if anomalous else "good"
            image, masks = _paint(spec, [painter_kind("stain" if i % 2 else "spot", True)] if anomalous else [],
                                  _rng(seed, name, sub, i), size.size, size.size, grey)
            rel = f"{cls}/test/{folder}/{i:03d}{ext}"
            _save(image, root / rel)
            mask_rel = ""
            if anomalous and not image_level:
                mask_rel = f"{cls}/ground_truth/{folder}/{i:03d}{'_mask' if name == 'isic' else ''}{mask_ext}"
                _save_mask(masks[0], root / mask_rel)
            entries.append({"img_path": rel, "mask_path": mask_rel, "cls_name": cls, "specie_name": folder,
                            "anomaly": int(anomalous)})
        io.write_json(root / "meta.json", {"train": {}, "test": {cls: entries}}, indent=4)

    return write


def write_kvasir(root: Path, size: ReplicaSize, seed: int) -> None:
    """Kvasir-SEG as AnomalyCLIP's generate_dataset_json/kvasir.py indexes it when run in the dataset folder."""
    spec = _spec("kvasir", "colon", False)
    entries = []
    for i in range(_surface_counts(size)[0]):
        name = f"cju{i:04d}qx8ro{i % 10}{'abcdefghij'[i % 10]}.jpg"
        image, masks = _paint(spec, ["stain"], _rng(seed, "kvasir", i), size.size, round(size.size * 0.85))
        _save(image, root / "images" / name)
        _save_mask(masks[0], root / "masks" / name, mode="RGB")
        entries.append({"img_path": f"./images/{name}", "mask_path": f"./masks/{name}", "cls_name": "colon",
                        "specie_name": "", "anomaly": 1})
    io.write_json(root / "meta.json", {"train": {}, "test": {"colon": entries}}, indent=4)


@dataclass(frozen=True)
class Replica:
    name: str
    write: Callable[[Path, ReplicaSize, int], None]


REPLICAS: dict[str, Replica] = {r.name: r for r in [
    Replica("mvtec", write_mvtec), Replica("visa", write_visa), Replica("btad", write_btad), Replica("mpdd", write_mpdd),
    Replica("dtd", write_dtd), Replica("ksdd2", write_ksdd2), Replica("ksdd", write_ksdd), Replica("rsdd", write_rsdd),
    Replica("dagm", write_dagm), Replica("mad-sim", write_mad_sim), Replica("mad-real", write_mad_real),
    Replica("real-iad", write_realiad), *(Replica(n, _medical_writer(n)) for n in MEDICAL),
    Replica("kvasir", write_kvasir),
]}


def replica_names(names) -> list[str]:
    """`all` or replica names -> the names, checked."""
    names = [names] if isinstance(names, str) else list(names)
    if "all" in names:
        return list(REPLICAS)
    unknown = [n for n in names if n not in REPLICAS]
    if unknown:
        raise DataError(f"no replica of {unknown}; known: {', '.join(REPLICAS)} (or all)")
    return names


def ensure_replica(name: str, root: str | Path, seed: int = 0, size: ReplicaSize | None = None) -> Path:
    """Write the replica of `name` to `root` unless it is there with the same settings (written beside the old one
    and swapped in only when complete); returns `root`."""
    size = size or ReplicaSize()
    root = Path(root)
    wanted = {"replica": name, "version": REPLICA_VERSION, "seed": seed, **asdict(size)}
    stamp = root / STAMP
    if stamp.is_file():
        try:
            if json.loads(stamp.read_text()) == wanted:
                return root
        except json.JSONDecodeError:
            pass
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        REPLICAS[name].write(tmp, size, seed)
        io.write_json(tmp / STAMP, wanted)
        old = root.with_name(f".{root.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        if root.exists():
            root.rename(old)
        tmp.rename(root)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root


def ensure_replicas(roots: dict[str, str | Path], seed: int = 0, size: ReplicaSize | None = None) -> dict[str, Path]:
    """Replicas for {name: root}."""
    return {name: ensure_replica(name, root, seed, size) for name, root in roots.items()}
