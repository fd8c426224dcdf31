"""OData v2 pieces of the SAP simulator: error bodies, `$filter`, `$select`, paging, formats.

The `$filter` subset: `Prop eq|ne <literal>` with string literals ('it''s'), null, true, false
and integers, combined with `and` / `or` (and binds tighter) and parentheses.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

SERVICE = "API_MAINTNOTIFICATION"
JSON = "application/json"

Entity = dict[str, Any]
Predicate = Callable[[Mapping[str, Any]], bool]


class ODataError(Exception):
    """An error answer: status, T100-style code, message, and per-property details."""

    def __init__(self, status: int, code: str, message: str,
                 details: list[dict[str, str]] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details or []

    def body(self) -> bytes:
        return error_body(self.code, self.message, self.details)


def detail(code: str, message: str, prop: str = "") -> dict[str, str]:
    return {"code": code, "message": message, "propertyref": prop, "severity": "error",
            "target": prop}


def error_body(code: str, message: str, details: list[dict[str, str]] | None = None) -> bytes:
    """The SAP Gateway error document (UPSTREAM-APIS §1.4), with innererror and errordetails."""
    now = datetime.now(UTC)
    return orjson.dumps({"error": {
        "code": code,
        "message": {"lang": "en", "value": message},
        "innererror": {
            "application": {"component_id": "PM-WOC-MN", "service_namespace": "/SAP/",
                            "service_id": SERVICE, "service_version": "0001"},
            "transactionid": uuid.uuid4().hex.upper(),
            "timestamp": now.strftime("%Y%m%d%H%M%S.") + f"{now.microsecond:06d}0",
            "Error_Resolution": {
                "SAP_Transaction": "For backend administrators: use ADT feed reader "
                                   "\"SAP Gateway Error Log\" or run transaction /IWFND/ERROR_LOG",
                "SAP_Note": "See SAP Note 1797736 for error analysis "
                            "(https://service.sap.com/sap/support/notes/1797736)"},
            "errordetails": details or [],
        }}})


# --- values ------------------------------------------------------------------------------

DATE_RE = re.compile(r"^/Date\((-?\d+)(?:[+-]\d{4})?\)/$")
TIME_RE = re.compile(r"^PT(\d{2})H(\d{2})M(\d{2})S$")


def odata_date(when: datetime) -> str:
    day = when.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return f"/Date({int(day.timestamp()) * 1000})/"


def odata_time(when: datetime) -> str:
    return f"PT{when.hour:02d}H{when.minute:02d}M{when.second:02d}S"


def odata_datetime_offset(when: datetime) -> str:
    return f"/Date({int(when.timestamp() * 1000)}+0000)/"


def parse_key_literal(text: str) -> str | None:
    """`'10000020'` (or `MaintenanceNotification='10000020'`) to its value; None if malformed."""
    m = re.fullmatch(r"(?:MaintenanceNotification=)?'((?:[^']|'')*)'", text)
    return m.group(1).replace("''", "'") if m else None


# --- $filter -----------------------------------------------------------------------------

_TOKEN = re.compile(r"\s*(?:(?P<paren>[()])|(?P<str>'(?:[^']|'')*')|(?P<num>-?\d+)\b|"
                    r"(?P<word>[A-Za-z_][A-Za-z0-9_]*))")


def _tokens(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise ODataError(400, "/IWBEP/CM_MGW_RT/004",
                             f"Invalid token at position {pos} in $filter")
        kind = m.lastgroup or ""
        out.append((kind, m.group(kind)))
        pos = m.end()
    return out


@dataclass
class _Parser:
    tokens: list[tuple[str, str]]
    properties: Collection[str]
    pos: int = 0
    used: set[str] = field(default_factory=set)

    def _peek(self) -> tuple[str, str] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def _next(self, what: str) -> tuple[str, str]:
        tok = self._peek()
        if tok is None:
            raise _syntax(f"$filter ends where {what} was expected")
        self.pos += 1
        return tok

    def expr(self) -> Predicate:
        parts = [self.term()]
        while (tok := self._peek()) is not None and tok == ("word", "or"):
            self.pos += 1
            parts.append(self.term())
        return parts[0] if len(parts) == 1 else (lambda e: any(p(e) for p in parts))

    def term(self) -> Predicate:
        parts = [self.factor()]
        while (tok := self._peek()) is not None and tok == ("word", "and"):
            self.pos += 1
            parts.append(self.factor())
        return parts[0] if len(parts) == 1 else (lambda e: all(p(e) for p in parts))

    def factor(self) -> Predicate:
        kind, text = self._next("a property or '('")
        if (kind, text) == ("paren", "("):
            inner = self.expr()
            if self._next("')'") != ("paren", ")"):
                raise _syntax("')' expected in $filter")
            return inner
        if kind != "word" or text not in self.properties:
            raise ODataError(400, "/IWBEP/CM_MGW_RT/022",
                             f"Property '{text}' not found in type 'MaintenanceNotificationType'")
        op_kind, op = self._next("an operator")
        if op_kind != "word" or op not in ("eq", "ne"):
            raise ODataError(400, "/IWBEP/CM_MGW_RT/004",
                             f"Operator '{op}' is not supported by this simulator (eq, ne)")
        value = _literal(self._next("a literal"))
        prop = text
        if op == "eq":
            return lambda e: _norm(e.get(prop)) == value
        return lambda e: _norm(e.get(prop)) != value


def _syntax(message: str) -> ODataError:
    return ODataError(400, "/IWBEP/CM_MGW_RT/004", message)


def _norm(value: Any) -> Any:
    return None if value == "" else value  # SAP returns empty strings where the value is null


def _literal(tok: tuple[str, str]) -> Any:
    kind, text = tok
    if kind == "str":
        return _norm(text[1:-1].replace("''", "'"))
    if kind == "num":
        return int(text)
    if kind == "word" and text in ("null", "true", "false"):
        return {"null": None, "true": True, "false": False}[text]
    raise _syntax(f"'{text}' is not a literal")


def parse_filter(text: str, properties: Collection[str]) -> Predicate:
    parser = _Parser(_tokens(text), properties)
    pred = parser.expr()
    if parser.pos != len(parser.tokens):
        raise _syntax(f"Unexpected '{parser.tokens[parser.pos][1]}' in $filter")
    return pred


# --- $select, $top, $skip ------------------------------------------------------------------


def parse_select(text: str | None, properties: Collection[str]) -> list[str] | None:
    if text is None or text.strip() in ("", "*"):
        return None
    names = [n.strip() for n in text.split(",") if n.strip()]
    for n in names:
        if n not in properties:
            raise ODataError(400, "/IWBEP/CM_MGW_RT/022",
                             f"Property '{n}' not found in type 'MaintenanceNotificationType'")
    return names


def project(entity: Mapping[str, Any], select: list[str] | None) -> Entity:
    """The entity as sent: the selected properties (all without $select) and __metadata."""
    keep = select if select is not None else [k for k in entity if not k.startswith("_")]
    out: Entity = {"__metadata": entity["__metadata"]}
    out.update({k: entity.get(k) for k in keep})
    return out


def non_negative(query: Mapping[str, str], name: str) -> int | None:
    raw = query.get(name)
    if raw is None:
        return None
    if not raw.isdigit():
        raise _syntax(f"Invalid value '{raw}' for system query option {name}")
    return int(raw)
