"""
The service under test as the scenarios see it: connections to it, its
C{/health}, the process groups started on it, and (when its pid is known)
its memory and file descriptors from C{/proc}.
"""

import json
import socket
from typing import Any, List, Optional, Set
from urllib.parse import urlparse

from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.web.client import Agent, readBody
from twisted.web.http_headers import Headers

from ccx.cli.client import RPCClientProtocol, connect
from ccx.stress.streams import ProcessWatch, Tracker
from ccx.testing.polling import Stuck, until, within
from ccx.testing.proc import open_fds, rss_mib

LOOPBACK = ("127.0.0.1", "localhost", "::1")
# How long the service may take to answer execute (it answers once the
# program runs: a few milliseconds).
EXECUTE_TIMEOUT = 15.0


class Connection:
    """
    One WebSocket to the service, with a L{Tracker} following what it is
    sent.

    @ivar protocol: the L{RPCClientProtocol}.
    """

    def __init__(self, target: "Target", protocol: RPCClientProtocol) -> None:
        self.target = target
        self.protocol = protocol
        self.tracker = Tracker()
        protocol.add_listener(self.tracker.notified)

    def call(self, method: str, params: Optional[dict] = None) -> Deferred:
        return self.protocol.call(method, params)

    async def execute(
        self, content: Optional[object] = None, drops: bool = False, **params: Any
    ) -> ProcessWatch:
        """
        Start a program (C{params} are C{execute}'s); remember its process
        group, to check at the end that nothing of it is left.

        @param content: checks the bytes of its stdout (L{Pattern}, L{Digest}).
        @param drops: whether C{process.dropped} is expected.
        @return: the L{ProcessWatch} of the new process.
        """
        result = await within(
            self.protocol.call("execute", params),
            EXECUTE_TIMEOUT,
            f"no answer to execute {params.get('command')!r}",
            self.target.reactor,
        )
        self.target.pgids.add(result["pgid"])
        # Set up before anything else is read: the reply comes before any
        # notification about the process.
        watch = self.tracker.watch(result["process_id"])
        watch.pid = result["pid"]
        watch.content = content
        watch.allow_drops = drops
        return watch

    async def control(self, kind: str, watch: ProcessWatch) -> dict:
        return await self.protocol.call(
            "control", {"type": kind, "process_id": watch.process_id}
        )

    async def describe(self, watch: ProcessWatch) -> Optional[dict]:
        """
        The process as C{list} reports it, or None when it is not listed.
        """
        listing = await self.protocol.call("list", {})
        for entry in listing["processes"]:
            if entry["process_id"] == watch.process_id:
                return entry
        return None

    # Reading -------------------------------------------------------------

    def stop_reading(self) -> None:
        """
        Stop reading the socket: the service sees a stalled client.
        """
        self.protocol.transport.pauseProducing()

    def start_reading(self) -> None:
        self.protocol.transport.resumeProducing()

    def limit_receive_buffer(self, size: int) -> None:
        """
        Fix the socket's receive buffer (no autotuning), so that what the
        kernel holds for a client that does not read stays small.
        """
        handle = self.protocol.transport.getHandle()
        handle.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)

    # Closing -------------------------------------------------------------

    @property
    def open(self) -> bool:
        return self.protocol.state == self.protocol.STATE_OPEN

    def close(self) -> Deferred:
        """
        Close with the WebSocket closing handshake; fires once closed.
        """
        self.start_reading()
        return self.protocol.close()

    def abort(self) -> Deferred:
        """
        Drop the TCP connection at once, with no closing handshake.
        """
        self.protocol.transport.abortConnection()
        return self.protocol.when_closed()


class Target:
    """
    The ccx service the scenarios run against.

    @ivar url: its WebSocket URL, on a loopback address.
    @ivar pid: its pid, when known (for C{/proc} figures).
    @ivar pgids: the process groups of every program started on it.
    @ivar buffer_bytes: the output it holds per stream (C{--buffer-bytes}).
    @ivar kill_grace: its C{--kill-grace}.
    @ivar baseline: processes already live when the scenario began (left
        by an earlier one, which failed for it).
    @ivar rate_limited: calls the service refused with -32001 and that were
        made again.
    """

    def __init__(
        self,
        reactor: Any,
        url: str,
        token: Optional[str] = None,
        pid: Optional[int] = None,
        buffer_bytes: int = 1024 * 1024,
        kill_grace: float = 5.0,
    ) -> None:
        parsed = urlparse(url)
        if parsed.hostname not in LOOPBACK:
            raise ValueError(f"--url {url}: the stress suite only talks to loopback addresses")
        self.reactor = reactor
        self.url = url
        self.token = token
        self.pid = pid
        self.buffer_bytes = buffer_bytes
        self.kill_grace = kill_grace
        self.pgids: Set[int] = set()
        self.rate_limited = 0
        self.baseline = 0
        self.connections: List[Connection] = []
        scheme = "https" if parsed.scheme == "wss" else "http"
        self._health_url = f"{scheme}://{parsed.netloc}/health".encode("ascii")
        self._agent = Agent(reactor)

    async def connect(self) -> Connection:
        protocol = await connect(self.reactor, self.url, token=self.token, timeout=30.0)
        connection = Connection(self, protocol)
        self.connections.append(connection)
        return connection

    async def close_all(self) -> None:
        """
        Close every connection still open (after a scenario, whatever
        happened in it).
        """
        for connection in self.connections:
            if connection.open:
                await connection.close()
        self.connections = []

    async def health(self) -> dict:
        headers = Headers()
        if self.token is not None:
            headers.addRawHeader(b"authorization", f"Bearer {self.token}".encode())
        response = await self._agent.request(b"GET", self._health_url, headers)
        return json.loads(await readBody(response))

    async def settle(self, timeout: float = 30.0) -> dict:
        """
        Wait until, as C{/health} says, no process is live and no WebSocket
        is open (but those live before the scenario, see L{baseline}).

        @return: the last C{/health}; it says how far it got on timeout.
        """
        last: List[dict] = []

        async def settled() -> bool:
            last[:] = [await self.health()]
            return self.settled(last[0])

        try:
            await until(self.reactor, settled, timeout, 0.1)
        except Stuck:
            pass
        return last[0]

    def settled(self, health: dict) -> bool:
        return health["processes"] <= self.baseline and health["connections"] == 0

    async def live_processes(self) -> List[dict]:
        """
        The processes the service lists as not exited, as C{list} has them.
        """
        connection = await self.connect()
        listing = await connection.call("list", {})
        await connection.close()
        self.connections.remove(connection)
        return [p for p in listing["processes"] if p["state"] != "exited"]

    async def unsettled(self, health: dict) -> Optional[str]:
        """
        What is still live or open (beyond L{baseline}), for a problem; None
        when the service has settled.
        """
        if self.settled(health):
            return None
        live = await self.live_processes()
        shown = [
            f"{p['command']} {p['state']} after {p['stdout_bytes']} bytes, "
            f"{p['subscribers']} subscribers"
            for p in live[:5]
        ]
        return (
            f"{health['processes']} processes still live (before: {self.baseline}), "
            f"{health['connections']} connections still open: {'; '.join(shown)}"
        )

    def sleep(self, seconds: float) -> Deferred:
        return deferLater(self.reactor, seconds, lambda: None)

    def rss_mib(self) -> Optional[float]:
        return rss_mib(self.pid) if self.pid is not None else None

    def open_fds(self) -> Optional[int]:
        return open_fds(self.pid) if self.pid is not None else None
