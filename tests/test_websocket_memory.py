"""
The WebSocket handshake rules without a socket: who may open a WebSocket
(token, origin, path, C{--max-connections}), which subprotocol it gets, and
the C{connected} notification, checked by Autobahn's own client talking to
the service's real C{twisted.web} L{Site} (L{build_site}, which mounts
L{make_factory}'s factory) through C{autobahn.twisted.testing}'s memory
agent.  L{tests.test_handshake} and L{tests.test_service} check the same
rules end to end over real sockets; L{tests.test_producer_chain} drives one
connection over a C{StringTransport} for back-pressure.

Two things keep these tests deterministic and off the global reactor:
  - Autobahn schedules its timers (opening and closing handshake timeouts,
    auto-ping) through txaio's loop, not the factory's reactor; txaio's loop
    is the global reactor unless C{txaio.config.loop} says otherwise, so each
    test points it at its own L{MemoryReactorClock}.
  - Bytes move when a test calls L{MemoryPumps.flush}.  Autobahn's
    C{create_pumper} instead flushes from the global reactor every 0.1 s
    until stopped, and the agent's C{open} Deferred never fires for a
    refused handshake (Autobahn resolves C{is_open} on success only), so a
    test waiting on it hangs; these tests read the client's own C{opened}.
"""

from typing import Any, Callable, List

import txaio
from autobahn.twisted.testing import create_memory_agent
from twisted.internet import reactor as global_reactor
from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.test.iosim import IOPump
from twisted.trial.unittest import TestCase

from ccx.config import build_config
from ccx.native.methods import CAPABILITIES
from ccx.node import Node
from ccx.web.site import build_site
from tests.support import Client

TOKEN = "s3cret-token-for-tests"
ORIGIN = "https://ok.example"


class MemoryPumps:
    """
    Where C{create_memory_agent} puts each connection's L{IOPump}: the bytes
    move when the test says so, never on a timer.
    """

    def __init__(self) -> None:
        self._pumps: List[IOPump] = []

    def add(self, pump: IOPump) -> None:
        self._pumps.append(pump)

    def flush(self) -> None:
        """
        Deliver everything written on every connection, until all are quiet.
        """
        for pump in self._pumps:
            pump.flush()


class MemoryWebSocketTestCase(TestCase):
    """
    A L{Node} on a L{MemoryReactorClock}, its L{Site}, and Autobahn clients
    connected to it in memory.
    """

    def start(self, token: bool = True, **settings: Any) -> None:
        self._global_calls = set(global_reactor.getDelayedCalls())
        self.clock = MemoryReactorClock()
        self.patch(txaio.config, "loop", self.clock)
        values = {"port": "tcp:0:interface=127.0.0.1", "allow": [], **settings}
        if token:
            values["token_file"] = self.mktemp()
            with open(values["token_file"], "w") as f:
                f.write(TOKEN + "\n")
        self.node = Node(build_config(values), self.clock)
        site = build_site(self.node)
        self.pumps = MemoryPumps()
        self.agent = create_memory_agent(
            self.clock, self.pumps, lambda: site.buildProtocol(None)
        )
        self.clients: List[Client] = []
        self.addCleanup(self.assert_global_reactor_untouched)
        self.addCleanup(self.close_all)

    def connect(self, path: str = "/ws", **options: Any) -> Client:
        """
        Open a WebSocket to C{path} and run its handshake to the end.

        @param options: the agent's options (C{headers}, C{origin},
            C{protocols}).
        @return: the client, whether the server accepted it or not.
        """
        made: List[Client] = []
        self.agent.open(f"ws://127.0.0.1:8080{path}", options, protocol_class=_recorder(made))
        self.pumps.flush()
        [client] = made
        self.clients.append(client)
        self.assert_global_reactor_untouched()
        return client

    def opened(self, path: str = "/ws", **options: Any) -> Client:
        """
        A client whose handshake the service accepted.
        """
        return self.successResultOf(self.connect(path, **options).opened)

    def refused(self, path: str = "/ws", **options: Any) -> str:
        """
        The reason a refused handshake gives (it holds the HTTP status, as
        C{[401]}).
        """
        failure = self.failureResultOf(self.connect(path, **options).opened, ConnectionError)
        return str(failure.value)

    def answer(self, request: Deferred) -> Any:
        """
        What a request the test just sent gets back.
        """
        self.pumps.flush()
        return self.successResultOf(request)

    def close(self, client: Client) -> None:
        client.sendClose()
        self.pumps.flush()
        self.assertEqual(self.successResultOf(client.closed), 1000)

    def close_all(self) -> None:
        for client in self.clients:
            if client.state == client.STATE_OPEN:
                client.sendClose()
        self.pumps.flush()
        self.assertEqual(self.node.connections, set())

    def assert_global_reactor_untouched(self) -> None:
        """
        Nothing the connections did scheduled a call on the global reactor:
        their timers are all on the test's clock.
        """
        self.assertEqual(set(global_reactor.getDelayedCalls()) - self._global_calls, set())


def _recorder(made: List[Client]) -> Callable[[], Client]:
    # The agent's open() Deferred fires only for an accepted handshake; the
    # client itself is how a test learns that one was refused.
    def client() -> Client:
        made.append(Client())
        return made[-1]

    return client


def bearer(token: str) -> dict:
    return {"headers": {"Authorization": f"Bearer {token}"}}


class TokenTests(MemoryWebSocketTestCase):
    def setUp(self) -> None:
        self.start()

    def test_missing_or_wrong_token(self) -> None:
        """No token, a wrong one, a prefix of it, one a character longer and an empty one: 401."""
        self.assertIn("[401]", self.refused("/ws"))
        self.assertIn("[401]", self.refused("/ws/mcp", protocols=["mcp"]))
        for token in ("wrong", TOKEN[:-1], TOKEN + "x", ""):
            self.assertIn("[401]", self.refused("/ws", **bearer(token)), token)
            self.assertIn("[401]", self.refused(f"/ws?token={token}"), token)
        self.assertEqual(self.node.connections, set())

    def test_every_prefix_of_the_token(self) -> None:
        """Every prefix of the token, the empty one included, in a header or the query: 401."""
        for end in range(len(TOKEN)):
            prefix = TOKEN[:end]
            self.assertIn("[401]", self.refused("/ws", **bearer(prefix)), prefix)
            self.assertIn("[401]", self.refused(f"/ws/mcp?token={prefix}"), prefix)
        self.assertEqual(self.node.connections, set())
        self.opened(f"/ws?token={TOKEN}")

    def test_token_in_another_scheme(self) -> None:
        """The right token in a header that is not a bearer one is no token: 401."""
        for header in (f"Basic {TOKEN}", TOKEN, f"Bearer{TOKEN}", f"Bearer:{TOKEN}"):
            reason = self.refused("/ws", headers={"Authorization": header})
            self.assertIn("[401]", reason, header)

    def test_bearer_header_and_query_token(self) -> None:
        """Authorization: Bearer (any case of the scheme) and ?token= both open the WebSocket."""
        self.opened("/ws", **bearer(TOKEN))
        self.opened("/ws", headers={"Authorization": f"bearer {TOKEN}"})
        self.opened(f"/ws/mcp?token={TOKEN}", protocols=["mcp"])
        self.assertEqual(len(self.node.connections), 3)

    def test_refused_handshake_never_reaches_the_node(self) -> None:
        """A refused client gets no session: nothing is spent on it."""
        sessions = []
        new_session = self.node.new_session
        self.patch(self.node, "new_session", lambda: sessions.append(new_session()) or sessions[-1])
        self.refused("/ws", **bearer(TOKEN[:-1]))
        self.assertEqual((sessions, self.node.connections), ([], set()))
        self.opened("/ws", **bearer(TOKEN))
        self.assertEqual(len(sessions), 1)


class OriginTests(MemoryWebSocketTestCase):
    def setUp(self) -> None:
        self.start(allow_origin=[ORIGIN])

    def test_allowed_origin(self) -> None:
        """The allowed origin, with the token, opens the WebSocket."""
        self.opened("/ws", origin=ORIGIN, **bearer(TOKEN))

    def test_other_origins_refused(self) -> None:
        """A foreign origin and ones that merely start like the allowed one get 403."""
        for origin in (
            "https://evil.example",
            ORIGIN + ".evil.example",
            ORIGIN + ":8443",
            "http://ok.example",
            ORIGIN + "/",
        ):
            self.assertIn("[403]", self.refused("/ws", origin=origin, **bearer(TOKEN)), origin)

    def test_null_origin(self) -> None:
        """Origin: null (sandboxed frames, file: pages) gets ccx's 403, not Autobahn's 400."""
        reason = self.refused("/ws", origin="null", **bearer(TOKEN))
        self.assertIn("[403]", reason)
        self.assertIn("origin null is not allowed", reason)
        self.assertEqual(self.node.connections, set())

    def test_origin_judged_before_token(self) -> None:
        """A foreign origin without a token gets 403; the allowed one without a token 401."""
        self.assertIn("[403]", self.refused("/ws", origin="https://evil.example"))
        self.assertIn("[401]", self.refused("/ws", origin=ORIGIN))


class PathTests(MemoryWebSocketTestCase):
    def setUp(self) -> None:
        self.start(token=False)

    def test_websocket_paths(self) -> None:
        """/ws, /ws/ and /ws/mcp open the WebSocket; the path does not choose the dialect."""
        for path in ("/ws", "/ws/", "/ws/mcp"):
            client = self.opened(path)
            self.assertEqual(client.messages[0]["method"], "connected", path)

    def test_other_paths_are_not_the_websocket(self) -> None:
        """Other paths below /ws, and paths that start like /ws, are 404."""
        for path in ("/ws/other", "/ws/mcp/extra", "/ws/mcp/", "/wsx", "/"):
            self.assertIn("[404]", self.refused(path), path)
        self.assertEqual(self.node.connections, set())


class ConnectionLimitTests(MemoryWebSocketTestCase):
    def setUp(self) -> None:
        self.start(token=False, max_connections=2)

    def test_limit(self) -> None:
        """The last connection --max-connections allows opens; the next gets 503 naming the option."""
        first = self.opened()
        self.opened()
        reason = self.refused()
        self.assertIn("[503]", reason)
        self.assertIn("--max-connections 2", reason)
        self.assertEqual(len(self.node.connections), 2)
        self.assertEqual(self.answer(first.call("ping")), {})

    def test_closing_frees_a_place(self) -> None:
        """Once a connection closes, a new one opens again."""
        first = self.opened()
        self.opened()
        self.close(first)
        self.opened()
        self.assertIn("[503]", self.refused())


class SubprotocolTests(MemoryWebSocketTestCase):
    def setUp(self) -> None:
        self.start(token=False)

    def test_mcp_chosen(self) -> None:
        """A client offering "mcp", alone or after another, gets it and no connected notification."""
        for protocols in (["mcp"], ["other", "mcp"]):
            client = self.opened("/ws/mcp", protocols=protocols)
            self.assertEqual(client.websocket_protocol_in_use, "mcp", protocols)
            self.assertEqual(client.messages, [], protocols)
            self.assertEqual(self.answer(client.call("ping")), {})

    def test_native_otherwise(self) -> None:
        """A client offering no subprotocol, or only others, speaks the native dialect."""
        for options in ({}, {"protocols": ["other"]}, {"protocols": ["mcp2", "MCP"]}):
            client = self.opened("/ws/mcp", **options)
            self.assertIsNone(client.websocket_protocol_in_use, options)
            self.assertEqual(client.messages[0]["method"], "connected", options)
            response = self.answer(client.request("tools/list"))
            self.assertEqual(response["error"]["code"], -32601)


class ConnectedTests(MemoryWebSocketTestCase):
    def setUp(self) -> None:
        self.start(token=False)

    def test_connected(self) -> None:
        """The first message is connected: a session id, the version, and every capability, binary frames included."""
        client = self.opened()
        [connected] = client.messages
        self.assertEqual(connected["jsonrpc"], "2.0")
        self.assertNotIn("id", connected)
        params = connected["params"]
        self.assertEqual(params["version"], self.node.version)
        self.assertEqual(params["capabilities"], list(CAPABILITIES))
        self.assertIn("binary-frames", params["capabilities"])
        self.assertIn("execute", params["capabilities"])
        [connection] = self.node.connections
        self.assertEqual(params["session_id"], connection.session.session_id)

    def test_each_connection_its_own_session(self) -> None:
        """Two connections get two session ids."""
        ids = {self.opened().messages[0]["params"]["session_id"] for _ in range(2)}
        self.assertEqual(len(ids), 2)


class SiteReactorTests(TestCase):
    def test_http_timeouts_on_the_nodes_reactor(self) -> None:
        """The Site times idle HTTP connections out on the node's reactor, not the global one."""
        clock = MemoryReactorClock()
        node = Node(build_config({"port": "tcp:0:interface=127.0.0.1", "allow": []}), clock)
        site = build_site(node)
        channel = site.buildProtocol(None)
        transport = StringTransport()
        channel.makeConnection(transport)
        self.assertFalse(transport.disconnecting)
        clock.advance(site.timeOut)
        self.assertTrue(transport.disconnecting)
