"""The subset of Maximo's OSLC query language the simulator understands.

`oslc.where`: `attr = "text"`, `attr = 12`, `attr != ...`, `<`, `<=`, `>`, `>=`,
`attr in ["A","B"]`, joined by `and`; a string with `%` is a LIKE pattern. `oslc.select`:
`a,b,child{c,d}` or `*`. `oslc.orderBy`: `+a,-b` (a bare name sorts ascending).
Attribute names are case-insensitive, as in Maximo.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any


class QuerySyntaxError(ValueError):
    """A clause the simulator (and, for these cases, Maximo) cannot parse."""


_TOKEN = re.compile(r'\s*(?:(?P<str>"[^"]*")|(?P<num>-?\d+(?:\.\d+)?)|(?P<op>!=|>=|<=|=|<|>)'
                    r'|(?P<punct>[\[\],])|(?P<word>[A-Za-z_][A-Za-z0-9_.]*))')
_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "=": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le,
    ">": operator.gt, ">=": operator.ge,
}

Value = str | int | float


@dataclass(frozen=True, slots=True)
class Condition:
    attr: str
    op: str  # one of _OPS or "in"
    values: tuple[Value, ...]

    def matches(self, record: Mapping[str, Any]) -> bool:
        have = record.get(self.attr)
        if have is None:
            return False
        if self.op == "in":
            return any(_equal(have, v) for v in self.values)
        want = self.values[0]
        if self.op == "=":
            return _equal(have, want)
        if self.op == "!=":
            return not _equal(have, want)
        try:
            return _OPS[self.op](_comparable(have, want), want)
        except TypeError:
            return False


def _comparable(have: Any, want: Value) -> Any:
    if isinstance(want, int | float) and isinstance(have, str):
        try:
            return float(have)
        except ValueError:
            return have
    return have


def _equal(have: Any, want: Value) -> bool:
    if isinstance(want, str):
        text = str(have)
        if "%" in want:
            pattern = ".*".join(re.escape(p) for p in want.split("%"))
            return re.fullmatch(pattern, text, re.IGNORECASE | re.DOTALL) is not None
        return text == want
    try:
        return float(have) == float(want)
    except (TypeError, ValueError):
        return False


def _tokens(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise QuerySyntaxError(f"cannot parse oslc.where near {text[pos:pos + 20]!r}")
        kind = m.lastgroup
        assert kind is not None
        out.append((kind, m.group(kind)))
        pos = m.end()
    return out


def _literal(kind: str, raw: str) -> Value:
    if kind == "str":
        return raw[1:-1]
    if kind == "num":
        return float(raw) if "." in raw else int(raw)
    raise QuerySyntaxError(f"expected a quoted string or a number, got {raw!r}")


def parse_where(text: str, known: Callable[[str], bool]) -> list[Condition]:
    """Conditions joined by `and`. `known(attr)` says whether an attribute exists."""
    toks = _tokens(text)
    conds: list[Condition] = []
    i = 0

    def take() -> tuple[str, str]:
        nonlocal i
        if i >= len(toks):
            raise QuerySyntaxError("oslc.where ends too early")
        i += 1
        return toks[i - 1]

    while True:
        kind, attr = take()
        if kind != "word":
            raise QuerySyntaxError(f"expected an attribute name, got {attr!r}")
        attr = attr.lower()
        if not known(attr):
            raise QuerySyntaxError(f"unknown attribute {attr!r} in oslc.where")
        kind, op = take()
        if kind == "word" and op.lower() == "in":
            if take() != ("punct", "["):
                raise QuerySyntaxError("expected '[' after 'in'")
            values: list[Value] = []
            while True:
                values.append(_literal(*take()))
                sep = take()
                if sep == ("punct", "]"):
                    break
                if sep != ("punct", ","):
                    raise QuerySyntaxError(f"expected ',' or ']' in the list, got {sep[1]!r}")
            conds.append(Condition(attr, "in", tuple(values)))
        elif kind == "op":
            conds.append(Condition(attr, op, (_literal(*take()),)))
        else:
            raise QuerySyntaxError(f"expected an operator after {attr!r}, got {op!r}")
        if i == len(toks):
            return conds
        kind, word = take()
        if kind != "word" or word.lower() != "and":
            raise QuerySyntaxError(f"expected 'and', got {word!r} (only 'and' is supported)")


@dataclass(frozen=True, slots=True)
class Selected:
    name: str
    children: tuple[Selected, ...] | None = None  # `child{a,b}`; ("*",) for all


def parse_select(text: str) -> list[Selected] | None:
    """None means `*` (everything)."""
    text = text.strip()
    if text in ("", "*"):
        return None
    items: list[Selected] = []
    for part in _split_top(text):
        part = part.strip()
        if "{" in part:
            if not part.endswith("}"):
                raise QuerySyntaxError(f"unbalanced braces in oslc.select item {part!r}")
            name, inner = part[:-1].split("{", 1)
            kids = parse_select(inner)
            items.append(Selected(name.strip().lower(),
                                  tuple(kids) if kids is not None else (Selected("*"),)))
        elif part:
            items.append(Selected(part.lower()))
    return items


def _split_top(text: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in text:
        depth += {"{": 1, "}": -1}.get(ch, 0)
        if depth < 0:
            raise QuerySyntaxError("unbalanced braces in oslc.select")
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    if depth != 0:
        raise QuerySyntaxError("unbalanced braces in oslc.select")
    return [*parts, cur]


def project(record: Mapping[str, Any], select: Sequence[Selected] | None) -> dict[str, Any]:
    """The selected attributes of a record (children projected in turn)."""
    if select is None or any(s.name == "*" for s in select):
        return dict(record)
    out: dict[str, Any] = {}
    for item in select:
        if item.name not in record:
            continue
        value = record[item.name]
        if item.children is not None and isinstance(value, list):
            kids = None if any(c.name == "*" for c in item.children) else item.children
            value = [project(v, kids) for v in value if isinstance(v, Mapping)]
        out[item.name] = value
    return out


def parse_order(text: str) -> list[tuple[str, bool]]:
    """`+a,-b` as [(a, descending=False), (b, True)]. A '+' that arrived unencoded is a
    space by then; it still sorts ascending."""
    keys: list[tuple[str, bool]] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        desc = part.startswith("-")
        name = part.lstrip("+-").strip().lower()
        if not re.fullmatch(r"[a-z_][a-z0-9_.]*", name):
            raise QuerySyntaxError(f"bad oslc.orderBy item {part!r}")
        keys.append((name, desc))
    return keys


def sort_records(records: list[dict[str, Any]], keys: Sequence[tuple[str, bool]]
                 ) -> list[dict[str, Any]]:
    out = list(records)
    for name, desc in reversed(keys):  # stable sorts, last key first
        out.sort(key=lambda r: _sort_key(r.get(name)), reverse=desc)
    return out


def _sort_key(value: Any) -> tuple[int, Any]:
    if value is None:
        return (0, 0)
    if isinstance(value, int | float):
        return (1, value)
    text = str(value)
    return (1, int(text)) if text.isdigit() else (2, text)


def namespaced(doc: Mapping[str, Any]) -> dict[str, Any]:
    """Non-lean JSON: `spi:` attributes, the href as `rdf:about`."""
    return {("rdf:about" if k == "href" else k if ":" in k else f"spi:{k}"): v
            for k, v in doc.items()}


def positive_int(raw: str | None, name: str) -> int | None:
    if raw is None:
        return None
    if not raw.isdigit() or int(raw) < 1:
        raise QuerySyntaxError(f"{name} must be a positive whole number")
    return int(raw)
