"""
Tests for L{KeeperLink} against a keeper played by the test: what ccx asks
of a keeper that does, or does not, list the features a request needs.
"""

import shutil
import tempfile
from types import SimpleNamespace

from twisted.internet import reactor
from twisted.internet.protocol import Factory
from twisted.protocols.basic import LineOnlyReceiver
from twisted.trial.unittest import TestCase

from ccx.durable.link import KeeperLink
from ccx.keeper import messages as m
from ccx.process.command import Command
from ccx.process.terminal import WindowSize
from ccx.testing.polling import until
from tests.test_keeper_transport import RecordingProtocol


class PlayedKeeper(LineOnlyReceiver):
    """
    A keeper that answers hello with the given features, and keeps what
    it is sent.
    """

    delimiter = b"\n"

    def __init__(self, features, received):
        self.features = features
        self.received = received

    def lineReceived(self, line):
        message = m.decode(line)
        self.received.append(message)
        if message["type"] == m.HELLO:
            hello = {"type": m.HELLO, "version": m.VERSION, "pid": 1, "programs": []}
            if self.features is not None:
                hello["features"] = self.features
            self.sendLine(m.encode(hello)[:-1])


class KeeperFeaturesTests(TestCase):
    timeout = 10

    def keeper(self, features):
        # Short: a unix socket's path must fit sun_path.
        state_dir = tempfile.mkdtemp(prefix="ccx-link-")
        self.addCleanup(shutil.rmtree, state_dir, True)
        received = []
        port = reactor.listenUNIX(
            f"{state_dir}/{m.SOCKET_NAME}",
            Factory.forProtocol(lambda: PlayedKeeper(features, received)),
        )
        self.addCleanup(port.stopListening)
        link = KeeperLink(reactor, state_dir)
        self.addCleanup(link.close)
        return link, received

    def spawn(self, link, pty):
        protocol = RecordingProtocol()
        protocol.process_id = "p1"
        protocol.options = SimpleNamespace(blocking=True, encoding="utf-8")
        protocol.command = Command("/bin/sh", ["sh"], "/", pty=pty)
        link.spawn(protocol, protocol.command)
        return protocol

    async def test_older_keeper_not_asked_for_a_terminal(self):
        """
        A keeper whose hello lists no pty feature (an older ccx started it)
        is not sent a spawn on a terminal: the program fails to start, and
        says why.
        """
        link, received = self.keeper(None)
        protocol = self.spawn(link, WindowSize(24, 80))
        await until(reactor, lambda: protocol.calls, what="the outcome")
        [(failed, reason)] = protocol.calls[:1]
        self.assertEqual(failed, "failed")
        self.assertIn("older ccx", reason)
        self.assertEqual([r["type"] for r in received], [m.HELLO])

    async def test_keeper_with_terminals(self):
        """A keeper listing pty is sent the spawn with the window size."""
        link, received = self.keeper(list(m.FEATURES))
        self.spawn(link, WindowSize(24, 80))
        await until(reactor, lambda: len(received) == 2, what="the spawn")
        self.assertEqual((received[1]["type"], received[1]["pty"]), (m.SPAWN, [24, 80]))

    async def test_older_keeper_still_runs_pipes(self):
        """A keeper without the feature still starts programs on pipes (pty null)."""
        link, received = self.keeper(None)
        self.spawn(link, None)
        await until(reactor, lambda: len(received) == 2, what="the spawn")
        self.assertEqual((received[1]["type"], received[1]["pty"]), (m.SPAWN, None))
