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
