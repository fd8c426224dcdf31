"""The simulator's oslc.where / select / orderBy subset against a plain-Python reference."""

from __future__ import annotations

import contextlib
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from simulators.maximo import oslc

ATTRS = ("siteid", "status", "reportedpriority")
VALUES: dict[str, list[Any]] = {"siteid": ["BEDFORD", "NASHUA", "TEXAS"],
                                "status": ["NEW", "QUEUED", "RESOLVED"],
                                "reportedpriority": [1, 2, 3]}

records = st.lists(st.fixed_dictionaries({a: st.sampled_from(VALUES[a]) for a in ATTRS}),
                   max_size=8)


@st.composite
def clauses(draw: st.DrawFn) -> tuple[str, Any]:
    """(oslc text, reference predicate) for one condition."""
    attr = draw(st.sampled_from(ATTRS))
    op = draw(st.sampled_from(["=", "!=", "in"]))

    def lit(v: Any) -> str:
        return str(v) if isinstance(v, int) else f'"{v}"'

    if op == "in":
        vals = draw(st.lists(st.sampled_from(VALUES[attr]), min_size=1, max_size=3))
        return (f"{attr} in [{','.join(lit(v) for v in vals)}]",
                lambda r: r[attr] in vals)
    v = draw(st.sampled_from(VALUES[attr]))
    return (f"{attr}{op}{lit(v)}",
            (lambda r: r[attr] == v) if op == "=" else (lambda r: r[attr] != v))


@settings(max_examples=200, deadline=None)
@given(records, st.lists(clauses(), min_size=1, max_size=3))
def test_where_matches_the_reference(rows: list[dict[str, Any]],
                                     parts: list[tuple[str, Any]]) -> None:
    conds = oslc.parse_where(" and ".join(text for text, _ in parts), ATTRS.__contains__)
    got = [r for r in rows if all(c.matches(r) for c in conds)]
    assert got == [r for r in rows if all(pred(r) for _, pred in parts)]


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet='abc _=!<>[]",%0123456789-.', max_size=40))
def test_garbage_is_a_syntax_error_never_a_crash(text: str) -> None:
    with contextlib.suppress(oslc.QuerySyntaxError):
        oslc.parse_where(text, lambda _: True)


@given(records)
def test_order_by_sorts_like_python(rows: list[dict[str, Any]]) -> None:
    got = oslc.sort_records(rows, oslc.parse_order("-reportedpriority,+siteid"))
    assert got == sorted(sorted(rows, key=lambda r: r["siteid"]),
                         key=lambda r: r["reportedpriority"], reverse=True)


def test_select_projects_children() -> None:
    rec = {"ticketid": "1", "status": "NEW", "worklog": [{"description": "a", "logtype": "X"}]}
    sel = oslc.parse_select("ticketid, worklog{description}")
    assert oslc.project(rec, sel) == {"ticketid": "1", "worklog": [{"description": "a"}]}
    assert oslc.project(rec, oslc.parse_select("*")) == rec
