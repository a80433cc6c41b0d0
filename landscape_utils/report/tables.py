"""Markdown tables and number formats shared by the notebooks and the report text."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def fmt(value: float | None, spec: str = ".3g") -> str:
    """One number as the report shows it ("—" for None)."""
    return "—" if value is None else format(value, spec)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-style Markdown table; cells are shown with ``str``.

    Raises:
        ValueError: a row whose length differs from the headers'.
    """
    for row in rows:
        if len(row) != len(headers):
            raise ValueError(f"row {list(row)} has {len(row)} cells; expected {len(headers)}")

    def cells(values: Sequence[Any]) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in values) + " |"

    return "\n".join([cells(headers), "|" + "---|" * len(headers), *map(cells, rows)])


def architectures_table() -> str:
    """The registered architectures: name, layers and trainable parameters."""
    from ..study.registry import ARCHITECTURES

    return markdown_table(["name", "architecture", "parameters"],
                          [[a.label, a.description, f"{a.params:,}"] for a in ARCHITECTURES.values()])
