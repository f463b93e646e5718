"""Prepare the synthetic benchmark a profile needs (generated once, regenerated only when its settings change)."""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from . import io
from .data.synthetic import GENERATOR_VERSION, generate

STAMP = "synth.json"


def ensure_synthetic(root: str | Path, seed: int = 0, size: int = 160, **counts) -> dict[str, Path]:
    """Generate `root/synth-a` and `root/synth-b` unless they exist with the same settings.

    A new generation is written beside the old one and swapped in only when complete.
    """
    root = Path(root)
    wanted = {"generator": GENERATOR_VERSION, "seed": seed, "size": size, **counts}
    stamp = root / STAMP
    if stamp.is_file():
        try:
            if json.loads(stamp.read_text()) == wanted:
                return {name: root / name for name in ("synth-a", "synth-b")}
        except json.JSONDecodeError:
            pass
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        generate(tmp, seed=seed, size=size, **counts)
        io.write_json(tmp / STAMP, wanted)
        if root.exists():
            old = root.with_name(f".{root.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            root.rename(old)
            tmp.rename(root)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    # meta.json files hold paths relative to each set's root, so they survive the move
    return {name: root / name for name in ("synth-a", "synth-b")}
