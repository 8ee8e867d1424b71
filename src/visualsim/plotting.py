"""Pictures of recommendations: the query, then its results with id and score.

Needs matplotlib (``pip install visualsim[plot]``); it is imported only here.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import numpy as np

from .errors import ImageLoadError, VisualsimError
from .images import load_image, resize_image

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure


class RecommendationLike(Protocol):
    """What a picture needs of a result: a :class:`visualsim.Recommendation`, typically.

    Typed structurally, so this module imports nothing of the recommender.
    """

    @property
    def id(self) -> Any:
        """The item's id."""
        ...

    @property
    def score(self) -> float:
        """Its similarity to the query."""
        ...

    @property
    def rank(self) -> int:
        """1 for the best match."""
        ...

    @property
    def metadata(self) -> Mapping[str, Any]:
        """Its metadata."""
        ...


_R = TypeVar("_R", bound=RecommendationLike)


def default_image_of(rec: RecommendationLike) -> Any:
    """Find a result's picture: its ``source`` (the image it was added from), else a
    ``path`` in its metadata, else its id if that is a file."""
    source = getattr(rec, "source", None)
    if isinstance(source, str) and os.path.isfile(source):
        return source
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
    recommendations: Sequence[_R] | Sequence[Sequence[_R]],
    *,
    image_of: Callable[[_R], Any] | None = None,
    label_key: str | None = None,
    thumb_size: int = 160,
    cell_inches: float = 1.9,
    title: str | None = None,
    query_label: str | Sequence[str | None] | None = None,
    per_row: int = 5,
    label_width: int | None = None,
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
        default: its ``source`` (the image it was added from), else a ``path``
        in its metadata, else its id when that is a file.
    label_key
        A metadata key printed under each result (e.g. ``"articleType"``); an
        item without it (or with ``None``) shows no label.
    thumb_size
        Thumbnails are letterboxed to this many pixels square.
    cell_inches
        Size of one cell in inches.
    title
        Figure title (wrapped to the figure's width).
    query_label
        What the query panel says under "query": its file name or id; one per
        query for several. Default: the file name when the query is a path.
    per_row
        Results per row; more results wrap onto further rows under the query
        (``k=10`` draws two rows of five, not one long strip).
    label_width
        Characters per line under a result (its id, and its ``label_key`` value,
        which wraps onto a second line before anything is cut). Default: what
        fits the cell, about 12 per inch of ``cell_inches`` (22 at the default).

    Returns
    -------
    matplotlib.figure.Figure
        Save it with :func:`save_figure` (or ``fig.savefig(path, bbox_inches="tight")``).

    Notes
    -----
    A result whose image cannot be loaded is drawn as a grey cell with its
    id, so one missing file never spoils the picture. Long ids are shortened in
    the middle, so both the folder and the file name stay readable.
    """
    from matplotlib.figure import Figure

    if not isinstance(per_row, int) or isinstance(per_row, bool) or per_row < 1:
        raise ValueError(f"per_row must be a positive integer, got {per_row!r}")
    if label_width is None:
        label_width = max(8, int(cell_inches * 12))
    elif not isinstance(label_width, int) or isinstance(label_width, bool) or label_width < 4:
        raise ValueError(f"label_width must be an integer of at least 4, got {label_width!r}")
    rows = _rows(query, recommendations)
    names = _query_labels(query_label, rows)
    image_of = image_of or default_image_of
    ncols = 1 + max(1, min(per_row, max((len(r) for _, r in rows), default=0)))
    # each query takes ceil(len/per_row) lines of cells (at least one)
    lines = [max(1, -(-len(recs) // (ncols - 1))) for _, recs in rows]
    height = (cell_inches + 0.45) * sum(lines)
    fig = Figure(figsize=(cell_inches * ncols, height + (0.5 if title else 0)), dpi=100)
    axes = fig.subplots(sum(lines), ncols, squeeze=False)
    line = 0
    for (q, recs), name, n_lines in zip(rows, names, lines, strict=True):
        label = "query" if not name else f"query\n{_short(name, 30)}"
        _draw(axes[line][0], _thumb(q, thumb_size), label, edge="#1f77b4")
        for extra in range(1, n_lines):
            axes[line + extra][0].set_axis_off()
        for i in range(n_lines * (ncols - 1)):
            ax = axes[line + i // (ncols - 1)][1 + i % (ncols - 1)]
            if i >= len(recs):
                ax.set_axis_off()
                continue
            rec = recs[i]
            try:
                thumb = _thumb(image_of(rec), thumb_size)
            except VisualsimError:
                thumb = np.full((thumb_size, thumb_size, 3), 200, np.uint8)
            rank = f"#{rec.rank} "
            text = rank + _short(str(rec.id), max(4, label_width - len(rank)))
            text += f"\n{min(1.0, max(-1.0, rec.score)):.3f}"
            value = rec.metadata.get(label_key) if label_key else None
            if value is not None:
                text += "\n" + _wrapped(str(value), label_width)
            _draw(ax, thumb, text)
        line += n_lines
    if title:
        # wrapped to the figure's width (about 11 characters per inch at 12 pt), so a
        # long title is never cut at the right edge
        width = max(20, int(cell_inches * ncols * 11))
        fig.suptitle("\n".join(textwrap.wrap(title, width)), fontsize=12)
    fig.tight_layout()
    return fig


def save_figure(fig: Figure, path: str | os.PathLike[str], *, dpi: int = 100) -> Path:
    """Write ``fig`` as a PNG (parent folders created) and return the path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi, format="png", bbox_inches="tight")
    return out


def _rows(query: Any, recs: Sequence[Any]) -> list[tuple[Any, Sequence[Any]]]:
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


def _wrapped(text: str, width: int, lines: int = 2) -> str:
    """``text`` on at most ``lines`` lines of ``width``; only what still does not fit is cut."""
    parts = textwrap.wrap(text, width) or [""]
    if len(parts) > lines:
        rest = " ".join(parts[lines - 1 :])
        parts = [*parts[: lines - 1], _short(rest, width)]
    return "\n".join(_short(p, width) for p in parts)


def _short(text: str, width: int = 22) -> str:
    """Shorten in the middle, keeping both ends: ``'fashion/…/s2-crop-tl.jpg'``."""
    if len(text) <= width:
        return text
    tail = (width - 1) // 2 + (width - 1) % 2
    head = width - 1 - tail
    return text[:head] + "…" + text[-tail:]


def _query_labels(labels: Any, rows: list[tuple[Any, Any]]) -> list[str | None]:
    if labels is None:
        return [_name_of(q) for q, _ in rows]
    if isinstance(labels, str):
        labels = [labels]
    labels = list(labels)
    if len(labels) != len(rows):
        raise ValueError(f"{len(labels)} query labels for {len(rows)} queries")
    return [None if v is None else str(v) for v in labels]


def _name_of(query: Any) -> str | None:
    if isinstance(query, (str, os.PathLike)):
        return Path(query).name
    return None


__all__ = ["default_image_of", "plot_recommendations", "save_figure"]
