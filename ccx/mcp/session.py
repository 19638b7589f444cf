"""
The MCP state of one client: the protocol version it negotiated, the log
level it asked for, and its requests in flight (so that
C{notifications/cancelled} can reach them).
"""

from typing import Any, Callable, Dict, List, Optional

from twisted.logger import Logger

from ccx.mcp.waiting import WaitBudget
from ccx.protocol import id_key
from ccx.rpc.interfaces import INotificationChannel
from ccx.session import Session

# Newest first.  The initialize handshake answers the client's version when
# it is one of these, and the newest otherwise (the client then decides).
SUPPORTED_VERSIONS = ("2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05")
LATEST_VERSION = SUPPORTED_VERSIONS[0]

# RFC 5424 severities, as MCP's logging names them, least severe first.
LOG_LEVELS = ("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency")


def negotiate(requested: str) -> str:
    """
    The version to answer C{initialize} with.
    """
    return requested if requested in SUPPORTED_VERSIONS else LATEST_VERSION


# Every revision, newest first: the stateless one (no handshake) and those above.
KNOWN_VERSIONS = ("2026-07-28",) + SUPPORTED_VERSIONS


def at_least(version: Optional[str], minimum: str) -> bool:
    """
    Whether a negotiated C{version} is C{minimum} or newer.
    """
    if version not in KNOWN_VERSIONS:
        return False
    return KNOWN_VERSIONS.index(version) <= KNOWN_VERSIONS.index(minimum)


class McpSession:
    """
    What MCP adds to a client's L{Session}.

    @ivar session: the client's L{Session}: the processes it started (cancelled
        when it ends) and its subscriptions.
    @ivar standalone: where notifications that belong to no request go (the
        WebSocket, or the HTTP session's C{GET} stream).
    @ivar protocol_version: the negotiated version, once C{initialize} was answered.
    @ivar initialized: whether C{notifications/initialized} arrived.
    @ivar stateless: whether this is one stateless-era request (L{for_request}).
    @ivar capabilities: the client's capabilities, as its request declared them.
    @ivar waits: the bound on its waiting requests (shared by the requests of
        one client in the stateless era).
    @ivar log_level: the least severity the client wants C{notifications/message}
        for, or L{None} until it sends C{logging/setLevel}.
    """

    log = Logger()

    def __init__(
        self,
        session: Session,
        standalone: INotificationChannel,
        waits: Optional[WaitBudget] = None,
    ) -> None:
        self.session = session
        self.standalone = standalone
        self.waits = waits if waits is not None else WaitBudget()
        self.protocol_version: Optional[str] = None
        self.client_info: Dict[str, Any] = {}
        self.initialized = False
        self.log_level: Optional[str] = None
        self._in_flight: Dict[str, List[Callable[[], None]]] = {}
        self._waiting: List[Callable[[], None]] = []
        self.stateless = False
        self.capabilities: Dict[str, Any] = {}

    def for_request(
        self,
        version: str,
        capabilities: Dict[str, Any],
        client_info: Optional[Dict[str, Any]],
        log_level: Optional[str],
    ) -> "McpSession":
        """
        This client as one stateless-era request sees it: the version, the
        capabilities and the log level its envelope says, nothing carried
        over from another request; its programs outlive the connection (as
        C{on_disconnect: "keep"}), and its cancellation and waits are this
        client's.
        """
        view = McpSession(self.session, self.standalone, self.waits)
        view.protocol_version = version
        view.capabilities = capabilities
        view.client_info = client_info or {}
        view.log_level = log_level
        view.stateless = True
        view._in_flight = self._in_flight
        view._waiting = self._waiting
        return view

    @property
    def session_id(self) -> str:
        return self.session.session_id

    def begin(self, request_id: Any, cancel: Callable[[], None]) -> Callable[[], None]:
        """
        Note a request in flight, cancelled by C{cancel}.

        @return: what to call once it is answered.
        """
        key = id_key(request_id)
        self._in_flight.setdefault(key, []).append(cancel)

        def end() -> None:
            actions = self._in_flight.get(key, [])
            if cancel in actions:
                actions.remove(cancel)
            if not actions:
                self._in_flight.pop(key, None)

        return end

    def cancel(self, request_id: Any) -> bool:
        """
        The client cancelled a request: stop it.  An unknown or finished
        request is ignored, as the specification asks.

        @return: whether a request in flight was cancelled.
        """
        actions = self._in_flight.pop(id_key(request_id), [])
        for action in actions:
            action()
        return bool(actions)

    def waiting(self, finish: Callable[[], None]) -> Callable[[], None]:
        """
        Note a waiting request, ended by C{finish} when the client goes.

        @return: what to call once it has answered.
        """
        self._waiting.append(finish)
        return lambda: finish in self._waiting and self._waiting.remove(finish)

    def close(self) -> None:
        """
        The client went: its waiting requests answer now (to nobody), so
        that none holds a timer or a subscription after it.
        """
        for finish in list(self._waiting):
            finish()
        self._waiting = []

    def wants(self, level: str) -> bool:
        return self.log_level is not None and LOG_LEVELS.index(level) >= LOG_LEVELS.index(
            self.log_level
        )

    def send_log(
        self, level: str, data: Any, sink: Optional[INotificationChannel] = None
    ) -> None:
        """
        Send C{notifications/message} when the client asked for C{level},
        on the stream of the request it belongs to (C{sink}), or else on
        the standalone one.
        """
        if self.wants(level):
            (sink or self.standalone).send_notification(
                "notifications/message", {"level": level, "logger": "ccx", "data": data}
            )
