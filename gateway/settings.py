"""Config building blocks shared by components (secrets, TLS). Importable by every package.

Imports nothing of ours. Each component keeps its own strict model beside its code.
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path

from pydantic import BaseModel, ConfigDict, model_validator


class StrictModel(BaseModel):
    """Unknown keys are errors: a typo in a config must not pass silently."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Secret(StrictModel):
    """A secret from an environment variable or a file (preferred), or inline for tests."""

    env: str | None = None
    file: Path | None = None
    value: str | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Secret:
        given = [x for x in (self.env, self.file, self.value) if x is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of env, file or value")
        return self

    def reveal(self) -> str:
        """Resolve the secret; raises ValueError with a plain message when it is missing."""
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
        assert self.value is not None
        return self.value


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
