"""
Shared helpers for the ccx benchmarks.

- L{Service}: start a ccx service (twistd, from this checkout) on a free
  loopback port, wait until it answers C{/health}, and stop it again whatever
  happens, with every process it started.
- L{Child}: the same for any other server (websocketd).
- A minimal WebSocket client (RFC 6455) on the standard library only:
  L{FrameReader} parses frames with as little work per byte as possible,
  L{Client} is a blocking client for one connection, and L{AsyncClient} an
  asyncio protocol for many.  Both speak JSON-RPC through L{RPCRouter}.
- L{proc_cpu_seconds}, L{proc_memory}: the service's CPU time and memory
  from C{/proc}.
- L{print_report}: the human-readable report and the final JSON line.

Everything here talks to 127.0.0.1 only.
"""

import asyncio
import base64
import contextlib
import http.client
import itertools
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
import zlib
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

HOST = "127.0.0.1"
# The checkout whose ccx is run: this one, unless $CCX_CHECKOUT names another
# (to compare a change against it).
REPO = os.environ.get("CCX_CHECKOUT") or os.path.dirname(
    os.path.dirname(os.path.abspath(__file__))
)
MIB = 1024 * 1024
GIB = 1024 * MIB

OP_CONTINUATION = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

# How every process.output notification of ccx begins: frames starting like
# this can be counted without decoding their JSON.
OUTPUT_PREFIX = b'{"jsonrpc":"2.0","method":"process.output"'

_CLK_TCK = os.sysconf("SC_CLK_TCK")
_RECV_SIZE = 1024 * 1024


# -- processes -----------------------------------------------------------------


def free_port() -> int:
    """
    A TCP port on 127.0.0.1 that nothing listens on right now.
    """
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def raise_fd_limit(wanted: int) -> int:
    """
    Raise this process's open-files soft limit to C{wanted} (at most the hard
    limit); children started afterwards inherit it.

    @return: the soft limit now in force.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


def unwind_on_signals() -> None:
    """
    Make SIGTERM, and SIGINT even where it was inherited ignored (a
    background job), unwind like Ctrl-C: every C{finally} and context
    manager then stops what it started.
    """

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, signal.default_int_handler)


def children_of(pid: int) -> List[int]:
    """
    The pids of the processes whose parent is C{pid}.
    """
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(b")") + 2 :].split()
        if int(fields[1]) == pid:
            found.append(int(entry))
    return found


def proc_cpu_seconds(pid: int) -> float:
    """
    User plus system CPU time of process C{pid} itself (not its children).
    """
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read()
    fields = stat[stat.rindex(b")") + 2 :].split()
    # Fields 14 and 15 of stat(5), counted from 1; "state" (3) is fields[0].
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def proc_memory(pid: int) -> Dict[str, float]:
    """
    C{VmRSS} and C{VmHWM} (peak RSS) of process C{pid}, in MiB.
    """
    memory = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                memory[key] = int(value.split()[0]) / 1024
    return memory


class Child:
    """
    A server process in a session (and process group) of its own, so that
    the terminal's Ctrl-C reaches only this script, which then stops it.
    Output goes to a temporary log file, shown when something goes wrong.
    """

    def __init__(
        self,
        argv: Sequence[str],
        port: int,
        env: Optional[dict] = None,
        cwd: Optional[str] = None,
    ) -> None:
        self.argv = list(argv)
        self.port = port
        self.env = env
        self.cwd = cwd
        self.process: Optional[subprocess.Popen] = None
        self._log = tempfile.NamedTemporaryFile(
            prefix="ccx-bench-", suffix=".log", delete=False
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def start(self, timeout: float = 20.0) -> "Child":
        self.process = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=self.env,
            cwd=self.cwd,
            start_new_session=True,
        )
        try:
            self._wait_ready(time.monotonic() + timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, deadline: float) -> None:
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.argv[0]} exited with {self.process.returncode}:\n{self.log_tail()}"
                )
            if self.ready():
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.argv[0]} did not start:\n{self.log_tail()}")
            time.sleep(0.05)

    def ready(self) -> bool:
        try:
            socket.create_connection((HOST, self.port), timeout=1).close()
        except OSError:
            return False
        return True

    def log_tail(self, lines: int = 20) -> str:
        with open(self._log.name, errors="replace") as f:
            return "".join(f.readlines()[-lines:])

    def stop(self, timeout: float = 15.0) -> None:
        """
        SIGTERM, then SIGKILL to the process group if it has not exited in
        C{timeout} seconds.  Idempotent.
        """
        process = self.process
        if process is None:
            return
        try:
            if process.poll() is None:
                strays = children_of(process.pid)
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout)
                except subprocess.TimeoutExpired:
                    self._kill(strays)
        finally:
            self.process = None
            self._log.close()
            os.unlink(self._log.name)

    def _kill(self, strays: Iterable[int]) -> None:
        process = self.process
        print(
            f"warning: {self.argv[0]} (pid {process.pid}) did not exit after SIGTERM; "
            "killing it and the process groups it started",
            file=sys.stderr,
        )
        # Its own group, then the groups of the programs it had started
        # (ccx starts each in a group whose id is its pid).
        for group in [process.pid, *strays]:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(group, signal.SIGKILL)
        process.wait()

    def __enter__(self) -> "Child":
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()


class Service(Child):
    """
    A ccx service run with twistd from this checkout.

    @param allow: programs to put on the allow-list.
    @param options: further C{twistd ccx} options.
    """

    def __init__(
        self,
        allow: Sequence[str],
        options: Sequence[str] = (),
        python: Optional[str] = None,
        log_level: str = "warn",
    ) -> None:
        python = python or default_python()
        port = free_port()
        argv = [
            python,
            "-c",
            "from twisted.scripts.twistd import run; run()",
            "-n",
            "--pidfile=",
            "ccx",
            "--port",
            f"tcp:{port}:interface={HOST}",
            "--log-level",
            log_level,
            *itertools.chain.from_iterable(("--allow", name) for name in allow),
            *options,
        ]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO, env.get("PYTHONPATH")]))
        # In the checkout: "python -c" puts the working directory first on
        # sys.path.
        super().__init__(argv, port, env, cwd=REPO)

    @property
    def url_path(self) -> str:
        return "/ws/mcp"

    def ready(self) -> bool:
        try:
            return self.health()["status"] == "ok"
        except (OSError, ValueError, http.client.HTTPException):
            return False

    def health(self) -> dict:
        connection = http.client.HTTPConnection(HOST, self.port, timeout=5)
        try:
            connection.request("GET", "/health")
            return json.loads(connection.getresponse().read())
        finally:
            connection.close()

    def cpu_seconds(self) -> float:
        return proc_cpu_seconds(self.pid)

    def memory(self) -> Dict[str, float]:
        return proc_memory(self.pid)


def default_python() -> str:
    """
    The interpreter that runs the service: C{$CCX_PYTHON}, or this one.
    """
    return os.environ.get("CCX_PYTHON") or sys.executable


def check_python(python: str) -> None:
    """
    Fail early, with a hint, when C{python} cannot run ccx.
    """
    probe = subprocess.run(
        [python, "-c", "import twisted, autobahn"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    if probe.returncode != 0:
        sys.exit(
            f"{python} cannot import twisted and autobahn: run this script with the "
            "virtualenv's python, or give --python (or $CCX_PYTHON)"
        )


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


# -- output checking -----------------------------------------------------------


class StreamCheck:
    """
    Follow one process's C{process.output} notifications as a subscriber
    receives them: offsets must be contiguous, and the total is counted.

    @param decode: decode each notification's JSON (and so check offsets);
        with C{False} only the frame sizes are counted and the byte total
        comes from C{process.completed}.
    @param checksum: keep the CRC-32 of the bytes received in C{crc}.
    """

    def __init__(self, decode: bool = True, checksum: bool = False) -> None:
        self.decode = decode
        self.checksum = checksum
        self.bytes = 0
        self.frames = 0
        self.frame_bytes = 0
        self.gaps: List[str] = []
        self.completion: Optional[dict] = None
        self.crc = 0

    def output(self, payload: bytes) -> None:
        self.frames += 1
        self.frame_bytes += len(payload)
        if not self.decode:
            return
        params = json.loads(payload)["params"]
        if params["type"] != "stdout":
            return
        data = params["data"]
        if self.checksum:
            raw = data.encode("utf-8")
            self.crc = zlib.crc32(raw, self.crc)
            size = len(raw)
        else:
            size = len(data) if data.isascii() else len(data.encode("utf-8"))
        if params["offset"] != self.bytes and len(self.gaps) < 5:
            self.gaps.append(f"expected offset {self.bytes}, got {params['offset']}")
        self.bytes = params["offset"] + size

    def notification(self, message: dict) -> None:
        method = message["method"]
        params = message["params"]
        if method == "process.completed":
            self.completion = params
            if not self.decode:
                self.bytes = params["stdout_bytes"] - params["dropped_bytes"]
        elif method == "process.dropped" and len(self.gaps) < 5:
            self.gaps.append(f"dropped {params['bytes']} bytes at {params['offset']}")

    @property
    def done(self) -> bool:
        return self.completion is not None

    def problems(self, expected: int) -> List[str]:
        """
        What is wrong, if anything, once the process has completed.
        """
        found = list(self.gaps)
        if self.completion is None:
            found.append("no process.completed")
            return found
        if self.completion["status"] != "completed":
            found.append(f"status {self.completion['status']}")
        if self.completion["stdout_bytes"] != expected:
            found.append(f"program wrote {self.completion['stdout_bytes']} bytes, not {expected}")
        if self.bytes != expected:
            found.append(f"received {self.bytes} bytes, not {expected}")
        return found


# -- reports -------------------------------------------------------------------


def percentile(values: Sequence[float], fraction: float) -> float:
    """
    The nearest-rank percentile of C{values} (0 < fraction <= 1).
    """
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * fraction // 1))
    return ordered[int(rank) - 1]


def machine() -> Dict[str, Any]:
    """
    The facts about this machine that the figures depend on.
    """
    model = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        total_kib = int(f.readline().split()[1])
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(total_kib / 1024 / 1024, 1),
        "client_python": sys.version.split()[0],
    }


def print_report(title: str, rows: Iterable[Tuple[str, Any]], record: dict) -> None:
    """
    Print C{rows} as aligned C{label: value} lines under C{title}, then
    C{record} as one JSON line.
    """
    rows = list(rows)
    width = max((len(label) for label, _ in rows), default=0)
    print()
    print(title)
    print("-" * len(title))
    for label, value in rows:
        print(f"  {label.ljust(width)}  {value}")
    print()
    print(json.dumps(record, sort_keys=True), flush=True)


def rounded(value: float, digits: int = 2) -> float:
    return round(value, digits)
