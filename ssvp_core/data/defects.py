"""Defect-type vocabularies: DAPO's text anchors per dataset and the per-object candidate sets of its multi-type
evaluation (DAPO.md §4, read from the official code @ad2ceab: train.py, test.py, test_multi_defect.py, data/*/meta.json;
MultiADS protocol).

`anchors`: the words placed in "<anchor> anomaly object" prompts, in class-index order (index 0 is "normal").
`folder_to_anchor`: a dataset's defect label (`Sample.defect`: MVTec folder, VisA annotation, Real-IAD type) -> anchor
    index (training targets and multi-type labels).
`objects`: object -> the anchors that object can show (multi-type evaluation restricts the softmax to them).
`no_type`: labels the dataset uses that have no DAPO type (VisA's "discolor", "leak", "misshape", "dirt", "other").

Three vocabularies per dataset, as the released scripts use three lists: the training anchors (train.py: MVTec's 20
paraphrases), the binary test anchors (test.py) and the multi-type anchors and label map (test_multi_defect.py).
They differ for MVTec (paraphrased vs raw words; `manipulated_front` is "bent" in training, "fabric" in multi-type),
VisA ("irregular wick" in test.py, "weird wick" in test_multi_defect.py) and Real-IAD (6 condensed test anchors vs
the 8 raw Real-IAD types in multi-type evaluation).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import ConfigError

NORMAL_LABELS = ("good", "normal", "ok")


@dataclass(frozen=True)
class DefectVocabulary:
    anchors: tuple[str, ...]
    folder_to_anchor: dict[str, int] = field(default_factory=dict)
    objects: dict[str, tuple[str, ...]] = field(default_factory=dict)
    no_type: frozenset[str] = frozenset()

    def _label_index(self, label: str) -> int | None:
        if label.lower() in NORMAL_LABELS:
            return 0
        for key in (label, label.lower()):
            if key in self.folder_to_anchor:
                return self.folder_to_anchor[key]
            if key in self.no_type:
                return None
        name = label.replace("_", " ")
        if name in self.anchors:
            return self.anchors.index(name) + 1
        raise ConfigError(f"defect label {label!r} has no anchor in this vocabulary {list(self.anchors)}; add it with "
                          "the method option `anchors` (VisA: the label comes from <class>/image_anno.csv)")

    def type_index(self, defect: str, cls: str | None = None) -> int | None:
        """Anchor index (1-based; 0 = normal) of an image's defect label, or None when the image has no single DAPO
        type: a label without counterpart, labels of several types ("a, b" as VisA's image_anno.csv lists them), or,
        given `cls`, a type outside that object's candidate list. The released VisA meta.json holds exactly the
        images with one such type (1878 of VisA's 2162 test images), so these are the images DAPO never saw."""
        types = {self._label_index(part.strip()) for part in defect.split(",") if part.strip()}
        if len(types) != 1 or None in types:
            return None
        (index,) = types
        if index and cls is not None and cls in self.objects:
            allowed = {self.anchors.index(a) + 1 for a in self.objects[cls]}
            if index not in allowed:
                return None
        return index

    def index(self, folder: str) -> int:
        """Anchor index (1-based; 0 = normal) of one defect label; raises if the label has no single type."""
        index = self.type_index(folder)
        if index is None:
            raise ConfigError(f"defect label {folder!r} has no single DAPO type in {list(self.anchors)}")
        return index


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

# Evaluating on MVTec-AD: the raw folder words (test.py and test_multi_defect.py use the same list, DAPO.md §4.2),
# the per-object sets (§4.3) and test_multi_defect.py's folder map, which differs from train.py's in one entry: screw's
# `manipulated_front` is "fabric" (id 8; screw's candidates are fabric, scratch, thread), not "bent".
MVTEC_TEST = DefectVocabulary(
    anchors=("bent", "broken", "color", "combined", "contamination", "crack", "cut", "fabric", "faulty imprint", "glue",
             "hole", "missing", "poke", "rough", "scratch", "squeeze", "thread", "liquid", "misplaced", "damaged"),
    folder_to_anchor={**MVTEC_TRAIN.folder_to_anchor, "manipulated_front": 8},
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

# VisA: the 18 condensed types of the released data/visa/meta.json (`defect_cls`, the ids of test_multi_defect.py's
# `gt_defect`), in that order. VisA's own <class>/image_anno.csv gives verbose labels, one or several per image
# ("chunk of gum missing", "corner or edge breakage", ...). The map below sends each of the 39 verbose labels VisA
# uses to a condensed type, consistently with the released meta: every type meta.json gives an object is the image
# of one of that object's labels (candle: "chunk of wax missing" -> missing, "extra wax in candle" -> extra, "wax
# melded out of the candle" -> melded, ... and candle's 7 labels give exactly its 7 meta types). Five labels have
# no condensed type, and the objects that have them show no such type in meta.json: discolor, leak, misshape
# (capsules, whose only type there is bubble), dirt (pcb4) and other.
VISA_TYPES = ("damage", "scratch", "breakage", "burnt", "weird wick", "stuck", "crack", "wrong place", "partical", "bubble",
              "melded", "hole", "melt", "bent", "spot", "extra", "chip", "missing")
VISA_VERBOSE = {
    "bent": "bent", "breakage down the middle": "breakage", "bubble": "bubble", "burnt": "burnt",
    "chip around edge and corner": "chip", "chunk of gum missing": "missing", "chunk of wax missing": "missing",
    "color spot similar to the object": "spot", "corner and edge breakage": "breakage", "corner missing": "missing",
    "corner or edge breakage": "breakage", "damage": "damage", "damaged corner of packaging": "damage",
    "different color spot": "spot", "different colour spot": "spot", "extra": "extra", "extra wax in candle": "extra",
    "foreign particals on candle": "partical", "fryum stuck together": "stuck", "melt": "melt",
    "middle breakage": "breakage", "missing": "missing", "same colour spot": "spot", "scratch": "scratch",
    "scratches": "scratch", "similar colour spot": "spot", "small chip around edge": "chip", "small cracks": "crack",
    "small holes": "hole", "small scratches": "scratch", "stuck together": "stuck", "wax melded out of the candle": "melded",
    "weird candle wick": "weird wick", "wrong place": "wrong place",
    "discolor": None, "leak": None, "misshape": None, "dirt": None, "other": None,
}
_VISA_MAP = {**{t: i for i, t in enumerate(VISA_TYPES, start=1)},
             **{v: VISA_TYPES.index(t) + 1 for v, t in VISA_VERBOSE.items() if t is not None}}
_VISA_NO_TYPE = frozenset(v for v, t in VISA_VERBOSE.items() if t is None)
_VISA_OBJECTS = {  # test_multi_defect.py's product_type2defect_type_visa (without "normal")
    "candle": ("damage", "weird wick", "partical", "melded", "spot", "extra", "missing"), "capsules": ("bubble",),
    "cashew": ("scratch", "breakage", "burnt", "stuck", "hole", "spot"), "chewinggum": ("scratch", "spot", "missing"),
    "fryum": ("scratch", "breakage", "burnt", "stuck", "spot"), "macaroni1": ("scratch", "crack", "spot", "chip"),
    "macaroni2": ("scratch", "breakage", "crack", "spot", "chip"), "pcb1": ("scratch", "melt", "bent", "missing"),
    "pcb2": ("scratch", "melt", "bent", "missing"), "pcb3": ("scratch", "melt", "bent", "missing"),
    "pcb4": ("scratch", "damage", "extra", "burnt", "missing", "wrong place"),
    "pipe_fryum": ("scratch", "breakage", "burnt", "stuck", "spot"),
}


def _reword(words: tuple[str, ...], old: str, new: str) -> tuple[str, ...]:
    return tuple(new if w == old else w for w in words)


# test.py's VisA anchors (training on VisA, for the MVTec target, uses them too): "weird wick" reads "irregular wick"
VISA = DefectVocabulary(
    anchors=_reword(VISA_TYPES, "weird wick", "irregular wick"), folder_to_anchor=_VISA_MAP,
    objects={o: _reword(c, "weird wick", "irregular wick") for o, c in _VISA_OBJECTS.items()}, no_type=_VISA_NO_TYPE,
)
# test_multi_defect.py's VisA anchors: the meta.json wording
VISA_MULTITYPE = DefectVocabulary(anchors=VISA_TYPES, folder_to_anchor=_VISA_MAP, objects=_VISA_OBJECTS,
                                  no_type=_VISA_NO_TYPE)

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

# Real-IAD binary test (test.py): 6 condensed anchors; the raw types are grouped into them.
REAL_IAD = DefectVocabulary(
    anchors=("hole", "deformed", "scratch", "damage", "missing parts", "contamination"),
    folder_to_anchor={"pit": 1, "deformation": 2, "abrasion": 3, "scratch": 3, "damage": 4, "missing": 5, "foreign": 6,
                      "contamination": 6},
)
# Real-IAD multi-type (test_multi_defect.py): the 8 raw Real-IAD types as anchors and classes, and all 30 objects'
# candidate lists (product_type2defect_type_real_iad, without "good").
REAL_IAD_TYPES = ("pit", "deformation", "abrasion", "scratch", "damage", "missing", "foreign", "contamination")
REAL_IAD_MULTITYPE = DefectVocabulary(
    anchors=REAL_IAD_TYPES,
    objects={
        "switch": ("missing", "contamination", "scratch"), "eraser": ("contamination", "scratch", "missing", "pit"),
        "woodstick": ("contamination", "scratch", "missing", "pit"),
        "zipper": ("contamination", "deformation", "missing", "damage"),
        "fire_hood": ("contamination", "scratch", "missing", "pit"),
        "pcb": ("contamination", "scratch", "missing", "foreign"),
        "toothbrush": ("abrasion", "contamination", "missing"),
        "plastic_nut": ("contamination", "scratch", "missing", "pit"),
        "wooden_beads": ("contamination", "scratch", "missing", "pit"),
        "transistor1": ("missing", "contamination", "deformation"),
        "bottle_cap": ("contamination", "scratch", "missing", "pit"),
        "u_block": ("abrasion", "contamination", "scratch", "missing"),
        "sim_card_set": ("abrasion", "contamination", "scratch"),
        "end_cap": ("contamination", "scratch", "missing", "damage"),
        "usb": ("contamination", "deformation", "scratch", "missing"), "regulator": ("missing", "scratch"),
        "plastic_plug": ("contamination", "scratch", "missing", "pit"),
        "audiojack": ("contamination", "deformation", "scratch", "missing"),
        "mint": ("missing", "contamination", "foreign"), "toy_brick": ("contamination", "scratch", "missing", "pit"),
        "toy": ("contamination", "scratch", "missing", "pit"),
        "rolled_strip_base": ("pit", "missing", "contamination"),
        "terminalblock": ("pit", "missing", "contamination"), "mounts": ("missing", "contamination", "pit"),
        "button_battery": ("abrasion", "contamination", "scratch", "pit"),
        "porcelain_doll": ("abrasion", "contamination", "scratch"),
        "phone_battery": ("contamination", "scratch", "damage", "pit"),
        "usb_adaptor": ("abrasion", "contamination", "scratch", "pit"),
        "vcpill": ("contamination", "scratch", "missing", "pit"), "tape": ("missing", "contamination", "damage"),
    },
)


def synthetic_vocabulary(set_name: str) -> DefectVocabulary:
    from .synthetic import DEFECT_TYPES, SETS

    anchors = tuple(d.replace("_", " ") for d in DEFECT_TYPES)
    objects = {c.name: tuple(d.replace("_", " ") for d in c.defects) for c in SETS[set_name]}
    return DefectVocabulary(anchors, {d: i for i, d in enumerate(DEFECT_TYPES, start=1)}, objects)


VOCABULARIES = {"mvtec-train": MVTEC_TRAIN, "mvtec": MVTEC_TEST, "visa": VISA, "mpdd": MPDD, "mad-real": MAD_REAL,
                "mad-sim": MAD_SIM, "real-iad": REAL_IAD}
MULTITYPE_VOCABULARIES = {"visa": VISA_MULTITYPE, "real-iad": REAL_IAD_MULTITYPE}  # the others: as their test lists


def vocabulary(dataset: str, training: bool = False, multitype: bool = False) -> DefectVocabulary:
    """The anchors of `dataset` for training (train.py), binary testing (test.py) or multi-type evaluation
    (test_multi_defect.py)."""
    key = dataset.lower()
    if key.startswith("synth-"):
        return synthetic_vocabulary(key)
    if key == "mvtec" and training and not multitype:
        return MVTEC_TRAIN
    if multitype and key in MULTITYPE_VOCABULARIES:
        return MULTITYPE_VOCABULARIES[key]
    if key in VOCABULARIES:
        return VOCABULARIES[key]
    raise ConfigError(f"no defect-type anchors for dataset {dataset!r} (known: {sorted(VOCABULARIES)} and synth-*); "
                      "pass them with the method option `anchors: {<dataset>: [word, ...]}`")
