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
