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
    """The evidence a planner reads: the rule's text, why it fired, and where it came from.
    Within SAP's 1333 characters the evidence stays whole; the rule's own text gives way."""
    evidence = "\n".join([
        f"Reason: {body.get('reason', '')}",
        f"Rule {body.get('rule_id', '?')}: {body.get('signal', '?')} = {_value(body)}, "
        f"severity {body.get('severity', '?')}",
        f"Asset {body.get('asset', '?')} at site {body.get('site', '?')}, raised "
        f"{body.get('raised_at', '?')}",
        f"PlantBridge episode {body.get('episode_id', '?')}, ref {body.get('dedup_key')}"])
    evidence = _cut(evidence, MAX_LONG_TEXT)
    head = str(body.get("long_text") or "").strip()
    room = MAX_LONG_TEXT - len(evidence) - 1
    if not head or room <= 1:
        return evidence
    return _cut(head, room) + "\n" + evidence


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def note_marker(body: Mapping[str, Any]) -> str:
    if body.get("update"):  # an incident update (roll-up): one note per update
        return f"[PlantBridge update {body.get('dedup_key')} {body.get('updated_at')}]"
    return f"[PlantBridge clear {body.get('dedup_key')}]"


def clear_note(body: Mapping[str, Any]) -> str:
    if body.get("update"):
        return _cut(f"{note_marker(body)} {body.get('reason', '')}\n{body.get('note', '')}",
                    MAX_LONG_TEXT)
    return _cut(f"{note_marker(body)} condition cleared {body.get('cleared_at', '?')}: "
                f"{body.get('reason', '')} ({body.get('signal', '?')} = {_value(body)})",
                MAX_LONG_TEXT)


def link_marker(body: Mapping[str, Any]) -> str:
    return f"[PlantBridge link {body.get('dedup_key')}]"


def link_note(body: Mapping[str, Any]) -> str:
    """Our evidence, added to an open notification someone else made (existing_work = link)."""
    return _cut(f"{link_marker(body)} {short_text(body)}\n{long_text(body)}", MAX_LONG_TEXT)
