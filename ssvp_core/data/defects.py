"""Defect-type vocabularies: DAPO's text anchors per dataset and the per-object candidate sets of its multi-type
evaluation (DAPO.md §4, read from the official code; MultiADS protocol).

`anchors`: the words placed in "<anchor> anomaly object" prompts, in class-index order (index 0 is "normal").
`folder_to_anchor`: defect folder name (`Sample.defect`) -> anchor index (training targets and multi-type labels).
`objects`: object -> the anchors that object can show (multi-type evaluation restricts the softmax to them).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import ConfigError


@dataclass(frozen=True)
class DefectVocabulary:
    anchors: tuple[str, ...]
    folder_to_anchor: dict[str, int] = field(default_factory=dict)
    objects: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def index(self, folder: str) -> int:
        """Anchor index (1-based; 0 = normal) of a defect folder; unknown folders map by exact anchor name."""
        if folder in ("good", "normal", "ok"):
            return 0
        if folder in self.folder_to_anchor:
            return self.folder_to_anchor[folder]
        name = folder.replace("_", " ")
        if name in self.anchors:
            return self.anchors.index(name) + 1
        raise ConfigError(f"defect folder {folder!r} has no anchor in this vocabulary {list(self.anchors)}; "
                          "add it with the method option `anchors`/`folder_to_anchor`")


def _groups(groups: list[tuple[str, ...]]) -> dict[str, int]:
    return {folder: i for i, names in enumerate(groups, start=1) for folder in names}


# Training on MVTec-AD: 20 merged defect classes with paraphrased anchor words (DAPO.md §4.1).
MVTEC_TRAIN = DefectVocabulary(
    anchors=("bent", "broken", "discoloration", "compound", "contamination", "crack", "cut", "fabric", "faulty imprint",
             "gluing", "hole", "missing", "puncture", "rough", "scratch", "compressed", "threading", "liquid", "misaligned",
             "wear"),
    folder_to_anchor=_groups([
        ("bent", "bent_lead", "bent_wire", "manipulated_front"), ("broken", "broken_large", "broken_small", "broken_teeth"),
        ("color",), ("combined",), ("contamination", "metal_contamination"), ("crack",),
        ("cut", "cut_inner_insulation", "cut_lead", "cut_outer_insulation"), ("fabric", "fabric_border", "fabric_interior"),
        ("faulty_imprint", "print"), ("glue", "glue_strip"), ("hole",), ("missing", "missing_wire", "missing_cable"),
        ("poke", "poke_insulation"), ("rough",), ("scratch", "scratch_head", "scratch_neck"), ("squeeze", "squeezed_teeth"),
        ("thread", "thread_side", "thread_top"), ("liquid", "oil"), ("misplaced", "cable_swap", "flip", "fold", "split_teeth"),
        ("damaged_case", "defective", "gray_stroke", "pill_type")]),
)

# Evaluating on MVTec-AD: the raw folder words (DAPO.md §4.2), same grouping, and the per-object sets (§4.3).
MVTEC_TEST = DefectVocabulary(
    anchors=("bent", "broken", "color", "combined", "contamination", "crack", "cut", "fabric", "faulty imprint", "glue",
             "hole", "missing", "poke", "rough", "scratch", "squeeze", "thread", "liquid", "misplaced", "damaged"),
    folder_to_anchor=MVTEC_TRAIN.folder_to_anchor,
    objects={
        "bottle": ("broken", "contamination"), "cable": ("bent", "misplaced", "combined", "cut", "missing", "poke"),
        "capsule": ("crack", "faulty imprint", "poke", "scratch", "squeeze"),
        "carpet": ("color", "cut", "hole", "contamination", "thread"), "grid": ("bent", "broken", "glue", "contamination", "thread"),
        "hazelnut": ("crack", "cut", "hole", "faulty imprint"), "leather": ("color", "cut", "misplaced", "glue", "poke"),
        "metal_nut": ("bent", "color", "misplaced", "scratch"),
        "pill": ("color", "combined", "contamination", "crack", "faulty imprint", "damaged", "scratch"),
        "screw": ("fabric", "scratch", "thread"), "tile": ("crack", "glue", "damaged", "liquid", "rough"),
        "toothbrush": ("damaged",), "transistor": ("bent", "cut", "damaged", "misplaced"),
        "wood": ("color", "combined", "hole", "liquid", "scratch"),
        "zipper": ("broken", "combined", "fabric", "rough", "misplaced", "squeeze"),
    },
)

VISA = DefectVocabulary(
    anchors=("damage", "scratch", "breakage", "burnt", "irregular wick", "stuck", "crack", "wrong place", "partical", "bubble",
             "melded", "hole", "melt", "bent", "spot", "extra", "chip", "missing"),
    folder_to_anchor={"weird wick": 5, "weird candle wick": 5},
    objects={
        "candle": ("damage", "irregular wick", "partical", "melded", "spot", "extra", "missing"), "capsules": ("bubble",),
        "cashew": ("scratch", "breakage", "burnt", "stuck", "hole", "spot"), "chewinggum": ("scratch", "spot", "missing"),
        "fryum": ("scratch", "breakage", "burnt", "stuck", "spot"), "macaroni1": ("scratch", "crack", "spot", "chip"),
        "macaroni2": ("scratch", "breakage", "crack", "spot", "chip"), "pcb1": ("scratch", "melt", "bent", "missing"),
        "pcb2": ("scratch", "melt", "bent", "missing"), "pcb3": ("scratch", "melt", "bent", "missing"),
        "pcb4": ("scratch", "damage", "extra", "burnt", "missing", "wrong place"),
        "pipe_fryum": ("scratch", "breakage", "burnt", "stuck", "spot"),
    },
)

MPDD = DefectVocabulary(
    anchors=("hole", "scratch", "bent", "rust", "flattening", "mismatch", "defective painting"),
    folder_to_anchor={"hole": 1, "scratches": 2, "bend_and_parts_mismatch": 3, "parts_mismatch": 6, "defective_painting": 7,
                      "major_rust": 4, "total_rust": 4, "flattening": 5},
    objects={"bracket_black": ("hole", "scratch"), "bracket_brown": ("mismatch", "bent"), "bracket_white": ("defective painting", "scratch"),
             "connector": ("mismatch",), "metal_plate": ("rust", "scratch"), "tubes": ("flattening",)},
)

MAD_REAL = DefectVocabulary(
    anchors=("stains", "missing"), folder_to_anchor={"Stains": 1, "Missing": 2},
    objects={**{o: ("stains",) for o in ("Bear", "Puppy", "Turtle", "Whale")},
             **{o: ("missing",) for o in ("Bird", "Elephant", "Parrot", "Pig", "Scorpion", "Unicorn")}},
)

MAD_SIM_OBJECTS = ("Gorilla", "Unicorn", "Mallard", "Turtle", "Whale", "Bird", "Owl", "Sabertooth", "Swan", "Sheep", "Pig",
                   "Zalika", "Pheonix", "Elephant", "Parrot", "Cat", "Scorpion", "Obesobeso", "Bear", "Puppy")
MAD_SIM = DefectVocabulary(
    anchors=("missing", "stains", "burrs"), folder_to_anchor={"Missing": 1, "Stains": 2, "Burrs": 3},
    objects={o: ("missing", "stains", "burrs") for o in MAD_SIM_OBJECTS},
)

# Real-IAD: the anchors are known; DAPO's per-object table is only partly in the spec (3 of 30 objects), so the
# multi-type evaluation there covers those objects and says so.
REAL_IAD = DefectVocabulary(
    anchors=("hole", "deformed", "scratch", "damage", "missing parts", "contamination"),
    folder_to_anchor={"pit": 1, "deformation": 2, "abrasion": 3, "scratch": 3, "damage": 4, "missing": 5, "foreign": 6,
                      "contamination": 6},
    objects={"switch": ("missing parts", "contamination", "scratch"), "pcb": ("contamination", "scratch", "missing parts"),
             "toothbrush": ("scratch", "contamination", "missing parts")},
)


def synthetic_vocabulary(set_name: str) -> DefectVocabulary:
    from .synthetic import DEFECT_TYPES, SETS

    anchors = tuple(d.replace("_", " ") for d in DEFECT_TYPES)
    objects = {c.name: tuple(d.replace("_", " ") for d in c.defects) for c in SETS[set_name]}
    return DefectVocabulary(anchors, {d: i for i, d in enumerate(DEFECT_TYPES, start=1)}, objects)


VOCABULARIES = {"mvtec-train": MVTEC_TRAIN, "mvtec": MVTEC_TEST, "visa": VISA, "mpdd": MPDD, "mad-real": MAD_REAL,
                "mad-sim": MAD_SIM, "real-iad": REAL_IAD}


def vocabulary(dataset: str, training: bool = False) -> DefectVocabulary:
    key = dataset.lower()
    if key.startswith("synth-"):
        return synthetic_vocabulary(key)
    if key == "mvtec" and training:
        return MVTEC_TRAIN
    if key in VOCABULARIES:
        return VOCABULARIES[key]
    raise ConfigError(f"no defect-type anchors for dataset {dataset!r} (known: {sorted(VOCABULARIES)} and synth-*); "
                      "pass them with the method option `anchors: {<dataset>: [word, ...]}`")
