"""Config building blocks shared by components (secrets, TLS). Importable by every package.

Imports nothing of ours. Each component keeps its own strict model beside its code.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import ssl
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator


class StrictModel(BaseModel):
    """Unknown keys are errors: a typo in a config must not pass silently."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# Fingerprints are keyed per process: they compare within one daemon's life and are worthless
# for guessing a short secret should one ever be printed.
_FINGERPRINT_KEY = os.urandom(32)


class Secret(StrictModel):
    """A secret from a systemd credential or a file (preferred), an environment variable, or
    inline for tests: exactly one of `credential`, `file`, `env`, `value`.

    `credential = "cmms-token"` reads `$CREDENTIALS_DIRECTORY/cmms-token`, the private copy
    that systemd makes for a unit with `LoadCredential=cmms-token:/etc/plantbridge/secrets/...`.

    When a config is loaded, each secret is read once and a digest of what it said (never the
    value itself) is kept beside it. Pydantic compares private attributes too, so two loads of
    one config compare unequal when a secret file's content changed in between: that is how a
    reload (SIGHUP) knows to restart the component whose credentials were fixed. An unreadable
    secret is not an error here (`check` and `reveal` report it); it has a digest of its own.
    """

    env: str | None = None
    file: Path | None = None
    credential: str | None = None
    value: str | None = Field(default=None, repr=False)  # never in a log line
    _fingerprint: str = PrivateAttr(default="")

    @model_validator(mode="after")
    def _exactly_one(self) -> Secret:
        given = [x for x in (self.env, self.file, self.credential, self.value) if x is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of credential, file, env or value")
        if self.credential is not None and (
                self.credential in ("", ".", "..") or "/" in self.credential):
            raise ValueError(f"credential {self.credential!r} must be a plain name as in "
                             "LoadCredential=NAME:PATH (no '/')")
        try:
            seen = "ok\0" + self.reveal()
        except ValueError as exc:
            seen = "unreadable\0" + str(exc)
        self._fingerprint = hmac.new(_FINGERPRINT_KEY, seen.encode(), hashlib.sha256).hexdigest()
        return self

    @property
    def fingerprint(self) -> str:
        """A digest of what this secret said (or why it could not be read) when loaded."""
        return self._fingerprint

    def reveal(self) -> str:
        """Resolve the secret now; raises ValueError with a plain message when it is missing."""
        if self.env is not None:
            got = os.environ.get(self.env)
            if got is None:
                raise ValueError(f"environment variable {self.env} is not set")
            return got
        if self.file is not None:
            try:
                return self.file.read_text().strip()
            except OSError as exc:
                raise ValueError(f"cannot read secret file {self.file}: {exc.strerror}") from exc
        if self.credential is not None:
            return _read_credential(self.credential)
        assert self.value is not None
        return self.value


def _read_credential(name: str) -> str:
    """A systemd credential of this service, with the fix in the message when it is missing."""
    directory = os.environ.get("CREDENTIALS_DIRECTORY")
    if not directory:
        raise ValueError(f"credential {name!r}: not running under systemd with "
                         f"LoadCredential={name} (CREDENTIALS_DIRECTORY is not set)")
    path = Path(directory) / name
    try:
        got = path.read_text().strip()
    except FileNotFoundError:
        raise ValueError(f"credential {name!r} is missing from {directory}: the unit needs "
                         f"LoadCredential={name}:/etc/plantbridge/secrets/{name}, and that file "
                         "must exist when the service starts") from None
    except OSError as exc:
        raise ValueError(f"cannot read credential {path}: {exc.strerror}") from exc
    if not got:
        # What the unit's blank SetCredential= default gives when LoadCredential='s file was
        # missing at start: never send an empty token.
        raise ValueError(f"credential {name!r} is empty: the file named in LoadCredential={name}:"
                         "... was missing or empty when the service started")
    return got


class TlsSettings(StrictModel):
    """TLS for a client connection. Verification is on unless explicitly turned off."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    verify: bool = True

    @model_validator(mode="after")
    def _files_exist(self) -> TlsSettings:
        for label, path in (("ca_file", self.ca_file), ("cert_file", self.cert_file),
                            ("key_file", self.key_file)):
            if path is not None and not path.is_file():
                raise ValueError(f"{label} {path} does not exist")
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        return self

    def client_context(self) -> ssl.SSLContext:
        """A client TLS context: system CAs or our own CA, optional client certificate, and
        verification on unless this config turned it off."""
        ctx = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
        if self.cert_file is not None and self.key_file is not None:
            ctx.load_cert_chain(str(self.cert_file), str(self.key_file))
        if not self.verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx

    def for_url(self, url: str) -> ssl.SSLContext | bool:
        """What aiohttp's `ssl=` takes for `url`: our context for https, the default otherwise."""
        return self.client_context() if url.startswith("https://") else True
