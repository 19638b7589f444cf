"""
An echo WebSocket for Autobahn|Testsuite, built and served the way ccx builds
and serves its own, so that the conformance run tests ccx's WebSocket settings
and serving path rather than Autobahn's defaults.

    python tests/conformance/echo_server.py PORT

listens on 127.0.0.1:PORT (C{0}: any free port) and prints C{PORT} on a line
of its own once it listens. Both WebSockets are C{WebSocketServerFactory}s
with C{ccx.web.websocket.protocol_options()} of ccx's default configuration,
mounted with ccx's own L{WebSocketEndpoint} in a C{twisted.web} C{Site}:

  - C{/ws/mcp} (and C{/ws}): exactly ccx's settings. Families 1-7 and 10.
  - C{/large/mcp} (and C{/large}): the same settings, except that
    C{maxMessagePayloadSize} and C{maxFramePayloadSize} are raised from ccx's
    1 MiB to 16 MiB, the largest message of family 9 (performance), which
    runs here and only here. Autobahn applies the limit to messages sent
    too, so the echo of a 16 MiB message needs it as well.
"""

import sys
from typing import Any, Dict

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.task import react
from twisted.logger import (
    FilteringLogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogBeginner,
    textFileLogObserver,
)
from twisted.web.resource import Resource
from twisted.web.server import Site

from ccx.config import build_config
from ccx.web.site import WebSocketEndpoint
from ccx.web.websocket import protocol_options

FAMILY_9_LARGEST_MESSAGE = 16 * 1024 * 1024


class EchoProtocol(WebSocketServerProtocol):
    """
    Sends every message back as it came: text as text, binary as binary.
    """

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.sendMessage(payload, isBinary)


def echo_factory(options: Dict[str, Any]) -> WebSocketServerFactory:
    factory = WebSocketServerFactory(server="ccx-conformance-echo")
    factory.protocol = EchoProtocol
    factory.setProtocolOptions(**options)
    return factory


class QuietSite(Site):
    # One access log line per test case would bury the warnings.
    def log(self, request) -> None:
        pass


def build_site() -> Site:
    production = protocol_options(build_config({}))  # ccx's defaults
    # Family 9 only: ccx's settings with its 1 MiB payload limits raised to
    # 16 MiB (see the module docstring); everything else stays ccx's.
    large = dict(
        production,
        maxMessagePayloadSize=FAMILY_9_LARGEST_MESSAGE,
        maxFramePayloadSize=FAMILY_9_LARGEST_MESSAGE,
    )
    root = Resource()
    root.putChild(b"ws", WebSocketEndpoint(echo_factory(production)))
    root.putChild(b"large", WebSocketEndpoint(echo_factory(large)))
    return QuietSite(root)


def main(reactor, port: str = "0") -> Deferred:
    globalLogBeginner.beginLoggingTo(
        [
            FilteringLogObserver(
                textFileLogObserver(sys.stderr),
                [LogLevelFilterPredicate(defaultLogLevel=LogLevel.warn)],
            )
        ],
        redirectStandardIO=False,
    )
    endpoint = serverFromString(reactor, f"tcp:{int(port)}:interface=127.0.0.1")
    listening = endpoint.listen(build_site())

    def announce(listening_port) -> Deferred:
        print(listening_port.getHost().port, flush=True)
        return Deferred()  # serve until SIGTERM or SIGINT

    return listening.addCallback(announce)


if __name__ == "__main__":
    react(main, sys.argv[1:2])
