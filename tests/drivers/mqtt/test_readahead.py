"""`ReadAheadSocket`: paho's small reads served from one large `recv`, nothing lost or reordered."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from drivers.mqtt.client import READ_AHEAD_BYTES, ReadAheadSocket, new_client
from tests.drivers.mqtt.conftest import source_config


@pytest.fixture
def pair() -> Iterator[tuple[ReadAheadSocket, socket.socket]]:
    ours, peer = socket.socketpair()
    ours.setblocking(False)
    wrapped = ReadAheadSocket(ours)
    try:
        yield wrapped, peer
    finally:
        wrapped.close()
        peer.close()


def test_small_reads_come_from_one_chunk_in_order(
        pair: tuple[ReadAheadSocket, socket.socket]) -> None:
    wrapped, peer = pair
    peer.sendall(b"\x30\x05hello\x30\x03abc")
    assert wrapped.recv(1) == b"\x30"
    assert wrapped.pending() == 11  # read from the kernel, not yet taken: the selector is blind
    assert wrapped.recv(1) == b"\x05"
    assert wrapped.recv(5) == b"hello"
    assert wrapped.recv(1) == b"\x30"
    assert wrapped.recv(100) == b"\x03abc"  # no more than there is: paho asks again
    assert wrapped.pending() == 0
    with pytest.raises(BlockingIOError):  # nothing buffered, nothing on the socket
        wrapped.recv(1)


def test_a_message_larger_than_the_chunk_arrives_whole(
        pair: tuple[ReadAheadSocket, socket.socket]) -> None:
    wrapped, peer = pair
    wrapped.sock.setblocking(True)
    big = bytes(range(256)) * (3 * READ_AHEAD_BYTES // 256 + 7)
    peer.sendall(b"x")  # a small read first: the big one starts mid-chunk
    assert wrapped.recv(1) == b"x"
    sender = threading.Thread(target=peer.sendall, args=(big,))
    sender.start()
    got = b""
    while len(got) < len(big):
        got += wrapped.recv(len(big) - len(got))
    sender.join(10)
    assert got == big
    assert wrapped.pending() == 0


def test_end_of_stream_is_an_empty_read(pair: tuple[ReadAheadSocket, socket.socket]) -> None:
    wrapped, peer = pair
    peer.sendall(b"ab")
    peer.close()
    assert wrapped.recv(1) == b"a"
    assert wrapped.recv(1) == b"b"
    assert wrapped.recv(1) == b""  # paho: connection lost


def test_sends_and_the_file_descriptor_pass_through(
        pair: tuple[ReadAheadSocket, socket.socket]) -> None:
    wrapped, peer = pair
    assert wrapped.send(b"PUBACK") == 6
    assert peer.recv(10) == b"PUBACK"
    assert wrapped.fileno() == wrapped.sock.fileno()


def test_the_source_client_reads_through_it() -> None:
    client = new_client(source_config(1883))
    assert type(client).__name__ == "_Client"
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        client.connect("127.0.0.1", server.getsockname()[1])
        try:
            assert isinstance(client.socket(), ReadAheadSocket)
        finally:
            sock = client.socket()
            if sock is not None:
                sock.close()
