"""
The HTTP rules of C{/mcp} (methods, media types, the session header, the
token and origin checks, DELETE), checked with treq's C{StubTreq} against
the service's own C{twisted.web} resource, built from a L{Node} as the
service builds it: no socket.  The socket tests in L{tests.test_mcp} check
the same service end to end.
"""

import json
from typing import Any, Optional, Tuple
from urllib.parse import urlencode

from treq.testing import StubTreq
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.defer import inlineCallbacks
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from twisted.web.server import Request

from ccx.config import ConfigError, build_config
from ccx.node import Node
from ccx.web.access import AccessDenied, check_host
from ccx.web.channel import ClientChannel
from ccx.web.mcp_http import HttpSession, McpResource
from ccx.web.websocket import CLOSE_TIMEOUT
from ccx.web.site import build_site
from tests.test_mcp import ORIGIN, TOKEN, initialize_params, mcp_headers, request

URL = "http://127.0.0.1/mcp"


class McpHttpTestCase(TestCase):
    """
    A L{Node} with a token and an allowed origin, its site's resources
    behind C{StubTreq}.
    """

    def setUp(self) -> None:
        token_file = self.mktemp()
        with open(token_file, "w") as f:
            f.write(TOKEN + "\n")
        config = build_config(
            {
                "port": "tcp:0:interface=127.0.0.1",
                "allow_origin": [ORIGIN],
                "allow": [],
                "token_file": token_file,
                **self.settings(),
            }
        )
        self.node = Node(config, MemoryReactorClock())
        self.http = StubTreq(build_site(self.node).resource)

    def settings(self) -> dict:
        """
        Settings beyond those every test here has.
        """
        return {}

    def headers(self, session_id: Optional[str] = None, **options: Any) -> dict:
        return mcp_headers(session_id, **options)

    def post(self, message: Any, session_id: Optional[str] = None, **options: Any):
        body = message if isinstance(message, bytes) else json.dumps(message).encode()
        return self.http.post(URL, data=body, headers=self.headers(session_id, **options))

    @inlineCallbacks
    def initialize(self) -> Any:
        response = yield self.post(request(1, "initialize", initialize_params()))
        self.assertEqual(response.code, 200)
        yield response.content()
        [session_id] = response.headers.getRawHeaders("mcp-session-id")
        response = yield self.post(
            {"jsonrpc": "2.0", "method": "notifications/initialized"}, session_id
        )
        self.assertEqual(response.code, 202)
        return session_id


class McpHttpRulesTests(McpHttpTestCase):
    @inlineCallbacks
    def test_every_prefix_of_the_token(self):
        """Every prefix of the token, the empty one included, as a bearer or ?token=: 401."""
        body = json.dumps(request(1, "initialize", initialize_params())).encode()
        for end in range(len(TOKEN)):
            prefix = TOKEN[:end]
            response = yield self.post(request(1, "initialize", initialize_params()), token=prefix)
            self.assertEqual(response.code, 401, prefix)
            yield response.content()
            response = yield self.http.post(
                f"{URL}?{urlencode({'token': prefix})}", data=body, headers=self.headers(token=None)
            )
            self.assertEqual(response.code, 401, prefix)
            yield response.content()
        self.assertEqual(self.node.connections, set())
        response = yield self.http.post(
            f"{URL}?{urlencode({'token': TOKEN})}", data=body, headers=self.headers(token=None)
        )
        self.assertEqual(response.code, 200)
        yield response.content()

    @inlineCallbacks
    def test_token(self):
        """No token, a wrong one, a prefix of it and an empty one: 401 on POST and GET."""
        for token in (None, "wrong", TOKEN[:-1], TOKEN + "x", ""):
            response = yield self.post(request(1, "initialize", initialize_params()), token=token)
            self.assertEqual(response.code, 401, token)
            self.assertEqual(
                response.headers.getRawHeaders("www-authenticate"), ['Bearer realm="ccx"']
            )
            yield response.content()
        response = yield self.http.get(URL, headers=self.headers(token=None))
        self.assertEqual(response.code, 401)
        response = yield self.post(request(1, "initialize", initialize_params()))
        self.assertEqual(response.code, 200)

    @inlineCallbacks
    def test_origin(self):
        """An origin that merely starts like an allowed one is refused with 403, as a foreign one."""
        message = request(1, "initialize", initialize_params())
        for origin in ("http://evil.example", ORIGIN + ".evil.example", ORIGIN + ":8080"):
            response = yield self.post(message, Origin=origin)
            self.assertEqual(response.code, 403, origin)
            self.assertIn("is not allowed", (yield response.json())["error"]["message"])
        response = yield self.post(message, Origin=ORIGIN)
        self.assertEqual(response.code, 200)
        self.assertEqual(response.headers.getRawHeaders("access-control-allow-origin"), [ORIGIN])
        yield response.content()

    @inlineCallbacks
    def test_preflight(self):
        """OPTIONS from an allowed origin: 204 with the session header allowed; from another: 403."""
        response = yield self.http.request("OPTIONS", URL, headers={"Origin": [ORIGIN]})
        self.assertEqual(response.code, 204)
        allowed = response.headers.getRawHeaders("access-control-allow-headers")[0]
        self.assertIn("mcp-session-id", allowed.lower())
        response = yield self.http.request(
            "OPTIONS", URL, headers={"Origin": ["http://evil.example"]}
        )
        self.assertEqual(response.code, 403)

    @inlineCallbacks
    def test_media_types(self):
        """A body that is not JSON by its Content-Type gets 415; invalid JSON a -32700 with 400."""
        session_id = yield self.initialize()
        response = yield self.post(b"{}", session_id, content_type="text/plain")
        self.assertEqual(response.code, 415)
        response = yield self.post(b"{not json", session_id)
        self.assertEqual(response.code, 400)
        self.assertEqual((yield response.json())["error"]["code"], -32700)
        response = yield self.post([request(2, "ping")], session_id)
        self.assertEqual(response.code, 400)

    @inlineCallbacks
    def test_event_stream_needs_accept(self):
        """GET must accept text/event-stream (406 otherwise); a second stream of a session gets 409."""
        session_id = yield self.initialize()
        response = yield self.http.get(
            URL, headers=self.headers(session_id, accept="application/json")
        )
        self.assertEqual(response.code, 406)
        stream = yield self.http.get(
            URL, headers=self.headers(session_id, accept="text/event-stream")
        )
        self.assertEqual(stream.code, 200)
        self.assertEqual(stream.headers.getRawHeaders("content-type"), ["text/event-stream"])
        second = yield self.http.get(
            URL, headers=self.headers(session_id, accept="text/event-stream")
        )
        self.assertEqual(second.code, 409)

    @inlineCallbacks
    def test_session_header(self):
        """Without a session 400; with an unknown one 404, for POST, GET and DELETE alike."""
        response = yield self.post(request(5, "tools/list"))
        self.assertEqual(response.code, 400)
        self.assertEqual((yield response.json())["id"], 5)
        response = yield self.post(request(5, "tools/list"), "no-such-session")
        self.assertEqual(response.code, 404)
        for method in ("GET", "DELETE"):
            response = yield self.http.request(
                method, URL, headers=self.headers("no-such-session", accept="text/event-stream")
            )
            self.assertEqual(response.code, 404, method)

    @inlineCallbacks
    def test_delete_ends_the_session(self):
        """DELETE answers 204 and forgets the session: its id then gets 404."""
        session_id = yield self.initialize()
        response = yield self.post(request(2, "ping"), session_id)
        self.assertEqual((yield response.json()), {"jsonrpc": "2.0", "id": 2, "result": {}})
        response = yield self.http.delete(URL, headers=self.headers(session_id))
        self.assertEqual(response.code, 204)
        response = yield self.post(request(3, "ping"), session_id)
        self.assertEqual(response.code, 404)

    @inlineCallbacks
    def test_protocol_version_header(self):
        """An unsupported MCP-Protocol-Version header gets 400."""
        session_id = yield self.initialize()
        response = yield self.post(request(2, "ping"), session_id, MCP_Protocol_Version="1999-01-01")
        self.assertEqual(response.code, 400)

    @inlineCallbacks
    def test_other_methods_and_paths(self):
        """HEAD gets 405, a method HTTP servers here do not implement 501, both after the token check; below /mcp 404."""
        response = yield self.http.head(URL, headers=self.headers())
        self.assertEqual(response.code, 405)
        response = yield self.http.put(URL, data=b"{}", headers=self.headers())
        self.assertEqual(response.code, 501)
        for method in ("HEAD", "PUT"):
            response = yield self.http.request(method, URL, headers=self.headers(token=None))
            self.assertEqual(response.code, 401, method)
        response = yield self.http.post(URL + "/x", data=b"{}", headers=self.headers())
        self.assertEqual(response.code, 404)


class HostTests(McpHttpTestCase):
    """
    C{/mcp} answers only requests whose C{Host} names the service: the
    address the client reached (here 127.0.0.1 port 80, as C{StubTreq}
    connects) with its loopback names, or an C{--allow-host} name.
    """

    def setUp(self) -> None:
        super().setUp()
        self.node = Node(
            build_config(
                {
                    "port": "tcp:0:interface=127.0.0.1",
                    "allow": [],
                    "allow_origin": [ORIGIN],
                    "allow_host": ["ccx.example", "pinned.example:8443"],
                }
            ),
            MemoryReactorClock(),
        )
        self.http = StubTreq(build_site(self.node).resource)

    @inlineCallbacks
    def status(self, method: str, host: str) -> Any:
        headers = self.headers(token=None, accept="application/json, text/event-stream")
        headers["Host"] = [host]
        if method == "POST":
            response = yield self.http.post(
                URL, data=json.dumps(request(1, "initialize", initialize_params())).encode(),
                headers=headers,
            )
        else:
            response = yield self.http.request(method, URL, headers=headers)
        body = yield response.content()
        if response.code == 403:
            self.assertIn("does not name this service", json.loads(body)["error"]["message"])
        return response.code

    @inlineCallbacks
    def test_own_names(self):
        """The address reached, with or without its port, and its loopback names are answered."""
        for host in ("127.0.0.1", "127.0.0.1:80", "localhost", "LOCALHOST:80", "[::1]", "[::1]:80",
                     "ccx.example", "ccx.example:9999", "pinned.example:8443"):
            self.assertEqual((yield self.status("POST", host)), 200, host)

    @inlineCallbacks
    def test_near_misses(self):
        """A name that starts or ends like an allowed one, another port, another loopback address: 403, on every method."""
        for host in (
            "127.0.0.1:81", "127.0.0.1:8", "127.0.0.1:80x", "127.0.0.1:", "127.0.0.2",
            "127.0.0.1.evil.example", "localhost.evil.example", "localhost.", "evil.example",
            "[::1]:81", "[::1", "ccx.example.evil", "xccx.example", "ccx.exampl",
            "pinned.example", "pinned.example:8444", "",
        ):
            for method in ("POST", "GET", "DELETE", "OPTIONS"):
                self.assertEqual((yield self.status(method, host)), 403, (method, host))


class CheckHostTests(TestCase):
    def config(self, *hosts: str) -> Any:
        return build_config({"port": "tcp:0", "allow": [], "allow_host": list(hosts)})

    def test_unix_socket(self):
        """A UNIX socket, which no browser reaches, takes any Host."""
        check_host(self.config(), "evil.example", UNIXAddress("/run/ccx.sock"), False)
        check_host(self.config(), None, UNIXAddress("/run/ccx.sock"), False)

    def test_missing(self):
        """No Host header at all is refused."""
        with self.assertRaises(AccessDenied) as caught:
            check_host(self.config(), None, IPv4Address("TCP", "127.0.0.1", 8003), False)
        self.assertEqual(caught.exception.code, 403)

    def test_secure_default_port(self):
        """Over TLS a Host without a port means 443, not 80."""
        local = IPv4Address("TCP", "127.0.0.1", 443)
        check_host(self.config(), "localhost", local, True)
        with self.assertRaises(AccessDenied):
            check_host(self.config(), "localhost", local, False)

    def test_non_loopback(self):
        """On a non-loopback address only that address (and --allow-host) is answered, not localhost."""
        local = IPv4Address("TCP", "192.0.2.7", 8003)
        check_host(self.config(), "192.0.2.7:8003", local, False)
        for host in ("localhost:8003", "127.0.0.1:8003", "192.0.2.70:8003"):
            with self.assertRaises(AccessDenied):
                check_host(self.config(), host, local, False)
        check_host(self.config("ccx.example"), "ccx.example", local, False)

    def test_ipv6(self):
        """An IPv6 listener is named in brackets."""
        local = IPv6Address("TCP", "::1", 8003)
        check_host(self.config(), "[::1]:8003", local, False)
        check_host(self.config(), "localhost:8003", local, False)
        with self.assertRaises(AccessDenied):
            check_host(self.config(), "::1:8003", local, False)

    def test_config(self):
        """--allow-host takes NAME or NAME:PORT, lowercased; a URL is refused."""
        self.assertEqual(self.config("CCX.example", "a:1").allow_host, ("ccx.example", "a:1"))
        for bad in ("http://ccx.example", "ccx.example/", "", "a b", "ccx.example:"):
            with self.assertRaises(ConfigError):
                self.config(bad)

    def test_config_port(self):
        """An --allow-host whose port is no number, or an unclosed IPv6 bracket, is refused at start."""
        for bad in ("ccx.example:bar", "ccx.example:80x", "[::1", "[::1]:x", "[::1]80", ":80"):
            with self.assertRaises(ConfigError, msg=bad):
                self.config(bad)


class NullOriginTests(McpHttpTestCase):
    @inlineCallbacks
    def test_null_origin(self):
        """Origin: null gets 403 on POST, GET and the preflight, as any refused origin."""
        response = yield self.post(request(1, "initialize", initialize_params()), Origin="null")
        self.assertEqual(response.code, 403)
        self.assertIn("is not allowed", (yield response.json())["error"]["message"])
        response = yield self.http.get(URL, headers=self.headers(Origin="null"))
        self.assertEqual(response.code, 403)
        response = yield self.http.request("OPTIONS", URL, headers={"Origin": ["null"]})
        self.assertEqual(response.code, 403)

    def test_null_cannot_be_allowed(self):
        """--allow-origin null is refused at start: any page can send it."""
        for value in ("null", "NULL", " null"):
            with self.assertRaises(ConfigError) as caught:
                build_config({"port": "tcp:0", "allow": [], "allow_origin": [value]})
            self.assertIn("--allow-origin null", str(caught.exception))


class SessionIdleTests(McpHttpTestCase):
    """
    A session without an open stream ends after C{--http-session-idle}
    seconds without a request; with a stream open it lives on.
    """

    @inlineCallbacks
    def test_expires_without_a_stream(self):
        """Idle just under the limit: alive; at the limit: gone (404), its place free again."""
        clock = self.node.reactor
        idle = self.node.config.http_session_idle
        self.assertEqual(idle, 120.0)
        session_id = yield self.initialize()
        clock.advance(idle - 0.1)
        response = yield self.post(request(2, "ping"), session_id)
        self.assertEqual(response.code, 200)
        yield response.content()
        clock.advance(idle - 0.1)
        self.assertEqual(len(self.node.connections), 1)
        clock.advance(0.1)
        self.assertEqual(self.node.connections, set())
        response = yield self.post(request(3, "ping"), session_id)
        self.assertEqual(response.code, 404)

    @inlineCallbacks
    def test_stream_keeps_it(self):
        """A session whose GET stream is open does not expire."""
        clock = self.node.reactor
        session_id = yield self.initialize()
        stream = yield self.http.get(
            URL, headers=self.headers(session_id, accept="text/event-stream")
        )
        self.assertEqual(stream.code, 200)
        clock.advance(self.node.config.http_session_idle * 10)
        self.assertEqual(len(self.node.connections), 1)


class RateLimitTests(McpHttpTestCase):
    """
    C{--max-requests} holds for an MCP session over HTTP, each POST one
    message: the limit's worth is answered, one more is refused; the clock
    (the node's) stands still unless the test moves it.
    """

    def settings(self) -> dict:
        return {"max_requests": 5}

    @inlineCallbacks
    def ping(self, session_id: str, request_id: int) -> Any:
        """
        Fire with the error code of one ping (L{None} when answered).
        """
        response = yield self.post(request(request_id, "ping"), session_id)
        self.assertEqual(response.code, 200)
        body = yield response.json()
        self.assertEqual(body["id"], request_id)
        return body.get("error", {}).get("code")

    @inlineCallbacks
    def test_limit_holds(self):
        """initialize, initialized and 3 pings (5 messages) are answered; the 6th gets -32001, and one more once a token came back."""
        session_id = yield self.initialize()
        codes = []
        for n in range(3):
            codes.append((yield self.ping(session_id, 10 + n)))
        self.assertEqual(codes, [None] * 3)
        response = yield self.post(request(20, "ping"), session_id)
        self.assertEqual(response.code, 200)
        error = (yield response.json())["error"]
        self.assertEqual(error["code"], -32001)
        self.assertIn("more than 5 requests per second", error["message"])
        # A token comes back every 0.2 s: not yet at 0.19 s.
        self.node.reactor.advance(0.19)
        self.assertEqual((yield self.ping(session_id, 21)), -32001)
        self.node.reactor.advance(0.2)
        self.assertIsNone((yield self.ping(session_id, 22)))
        self.assertEqual((yield self.ping(session_id, 23)), -32001)

    @inlineCallbacks
    def test_per_session(self):
        """Each session has its own allowance: another is answered while the first is refused."""
        first = yield self.initialize()
        for n in range(3):
            yield self.ping(first, n)
        self.assertEqual((yield self.ping(first, 3)), -32001)
        second = yield self.initialize()
        self.assertIsNone((yield self.ping(second, 4)))


class StopTests(McpHttpTestCase):
    """
    At stop, a session closes the connections its requests came on once
    what was written to them is sent, or drops them after CLOSE_TIMEOUT.
    """

    def connection(self, session: HttpSession) -> Tuple[ClientChannel, StringTransport]:
        """
        A connection a request of C{session} came on.
        """
        channel = ClientChannel()
        channel.site = build_site(self.node)
        transport = StringTransport()
        channel.makeConnection(transport)
        request = Request(channel)
        session.track(request)
        return channel, transport

    def test_closed_once_sent(self):
        """close asks each connection to close after its pending data, and fires once all are closed."""
        session = HttpSession(self.node, McpResource(self.node))
        (first, first_transport), (second, second_transport) = (
            self.connection(session),
            self.connection(session),
        )
        closed = session.close("ccx is stopping")
        self.assertTrue(session.closed)
        self.assertTrue(first_transport.disconnecting and second_transport.disconnecting)
        self.assertNoResult(closed)
        first.connectionLost(Failure(ConnectionDone()))
        self.assertNoResult(closed)
        second.connectionLost(Failure(ConnectionDone()))
        self.successResultOf(closed)
        self.assertEqual(self.node.reactor.getDelayedCalls(), [])

    def test_dropped_after_the_deadline(self):
        """A connection whose client does not read is aborted CLOSE_TIMEOUT seconds later, not before."""
        session = HttpSession(self.node, McpResource(self.node))
        channel, transport = self.connection(session)
        closed = session.close("ccx is stopping")
        self.node.reactor.advance(CLOSE_TIMEOUT - 0.001)
        self.assertFalse(transport.disconnected)
        self.node.reactor.advance(0.001)
        self.assertTrue(transport.disconnected)
        channel.connectionLost(Failure(ConnectionDone()))
        self.successResultOf(closed)

    def test_nothing_to_flush(self):
        """A session none of whose connections is open closes at once."""
        session = HttpSession(self.node, McpResource(self.node))
        channel, _ = self.connection(session)
        channel.connectionLost(Failure(ConnectionDone()))
        self.successResultOf(session.close("ccx is stopping"))
        self.assertEqual(self.node.reactor.getDelayedCalls(), [])
