"""Benchmark names -> readers, plus the class names used in prompts."""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable

from .folder import is_folder_layout, scan_folder
from .meta import scan_meta
from .mvtec import scan_mvtec_layout, strip_number_prefix
from .realiad import scan_realiad
from .records import Sample, ScanResult, raise_if_problems, require_nonempty
from .surface import scan_dagm, scan_ksdd, scan_ksdd2, scan_rsdd
from .visa import scan_visa
from ..errors import DataError


@dataclass(frozen=True)
class Benchmark:
    name: str
    title: str
    scan: Callable[..., ScanResult]
    source: str


BENCHMARKS: dict[str, Benchmark] = {b.name: b for b in [
    Benchmark("mvtec", "MVTec-AD", scan_mvtec_layout, "https://www.mvtec.com/company/research/datasets/mvtec-ad"),
    Benchmark("visa", "VisA", scan_visa, "https://github.com/amazon-science/spot-diff (VisA_20220922.tar + split_csv/1cls.csv)"),
    Benchmark("btad", "BTAD", partial(scan_mvtec_layout, normal_dir="ok", mask_suffixes=("", "_mask")), "btad.zip -> BTech_Dataset_transformed"),
    Benchmark("mpdd", "MPDD", scan_mvtec_layout, "https://github.com/stepanje/MPDD"),
    Benchmark("dtd", "DTD-Synthetic", scan_mvtec_layout, "Google-Drive link in the AnomalyCLIP README"),
    Benchmark("ksdd2", "KolektorSDD2", scan_ksdd2, "https://www.vicos.si/resources/kolektorsdd2/ (or Bayes-PFL DATA_three)"),
    Benchmark("ksdd", "KolektorSDD (v1)", scan_ksdd, "https://www.vicos.si/resources/kolektorsdd/ (or the AnomalyCLIP / AdaCLIP processed copy)"),
    Benchmark("rsdd", "RSDD", scan_rsdd, "RSDDs (Type-I/II) (or Bayes-PFL DATA_three)"),
    Benchmark("dagm", "DAGM 2007", scan_dagm, "Kaggle 'DAGM 2007 competition dataset' (or Bayes-PFL DATA_three)"),
    Benchmark("mad-sim", "MAD-Sim (PAD, 20 LEGO animals, simulated)", partial(scan_mvtec_layout, class_name=strip_number_prefix),
              "https://github.com/EricLee0224/PAD (class folders 01Gorilla ... 20Puppy)"),
    Benchmark("mad-real", "MAD-Real (PAD, 10 LEGO animals, real)", scan_mvtec_layout, "https://github.com/EricLee0224/PAD"),
    Benchmark("real-iad", "Real-IAD (30 objects)", scan_realiad, "https://realiad4ad.github.io/Real-IAD/ (realiad_1024 + realiad_jsons)"),
    Benchmark("meta", "any dataset with an AnomalyCLIP-style meta.json", scan_meta, "meta.json at the root"),
    Benchmark("folder", "your own images: normal/, abnormal/, optional masks/ (data/folder.py)", scan_folder,
              "your images, sorted by hand"),
    Benchmark("synth-a", "synthetic benchmark, class set A", scan_mvtec_layout, "`ssvp data synth`"),
    Benchmark("synth-b", "synthetic benchmark, class set B", scan_mvtec_layout, "`ssvp data synth`"),
]}


def benchmark(name: str) -> Benchmark:
    key = name.lower()
    if key not in BENCHMARKS:
        raise DataError(f"unknown dataset {name!r}; known: {', '.join(BENCHMARKS)}. Your own images: sort them into "
                        "ROOT/normal/, ROOT/abnormal/ (and optionally ROOT/masks/) and use `folder` or any name")
    return BENCHMARKS[key]


def scan_dataset(name: str, root: str | Path, split: str = "test") -> ScanResult:
    """Scan a benchmark by name; an unknown name is read through its root's meta.json when there is one
    (so any dataset indexed the AnomalyCLIP way, e.g. the medical sets, works under its own name), or as a `folder`
    dataset when the root has that layout (so your own data can go by its own name: `--eval-on screws=data/screws`)."""
    root = Path(root)
    known = name.lower() in BENCHMARKS
    if not root.exists():
        title = benchmark(name).title if known else name
        raise DataError(f"dataset root {root} does not exist. Download {title} there (data/README.md) or pass the right path.")
    if not known and (root / "meta.json").is_file():
        return scan_meta(root, split=split, dataset=name.lower())
    if not known and is_folder_layout(root):
        return scan_folder(root, split=split, dataset=name.lower())
    return benchmark(name).scan(root, split=split, dataset=name.lower())


def reads_as_folder(name: str, root: str | Path) -> bool:
    """Whether `scan_dataset(name, root)` reads your own images through the `folder` reader (not a benchmark)."""
    root = Path(root)
    key = name.lower()
    if key == "folder":
        return True
    return key not in BENCHMARKS and not (root / "meta.json").is_file() and is_folder_layout(root)


def read_dataset(name: str, root: str | Path, split: str = "test", classes: list[str] | None = None) -> list[Sample]:
    """All samples of one split, ordered by class; raises DataError listing every layout problem."""
    root = Path(root)
    samples = raise_if_problems(scan_dataset(name, root, split), name, root)
    if classes:
        unknown = sorted(set(classes) - {s.cls for s in samples})
        if unknown:
            raise DataError(f"dataset {name!r} at {root} has no classes {unknown}; it has {sorted({s.cls for s in samples})}")
        samples = [s for s in samples if s.cls in classes]
    order = {c: i for i, c in enumerate(dict.fromkeys(s.cls for s in samples))}
    return require_nonempty(sorted(samples, key=lambda s: order[s.cls]), name, root)


# Names used inside text prompts (Bayes-PFL's mapping), lower-case; any other class: underscores -> spaces.
PROMPT_NAMES = {
    "macaroni1": "macaroni", "macaroni2": "macaroni",
    "pcb1": "printed circuit board", "pcb2": "printed circuit board",
    "pcb3": "printed circuit board", "pcb4": "printed circuit board",
    "pipe_fryum": "pipe fryum", "chewinggum": "chewing gum", "metal_nut": "metal nut",
    "01": "object", "02": "object", "03": "object",
}


def prompt_name(cls: str) -> str:
    if cls in PROMPT_NAMES:
        return PROMPT_NAMES[cls]
    name = cls.replace("_", " ").replace("-", " ").strip().lower()
    return "".join(ch for ch in name if not ch.isdigit()).strip() or "object"
