"""`MaximoSink.domain_problems` (for `check --online`): the rules' priorities against Maximo's
numeric domain TICKETPRIORITY, their failure codes against the failure hierarchy's classes, in
plain words; an answer Maximo cannot give is an UpstreamCheckError, never "all fine".
Real sockets, the Maximo simulator.
"""

from __future__ import annotations

import pytest

from gateway.upstream.maximo import MaximoSinkConfig
from gateway.upstream.rest import UpstreamCheckError
from simulators.maximo import MaximoSimulator
from tests.upstream.maximo.conftest import ASSETS, SinkFactory


async def test_known_priorities_and_failure_classes_are_fine(
        make_sink: SinkFactory, maximo: MaximoSimulator) -> None:
    sink = make_sink(maximo.url)
    assert await sink.domain_problems(priorities=[1, 2, 3, 4],
                                      failure_codes=["BEARING", "VIB", ""]) == []
    assert await sink.domain_problems(priorities=[], failure_codes=[]) == []


async def test_a_priority_outside_the_site_domain_is_named() -> None:
    async with MaximoSimulator(assets=ASSETS, priority_domain=(1, 3, 5)) as sim:
        sink = MaximoSinkConfig.model_validate({
            "type": "maximo", "name": "maximo", "base_url": sim.url, "siteid": "BEDFORD",
            "auth": {"kind": "api_key", "key": {"value": "test-key"}},
            "priority_map": {1: 1, 2: 2, 3: 3, 4: 5}}).build()
        try:
            problems = await sink.domain_problems(priorities=[1, 2, 4], failure_codes=[])
        finally:
            await sink.aclose()
    assert problems == ["priority 2 is sent as reportedpriority 2, which is not in Maximo's "
                        "domain TICKETPRIORITY (it has: 1, 3, 5)"]


async def test_unknown_and_non_class_failure_codes_are_named(
        make_sink: SinkFactory, maximo: MaximoSimulator) -> None:
    sink = make_sink(maximo.url)
    problems = await sink.domain_problems(priorities=[],
                                          failure_codes=["BEARING", "NOISE", "GEARBOX"])
    assert len(problems) == 2
    assert problems[0].startswith("failure code 'GEARBOX' is not in Maximo's failure codes")
    assert problems[1].startswith("failure code 'NOISE' is a problem, cause or remedy")


async def test_failure_codes_are_per_organization(make_sink: SinkFactory,
                                                  maximo: MaximoSimulator) -> None:
    sink = make_sink(maximo.url, orgid="OTHERORG")
    [problem] = await sink.domain_problems(priorities=[], failure_codes=["BEARING"])
    assert "organization OTHERORG" in problem


async def test_no_answer_is_an_error_not_a_clean_bill(make_sink: SinkFactory,
                                                      maximo: MaximoSimulator) -> None:
    missing = make_sink(maximo.url, domains={"failure_list_structure": "mxapinosuch"})
    with pytest.raises(UpstreamCheckError, match="mxapinosuch answered HTTP 404"):
        await missing.domain_problems(priorities=[], failure_codes=["BEARING"])
    no_values = make_sink(maximo.url, domains={"priority_domain": "WOPRIORITYX"})
    with pytest.raises(UpstreamCheckError, match="no values in numeric domain"):
        await no_values.domain_problems(priorities=[1], failure_codes=[])
    await maximo.go_down()
    with pytest.raises(UpstreamCheckError):
        await make_sink(maximo.url).domain_problems(priorities=[1], failure_codes=[])
