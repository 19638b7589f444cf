"""
A minimal WebSocket client (RFC 6455) speaking JSON-RPC, on the standard
library only (and L{ccx.testing.ports}), for the benchmarks: L{FrameReader} parses frames with as
little work per byte as possible, L{Client} is a blocking client for one
connection, and L{AsyncClient} an asyncio protocol for many.  Both route
messages through L{RPCRouter}.  Everything here talks to 127.0.0.1 only.
"""

import asyncio
import base64
import contextlib
import itertools
import json
import os
import socket
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import _checkout  # noqa: F401  (puts ccx.testing on the path)

from ccx.testing.ports import HOST

OP_CONTINUATION = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

# How every process.output notification of ccx begins: frames starting like
# this can be counted without decoding their JSON.
OUTPUT_PREFIX = b'{"jsonrpc":"2.0","method":"process.output"'

_RECV_SIZE = 1024 * 1024


# -- WebSocket framing ---------------------------------------------------------


def handshake_request(port: int, path: str) -> Tuple[bytes, str]:
    """
    The opening handshake to send, and the key it uses.
    """
    key = base64.b64encode(os.urandom(16)).decode("ascii")
    request = (
        f"GET {path} HTTP/1.1\r\n"
        f"Host: {HOST}:{port}\r\n"
        "Upgrade: websocket\r\n"
        "Connection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n"
        "\r\n"
    )
    return request.encode("ascii"), key


def split_handshake_response(data: bytes) -> Optional[Tuple[bytes, bytes]]:
    """
    C{(head, rest)} once C{data} holds the whole response head, else L{None}.

    @raise ConnectionError: when the server refused the upgrade.
    """
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return None
    head, rest = data[:end], data[end + 4 :]
    status = head.split(b"\r\n", 1)[0]
    if b" 101 " not in status + b" ":
        raise ConnectionError(f"WebSocket upgrade refused: {status.decode(errors='replace')}")
    return head, rest


def encode_frame(opcode: int, payload: bytes) -> bytes:
    """
    One final, masked (as a client must) frame.
    """
    size = len(payload)
    if size < 126:
        header = bytes((0x80 | opcode, 0x80 | size))
    elif size < 65536:
        header = bytes((0x80 | opcode, 0x80 | 126)) + size.to_bytes(2, "big")
    else:
        header = bytes((0x80 | opcode, 0x80 | 127)) + size.to_bytes(8, "big")
    key = os.urandom(4)
    if not size:
        return header + key
    stream = (key * (size // 4 + 1))[:size]
    masked = int.from_bytes(payload, "little") ^ int.from_bytes(stream, "little")
    return header + key + masked.to_bytes(size, "little")


class FrameReader:
    """
    Split the bytes a server sends into messages.

    L{feed} returns complete messages as C{(opcode, payload)}; fragmented
    messages are joined.  C{wire_bytes} counts everything received.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._fragments: List[bytes] = []
        self._fragment_opcode = 0
        self.wire_bytes = 0

    def feed(self, data: bytes) -> List[Tuple[int, bytes]]:
        self.wire_bytes += len(data)
        buffer = self._buffer
        buffer += data
        size = len(buffer)
        position = 0
        messages = []
        while size - position >= 2:
            first = buffer[position]
            length = buffer[position + 1]
            if length & 0x80:
                raise ConnectionError("the server sent a masked frame")
            start = position + 2
            if length == 126:
                if size - position < 4:
                    break
                length = int.from_bytes(buffer[start : start + 2], "big")
                start += 2
            elif length == 127:
                if size - position < 10:
                    break
                length = int.from_bytes(buffer[start : start + 8], "big")
                start += 8
            end = start + length
            if end > size:
                break
            payload = bytes(buffer[start:end])
            position = end
            opcode = first & 0x0F
            if first & 0x80 and opcode:
                messages.append((opcode, payload))
            else:
                self._fragment(opcode, payload, first & 0x80, messages)
        del buffer[:position]
        return messages

    def _fragment(self, opcode: int, payload: bytes, final: int, out: list) -> None:
        if opcode:
            self._fragment_opcode = opcode
        self._fragments.append(payload)
        if final:
            out.append((self._fragment_opcode, b"".join(self._fragments)))
            self._fragments = []


# -- JSON-RPC ------------------------------------------------------------------


class RPCError(Exception):
    def __init__(self, error: dict) -> None:
        super().__init__(f"{error.get('code')}: {error.get('message')}")
        self.code = error.get("code")
        self.data = error


class ConnectionClosed(ConnectionError):
    pass


class RPCRouter:
    """
    The JSON-RPC side of a client connection, whatever carries it.

    Incoming text messages go to L{on_output} (C{process.output} notifications,
    as raw bytes: the handler decides how much to decode), L{on_notification}
    (any other notification, decoded) or L{on_reply} (responses, decoded).
    Binary messages (from websocketd) go to L{on_binary}.
    """

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self.on_output: Callable[[bytes], None] = lambda payload: None
        self.on_notification: Callable[[dict], None] = lambda message: None
        self.on_binary: Callable[[bytes], None] = lambda payload: None
        self.on_text: Optional[Callable[[bytes], None]] = None

    def request(self, method: str, params: dict) -> Tuple[int, bytes]:
        request_id = next(self._ids)
        message = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}
        return request_id, json.dumps(message, separators=(",", ":")).encode("utf-8")

    def route(self, opcode: int, payload: bytes) -> None:
        if opcode == OP_TEXT:
            if self.on_text is not None:
                self.on_text(payload)
            elif payload.startswith(OUTPUT_PREFIX):
                self.on_output(payload)
            else:
                message = json.loads(payload)
                method = message.get("method")
                if method == "process.output":  # serialised some other way
                    self.on_output(payload)
                elif method is not None:
                    self.on_notification(message)
                else:
                    self.on_reply(message)
        elif opcode == OP_BINARY:
            self.on_binary(payload)

    def on_reply(self, message: dict) -> None:
        raise NotImplementedError


def reply_result(message: dict) -> Any:
    if "error" in message:
        raise RPCError(message["error"])
    return message["result"]


class Client(RPCRouter):
    """
    A blocking client for one WebSocket connection.

    L{call} sends a request and reads until its reply has come, handing
    everything else to the handlers; L{run_until} reads until a condition
    holds.

    @ivar nap: seconds to sleep after each read, so that each read takes
        many small messages at once (a cheaper client, at some latency).
    """

    nap = 0.0

    def __init__(self, port: int, path: str = "/ws/mcp", timeout: float = 120.0) -> None:
        super().__init__()
        self.reader = FrameReader()
        self.closed = False
        self._replies: Dict[int, dict] = {}
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._pending_messages: List[Tuple[int, bytes]] = []
        self._open(port, path)

    def _open(self, port: int, path: str) -> None:
        request, _ = handshake_request(port, path)
        self.sock.sendall(request)
        data = b""
        while True:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionClosed("closed during the opening handshake")
            data += chunk
            split = split_handshake_response(data)
            if split is not None:
                self._pending_messages = self.reader.feed(split[1])
                return

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            with contextlib.suppress(OSError):
                self.sock.sendall(encode_frame(OP_CLOSE, (1000).to_bytes(2, "big")))
        self.sock.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def send(self, payload: bytes, opcode: int = OP_TEXT) -> None:
        self.sock.sendall(encode_frame(opcode, payload))

    def call(self, method: str, params: dict) -> Any:
        request_id, payload = self.request(method, params)
        self.send(payload)
        self.run_until(lambda: request_id in self._replies)
        return reply_result(self._replies.pop(request_id))

    def on_reply(self, message: dict) -> None:
        self._replies[message.get("id")] = message

    def run_until(self, done: Callable[[], bool]) -> None:
        """
        Read and route messages until C{done()} is true.
        """
        sock = self.sock
        route = self.route
        reader = self.reader
        while not done():
            if self._pending_messages:
                messages, self._pending_messages = self._pending_messages, []
            else:
                if self.closed:
                    raise ConnectionClosed("the connection is closed")
                data = sock.recv(_RECV_SIZE)
                if not data:
                    self.closed = True
                    raise ConnectionClosed("the server closed the connection")
                messages = reader.feed(data)
                if self.nap:
                    time.sleep(self.nap)
            for opcode, payload in messages:
                if opcode < OP_CLOSE:
                    route(opcode, payload)
                else:
                    self._control(opcode, payload)

    def _control(self, opcode: int, payload: bytes) -> None:
        if opcode == OP_PING:
            self.send(payload, OP_PONG)
        elif opcode == OP_CLOSE:
            self.closed = True


class AsyncClient(asyncio.Protocol, RPCRouter):
    """
    An asyncio client for one WebSocket connection among many.
    """

    def __init__(self, port: int, path: str = "/ws/mcp") -> None:
        RPCRouter.__init__(self)
        self.port = port
        self.path = path
        self.reader = FrameReader()
        self.transport: Optional[asyncio.Transport] = None
        self.opened: asyncio.Future = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future = asyncio.get_running_loop().create_future()
        self._head = b""
        self._calls: Dict[int, asyncio.Future] = {}

    @classmethod
    async def connect(cls, port: int, path: str = "/ws/mcp", **kwargs: Any) -> "AsyncClient":
        loop = asyncio.get_running_loop()
        _, client = await loop.create_connection(
            lambda: cls(port, path, **kwargs), HOST, port
        )
        await client.opened
        return client

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        sock = transport.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        request, _ = handshake_request(self.port, self.path)
        transport.write(request)

    def data_received(self, data: bytes) -> None:
        if not self.opened.done():
            self._handshake(data)
            return
        for opcode, payload in self.reader.feed(data):
            if opcode < OP_CLOSE:
                self.route(opcode, payload)
            elif opcode == OP_PING:
                self.transport.write(encode_frame(OP_PONG, payload))
            elif opcode == OP_CLOSE:
                self.transport.close()

    def _handshake(self, data: bytes) -> None:
        self._head += data
        try:
            split = split_handshake_response(self._head)
        except ConnectionError as e:
            self.opened.set_exception(e)
            self.transport.close()
            return
        if split is not None:
            self._head = b""
            self.opened.set_result(self)
            if split[1]:
                self.data_received(split[1])

    def connection_lost(self, exc: Optional[Exception]) -> None:
        error = ConnectionClosed(f"connection lost: {exc or 'closed'}")
        if not self.opened.done():
            self.opened.set_exception(error)
        for future in self._calls.values():
            if not future.done():
                future.set_exception(error)
        if not self.closed.done():
            self.closed.set_result(None)

    def send(self, payload: bytes, opcode: int = OP_TEXT) -> None:
        self.transport.write(encode_frame(opcode, payload))

    def call_soon(self, method: str, params: dict) -> asyncio.Future:
        """
        Send a request now; the future fires with its result.
        """
        request_id, payload = self.request(method, params)
        future = asyncio.get_running_loop().create_future()
        self._calls[request_id] = future
        self.send(payload)
        return future

    async def call(self, method: str, params: dict) -> Any:
        return await self.call_soon(method, params)

    def on_reply(self, message: dict) -> None:
        future = self._calls.pop(message.get("id"), None)
        if future is None or future.done():
            return
        if "error" in message:
            future.set_exception(RPCError(message["error"]))
        else:
            future.set_result(message["result"])

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(encode_frame(OP_CLOSE, (1000).to_bytes(2, "big")))
            self.transport.close()
