"""What a notification says: short text, long text with the evidence, and the clear note.

SAP's limits: NotificationText 40 characters, MaintNotifLongTextForEdit 1333.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

MAX_SHORT_TEXT = 40
MAX_LONG_TEXT = 1333


def short_text(body: Mapping[str, Any]) -> str:
    title = " ".join(str(body.get("title") or "").split())
    if not title:
        title = f"{body.get('rule_id', 'condition')} on {body.get('asset', '?')}"
    return title[:MAX_SHORT_TEXT]


def _value(body: Mapping[str, Any]) -> str:
    v = body.get("value")
    return "n/a" if v is None else f"{v:g}" if isinstance(v, float) else str(v)


def long_text(body: Mapping[str, Any]) -> str:
    """The evidence a planner reads: the rule's text, why it fired, and where it came from."""
    lines = [str(body.get("long_text") or "").strip(),
             f"Reason: {body.get('reason', '')}",
             f"Rule {body.get('rule_id', '?')}: {body.get('signal', '?')} = {_value(body)}, "
             f"severity {body.get('severity', '?')}",
             f"Asset {body.get('asset', '?')} at site {body.get('site', '?')}, raised "
             f"{body.get('raised_at', '?')}",
             f"PlantBridge episode {body.get('episode_id', '?')}, ref {body.get('dedup_key')}"]
    text = "\n".join(line for line in lines if line)
    return text if len(text) <= MAX_LONG_TEXT else text[:MAX_LONG_TEXT - 1] + "…"


def note_marker(body: Mapping[str, Any]) -> str:
    return f"[PlantBridge clear {body.get('dedup_key')}]"


def clear_note(body: Mapping[str, Any]) -> str:
    return (f"{note_marker(body)} condition cleared {body.get('cleared_at', '?')}: "
            f"{body.get('reason', '')} ({body.get('signal', '?')} = {_value(body)})")


def append_note(text: str, note: str) -> str:
    """`text` plus `note` within MAX_LONG_TEXT; the old text gives way, the note stays whole."""
    note = note[:MAX_LONG_TEXT]
    room = MAX_LONG_TEXT - len(note) - 1
    if room <= 0:
        return note
    head = text if len(text) <= room else text[:room - 1] + "…"
    return f"{head}\n{note}" if head else note
