"""Where a key sits in a TOML text, so that a config problem can name its line.

tomllib keeps no positions. This reads the text once, line by line, and remembers the line of
every table header and key under its full path, with array-of-tables elements counted the way
pydantic counts them: `[[sources]]` number 2, then its `port = ...`, is `("sources", 1, "port")`.
It is a locator, not a parser: a key it cannot place falls back to its nearest placed parent.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_ARRAY = re.compile(r"^\s*\[\[\s*([^\]]+?)\s*\]\]")
_TABLE = re.compile(r"^\s*\[\s*([^\[\]]+?)\s*\]")
_NAME = r"""(?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*')"""
_KEY = re.compile(rf"^\s*({_NAME}(?:\s*\.\s*{_NAME})*)\s*=")
_INLINE_KEY = re.compile(r"""[{,]\s*([A-Za-z0-9_-]+|"[^"]*")\s*=""")

Path = tuple[str | int, ...]


def _names(dotted: str) -> list[str]:
    """`a."b.c".d` -> ["a", "b.c", "d"]: a quoted name may hold dots."""
    return [part.strip("\"'") for part in re.findall(_NAME, dotted)]


class TomlLines:
    """The 1-based line of each table header and key of one TOML text, by full path."""

    def __init__(self, text: str) -> None:
        self._lines: dict[Path, int] = {}
        self._current: dict[Path, int] = {}  # array of tables -> index of its latest element
        table: Path = ()
        for number, line in enumerate(text.splitlines(), start=1):
            if m := _ARRAY.match(line):
                *parents, last = _names(m.group(1))
                key = (*self._resolve(parents), last)
                index = self._current.get(key, -1) + 1
                self._current[key] = index
                table = (*key, index)
                self._lines.setdefault(table, number)
            elif m := _TABLE.match(line):
                table = self._resolve(_names(m.group(1)))
                self._lines.setdefault(table, number)
            elif m := _KEY.match(line):
                path = (*table, *_names(m.group(1)))
                self._lines.setdefault(path, number)
                # Keys of an inline table on the same line: `auth = { token = { env = ... } }`.
                for inner in _INLINE_KEY.finditer(line[m.end():]):
                    self._lines.setdefault((*path, inner.group(1).strip("\"'")), number)

    def _resolve(self, names: Sequence[str]) -> Path:
        """Names of a header as a concrete path: an array of tables means its latest element."""
        out: list[str | int] = []
        for name in names:
            out.append(name)
            index = self._current.get(tuple(out))
            if index is not None:
                out.append(index)
        return tuple(out)

    def line(self, path: Sequence[str | int]) -> int | None:
        """The line of `path`, or of its nearest parent that the text shows; None if none."""
        probe = tuple(path)
        while probe:
            found = self._lines.get(probe)
            if found is not None:
                return found
            probe = probe[:-1]
        return None
