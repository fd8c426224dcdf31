"""SapPmSink.domain_problems against the SAP simulator's value helps over a real socket: the
rules' priorities through priority_map, failure codes in the damage catalog, and a value help
the system does not offer said in plain words (not taken for an empty domain)."""

from __future__ import annotations

import pytest

from gateway.upstream.rest import UpstreamCheckError
from simulators.sap_pm import SapPmSimulator
from tests.upstream.sap_pm.conftest import SinkFactory


async def test_known_priorities_and_codes_are_fine(sim: SapPmSimulator,
                                                   make_sink: SinkFactory) -> None:
    sink = make_sink(sim.url)
    assert await sink.domain_problems(priorities=[1, 2, 3, 4],
                                      failure_codes=["PUMP/BRG", "OVHT", ""]) == []


async def test_a_priority_mapped_outside_the_domain_is_named(sim: SapPmSimulator,
                                                             make_sink: SinkFactory) -> None:
    sink = make_sink(sim.url, priority_map={1: "1", 2: "2", 3: "3", 4: "9"})
    assert await sink.domain_problems(priorities=[2, 4], failure_codes=[]) == [
        "priority 4 is sent as MaintPriority 9, which SAP does not define for priority type "
        "PM (SAP has: 1, 2, 3, 4)"]
    other_type = make_sink(sim.url, domains={"priority_type": "QM"})
    said = await other_type.domain_problems(priorities=[1], failure_codes=[])
    assert said == ["priority 1 is sent as MaintPriority 1, which SAP does not define for "
                    "priority type QM (SAP has: none)"]


async def test_a_value_help_the_system_lacks_cannot_answer(sim: SapPmSimulator,
                                                           make_sink: SinkFactory) -> None:
    sink = make_sink(sim.url, domains={"code_entity_set": "ZVH_DAMAGE_CODES"})
    with pytest.raises(UpstreamCheckError, match=r"value help ZVH_DAMAGE_CODES answered HTTP "
                       r"404 .*set \[upstreams.domains\]"):
        await sink.domain_problems(priorities=[], failure_codes=["PUMP/BRG"])
