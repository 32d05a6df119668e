"""kpctl's tables as text: tabulate's plain layout, fitted to a width when asked by
wrapping the widest text columns (textwrap), never by cutting what a cell holds. Pure:
the CLI decides the width (a terminal's, or none for --wide and pipes)."""
from __future__ import annotations

import re
import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

# Text columns are not wrapped narrower than this, however narrow the terminal: a
# table of words one letter wide is no table; past it, lines run wider than asked.
MIN_WRAP_WIDTH = 16
_GAP = 2  # the spaces between two columns in tabulate's "simple" layout


def render_table(rows: Sequence[Mapping[str, Any]], headers: Sequence[str], width: int | None = None) -> str:
    """rows' headers columns under the headers in capitals. With width, the text columns
    widest first are wrapped, each cell's lines kept, until every line is at most width
    wide (or each such column is MIN_WRAP_WIDTH); numbers are never wrapped."""
    from tabulate import tabulate

    names = [h.upper() for h in headers]
    cells = [[row[h] for h in headers] for row in rows]
    if width is not None:
        cells, names = _fitted(cells, names, width)
    text = _plain_text_table(cells, names)
    return text if text is not None else str(tabulate(cells, headers=names))


# Cells tabulate reads or measures its own way: non-ASCII, line breaks (a fitted
# table's wrapped lines), and text that may be a number (checked one by one).
_LINE_BREAK = re.compile(r"[\n\r\v\f\x1c-\x1e]")
_MAYBE_NUMBER = re.compile(r"(?:^|\x00)([-+.0-9][^\x00]*|(?i:inf|infinity|nan)(?=\x00|$))")
# What tabulate reads as a number with thousands separators (_isnumber_with_thousands_separator).
_THOUSANDS = re.compile(r"^(([+-]?[0-9]{1,3})(?:,([0-9]{3}))*)?(?(1)\.[0-9]*|\.[0-9]+)?$")


def _number_like(text: str) -> bool:
    """Whether tabulate could read text as a number (and so align it as one)."""
    if text[:1].isdigit():
        return True
    try:
        float(text)
    except ValueError:
        return text != "" and _THOUSANDS.match(text) is not None
    return True


def _plain_text_table(cells: list[list[Any]], names: list[str]) -> str | None:
    """tabulate's "simple" layout of a table of one-line text and booleans, built
    directly: tabulate infers every cell's type, which takes seconds for `funcs '*'`'s
    100,000 rows. None where a cell or a header needs tabulate itself (numbers, text
    tabulate may read as one, non-ASCII, line breaks) or a column is empty (tabulate
    aligns its header its own way)."""
    from tabulate import MIN_PADDING

    columns: list[list[str]] = []
    for i, name in enumerate(names):
        column = []
        for row in cells:
            cell = row[i]
            if cell is None:
                column.append("")
            elif isinstance(cell, (str, bool)):
                column.append(str(cell).strip())  # as tabulate prints a cell
            else:
                return None
        joined = "\x00".join(column)
        if (not (joined + name).isascii() or _LINE_BREAK.search(joined + name) or not joined.replace("\x00", "")
                or any(_number_like(m) for m in _MAYBE_NUMBER.findall(joined))):
            return None
        columns.append(column)
    widths = [max(len(name) + MIN_PADDING, *map(len, column)) for name, column in zip(names, columns, strict=True)]
    return "\n".join([
        "  ".join(n.ljust(w) for n, w in zip(names, widths, strict=True)).rstrip(),
        "  ".join("-" * w for w in widths),
        *("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in zip(*columns)),
    ])


def _column_width(header: str, column: Sequence[Any]) -> int:
    """How wide tabulate prints column: as its longest line, or its header's with
    tabulate's padding; a column of floats as tabulate aligns their decimal points."""
    from tabulate import MIN_PADDING, tabulate

    if any(isinstance(c, float) for c in column):
        return max(map(len, tabulate([[c] for c in column], headers=[header]).splitlines()))
    padded: int = MIN_PADDING
    return max([max(map(len, header.split("\n"))) + padded,
                *(len(line) for cell in column for line in ("" if cell is None else str(cell)).split("\n"))])


def _is_text(column: Sequence[Any]) -> bool:
    return any(isinstance(c, str) for c in column)


class _Wrapper(textwrap.TextWrapper):
    """textwrap's wrapping, but a word longer than a line starts a line of its own
    before it is split, rather than filling the end of the line before it."""

    def _handle_long_word(self, reversed_chunks: list[str], cur_line: list[str], cur_len: int, width: int) -> None:
        if not cur_line:
            super()._handle_long_word(reversed_chunks, cur_line, cur_len, width)


def wrap_cell(value: object, width: int) -> str:
    """value's text with each of its lines wrapped at width: every character but the
    spaces where a line is broken kept, long words split rather than cut."""
    wrapper = _Wrapper(width, break_on_hyphens=False)
    return "\n".join("\n".join(wrapper.wrap(line) or [""]) for line in str(value).split("\n"))


def _fitted(cells: list[list[Any]], names: list[str], width: int) -> tuple[list[list[Any]], list[str]]:
    columns = [[row[i] for row in cells] for i in range(len(names))]
    text = [i for i, c in enumerate(columns) if _is_text(c)]
    widths = [_column_width(n, c) for n, c in zip(names, columns, strict=True)]
    fixed = sum(w for i, w in enumerate(widths) if i not in text) + _GAP * (len(names) - 1)
    room = width - fixed
    if not text or fixed + sum(widths[i] for i in text) <= width:
        return cells, names
    # The widest cap that fits: the widest columns come down to it, the others stay.
    cap = max(widths[i] for i in text)
    while cap > MIN_WRAP_WIDTH and sum(min(widths[i], cap) for i in text) > room:
        cap -= 1
    wrapped = {i for i in text if widths[i] > cap}
    cells = [[wrap_cell(v, cap) if i in wrapped else v for i, v in enumerate(row)] for row in cells]
    names = [wrap_cell(n, cap) if i in wrapped else n for i, n in enumerate(names)]
    return cells, names
