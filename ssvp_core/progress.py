"""Progress of long work (training steps, evaluation batches, feature caching), drawn where the person waiting looks.

The engine asks this module for a bar instead of constructing tqdm itself, so that the same training loop shows a
tqdm bar on a terminal and a live line in a notebook cell: the notebook layer installs its own bar class with
`draw_with` (reports/notebook.py). Bars follow tqdm's interface (update, set_postfix, set_postfix_str, close) and
tqdm's switch: `TQDM_DISABLE=1` in the environment turns every bar off (the tests and `ssvp reproduce`'s batch
kernels set it).
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

_factory: Callable[..., Any] | None = None


def disabled_by_environment() -> bool:
    return os.environ.get("TQDM_DISABLE", "").lower() not in ("", "0", "false")


def bar(total: int | None = None, desc: str = "", disable: bool = False, leave: bool = True, initial: int = 0,
        unit: str = "it"):
    """A progress bar: the installed class (a notebook line) or tqdm."""
    if _factory is not None and not disable and not disabled_by_environment():
        return _factory(total=total, desc=desc, leave=leave, initial=initial, unit=unit)
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, disable=disable or None, leave=leave, initial=initial, unit=unit)


def iterate(items: Iterable, desc: str = "", disable: bool = False, leave: bool = False,
            total: int | None = None) -> Iterator:
    """`items` with a bar that advances by one per item and is closed at the end (or when the loop stops early)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    progress_bar = bar(total=total, desc=desc, disable=disable, leave=leave)
    try:
        for item in items:
            yield item
            progress_bar.update(1)
    finally:
        progress_bar.close()


@contextlib.contextmanager
def draw_with(factory: Callable[..., Any] | None):
    """Bars created inside the block come from `factory` (None: tqdm)."""
    global _factory
    previous, _factory = _factory, factory
    try:
        yield
    finally:
        _factory = previous


def install(factory: Callable[..., Any] | None) -> None:
    """Bars come from `factory` from now on (a notebook kernel installs its own once)."""
    global _factory
    _factory = factory
