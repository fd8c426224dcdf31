"""OAuth2 client credentials for SAP, against the simulator's token endpoint over real sockets:
a cached token, renewed before it expires; a 401 gets one fresh token and one retry; a client
that SAP refuses is a loud configuration fault, not an endless retry.

Assumed, not documented by SAP for this service ([T] in UPSTREAM-WORKFLOW-APIS §4): the AS ABAP
token path `/sap/bc/sec/oauth2/token?sap-client=NNN` and RFC 6749 answers. Documented and held
strictly by the simulator: client credentials in an HTTP Basic header, grant_type in a form.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from gateway.model import Outcome
from gateway.upstream.rest import UpstreamCheckError
from gateway.upstream.sap_pm import SapPmSink
from simulators.sap_pm import SapPmSimulator
from simulators.sap_pm.oauth import TokenIssuer
from tests.harness import wait_for
from tests.upstream.sap_pm.conftest import EQUIPMENT, SinkFactory, record

CLIENT, SECRET = "PB_CLIENT", "s3cret-oauth"
LIFETIME = 4  # seconds: renewed at 2 s (half the lifetime, as the margin of 60 s is longer)


def oauth(secret: str = SECRET) -> dict[str, Any]:
    return {"auth": {"kind": "oauth2", "client_id": {"value": CLIENT},
                     "client_secret": {"value": secret}, "scope": "API_MAINTNOTIFICATION_0001"}}


@pytest.fixture
async def osim() -> AsyncIterator[SapPmSimulator]:
    s = SapPmSimulator(equipment=EQUIPMENT, oauth_clients={CLIENT: SECRET},
                       token_lifetime_seconds=LIFETIME)
    await s.start()
    try:
        yield s
    finally:
        await s.stop()


def issuer(sim: SapPmSimulator) -> TokenIssuer:
    assert sim.oauth is not None
    return sim.oauth


async def test_a_token_is_fetched_once_and_renewed_before_it_expires(
        osim: SapPmSimulator, make_sink: SinkFactory) -> None:
    sink: SapPmSink = make_sink(osim.url, **oauth())
    first = await sink.send([record(episode="ep-1")])
    assert first[0].outcome is Outcome.ACCEPTED, first[0].reason
    assert issuer(osim).issued == 1
    await sink.check()
    assert issuer(osim).issued == 1  # cached: the second exchange reused it

    async def renewed() -> bool:  # keep talking until the sink has renewed its token
        await sink.check()
        return issuer(osim).issued >= 2

    await wait_for(renewed, timeout=LIFETIME * 3, what="a renewed token")
    # Renewed ahead of expiry (at about half its life here), so no request met a 401.
    first_at, second_at = issuer(osim).issued_at[:2]
    assert second_at - first_at <= LIFETIME - 1
    assert issuer(osim).refused == 0
    later = await sink.send([record(episode="ep-2")])
    assert later[0].outcome is Outcome.ACCEPTED
    assert len(osim.notifications) == 2


async def test_a_401_gets_one_fresh_token_and_one_retry(
        osim: SapPmSimulator, make_sink: SinkFactory) -> None:
    sink = make_sink(osim.url, **oauth())
    assert (await sink.send([record(episode="ep-1")]))[0].outcome is Outcome.ACCEPTED
    issuer(osim).revoke_all()  # e.g. the SAP system restarted: our token died early
    got = await sink.send([record(episode="ep-2")])
    assert got[0].outcome is Outcome.ACCEPTED, got[0].reason
    assert issuer(osim).issued == 2
    assert issuer(osim).refused == 1  # exactly one request met the dead token
    assert len(osim.notifications) == 2


async def test_a_refused_client_is_a_loud_configuration_fault(
        osim: SapPmSimulator, make_sink: SinkFactory) -> None:
    sink = make_sink(osim.url, **oauth(secret="wrong"))
    got = await sink.send([record()])
    assert got[0].outcome is Outcome.REJECTED
    assert got[0].reason.startswith("SAP refused the OAuth2 token: check client id/secret")
    assert "invalid_client" in got[0].reason
    assert osim.notifications == []
    with pytest.raises(UpstreamCheckError, match="SAP refused the OAuth2 token"):
        await sink.check()


async def test_a_token_refused_even_fresh_is_rejected_after_one_refresh(
        osim: SapPmSimulator, make_sink: SinkFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    # The token endpoint issues tokens, but the service does not take them (OAuth not enabled
    # for the service in /IWFND/MAINT_SERVICE): one refresh, then a dead letter, no loop.
    monkeypatch.setattr(issuer(osim), "client_of", lambda token: None)
    sink = make_sink(osim.url, **oauth())
    got = await sink.send([record()])
    assert got[0].outcome is Outcome.REJECTED
    assert "SAP refused the OAuth2 token: check client id/secret" in got[0].reason
    assert issuer(osim).issued == 2
    assert osim.notifications == []


async def test_basic_auth_without_kind_still_works(sim: SapPmSimulator,
                                                   make_sink: SinkFactory) -> None:
    sink = make_sink(sim.url)  # `auth = { user, password }` as configs had it before OAuth2
    assert (await sink.send([record()]))[0].outcome is Outcome.ACCEPTED
