"""The simulator's fast Idempotency-Key path gives what the full sf-string parser gives."""

from __future__ import annotations

import random
from collections.abc import Callable

from simulators.cmms.idempotency import BadIdempotencyKey, parse_key
from simulators.cmms.server import _key_of


def _outcome(parse: Callable[[str | None], str], header: str | None) -> object:
    try:
        return parse(header)
    except BadIdempotencyKey as exc:
        return ("refused", str(exc))


def test_fast_key_path_matches_the_parser_on_every_input() -> None:
    rng = random.Random(14)
    alphabet = ['"', "\\", " ", "a", "Z", "~", ":", "\x7f", "\x1f", "\t", "\u00e9"]
    headers: list[str | None] = [
        None, "", '""', '"a"', "bare-token", ' "a" ', '"a\\"b"', '"request:PB0123:cmms"',
        '"' + "x" * 255 + '"', '"' + "x" * 256 + '"']
    for _ in range(20_000):
        inner = "".join(rng.choice(alphabet) for _ in range(rng.randrange(8)))
        headers.append('"' + inner + rng.choice(['"', "", '"x']))
    for header in headers:
        assert _outcome(_key_of, header) == _outcome(parse_key, header), header
