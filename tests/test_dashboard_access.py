"""
Who reaches the dashboard and its WebSocket: an origin naming the service
itself is its own (never one made from the request's Host); C{/}, the
page's files and C{/ws} check C{Host} as C{/mcp} does; the page carries a
strict policy.
"""

import os

from autobahn.twisted.websocket import WebSocketClientFactory
from treq.testing import StubTreq
from twisted.internet import reactor
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.defer import inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.trial.unittest import SynchronousTestCase, TestCase

from ccx.config import build_config
from ccx.node import Node
from ccx.web.access import AccessDenied, check_origin, is_own_origin
from ccx.web.dashboard import load_assets
from ccx.web.site import build_site
from tests.support import Client, ServiceFixture

LOOPBACK = IPv4Address("TCP", "127.0.0.1", 8003)


def config(**settings):
    return build_config({"journal": False, **settings})


class OwnOriginTests(SynchronousTestCase):
    def test_the_address_reached(self):
        c = config()
        for origin in ("http://127.0.0.1:8003", "http://localhost:8003", "http://[::1]:8003"):
            self.assertTrue(is_own_origin(c, origin, LOOPBACK, False), origin)

    def test_near_misses(self):
        """Each just outside: another port, scheme, name; a suffix, a path, userinfo, no port."""
        c = config()
        for origin in (
            "http://127.0.0.1:8004",
            "http://127.0.0.1",
            "https://127.0.0.1:8003",
            "http://127.0.0.1:8003/",
            "http://127.0.0.1:8003.evil.example",
            "http://127.0.0.1.evil.example:8003",
            "http://evil@127.0.0.1:8003",
            "http://127.0.0.2:8003",
            "ws://127.0.0.1:8003",
            "null",
            "127.0.0.1:8003",
            "http://",
        ):
            self.assertFalse(is_own_origin(c, origin, LOOPBACK, False), origin)

    def test_tls(self):
        c = config()
        local = IPv4Address("TCP", "127.0.0.1", 443)
        self.assertTrue(is_own_origin(c, "https://127.0.0.1", local, True))
        self.assertFalse(is_own_origin(c, "http://127.0.0.1:443", local, True))

    def test_loopback_names_only_for_loopback(self):
        c = config()
        lan = IPv4Address("TCP", "10.1.2.3", 8003)
        self.assertTrue(is_own_origin(c, "http://10.1.2.3:8003", lan, False))
        self.assertFalse(is_own_origin(c, "http://localhost:8003", lan, False))
        six = IPv6Address("TCP", "::1", 8003)
        self.assertTrue(is_own_origin(c, "http://[::1]:8003", six, False))

    def test_allow_host_names(self):
        c = config(allow_host=["ccx.example", "other.example:9000"])
        lan = IPv4Address("TCP", "10.1.2.3", 8003)
        self.assertTrue(is_own_origin(c, "http://ccx.example", lan, False))
        self.assertTrue(is_own_origin(c, "http://ccx.example:8003", lan, False))
        self.assertTrue(is_own_origin(c, "http://other.example:9000", lan, False))
        self.assertFalse(is_own_origin(c, "http://other.example:9001", lan, False))
        self.assertFalse(is_own_origin(c, "http://ccx.example.evil:8003", lan, False))
        self.assertFalse(is_own_origin(c, "http://x.ccx.example:8003", lan, False))

    def test_check_origin(self):
        """Without the address reached, only --allow-origin admits (as before); a UNIX socket names no origin."""
        c = config()
        check_origin(c, None)
        check_origin(c, "http://127.0.0.1:8003", LOOPBACK, False)
        for local in (None, UNIXAddress("/tmp/ccx.sock")):
            error = self.assertRaises(AccessDenied, check_origin, c, "http://127.0.0.1:8003", local)
            self.assertEqual(error.code, 403)


class PageTests(SynchronousTestCase):
    def get(self, path="/", headers=None, host="127.0.0.1:8003", **settings):
        values = {"state_dir": os.path.abspath(self.mktemp()), "journal": False, **settings}
        node = Node(build_config(values), reactor)
        treq = StubTreq(build_site(node).resource)
        response = self.successResultOf(treq.get(f"http://{host}{path}", headers=headers))
        return response, self.successResultOf(response.content())

    def test_browser_gets_the_dashboard(self):
        response, body = self.get(headers={"Accept": "text/html,application/xhtml+xml"})
        self.assertEqual(response.code, 200)
        self.assertIn(b'<script src="/dashboard/app.js"', body)
        policy = response.headers.getRawHeaders("content-security-policy")[0]
        nonce = policy.split("'nonce-")[1].split("'")[0]
        self.assertIn(f'nonce="{nonce}"'.encode(), body)
        self.assertIn("script-src 'self';", policy)
        self.assertIn("frame-ancestors 'none'", policy)
        self.assertNotIn("unsafe", policy)
        # A new nonce each time.
        again, _ = self.get(headers={"Accept": "text/html"})
        self.assertNotEqual(again.headers.getRawHeaders("content-security-policy")[0], policy)

    def test_other_clients_keep_the_index(self):
        response, body = self.get(headers={"Accept": "application/json"})
        self.assertIn(b"/ws/mcp", body)
        self.assertNotIn(b"app.js", body)

    def test_host_checked(self):
        """/, the page's files: another Host gets 403; the loopback names and --allow-host do not."""
        for path, accept in (("/", "text/html"), ("/", "*/*"), ("/dashboard/app.js", "*/*")):
            response, body = self.get(path, headers={"Accept": accept}, host="rebound.example:8003")
            self.assertEqual(response.code, 403, path)
            self.assertIn(b"--allow-host", body)
            response, _ = self.get(path, headers={"Accept": accept}, host="localhost:8003")
            self.assertEqual(response.code, 200, path)
            response, _ = self.get(
                path, headers={"Accept": accept}, host="rebound.example:8003",
                allow_host=["rebound.example"],
            )
            self.assertEqual(response.code, 200, path)

    def test_assets(self):
        response, body = self.get("/dashboard/app.js")
        self.assertEqual(response.headers.getRawHeaders("content-type"), ["text/javascript; charset=utf-8"])
        self.assertEqual(response.headers.getRawHeaders("x-content-type-options"), ["nosniff"])
        with open(os.path.join(os.path.dirname(load_assets.__code__.co_filename), "static", "app.js"), "rb") as f:
            self.assertEqual(body, f.read())
        response, _ = self.get("/dashboard/vendor/xterm/xterm.js")
        self.assertEqual(response.code, 200)
        for path in (
            "/dashboard/vendor/xterm/LICENSE",
            "/dashboard/../site.py",
            "/dashboard/nothing.js",
            "/dashboard/index.html",
            "/dashboard/",
        ):
            response, _ = self.get(path)
            self.assertEqual(response.code, 404, path)


class WebSocketHostTests(TestCase):
    timeout = 30

    @inlineCallbacks
    def setUp(self):
        self.ccx = yield ServiceFixture(self).start()

    @inlineCallbacks
    def handshake(self, host, origin=None):
        url = f"ws://{host}/ws"
        factory = WebSocketClientFactory(url, origin=origin)
        factory.protocol = Client
        client = yield TCP4ClientEndpoint(reactor, "127.0.0.1", self.ccx.port).connect(factory)
        try:
            yield client.opened
        except ConnectionError as e:
            return str(e)
        client.sendClose()
        yield client.closed
        return "opened"

    @inlineCallbacks
    def test_host(self):
        """A WebSocket for another Host (DNS rebinding) is refused; one for the loopback names opens."""
        port = self.ccx.port
        self.assertIn("[403]", (yield self.handshake(f"rebound.example:{port}")))
        self.assertIn("[403]", (yield self.handshake(f"127.0.0.1:{port + 1}")))
        self.assertEqual((yield self.handshake(f"localhost:{port}")), "opened")
        self.assertEqual((yield self.handshake(f"127.0.0.1:{port}")), "opened")

    @inlineCallbacks
    def test_own_origin(self):
        """The page's own origin opens the WebSocket without --allow-origin; its near misses do not."""
        port = self.ccx.port
        host = f"127.0.0.1:{port}"
        self.assertEqual((yield self.handshake(host, f"http://127.0.0.1:{port}")), "opened")
        self.assertEqual((yield self.handshake(host, f"http://localhost:{port}")), "opened")
        for origin in (f"http://127.0.0.1:{port + 1}", f"https://127.0.0.1:{port}", "http://evil.example"):
            self.assertIn("[403]", (yield self.handshake(host, origin)), origin)

    @inlineCallbacks
    def test_origin_never_from_host(self):
        """A rebound page's origin and Host agree with each other, and are refused all the same."""
        port = self.ccx.port
        reason = yield self.handshake(f"rebound.example:{port}", f"http://rebound.example:{port}")
        self.assertIn("[403]", reason)
