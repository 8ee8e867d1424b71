"""Pictures of recommendations: the query, then its results with id and score.

Needs matplotlib (``pip install visualsim[plot]``); it is imported only here.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import ImageLoadError, VisualsimError
from .images import load_image, resize_image

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

    from .recommender import Recommendation


def default_image_of(rec: Recommendation) -> Any:
    """Find a result's picture: its ``path`` metadata, else its id if that is a file."""
    path = rec.metadata.get("path") if isinstance(rec.metadata, Mapping) else None
    if isinstance(path, str) and os.path.isfile(path):
        return path
    if isinstance(rec.id, str) and os.path.isfile(rec.id):
        return rec.id
    raise ImageLoadError(
        rec.id, "no image found for this result; pass image_of= to plot_recommendations"
    )


def plot_recommendations(
    query: Any | Sequence[Any],
    recommendations: Sequence[Recommendation] | Sequence[Sequence[Recommendation]],
    *,
    image_of: Callable[[Recommendation], Any] | None = None,
    label_key: str | None = None,
    thumb_size: int = 160,
    cell_inches: float = 1.9,
    title: str | None = None,
) -> Figure:
    """Return a matplotlib Figure: each query on the left, its results to the right.

    Parameters
    ----------
    query
        One image-like, or a list of them (one row each).
    recommendations
        The results of one query (``rec.query(...)``), or one list per query.
    image_of
        Function from a :class:`~visualsim.Recommendation` to its image-like;
        default: the ``path`` in its metadata, else its id when that is a file.
    label_key
        A metadata key printed under each result (e.g. ``"articleType"``).
    thumb_size
        Thumbnails are letterboxed to this many pixels square.
    cell_inches
        Size of one cell in inches.
    title
        Figure title.

    Returns
    -------
    matplotlib.figure.Figure
        Save it with :func:`save_figure` (or ``fig.savefig(path, bbox_inches="tight")``).

    Notes
    -----
    A result whose image cannot be loaded is drawn as a grey cell with its
    id, so one missing file never spoils the picture.
    """
    from matplotlib.figure import Figure

    rows = _rows(query, recommendations)
    image_of = image_of or default_image_of
    ncols = 1 + max((len(r) for _, r in rows), default=0)
    fig = Figure(figsize=(cell_inches * ncols, (cell_inches + 0.35) * len(rows)), dpi=100)
    axes = fig.subplots(len(rows), ncols, squeeze=False)
    for r, (q, recs) in enumerate(rows):
        _draw(axes[r][0], _thumb(q, thumb_size), "query", edge="#1f77b4")
        for c in range(1, ncols):
            ax = axes[r][c]
            if c > len(recs):
                ax.set_axis_off()
                continue
            rec = recs[c - 1]
            try:
                thumb = _thumb(image_of(rec), thumb_size)
            except VisualsimError:
                thumb = np.full((thumb_size, thumb_size, 3), 200, np.uint8)
            label = f"#{rec.rank} {_short(str(rec.id))}\n{rec.score:.3f}"
            if label_key and label_key in rec.metadata:
                label += f" {_short(str(rec.metadata[label_key]), 12)}"
            _draw(ax, thumb, label)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def save_figure(fig: Figure, path: str | os.PathLike[str], *, dpi: int = 100) -> Path:
    """Write ``fig`` as a PNG (parent folders created) and return the path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi, format="png", bbox_inches="tight")
    return out


def _rows(query: Any, recs: Sequence[Any]) -> list[tuple[Any, Sequence[Recommendation]]]:
    nested = bool(recs) and all(isinstance(r, (list, tuple)) for r in recs)
    if nested:
        queries = list(query)
        if len(queries) != len(recs):
            raise ValueError(f"{len(queries)} queries but {len(recs)} result lists")
        return list(zip(queries, recs, strict=True))
    return [(query, recs)]


def _thumb(image: Any, size: int) -> np.ndarray:
    return resize_image(load_image(image), size, "pad")


def _draw(ax: Any, image: np.ndarray, label: str, edge: str | None = None) -> None:
    ax.imshow(image)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel(label, fontsize=8)
    for spine in ax.spines.values():
        spine.set_edgecolor(edge or "#cccccc")
        spine.set_linewidth(3 if edge else 1)


def _short(text: str, width: int = 18) -> str:
    return text if len(text) <= width else "…" + text[-(width - 1) :]


__all__ = ["default_image_of", "plot_recommendations", "save_figure"]
