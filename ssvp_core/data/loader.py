"""The torch Dataset: images and masks resized the way the papers do.

Images: PIL bicubic resize to (S, S) per view (518 for CLIP, 592 for DINOv3 in the paper profile), values in [0, 1];
each backbone applies its own mean/std. Masks: bilinear resize of the 0/255 mask to the evaluation size, then > 0.5
(AnomalyCLIP / Bayes-PFL protocol).

`skip_unreadable=True` (prediction and evaluation of your own folders): an image or mask that does not decode gives
an item {"index", "unreadable": reason, "file"} instead of an error, and `engine.batches.collate` sets it aside, so
one bad file costs one result rather than the run. Benchmarks are read with the default, which raises.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from PIL import Image

from ..errors import DataError, UnreadableFile
from .images import image_size as header_size, mask_array, open_rgb
from .records import Sample


def image_to_tensor(image: Image.Image, size: int) -> torch.Tensor:
    arr = np.asarray(image.resize((size, size), Image.BICUBIC), dtype=np.float32) / 255.0
    return torch.from_numpy(arr).permute(2, 0, 1).clamp_(0.0, 1.0)


def load_mask(sample: Sample, image_size: tuple[int, int], size: int) -> torch.Tensor:
    if sample.mask is None:
        return torch.zeros(size, size)
    arr = mask_array(sample.mask, sample.mask_mode)
    if (arr.shape[1], arr.shape[0]) != image_size:
        raise DataError(
            f"{sample.mask}: mask is {arr.shape[1]}x{arr.shape[0]} but image {sample.image} is "
            f"{image_size[0]}x{image_size[1]}; regenerate the mask at the image size (run `ssvp data verify`)."
        )
    pil = Image.fromarray(np.round(arr * 255).astype(np.uint8), mode="L").resize((size, size), Image.BILINEAR)
    return torch.from_numpy((np.asarray(pil, dtype=np.float32) / 255.0 > 0.5).astype(np.float32))


class AnomalyDataset(torch.utils.data.Dataset):
    """Items: image (3,S,S) at the evaluation size, views {size: (3,s,s)} for other backbone sizes, mask (S,S) in {0,1},
    label, class, defect and the sample index. `images=False` leaves out image and views (a feature cache stands in for
    them); `masks=False` leaves out the mask (building a feature cache needs none). `skip_unreadable`: see the module
    docstring."""

    def __init__(self, samples: Sequence[Sample], image_size: int = 518, view_sizes: Sequence[int] = (),
                 images: bool = True, masks: bool = True, skip_unreadable: bool = False):
        self.samples = list(samples)
        self.image_size = int(image_size)
        self.view_sizes = sorted({int(s) for s in view_sizes} - {self.image_size})
        self.images, self.masks = images, masks
        self.skip_unreadable = skip_unreadable

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        if not self.skip_unreadable:
            return self._item(index)
        try:
            return self._item(index)
        except UnreadableFile as e:
            image = self.samples[index].image
            reason = e.reason if e.path is None or e.path == image else f"its mask {e.path.name}: {e.reason}"
            return {"index": index, "unreadable": reason, "file": str(image)}

    def _item(self, index: int) -> dict:
        sample = self.samples[index]
        item = {"label": torch.tensor(sample.label, dtype=torch.long), "cls": sample.cls, "defect": sample.defect,
                "dataset": sample.dataset, "index": index}
        if self.images:
            image = open_rgb(sample.image)
            item["image"] = image_to_tensor(image, self.image_size)
            if self.view_sizes:
                item["views"] = {s: image_to_tensor(image, s) for s in self.view_sizes}
        if self.masks:  # without the pixels, the size check reads only the image header
            size = image.size if self.images else header_size(sample.image)
            item["mask"] = load_mask(sample, size, self.image_size)
        return item


def batch_view(batch: dict, size: int) -> torch.Tensor:
    """The batch's images at `size` (the main image when it already has that size)."""
    if batch["image"].shape[-1] == size:
        return batch["image"]
    views = batch.get("views") or {}
    if size in views:
        return views[size]
    return torch.nn.functional.interpolate(batch["image"], size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)
