"""The smoke profile's tiny backbones (configs/smoke.yaml): same classes and code paths as the paper's."""
from ssvp_core.config import BackboneConfig, load_config


def tiny_backbone() -> BackboneConfig:
    return load_config("smoke", "reference").backbone


TINY_DINO_KWARGS = dict(tiny_backbone().dino.kwargs)
SIZE = tiny_backbone().clip.image_size  # 128: a 16x16 grid on both backbones
GRID = SIZE // 8


def smoke_config(method: str, *overrides: str, root=None):
    extra = []
    if root is not None:
        extra = [f"train.root={root}/synth-a", f"eval.datasets=[{{name: synth-b, root: '{root}/synth-b'}}]"]
    return load_config("smoke", method, extra + list(overrides))


def random_batch(n: int = 3, seed: int = 0, classes=("bottle",), defect: str = "crack", dataset: str = "d",
                 box=(30, 50, 40, 60)) -> dict:
    """A batch of random images at the smoke size; the first image is anomalous inside `box` (y0, y1, x0, x1)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(n, SIZE, SIZE)
    y0, y1, x0, x1 = box
    mask[0, y0:y1, x0:x1] = 1
    return {"image": torch.rand(n, 3, SIZE, SIZE, generator=g), "mask": mask, "label": torch.tensor([1] + [0] * (n - 1)),
            "cls": [classes[i % len(classes)] for i in range(n)], "defect": [defect] + ["good"] * (n - 1),
            "dataset": [dataset] * n}
