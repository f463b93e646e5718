"""How numbers and tables look wherever a reader sees them (notebook cells, page fragments, the index): 2 decimals,
an em dash for a missing value, integers and text unchanged."""
from __future__ import annotations

import math

import pandas as pd

STYLE = "border-collapse:collapse;font-size:12px"
MISSING = "—"


def format_number(value) -> str:
    """2 decimals; NaN/None as an em dash; integers and text unchanged."""
    if value is None:
        return MISSING
    if isinstance(value, float):
        return MISSING if math.isnan(value) else f"{value:.2f}"
    return str(value)


def format_p(p: float) -> str:
    """A p-value with 2 decimals, and "< 0.01" below that (the smallest a bootstrap of B resamples gives is 2/(B+1))."""
    if p is None or math.isnan(p):
        return MISSING
    return "< 0.01" if p < 0.01 else f"{p:.2f}"


def table_html(frame: pd.DataFrame) -> str:
    """The HTML table of a page: 2-decimal numbers, em dash for missing values."""
    shown = frame.copy()
    for col in shown.columns:
        if pd.api.types.is_float_dtype(shown[col]):
            shown[col] = shown[col].map(format_number)
        elif shown[col].dtype == object:
            shown[col] = shown[col].map(lambda v: format_number(v) if isinstance(v, float) or v is None else v)
    html = shown.to_html(border=1, na_rep=MISSING, escape=True)
    return html.replace('<table border="1"', f'<table border="1" style="{STYLE}"')
