"""MkDocs hook: render the Sphinx roles in visualsim's docstrings.

The docstrings are written numpydoc-style with Sphinx roles (``:class:`~visualsim.FlatIndex```),
which mkdocstrings prints literally as ``:class:FlatIndex``. After each page is rendered this
turns every ``:role:`target``` into the target as code and, where the target names a public
object documented on the API page, into a link to it (an optional mkdocs-autorefs reference,
so a target that is not documented stays plain code and never fails the build).
"""

from __future__ import annotations

import html
import re
from typing import Any

ROLE = re.compile(r":(?:py:)?(?:class|func|meth|attr|mod|data|exc|obj|const):<code>([^<]+)</code>")


def _public_objects() -> dict[str, str]:
    """Map public names (``Recommender``, ``visualsim.Recommender``) to their documented path."""
    import visualsim
    from visualsim import errors

    where = {name: f"visualsim.{module}.{name}" for name, module in visualsim._LAZY.items()}
    where.update({name: f"visualsim.errors.{name}" for name in errors.__all__})
    where.update({f"visualsim.{name}": path for name, path in list(where.items())})
    return where


def on_page_content(html_text: str, **kwargs: Any) -> str:
    """Replace ``:role:<code>target</code>`` with code, linked when the target is public."""
    public = _public_objects()

    def replace(match: re.Match[str]) -> str:
        target = html.unescape(match.group(1)).strip()
        short = target.startswith("~")
        target = target.lstrip("~")
        shown = target.rsplit(".", 1)[-1] if short else target
        code = f"<code>{html.escape(shown)}</code>"
        identifier = public.get(target)
        if identifier is None and target.startswith("visualsim."):
            identifier = target
        if identifier is None:
            return code
        return f'<autoref identifier="{html.escape(identifier)}" optional>{code}</autoref>'

    return ROLE.sub(replace, html_text)
