"""Sample records: what every reader produces and every loader consumes."""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from ..errors import DataError

NORMAL = "good"


@dataclass(frozen=True)
class Sample:
    """One test or training image of a benchmark.

    `defect` is the defect-type folder name ("good" for normal images); DAPO's multi-type evaluation uses it.
    `mask_mode` says how the mask file encodes anomalies: "binary" (0/255 or 0/1, thresholded at half the
    maximum value, as the papers do) or "label" (any value > 0 is anomalous, VisA's convention).
    """

    image: Path
    mask: Path | None
    cls: str
    label: int
    defect: str = NORMAL
    dataset: str = ""
    mask_mode: str = "binary"

    def __post_init__(self):
        if self.label not in (0, 1):
            raise ValueError(f"label must be 0 or 1, got {self.label!r} for {self.image}")
        if self.mask_mode not in ("binary", "label"):
            raise ValueError(f"mask_mode must be 'binary' or 'label', got {self.mask_mode!r}")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a dataset on disk."""

    kind: str  # missing-mask, orphan-mask, unreadable-image, truncated-image, size-mismatch, non-binary-mask, empty-class, layout
    path: Path
    message: str

    def __str__(self) -> str:
        return f"[{self.kind}] {self.path}: {self.message}"


@dataclass
class ScanResult:
    samples: list[Sample] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    def add(self, kind: str, path: Path, message: str) -> None:
        self.problems.append(Problem(kind, Path(path), message))

    def extend(self, other: "ScanResult") -> None:
        self.samples.extend(other.samples)
        self.problems.extend(other.problems)


def raise_if_problems(result: ScanResult, dataset: str, root: Path) -> list[Sample]:
    """Return the samples, or raise one DataError listing every problem found."""
    if result.problems:
        shown = "\n  ".join(str(p) for p in result.problems[:50])
        more = f"\n  ... and {len(result.problems) - 50} more" if len(result.problems) > 50 else ""
        raise DataError(
            f"dataset {dataset!r} at {root} has {len(result.problems)} problem(s):\n  {shown}{more}\n"
            f"Fix them (see data/README.md for the expected tree), or run `ssvp data verify {dataset} {root}` "
            "for the full list."
        )
    return result.samples


def group_by_class(samples: Iterable[Sample]) -> "OrderedDict[str, list[Sample]]":
    """Samples grouped by class, classes in first-seen order."""
    groups: OrderedDict[str, list[Sample]] = OrderedDict()
    for s in samples:
        groups.setdefault(s.cls, []).append(s)
    return groups


def summarize(samples: Iterable[Sample]) -> dict[str, dict[str, int]]:
    """Per class: number of images, anomalous images and masks."""
    out: dict[str, dict[str, int]] = {}
    for s in samples:
        row = out.setdefault(s.cls, {"images": 0, "anomalous": 0, "masks": 0})
        row["images"] += 1
        row["anomalous"] += s.label
        row["masks"] += s.mask is not None
    return out


def require_nonempty(samples: list[Sample], dataset: str, root: Path) -> list[Sample]:
    if not samples:
        raise DataError(f"dataset {dataset!r} at {root}: no images found. Check the path and data/README.md.")
    return samples
