"""How numbers look in the book: one format per kind of quantity, and captioned tables.

Every table in a chapter goes through `table`, so percentages, MAT, times and sizes read the
same on every page, and every table carries a caption that names its units.
"""
from __future__ import annotations

from typing import Iterable

import pandas as pd

FORMATS = {
    "pct": "{:.1%}",      # rates and shares: token match, top-5, acceptance
    "mat": "{:.2f}",      # tokens per verify step (MAT, tau)
    "x": "{:.2f}x",       # speedups
    "ms": "{:.1f}",       # milliseconds
    "s": "{:.1f}",        # seconds
    "int": "{:,.0f}",
    "f3": "{:.3f}",
    "f2": "{:.2f}",
    "f1": "{:.1f}",
}


def fmt(value, kind: str) -> str:
    """One value formatted as `kind` (see FORMATS); NaN -> '-'."""
    try:
        if value is None or pd.isna(value):
            return "-"
    except (TypeError, ValueError):
        pass
    return FORMATS[kind].format(value)


def table(df: pd.DataFrame, caption: str, formats: dict[str, str] | None = None, hide_index: bool = False,
          columns: Iterable[str] | None = None):
    """A captioned table (pandas Styler) with each column formatted by its kind:
    formats = {column: "pct" | "mat" | "x" | "ms" | "s" | "int" | "f3" | "f2" | "f1"}."""
    if columns is not None:
        df = df[list(columns)]
    unknown = set(formats or {}) - set(df.columns)
    if unknown:
        raise KeyError(f"formats name columns the table does not have: {sorted(unknown)}")
    sty = df.style.set_caption(caption).format(
        {c: (lambda v, k=k: fmt(v, k)) for c, k in (formats or {}).items()}, na_rep="-")
    sty = sty.set_table_styles([{"selector": "caption", "props": "caption-side: top; text-align: left; "
                                                                   "font-weight: 600; padding-bottom: 0.4em;"},
                                {"selector": "td", "props": "padding: 0.1em 0.6em;"},   # numbers never touch
                                {"selector": "th", "props": "padding: 0.1em 0.6em;"}])
    return sty.hide(axis="index") if hide_index else sty
