"""
Who may open a WebSocket: tokens, origins, and the connection limit.
"""

import base64
import io
import re
from urllib.parse import quote

from autobahn.twisted.websocket import WebSocketClientFactory
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint
import treq
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import TestCase

from ccx.config import ConfigError, build_config
from ccx.logs import make_observer
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
    def test_token_never_logged_in_any_spelling(self):
        """
        A token with +, / and = sent percent-encoded (either case), mistyped,
        in a Basic header or on a HEAD request, never reaches the log: not in
        ccx's observer (both formats, debug level), nor in twisted.web's own
        lines, which twistd logs without ccx's observer.
        """
        token = "Zm9v+YmFy/YmF6=="
        yield self.start(token=token, log_level="debug", log_format="json")
        outs = {}
        for log_format in ("json", "text"):
            outs[log_format] = io.StringIO()
            observer = make_observer(log_format, "debug", outs[log_format], secrets=[token])
            globalLogPublisher.addObserver(observer)
            self.addCleanup(globalLogPublisher.removeObserver, observer)
        plain = []

        def observer(event):
            # Autobahn's lines come only at --log-level debug, which installs
            # ccx's observer; twisted.web's come at info, with any observer.
            if event.get("log_namespace", "").startswith("twisted."):
                plain.append(formatEvent(event))

        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)

        upper = quote(token, safe="")
        lower = re.sub("%[0-9A-F]{2}", lambda m: m.group().lower(), upper)
        for encoded in (upper, lower):
            client = yield self.ccx.connect(path=f"/ws/mcp?token={encoded}")
            yield client.call("ping")
        reason = yield self.refused(path=f"/ws/mcp?token={upper}x")
        self.assertIn("401", reason)
        basic = base64.b64encode(f"user:{token}".encode()).decode()
        yield self.refused(headers={"Authorization": f"Basic {basic}"})
        http = f"http://127.0.0.1:{self.ccx.port}"
        for path in ("/health", "/metrics", "/nothing"):
            response = yield treq.request("HEAD", f"{http}{path}?token={lower}", persistent=False)
            yield response.content()

        texts = {name: out.getvalue() for name, out in outs.items()}
        for name, text in [*texts.items(), ("twisted.web", "\n".join(plain))]:
            for form in (token, upper, lower, basic, "Zm9v+YmFy", "Zm9v%2BYmFy", "Zm9v%2bYmFy"):
                self.assertNotIn(form, text, (name, form))
        for name, text in texts.items():
            self.assertIn("[redacted]", text, name)
            self.assertIn("received HTTP request", text, name)

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
        # The proxied address is the forged one (port 8003): the Host the
        # client sends names the real port, which a proxy's name would be.
        self.ccx = yield ServiceFixture(
            self, token=TOKEN, port=self.PORT, allow_host=["127.0.0.1"]
        ).start()
        for token in (None, "", TOKEN[:-1]):
            headers = {} if token is None else {"Authorization": f"Bearer {token}"}
            reason = yield self.connect(headers)
            self.assertIn("401", reason)
        client = yield self.connect({"Authorization": f"Bearer {TOKEN}"})
        result = yield self.ccx.execute(client, {"command": ["printf", "hi"]})
        yield client.notification("process.completed", result["process_id"])
        self.assertEqual(client.output(result["process_id"]), b"hi")
