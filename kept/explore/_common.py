"""What every view shares: one-line notes, showing a figure, building one, colours."""

from __future__ import annotations

import io
from typing import Any

#: Colours of span sources in displaCy renderings (other sources get a grey).
SOURCE_COLORS = {
    "gold": "#ffd166",
    "gazetteer": "#8ecae6",
    "ner": "#b5e48c",
    "noun_chunk": "#e0c3fc",
    "npmi": "#ffadad",
    "terms": "#caffbf",
    "regex": "#fdffb6",
    "pos_ner": "#b5e48c",
    "pos_phrase": "#e0c3fc",
}
ACTION_COLORS = {"[MASK]": "#ff8fa3", "RANDOM": "#ffd166", "KEPT": "#bde0fe"}
UNIT_KINDS = {0: "word", 1: "phrase", 2: "entity"}


def note(message: str) -> None:
    """Print a one-line note (what a run lacks, and what to do about it)."""
    print(f"note: {message}")


def show(figure: Any, dpi: int = 100) -> None:
    """Display a matplotlib figure as a PNG in Jupyter (any backend) and close it."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    try:
        import matplotlib.pyplot as plt

        plt.close(figure)
    except Exception:  # noqa: BLE001 - a Figure() not managed by pyplot: nothing to close
        pass
    try:
        from IPython.display import Image, display
    except ImportError:  # outside IPython: nothing to display on
        return
    display(Image(data=buffer.getvalue(), format="png"))


def _figure(width: float, height: float, rows: int = 1, columns: int = 1) -> tuple[Any, Any]:
    """A bare Figure and its axes grid (always 2-D), as the report's figures are built."""
    from kept.figures import subplots

    return subplots(rows, columns, figsize=(width, height), squeeze=False)
