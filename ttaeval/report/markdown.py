"""Text for Markdown: a name a user chose (system, group, dimension, metric, title, prompt) shows as
written, never as markup.

Markdown renders raw HTML and reads ``*``, ``_``, `````, ``[..](..)``, ``~`` and (GitHub) ``$`` as
formatting; in a table a ``|`` ends the cell and a newline the row. ``md_text`` escapes all of them,
for inline text and table cells alike; ``md_code`` makes a code span that no backtick can end early.
"""

from __future__ import annotations

import re
from html import escape

_SPECIAL = re.compile(r"[\\`*_~$#|]|(?<=\])[(\[]")
"""Backslash-escaped: emphasis, code, strikethrough, math, heading marks, table pipes, and the ``(``
or ``[`` that would make ``[text]`` a link (brackets alone stay as they are: ``0.1 [0.0, 0.2]``)."""


def _one_line(value: object) -> str:
    return " ".join(str(value).splitlines())


def md_text(value: object) -> str:
    """``value`` as Markdown inline text or a table cell: ``<``, ``>``, ``&`` as HTML entities,
    Markdown specials and ``|`` backslash-escaped, newlines as spaces. An ``_`` inside a word
    (``clipping_ratio``) cannot start emphasis and is left alone."""
    text = escape(_one_line(value), quote=False)

    def sub(m: re.Match) -> str:
        i = m.start()
        if m.group() == "_" and 0 < i < len(text) - 1 and text[i - 1].isalnum() and text[i + 1].isalnum():
            return "_"
        return "\\" + m.group()

    return _SPECIAL.sub(sub, text)


def md_code(value: object) -> str:
    """``value`` as a Markdown code span (shown verbatim: no escapes apply inside), fenced by more
    backticks than any run of them in it. Not for table cells (GitHub splits them on ``|`` even in
    code); use ``md_text`` there."""
    text = _one_line(value)
    fence = "`" * (max((len(run) for run in re.findall("`+", text)), default=0) + 1)
    if text[:1] in ("`", " ") or text[-1:] in ("`", " "):
        text = f" {text} "  # one space each side is stripped again by the renderer
    return f"{fence}{text}{fence}"
