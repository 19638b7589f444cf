"""
Integration-test support: a real ccx service on 127.0.0.1 port 0 and a real
WebSocket client that waits for events, never for time.
"""

import json
import os
import shutil
from typing import Any, Callable, Dict, List, Optional, Tuple

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint

from ccx.config import build_config
from ccx.protocol import OutputFrame, decode_output_frame
from ccx.service import CCXService
from ccx.testing import polling
from ccx.testing.proc import leftovers, open_fds
from ccx.testing.cgroups import cgroups_left

PROGRAMS = ("sh", "seq", "sleep", "cat", "head", "printf", "true", "yes")


def program(name: str) -> str:
    path = shutil.which(name)
    assert path is not None, f"{name} is needed by the tests"
    return path


def frame_message(frame: OutputFrame) -> dict:
    """
    A binary output frame as a test reads it: the C{process.output} it
    stands for, its C{data} the raw bytes.
    """
    return {
        "method": "process.output",
        "binary": True,
        "params": {
            "process_id": frame.process_id,
            "type": frame.stream,
            "offset": frame.offset,
            "time": frame.time,
            "data": frame.data,
        },
    }


def chunk_bytes(params: dict) -> bytes:
    """
    The bytes of a C{process.output}: raw from a binary frame, UTF-8 text
    otherwise.
    """
    data = params["data"]
    return data if isinstance(data, bytes) else data.encode("utf-8")


class Client(WebSocketClientProtocol):
    """
    A JSON-RPC client that records every message and lets a test wait for
    the next one that matches.
    """

    def __init__(self) -> None:
        super().__init__()
        self.messages: List[dict] = []
        self.opened: Deferred = Deferred()
        self.closed: Deferred = Deferred()
        self._waiting: List[Tuple[Callable[[dict], bool], Deferred]] = []
        self._next_id = 0

    def onOpen(self) -> None:
        self.opened.callback(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if isBinary:
            message = frame_message(decode_output_frame(payload))
        else:
            message = json.loads(payload)
        self.messages.append(message)
        for entry in list(self._waiting):
            matches, d = entry
            if matches(message):
                self._waiting.remove(entry)
                d.callback(message)

    def onClose(self, wasClean: bool, code: Any, reason: Any) -> None:
        self.close_code = code
        if not self.opened.called:
            self.opened.errback(ConnectionError(f"refused: {code} {reason}"))
        self.closed.callback(code)

    def wait_for(self, matches: Callable[[dict], bool], seen: bool = True) -> Deferred:
        """
        The first message (already received, if C{seen}) that C{matches}.
        """
        if seen:
            for message in self.messages:
                if matches(message):
                    return succeed(message)
        d: Deferred = Deferred()
        self._waiting.append((matches, d))
        return d

    def notification(self, method: str, process_id: Optional[str] = None) -> Deferred:
        def matches(m: dict) -> bool:
            return isinstance(m, dict) and m.get("method") == method and (
                process_id is None or m["params"].get("process_id") == process_id
            )

        return self.wait_for(matches).addCallback(lambda m: m["params"])

    def send_json(self, message: Any) -> None:
        self.sendMessage(json.dumps(message).encode("utf-8"))

    def request(self, method: str, params: Any = None) -> Deferred:
        """
        Send a request; fire with the whole response (result or error).
        """
        self._next_id += 1
        request_id = self._next_id
        message = {"jsonrpc": "2.0", "id": request_id, "method": method}
        if params is not None:
            message["params"] = params
        d = self.wait_for(
            lambda m: isinstance(m, dict) and m.get("id") == request_id and "method" not in m
        )
        self.send_json(message)
        return d

    def call(self, method: str, params: Any = None) -> Deferred:
        """
        Send a request; fire with its result, fail on an error response.
        """

        def result(response: dict) -> Any:
            if "error" in response:
                raise AssertionError(f"{method} failed: {response['error']}")
            return response["result"]

        return self.request(method, params).addCallback(result)

    def output(
        self, process_id: str, stream: str = "stdout", start: int = 0, binary: bool = False
    ) -> bytes:
        """
        Everything received so far of one stream, checked to be contiguous
        from offset C{start}; with C{binary}, every output of the process
        checked to have come as a binary frame.
        """
        data = b""
        for m in self.messages:
            if not isinstance(m, dict) or m.get("method") != "process.output":
                continue
            p = m["params"]
            if p["process_id"] != process_id:
                continue
            assert not binary or m.get("binary"), "output came as JSON"
            if p["type"] == stream:
                assert p["offset"] == start + len(data), (p["offset"], start + len(data))
                data += chunk_bytes(p)
        return data

    def close(self) -> Deferred:
        if self.closed.called:
            return succeed(None)
        self.sendClose()
        return self.closed


class ServiceFixture:
    """
    A running ccx service with the test programs allowed.
    """

    def __init__(self, testcase: Any, token: Optional[str] = None, **settings: Any) -> None:
        """
        @param token: require this bearer token (written to C{token_file}).
        @param settings: anything else L{build_config} takes.
        """
        self.testcase = testcase
        self.token_file: Optional[str] = None
        if token is not None:
            self.token_file = os.path.abspath(testcase.mktemp())
            with open(self.token_file, "w") as f:
                f.write(token + "\n")
            settings["token_file"] = self.token_file
        values: Dict[str, Any] = {
            "port": "tcp:0:interface=127.0.0.1",
            "allow": [program(name) for name in PROGRAMS],
            "kill_grace": 1.0,
            "keep_finished": 30.0,
            # Records and journals in a directory of the test's own, removed
            # after the service has stopped (cleanups run last first).
            "state_dir": os.path.abspath(testcase.mktemp()),
        }
        testcase.addCleanup(shutil.rmtree, values["state_dir"], True)
        values.update(settings)
        self.config = build_config(values)
        self.service = CCXService(self.config, reactor)
        self.clients: List[Client] = []
        self.groups: List[int] = []

    @inlineCallbacks
    def start(self) -> Any:
        self.service.startService()
        self.testcase.addCleanup(self.stop)
        port = yield self.service.when_listening()
        self.port = port.getHost().port
        return self

    def url(self, path: str = "/ws/mcp") -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    @inlineCallbacks
    def connect(
        self, path: str = "/ws/mcp", headers: Optional[dict] = None, protocols: Tuple[str, ...] = ()
    ) -> Any:
        factory = WebSocketClientFactory(
            self.url(path), headers=headers or {}, protocols=list(protocols) or None
        )
        factory.protocol = Client
        factory.setProtocolOptions(maxMessagePayloadSize=0, maxFramePayloadSize=0)
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.port)
        client = yield endpoint.connect(factory)
        self.clients.append(client)
        yield client.opened
        return client

    @inlineCallbacks
    def execute(self, client: Client, params: dict) -> Any:
        """
        Start a program and remember its group, to check it is gone at the end.
        """
        result = yield client.call("execute", params)
        self.groups.append(result["pgid"])
        return result

    @inlineCallbacks
    def stop(self) -> Any:
        for client in self.clients:
            yield client.close()
        if self.service.running:
            yield self.service.stopService()
        self.testcase.assertEqual(leftovers(self.groups), {}, "processes left behind")
        self.testcase.assertEqual(cgroups_left(), [], "cgroups left behind")


@inlineCallbacks
def connect_to(testcase: Any, port: int) -> Any:
    """
    Connect a test client to a ccx that something else started (twistd, a
    fixture already stopped and started again) and listens on C{port}; the
    client is closed at cleanup.
    """
    fixture = ServiceFixture.__new__(ServiceFixture)
    fixture.port = port
    fixture.clients = []
    client = yield fixture.connect()
    testcase.addCleanup(client.close)
    return client


def fd_count() -> int:
    return open_fds(os.getpid())


def until(predicate: Callable[[], bool], timeout: float = 10.0) -> Deferred:
    """
    Fire once C{predicate()} holds, looking again every 10 ms (for state
    only the kernel can tell, such as a stopped process).
    """
    return Deferred.fromCoroutine(polling.until(reactor, predicate, timeout))
