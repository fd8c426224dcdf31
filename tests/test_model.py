from __future__ import annotations

import pytest

from gateway.backoff import Backoff
from gateway.model import Quality, Sample
from gateway.settings import Secret


def test_sample_is_frozen() -> None:
    s = Sample("pump-1", "vibration", 1.0, Quality.GOOD, 0.0)
    with pytest.raises(AttributeError):  # a named tuple: its fields cannot be set
        s.value = 2.0  # type: ignore[misc]
    assert s.value == 1.0


def test_backoff_grows_and_is_capped() -> None:
    b = Backoff(initial_seconds=1, max_seconds=4)
    delays = [b.next_delay() for _ in range(6)]
    assert 0.5 <= delays[0] <= 1
    assert all(2 <= d <= 4 for d in delays[3:])
    b.reset()
    assert b.next_delay() <= 1


def test_secret_sources(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    f = tmp_path / "pw"
    f.write_text("s3cret\n")
    assert Secret(file=f).reveal() == "s3cret"
    monkeypatch.setenv("PB_TEST_PW", "x")
    assert Secret(env="PB_TEST_PW").reveal() == "x"
    with pytest.raises(ValueError, match="PB_NOPE is not set"):
        Secret(env="PB_NOPE").reveal()
    with pytest.raises(ValueError, match="exactly one"):
        Secret(env="A", value="b")


def test_tls_client_context(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import ssl

    from gateway.settings import TlsSettings

    strict = TlsSettings()
    assert strict.client_context().verify_mode is ssl.CERT_REQUIRED
    assert strict.for_url("http://x/") is True  # plain http: aiohttp's default, unused
    loose = TlsSettings(verify=False).client_context()
    assert loose.verify_mode is ssl.CERT_NONE and not loose.check_hostname
