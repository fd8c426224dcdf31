"""The workflow steps of the generic REST sink (gateway/workflow.py as plain HTTP calls):
existing work on the asset under `link`/`skip`, and the spare-parts chain (stock, reservation,
requisition). A mixin of `RestSink`, which supplies the HTTP exchange."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import orjson

from gateway.model import Delivery, MessageKind, OutboxRecord, Outcome
from gateway.upstream.rest_config import RestSinkConfig
from gateway.upstream.rest_wire import canonical_json, created_id, id_of, sf_string
from gateway.workflow import ExistingWork, PartLine, policy_for, stock_receipt


class RestWorkflowSteps:
    """Existing work and parts steps; `RestSink` provides `_cfg` and `_exchange`."""

    _cfg: RestSinkConfig

    if TYPE_CHECKING:
        async def _exchange(self, record_id: int, method: str, path: str, *,
                            body: bytes | None = None, headers: dict[str, str] | None = None,
                            params: dict[str, str] | None = None) -> bytes | Delivery: ...

    async def _post_json(self, rec: OutboxRecord, path: str, body: Any, key: str
                         ) -> bytes | Delivery:
        try:
            headers = {"Idempotency-Key": sf_string(key), "Content-Type": "application/json"}
            data = canonical_json(body)
        except (ValueError, TypeError) as exc:
            return Delivery(rec.id, Outcome.REJECTED, reason=f"cannot encode the message: {exc}")
        return await self._exchange(rec.id, "POST", path, body=data, headers=headers)

    async def _existing_work(self, rec: OutboxRecord) -> Delivery | None:
        """Under `link`/`skip`: ACCEPTED with an open request on the asset that is not ours
        (linked: our raise posted to it as a status update "linked"); None otherwise."""
        body, wf = rec.message.body, self._cfg.workflow
        policy = policy_for(body, self._cfg.existing_work_rules, self._cfg.existing_work)
        if policy is ExistingWork.CREATE or wf.existing_work_path is None:
            return None
        answer = await self._exchange(rec.id, "GET", wf.existing_work_path, params={
            **wf.existing_work_query, "asset": str(body.get("asset", ""))})
        if isinstance(answer, Delivery):
            return replace(answer, reason=f"look-up of open work: {answer.reason}")
        try:
            doc = orjson.loads(answer)
        except orjson.JSONDecodeError:
            doc = None
        items = doc if isinstance(doc, list) else None
        if items is None:
            return Delivery(rec.id, Outcome.RETRY, reason=(
                "look-up of open work: 2xx without a JSON list; not creating blind"))
        key = str(body.get("dedup_key", ""))
        theirs = [i for i in map(id_of, (x for x in items if isinstance(x, dict)
                                          and x.get("external_ref") != key)) if i]
        if not theirs:
            return None
        if policy is ExistingWork.LINK:
            path = self._cfg.status_path.replace("{upstream_ref}", quote(theirs[0], safe=""))
            got = await self._post_json(rec, path, dict(body) | {"status": "linked"},
                                        f"link:{rec.message.key}")
            if isinstance(got, Delivery):
                return replace(got, reason=f"link to {theirs[0]}: {got.reason}")
        return Delivery(rec.id, Outcome.ACCEPTED, receipt=theirs[0],
                        reason=f"{policy}: request {theirs[0]} is open on this asset already")

    async def _part_step(self, rec: OutboxRecord) -> Delivery:
        msg, wf = rec.message, self._cfg.workflow
        ref = quote(str(msg.body.get("request_ref", "")), safe="")
        if msg.kind is MessageKind.PARTS_STOCK and wf.stock_path:
            levels: dict[str, float] = {}
            for raw in msg.body.get("parts") or []:
                part = PartLine.model_validate(raw)
                answer = await self._exchange(rec.id, "GET", wf.stock_path, params={
                    "material": part.material, "plant": part.plant,
                    "storage_location": part.storage_location})
                if isinstance(answer, Delivery):
                    return replace(answer, reason=f"stock of {part.place}: {answer.reason}")
                try:
                    levels[part.place] = float(orjson.loads(answer)["available"])
                except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                    return Delivery(rec.id, Outcome.RETRY, reason=(
                        f"stock of {part.place}: no number 'available' in the answer"))
            return Delivery(rec.id, Outcome.ACCEPTED, receipt=stock_receipt(levels))
        path = (wf.reservation_path if msg.kind is MessageKind.PARTS_RESERVATION
                else wf.requisition_path)
        if not path:
            return Delivery(rec.id, Outcome.REJECTED, reason=f"no path configured for {msg.kind}")
        got = await self._post_json(rec, path.replace("{upstream_ref}", ref), msg.body, msg.key)
        if isinstance(got, Delivery):
            return got
        receipt = created_id(got)
        if receipt is None:
            return Delivery(rec.id, Outcome.RETRY, reason=(
                "2xx without a usable 'id'; retrying under the same Idempotency-Key"))
        return Delivery(rec.id, Outcome.ACCEPTED, receipt=receipt)
