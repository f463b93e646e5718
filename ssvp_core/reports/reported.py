"""Paper-reported numbers, kept as data with their source (paper, table, row, column).

`reported.csv` is built from the transcribed tables by tools/extract_reported.py. Values are percentages as
printed, except Table 4 of SSVP (raw cosine / distance values).
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import pandas as pd

CSV = Path(__file__).parent / "data" / "reported.csv"


@lru_cache(maxsize=1)
def _load() -> pd.DataFrame:
    frame = pd.read_csv(CSV, dtype={"std": float})
    return frame


def reported(paper: str | None = None, table: str | None = None, **filters) -> pd.DataFrame:
    """Rows of the reported numbers, filtered by paper, table (prefix match) and any column (dataset, method, ...)."""
    frame = _load()
    if paper:
        frame = frame[frame.paper == paper]
    if table:
        frame = frame[frame.table.str.startswith(table)]
    for key, value in filters.items():
        values = value if isinstance(value, (list, tuple, set)) else [value]
        frame = frame[frame[key].isin(values)]
    return frame.reset_index(drop=True)
