"""The 2x2 mosaic augmentation of APRIL-GAN's training data (ByChelsea/VAND-APRIL-GAN dataset.py `combine_img`,
`--aug_rate`; train.sh uses 0.2 when training on MVTec AD), which AdaCLIP took over (dataset/base_dataset.py, 0.2 on
its MVTec-AD training set only).

With probability `rate` a training item is replaced by four images of its class laid out 2x2 at their own size,
their masks laid out the same way; the mosaic is then resized to the model's sizes like any image. The four images:
`draw="defect_folder"` (APRIL-GAN) picks a defect folder of the class uniformly, including "good", then an image of
it; `draw="image"` (AdaCLIP) picks four distinct images of the class (`random.sample`). The label: `label="item"`
keeps the replaced item's label, as both releases do (APRIL-GAN's pixel-only loss never reads it; AdaCLIP's image
loss does); `label="any_tile"` says whether any tile is anomalous. Only items of the `datasets` given get mosaics
(AdaCLIP pools a second training set without them). Draws come from a generator seeded by (seed, epoch, index), so
runs and resumed runs see the same mosaics.
"""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from .images import mask_array, open_rgb
from .loader import AnomalyDataset, image_to_tensor


def mosaic_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    return torch.Generator().manual_seed(((seed * 1_000_003 + epoch) * 1_000_003 + index) % (2 ** 63))


class MosaicDataset(torch.utils.data.Dataset):
    """An AnomalyDataset whose items are, with probability `rate`, a 2x2 mosaic of their class. Set `epoch` before
    each epoch (the engine does)."""

    def __init__(self, base: AnomalyDataset, rate: float, seed: int, draw: str = "defect_folder", label: str = "item",
                 datasets: set[str] | None = None):
        if draw not in ("defect_folder", "image") or label not in ("item", "any_tile"):
            raise ValueError(f"mosaic draw={draw!r} / label={label!r}: choose defect_folder|image and item|any_tile")
        self.base = base
        self.rate = float(rate)
        self.seed = int(seed)
        self.draw, self.label = draw, label
        self.datasets = datasets
        self.epoch = 0
        groups: dict[str, dict[str, list[int]]] = {}
        for i, s in enumerate(base.samples):
            groups.setdefault(s.cls, {}).setdefault(s.defect, []).append(i)
        self.groups = {cls: list(by_defect.values()) for cls, by_defect in groups.items()}

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> dict:
        g = mosaic_generator(self.seed, self.epoch, index)
        sample = self.base.samples[index]
        if float(torch.rand((), generator=g)) >= self.rate or (self.datasets is not None and sample.dataset not in self.datasets):
            return self.base[index]
        folders = self.groups[sample.cls]
        if self.draw == "image":  # four distinct images of the class
            members = [i for files in folders for i in files]
            order = torch.randperm(len(members), generator=g).tolist() * 4  # a class under four images repeats them
            tiles = [self.base.samples[members[j]] for j in order[:4]]
        else:
            tiles = []
            for _ in range(4):
                files = folders[int(torch.randint(len(folders), (), generator=g))]
                tiles.append(self.base.samples[files[int(torch.randint(len(files), (), generator=g))]])
        image, mask = self.compose(tiles)
        size = self.base.image_size
        pil_mask = Image.fromarray(mask, mode="L").resize((size, size), Image.BILINEAR)
        item = {
            "image": image_to_tensor(image, size),
            "mask": torch.from_numpy((np.asarray(pil_mask, dtype=np.float32) / 255.0 > 0.5).astype(np.float32)),
            "label": torch.tensor(sample.label if self.label == "item" else max(t.label for t in tiles), dtype=torch.long),
            "cls": sample.cls,
            "defect": sample.defect,
            "dataset": sample.dataset,
            "index": index,
        }
        if self.base.view_sizes:
            item["views"] = {s: image_to_tensor(image, s) for s in self.base.view_sizes}
        return item

    @staticmethod
    def compose(tiles) -> tuple[Image.Image, np.ndarray]:
        """Four samples -> (RGB mosaic, uint8 0/255 mask), each tile at its own size from (col * W, row * H) of the
        first tile's size W x H."""
        images = [open_rgb(t.image) for t in tiles]
        w, h = images[0].size
        canvas = Image.new("RGB", (2 * w, 2 * h))
        mask = np.zeros((2 * h, 2 * w), dtype=np.uint8)
        for i, (t, im) in enumerate(zip(tiles, images)):
            x, y = (i % 2) * w, (i // 2) * h
            canvas.paste(im, (x, y))
            if t.mask is not None:
                m = (mask_array(t.mask, t.mask_mode) > 0).astype(np.uint8) * 255
                region = mask[y:y + m.shape[0], x:x + m.shape[1]]
                region[...] = m[:region.shape[0], :region.shape[1]]
        return canvas, mask
