"""
Who may open a WebSocket: tokens, origins, and the connection limit.
"""

import io

from autobahn.twisted.websocket import WebSocketClientFactory
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import TestCase

from ccx.config import ConfigError, build_config
from ccx.service import CCXService
from tests.support import Client, ServiceFixture

TOKEN = "s3cret-token-for-tests"


class HandshakeTests(TestCase):
    timeout = 30

    @inlineCallbacks
    def start(self, token=TOKEN, **settings):
        self.ccx = yield ServiceFixture(self, token=token, **settings).start()

    @inlineCallbacks
    def refused(self, path="/ws/mcp", headers=None, origin=None):
        """
        Try to connect; return the close reason of a refused handshake.
        """
        factory = WebSocketClientFactory(self.ccx.url(path), headers=headers or {}, origin=origin)
        factory.protocol = Client
        client = yield TCP4ClientEndpoint(reactor, "127.0.0.1", self.ccx.port).connect(factory)
        try:
            yield client.opened
        except ConnectionError as e:
            return str(e)
        client.sendClose()
        yield client.closed
        self.fail("the handshake was accepted")

    @inlineCallbacks
    def test_token_required(self):
        """Without a token, or with a wrong one, the handshake gets HTTP 401."""
        yield self.start()
        reason = yield self.refused()
        self.assertIn("401", reason)
        reason = yield self.refused(headers={"Authorization": "Bearer wrong"})
        self.assertIn("401", reason)

    @inlineCallbacks
    def test_bearer_header_and_query_token(self):
        """Authorization: Bearer and ?token= both open the WebSocket."""
        yield self.start()
        client = yield self.ccx.connect(headers={"Authorization": f"Bearer {TOKEN}"})
        self.assertEqual((yield client.call("ping")), {})
        client = yield self.ccx.connect(path=f"/ws/mcp?token={TOKEN}")
        self.assertEqual((yield client.call("ping")), {})

    @inlineCallbacks
    def test_token_never_logged(self):
        """At debug level, where Autobahn logs raw handshakes, the service's log never shows the token."""
        yield self.start(log_level="debug", log_format="json")
        out = io.StringIO()
        observer = self.ccx.service.log_observer_to(out)
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        client = yield self.ccx.connect(path=f"/ws/mcp?token={TOKEN}")
        yield client.call("ping")
        yield self.refused(headers={"Authorization": f"Bearer {TOKEN}x"})
        self.assertIn("[redacted]", out.getvalue())
        self.assertNotIn(TOKEN, out.getvalue())

    @inlineCallbacks
    def test_foreign_origin_refused(self):
        """A handshake from a web page's origin gets HTTP 403 unless that origin is allowed."""
        yield self.start(token=None, allow_origin=["https://ok.example"])
        reason = yield self.refused(origin="https://evil.example")
        self.assertIn("403", reason)
        client = yield self.ccx.connect(headers={"Origin": "https://ok.example"})
        self.assertEqual((yield client.call("ping")), {})

    @inlineCallbacks
    def test_connection_limit(self):
        """Past --max-connections, a handshake is refused politely (HTTP 503)."""
        yield self.start(token=None, max_connections=1)
        first = yield self.ccx.connect()
        reason = yield self.refused()
        self.assertIn("503", reason)
        self.assertEqual((yield first.call("ping")), {})


class ForgedProxyClient(Client):
    """
    A client that claims, in a PROXY protocol line of its own, to come from
    the loopback interface: what any peer of a haproxy: endpoint can write.
    """

    def connectionMade(self) -> None:
        self.transport.write(b"PROXY TCP4 127.0.0.1 127.0.0.1 40000 8003\r\n")
        super().connectionMade()


class ProxiedEndpointTests(TestCase):
    """
    Behind C{haproxy:}, a peer names its own address: only the token lets it in.
    """

    timeout = 30
    PORT = "haproxy:tcp:0:interface=127.0.0.1"

    @inlineCallbacks
    def connect(self, headers):
        factory = WebSocketClientFactory(self.ccx.url(), headers=headers)
        factory.protocol = ForgedProxyClient
        client = yield TCP4ClientEndpoint(reactor, "127.0.0.1", self.ccx.port).connect(factory)
        self.ccx.clients.append(client)
        try:
            yield client.opened
        except ConnectionError as e:
            return str(e)
        return client

    def test_refused_without_token(self):
        """Without a token, the service refuses to start on a proxied loopback port, in one line."""
        service = CCXService(build_config({"port": self.PORT}), reactor)
        self.addCleanup(service.stopService)
        error = self.assertRaises(ConfigError, service.startService)
        self.assertEqual(len(str(error).splitlines()), 1)
        self.assertIn("through a proxy", str(error))
        self.failureResultOf(service.when_listening(), ConfigError)

    @inlineCallbacks
    def test_forged_loopback_needs_the_token(self):
        """A forged PROXY line from 127.0.0.1 without the token gets 401; with it, programs run."""
        self.ccx = yield ServiceFixture(self, token=TOKEN, port=self.PORT).start()
        for token in (None, "", TOKEN[:-1]):
            headers = {} if token is None else {"Authorization": f"Bearer {token}"}
            reason = yield self.connect(headers)
            self.assertIn("401", reason)
        client = yield self.connect({"Authorization": f"Bearer {TOKEN}"})
        result = yield self.ccx.execute(client, {"command": ["printf", "hi"]})
        yield client.notification("process.completed", result["process_id"])
        self.assertEqual(client.output(result["process_id"]), b"hi")
