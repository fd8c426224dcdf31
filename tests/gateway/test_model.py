"""The data types' promises: hot records equal and hash as frozen dataclasses do, at run time
(gateway.model.hot_record; that they are frozen to the type checker is checked by mypy itself,
in gateway/model.py)."""

from __future__ import annotations

import dataclasses

import pytest

from gateway.model import (
    Delivery,
    MessageKind,
    OutboxMessage,
    Outcome,
    RequestDetails,
    Transition,
    TransitionKind,
)


def test_a_hot_record_compares_and_hashes_by_its_fields() -> None:
    one, same, other = (Delivery(7, Outcome.ACCEPTED, receipt="SR-1"),
                        Delivery(7, Outcome.ACCEPTED, receipt="SR-1"),
                        Delivery(7, Outcome.RETRY))
    assert one == same and hash(one) == hash(same) and one != other
    assert {one, same, other} == {one, other}
    changed = dataclasses.replace(one, receipt="SR-2")
    assert changed.receipt == "SR-2" and one.receipt == "SR-1"  # a copy, the original kept
    request = RequestDetails("High vibration on pump-1", 2)
    t = Transition(TransitionKind.RAISED, "vib-high", "pump-1", "vibration", "e1", 2, 7.4, 1.0,
                   "vibration 7.4 above 7.1", request)
    assert t == dataclasses.replace(t) and hash(t) == hash(dataclasses.replace(t))


def test_a_hot_record_is_not_frozen_at_run_time() -> None:
    """What the type checker must therefore refuse (gateway/model.py holds the assignments that
    make `mypy` fail if it stopped): at run time nothing stops them."""
    d = Delivery(1, Outcome.ACCEPTED)
    d.receipt = "x"  # type: ignore[misc]
    m = OutboxMessage("k", "cmms", "a", "e", MessageKind.MAINTENANCE_REQUEST, {}, 1.0)
    m.key = "other"  # type: ignore[misc]
    assert (d.receipt, m.key) == ("x", "other")
    with pytest.raises(TypeError):
        hash(m)  # its body is a dict, as with the frozen dataclass it replaced
