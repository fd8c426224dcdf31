"""Config building blocks shared by components (secrets, TLS). Importable by every package.

Imports nothing of ours. Each component keeps its own strict model beside its code.
"""

from __future__ import annotations

import os
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
