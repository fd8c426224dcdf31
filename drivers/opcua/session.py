"""One OPC UA session: connect with security and auth, resolve nodes, create monitored items.

Everything asyncua-specific about *setting up* lives here; the driver owns the lifecycle.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from asyncua import ua
from asyncua.client.client import Client
from asyncua.common.subscription import OverflowPolicy, Subscription
from asyncua.crypto import security_policies as sp
from asyncua.crypto.truststore import TrustStore
from asyncua.crypto.validator import CertificateValidator, CertificateValidatorOptions
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.uaerrors import UaStatusCodeError

from drivers.opcua.config import (
    DeadbandType,
    NodeConfig,
    OpcUaSourceConfig,
    Sampling,
    SecurityMode,
    SecurityPolicy,
    Trigger,
    UsernameAuth,
    split_node_id,
)
from drivers.opcua.convert import Binding, status_name
from drivers.opcua.notifications import decode_data_changes

log = logging.getLogger(__name__)

_POLICIES: dict[SecurityPolicy, type[sp.SecurityPolicy]] = {
    SecurityPolicy.BASIC256SHA256: sp.SecurityPolicyBasic256Sha256,
    SecurityPolicy.AES128_SHA256_RSAOAEP: sp.SecurityPolicyAes128Sha256RsaOaep,
    SecurityPolicy.AES256_SHA256_RSAPSS: sp.SecurityPolicyAes256Sha256RsaPss,
}
_TRIGGERS = {
    Trigger.STATUS: ua.DataChangeTrigger.Status,
    Trigger.STATUS_VALUE: ua.DataChangeTrigger.StatusValue,
    Trigger.STATUS_VALUE_TIMESTAMP: ua.DataChangeTrigger.StatusValueTimestamp,
}
_DEADBANDS = {
    DeadbandType.NONE: ua.DeadbandType.None_,
    DeadbandType.ABSOLUTE: ua.DeadbandType.Absolute,
    DeadbandType.PERCENT: ua.DeadbandType.Percent,
}
_OPS = ObjectIds
_MAX_ITEMS_PER_CALL = _OPS.Server_ServerCapabilities_OperationLimits_MaxMonitoredItemsPerCall
_MAX_NODES_PER_READ = _OPS.Server_ServerCapabilities_OperationLimits_MaxNodesPerRead


class SecurityFailure(Exception):
    """Certificates, trust or credentials were refused: retrying alone will not fix it."""


@dataclass(slots=True)
class Planned:
    """A resolved node with its effective sampling."""

    binding: Binding
    sampling: Sampling


@dataclass(slots=True)
class Resolution:
    planned: list[Planned] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # "asset/signal" -> reason


async def open_client(cfg: OpcUaSourceConfig) -> Client:
    """A connected client, or an exception. No asyncua auto-reconnect: the driver owns that."""
    client = Client(cfg.endpoint, timeout=cfg.request_timeout_seconds,
                    watchdog_intervall=cfg.keepalive_interval_seconds, auto_reconnect=False)
    client.application_uri = cfg.application_uri
    client.name = client.description = f"PlantBridge {cfg.name}"
    client.session_timeout = int(cfg.session_timeout_seconds * 1000)
    # asyncua's stale-subscription watchdog would recreate items in one unbatched call with
    # stale namespace indexes; the driver's own watchdog replaces it (a fresh session).
    client._stale_check_margin = float("inf")
    try:
        try:
            password = cfg.auth.password.reveal() if isinstance(cfg.auth, UsernameAuth) else None
            sec = cfg.security
            key_password = sec.private_key_password.reveal() if sec.private_key_password else None
        except ValueError as exc:
            raise SecurityFailure(str(exc)) from exc
        if isinstance(cfg.auth, UsernameAuth) and password is not None:
            client.set_user(cfg.auth.username)
            client.set_password(password)
        if sec.policy is not SecurityPolicy.NONE:
            assert sec.certificate_file is not None and sec.private_key_file is not None
            mode = (ua.MessageSecurityMode.Sign if sec.mode is SecurityMode.SIGN
                    else ua.MessageSecurityMode.SignAndEncrypt)
            await client.set_security(_POLICIES[sec.policy], str(sec.certificate_file),
                                      str(sec.private_key_file), key_password, None, mode)
            if sec.trusted_server_certs_dir is not None:
                store = TrustStore([sec.trusted_server_certs_dir], [])
                await store.load()
                client.certificate_validator = CertificateValidator(
                    CertificateValidatorOptions.TRUSTED_VALIDATION
                    | CertificateValidatorOptions.PEER_SERVER, store)
        await client.connect()
    except BaseException:
        # connect() starts its background tasks only once it succeeded: a socket is all
        # there can be to close here.
        client.disconnect_socket()
        raise
    return client


async def close_client(client: Client, timeout_seconds: float) -> None:
    """Close what is open without raising or logging tracebacks (the server may be gone)."""
    with contextlib.suppress(Exception):
        await asyncio.wait_for(client.close_session(), timeout_seconds)
    with contextlib.suppress(Exception):
        await asyncio.wait_for(client.close_secure_channel(), timeout_seconds)
    client.disconnect_socket()


async def read_limit(client: Client, object_id: int) -> int:
    """A server operation limit; 0 when the server does not publish it."""
    try:
        value = await client.get_node(ua.NodeId(ua.Int32(object_id))).read_value()
    except (UaStatusCodeError, TimeoutError):
        return 0
    return int(value) if isinstance(value, int) else 0


async def limits(client: Client, cfg: OpcUaSourceConfig) -> tuple[int, int]:
    """(monitored items per call, nodes per read): the server's limit when it is smaller."""
    items, reads = await read_limit(client, _MAX_ITEMS_PER_CALL), await read_limit(
        client, _MAX_NODES_PER_READ)
    return (min(cfg.max_monitored_items_per_call, items or cfg.max_monitored_items_per_call),
            min(cfg.max_nodes_per_read, reads or cfg.max_nodes_per_read))


def _qualified(element: str, ns_index: dict[str, int]) -> ua.QualifiedName:
    uri, name = None, element
    if element.startswith("nsu="):
        uri, _, name = element[4:].partition(";")
    if uri is None:
        return ua.QualifiedName(name, 0)
    if uri not in ns_index:
        raise LookupError(f"namespace {uri} is not on the server")
    return ua.QualifiedName(name, ns_index[uri])


def _node_id(text: str, ns_index: dict[str, int]) -> ua.NodeId:
    uri, ident = split_node_id(text)
    if uri is None:
        return ua.NodeId.from_string(ident)
    if uri not in ns_index:
        raise LookupError(f"namespace {uri} is not on the server")
    return ua.NodeId.from_string(f"ns={ns_index[uri]};{ident}")


async def resolve(client: Client, cfg: OpcUaSourceConfig) -> Resolution:
    """Map namespace URIs to this session's indexes and browse paths to NodeIds."""
    array = await client.get_namespace_array()
    ns_index = {uri: i for i, uri in enumerate(array)}
    out = Resolution()
    for handle, node in enumerate(cfg.nodes, start=1):
        key = f"{node.asset}/{node.signal}"
        try:
            node_id = await _resolve_one(client, node, ns_index)
        except LookupError as exc:
            out.failed[key] = str(exc)
            continue
        except UaStatusCodeError as exc:
            out.failed[key] = f"browse path: {status_name(exc.code)}"
            continue
        out.planned.append(Planned(Binding(node.asset, node.signal, node_id, handle),
                                   node.sampling(cfg.groups[node.group])))
    return out


async def _resolve_one(client: Client, node: NodeConfig, ns_index: dict[str, int]) -> ua.NodeId:
    if node.node_id is not None:
        return _node_id(node.node_id, ns_index)
    assert node.browse_path is not None
    path = [_qualified(e, ns_index) for e in node.browse_path]
    start = client.get_node(_node_id(node.browse_from, ns_index))
    found = await start.get_child(path)
    return found.nodeid


def _request(p: Planned) -> ua.MonitoredItemCreateRequest:
    s = p.sampling
    params = ua.MonitoringParameters()
    params.ClientHandle = p.binding.handle
    params.SamplingInterval = s.sampling_interval_ms
    params.QueueSize = s.queue_size
    params.DiscardOldest = s.discard_oldest
    if s.deadband is not DeadbandType.NONE or s.trigger is not Trigger.STATUS_VALUE:
        params.Filter = ua.DataChangeFilter(Trigger=_TRIGGERS[s.trigger],
                                            DeadbandType=_DEADBANDS[s.deadband],
                                            DeadbandValue=s.deadband_value)
    req = ua.MonitoredItemCreateRequest()
    req.ItemToMonitor = ua.ReadValueId(NodeId=p.binding.node_id,
                                       AttributeId=AttributeIds.Value)
    req.MonitoringMode = ua.MonitoringMode.Reporting
    req.RequestedParameters = params
    return req


async def subscribe(client: Client, cfg: OpcUaSourceConfig, publishing_interval_ms: float,
                    planned: Sequence[Planned], per_call: int,
                    failed: dict[str, str]) -> tuple[Subscription, int]:
    """One subscription in iterator mode; items created `per_call` at a time.

    Returns the subscription and the number of CreateMonitoredItems calls. Items the server
    refuses go to `failed` with their status code; the others keep working.
    """
    params = ua.CreateSubscriptionParameters()
    params.RequestedPublishingInterval = publishing_interval_ms
    params.RequestedMaxKeepAliveCount = cfg.subscription_keepalive_count
    params.RequestedLifetimeCount = cfg.subscription_keepalive_count * 10
    params.MaxNotificationsPerPublish = 0
    params.PublishingEnabled = True
    # The driver drains this queue without ever blocking (its own queue carries the drop
    # policy), so it only fills if the event loop is starved; then asyncua warns per drop.
    sub = await client.create_subscription(params, None, queue_maxsize=cfg.notification_queue_size,
                                           overflow=OverflowPolicy.WARN)
    if not decode_data_changes(client, sub):  # before the items: nothing has arrived yet
        log.info("%s: this asyncua has no publish hook; data changes decoded by asyncua",
                 cfg.name)
    calls = 0
    for start in range(0, len(planned), per_call):
        chunk = planned[start:start + per_call]
        calls += 1
        try:
            results = await sub.create_monitored_items([_request(p) for p in chunk])
        except UaStatusCodeError as exc:
            for p in chunk:
                failed[f"{p.binding.asset}/{p.binding.signal}"] = status_name(exc.code)
            continue
        for p, result in zip(chunk, results, strict=True):
            if isinstance(result, ua.StatusCode):
                failed[f"{p.binding.asset}/{p.binding.signal}"] = status_name(result.value)
    return sub, calls


def is_security_error(exc: BaseException) -> bool:
    if isinstance(exc, SecurityFailure | FileNotFoundError | PermissionError):
        return True
    if isinstance(exc, UaStatusCodeError):
        name = status_name(exc.code)
        return any(word in name for word in ("Certificate", "Security", "Identity", "UserAccess",
                                             "NoValidCertificates"))
    return False
