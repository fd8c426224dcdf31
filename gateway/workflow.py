"""The maintenance workflow past the request: existing work first, then the spare-parts chain.

Two things live here, both upstream-neutral (the SAP and REST sinks do the talking):

* **Existing work policy** per rule (`existing_work = "create" | "link" | "skip"` in the rule
  file, rules/spec.py). `with_workflow` copies the rules' policies into each upstream config
  that supports it (`existing_work_rules`), next to the registry's identities. The sink reads
  the raise's `rule_id` and applies it *after* its own dedup look-up (our own record is never
  "someone else's"): `link` notes our evidence on the open record and returns its id as the
  receipt (the clear goes there), `skip` returns its id without writing.

* **The spare-parts chain.** When a raise is ACCEPTED and the registry lists parts for the
  asset's failure code, three steps follow, each its own outbox record:

      stock check  ->  reservation  ->  purchase requisition (only when stock is low)

  The hook: the forwarder asks `follow_ups(sink, records, deliveries)` which records the
  settle must enqueue, and hands them to `OutboxStore.settle_with_follow_ups`, which settles
  and inserts them in ONE transaction, only for records that were still pending (so "only after
  the previous step was accepted" holds, and a crash between send and settle re-sends the step
  and enqueues the same keys again: insert-or-ignore makes that a no-op). Each step's key is
  deterministic (`parts-<step>:<dedup_key>:<sink>`) and each sink looks its own reference up
  before creating. The steps run in their own lane, episode id `<episode_id>#parts`, so the
  episode's clear never waits for them and a failing step (dead letter) blocks nothing else.
  The raise's receipt (notification number) travels in the body as `request_ref`; the stock
  step's receipt is the stock it read (`stock_receipt`), which the next step's body carries.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import orjson
from pydantic import Field

from gateway.model import Delivery, MessageKind, OutboxMessage, OutboxRecord, Outcome
from gateway.settings import StrictModel

PARTS_LANE_SUFFIX = "#parts"
PART_STEPS = (MessageKind.PARTS_STOCK, MessageKind.PARTS_RESERVATION,
              MessageKind.PARTS_REQUISITION)


class ExistingWork(enum.StrEnum):
    """What a raise does when the upstream already holds open work for the asset."""

    CREATE = "create"  # create our own request anyway (the behaviour before this policy)
    LINK = "link"  # note our evidence on the open record and use it as this episode's request
    SKIP = "skip"  # use the open record as this episode's request, write nothing


class PartLine(StrictModel):
    """One spare part a failure code needs (from the asset registry), as the sinks use it."""

    material: str = Field(min_length=1, max_length=40)
    quantity: float = Field(gt=0)
    unit: str = Field(min_length=1, max_length=3)
    plant: str = Field(min_length=1, max_length=4)
    storage_location: str = Field(min_length=1, max_length=4)
    # below this available (unrestricted) stock a purchase requisition is created; None: never
    reorder_level: float | None = Field(default=None, ge=0)

    @property
    def place(self) -> str:
        """`material@plant/storage_location`: the key of this part's stock in step bodies."""
        return f"{self.material}@{self.plant}/{self.storage_location}"


# asset -> failure code -> parts; what `with_workflow` puts into an upstream config
PartsTable = dict[str, dict[str, list[PartLine]]]


class ChainingSink(Protocol):
    """A sink that has parts steps: it says which parts a raise needs (none: no chain)."""

    name: str

    def parts_for(self, asset: str, failure_code: str) -> Sequence[PartLine]: ...


# --- wiring: registry and rule policies into upstream configs ---------------------------------


def with_workflow(upstream: Any, registry: Any, rules: Any) -> Any:
    """The upstream config with the registry's spare parts (`spare_parts`) and the rules'
    existing-work policies (`existing_work_rules`) filled in, for configs that take them;
    any other upstream config is returned as it is. Called by gateway/config.py after
    `with_registry`."""
    update: dict[str, Any] = {}
    fields = type(upstream).model_fields if hasattr(type(upstream), "model_fields") else {}
    if "spare_parts" in fields and registry is not None:
        table: PartsTable = {}
        for asset in registry:
            entry = registry.entry(asset)
            codes = {code: [PartLine.model_validate(p.model_dump()) for p in parts]
                     for code, parts in entry.spare_parts.items() if parts}
            if codes:
                table[asset] = codes
        update["spare_parts"] = table
    if "existing_work_rules" in fields and rules is not None:
        update["existing_work_rules"] = {
            r.spec.id: ExistingWork(r.spec.existing_work) for r in rules.rules
            if getattr(r.spec, "existing_work", None) is not None}
    return upstream.model_copy(update=update) if update else upstream


def policy_for(body: Mapping[str, Any], rules: Mapping[str, ExistingWork],
               default: ExistingWork) -> ExistingWork:
    """The existing-work policy of the rule that raised `body`."""
    return rules.get(str(body.get("rule_id", "")), default)


# --- the chain ---------------------------------------------------------------------------


def stock_receipt(levels: Mapping[str, float]) -> str:
    """The stock step's receipt: the available quantity per part place, as compact JSON
    (readable in `trace`, and carried into the reservation step's body)."""
    return orjson.dumps(dict(sorted(levels.items()))).decode()


def parse_stock_receipt(receipt: str | None) -> dict[str, float] | None:
    try:
        doc = orjson.loads(receipt or "")
    except orjson.JSONDecodeError:
        return None
    if not isinstance(doc, dict) or not all(isinstance(v, int | float) for v in doc.values()):
        return None
    return {str(k): float(v) for k, v in doc.items()}


def low_parts(parts: Sequence[Mapping[str, Any]], stock: Mapping[str, float]
              ) -> list[dict[str, Any]]:
    """Parts whose available stock is below their reorder level, each with the quantity to
    order: enough that the stock after this reservation is back at the reorder level, and at
    least the quantity needed."""
    out = []
    for raw in parts:
        part = PartLine.model_validate(raw)
        have = stock.get(part.place, 0.0)
        if part.reorder_level is not None and have < part.reorder_level:
            need = max(part.quantity, part.reorder_level - have + part.quantity)
            out.append(dict(raw) | {"order_quantity": need, "available": have})
    return out


def _step(kind: MessageKind, rec: OutboxRecord, body: Mapping[str, Any]) -> OutboxMessage:
    msg = rec.message
    step = kind.value.removeprefix("parts_")
    return OutboxMessage(
        key=f"parts-{step}:{body['dedup_key']}:{msg.sink}", sink=msg.sink, asset=msg.asset,
        episode_id=str(body["episode_id"]) + PARTS_LANE_SUFFIX, kind=kind,
        body=dict(body) | {"step": step}, created_at=msg.created_at)


def next_step(sink: ChainingSink, rec: OutboxRecord, d: Delivery) -> OutboxMessage | None:
    """The record that an ACCEPTED `rec` makes due next, if any."""
    if d.outcome is not Outcome.ACCEPTED:
        return None
    msg, body = rec.message, rec.message.body
    if msg.kind is MessageKind.MAINTENANCE_REQUEST:
        parts = sink.parts_for(msg.asset, str(body.get("failure_code") or ""))
        if not parts or not d.receipt:
            return None
        return _step(MessageKind.PARTS_STOCK, rec, {
            "dedup_key": body["dedup_key"], "episode_id": msg.episode_id, "asset": msg.asset,
            "failure_code": body.get("failure_code", ""), "request_ref": d.receipt,
            "parts": [p.model_dump() for p in parts]})
    if msg.kind is MessageKind.PARTS_STOCK:
        stock = parse_stock_receipt(d.receipt)
        if stock is None:
            return None
        return _step(MessageKind.PARTS_RESERVATION, rec, dict(body) | {"stock": stock})
    if msg.kind is MessageKind.PARTS_RESERVATION:
        low = low_parts(body.get("parts") or [], body.get("stock") or {})
        if not low or not d.receipt:
            return None  # stock is fine: no requisition
        return _step(MessageKind.PARTS_REQUISITION, rec, dict(body) | {
            "reservation": d.receipt, "order": low})
    return None


def follow_ups(sink: object, records: Sequence[OutboxRecord],
               deliveries: Sequence[Delivery]) -> list[tuple[int, OutboxMessage]]:
    """(triggering record id, message) for every record a settle must enqueue; empty for a
    sink without parts steps. See the module docstring for the hook."""
    if not hasattr(sink, "parts_for"):
        return []
    chaining: ChainingSink = sink  # type: ignore[assignment]  # checked just above
    out = []
    for rec, d in zip(records, deliveries, strict=True):
        nxt = next_step(chaining, rec, d)
        if nxt is not None:
            out.append((rec.id, nxt))
    return out
