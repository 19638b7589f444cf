"""
Tests for L{ccx.web.port.PortService}.
"""

from typing import Any, List

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.internet.protocol import Factory
from twisted.internet.testing import RaisingMemoryReactor
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from ccx.web.port import PortService
from tests.fakes import BindingReactor, FakePort


@implementer(IStreamServerEndpoint)
class LaterEndpoint:
    """
    An endpoint whose listen completes when the test says.
    """

    def __init__(self) -> None:
        self.cancelled = False
        self.attempt: Deferred = Deferred(lambda d: setattr(self, "cancelled", True))

    def listen(self, factory: Any) -> Deferred:
        return self.attempt


class PortServiceTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.logged: List[dict] = []
        globalLogPublisher.addObserver(self.logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.logged.append)

    def failures(self) -> List[dict]:
        return [event for event in self.logged if "log_failure" in event]

    def test_listens_and_stops(self) -> None:
        """Started, it listens and says so; stopped, it stops listening."""
        reactor = BindingReactor()
        service = PortService(TCP4ServerEndpoint(reactor, 8003), Factory())
        waiting = service.when_listening()
        service.privilegedStartService()
        service.startService()
        [port] = reactor.ports
        self.assertIs(self.successResultOf(waiting), port)
        self.assertIs(self.successResultOf(service.when_listening()), port)
        self.successResultOf(service.stopService())
        self.assertFalse(port.listening)

    def test_failure_raised_at_start(self) -> None:
        """A port that cannot be had when starting fails the start itself."""
        reactor = RaisingMemoryReactor(listenException=CannotListenError("", 8003, "in use"))
        service = PortService(TCP4ServerEndpoint(reactor, 8003), Factory())
        self.assertRaises(CannotListenError, service.privilegedStartService)
        self.failureResultOf(service.when_listening(), CannotListenError)
        self.assertEqual(self.failures(), [])

    def test_refused_by_check(self) -> None:
        """What the check raises refuses the port, which is closed."""
        reactor = BindingReactor()

        def check(port: FakePort) -> None:
            raise ValueError(str(port.getHost()))

        service = PortService(TCP4ServerEndpoint(reactor, 8003), Factory(), check)
        error = self.assertRaises(ValueError, service.startService)
        self.assertIn("0.0.0.0", str(error))
        self.assertFalse(reactor.ports[0].listening)

    def test_later_failure_logged(self) -> None:
        """A listen that fails after the start is logged, and when_listening fails."""
        endpoint = LaterEndpoint()
        service = PortService(endpoint, Factory())
        service.startService()
        waiting = service.when_listening()
        endpoint.attempt.errback(CannotListenError("", 8003, "in use"))
        self.failureResultOf(waiting, CannotListenError)
        [failure] = self.failures()
        self.assertEqual(failure["log_format"], "could not listen")
        self.assertEqual(len(self.flushLoggedErrors(CannotListenError)), 1)

    def test_stop_before_listening(self) -> None:
        """Stopping while the listen is under way gives it up, quietly."""
        endpoint = LaterEndpoint()
        service = PortService(endpoint, Factory())
        service.startService()
        self.successResultOf(service.stopService())
        self.assertTrue(endpoint.cancelled)
        self.assertEqual(self.failures(), [])

    def test_later_success(self) -> None:
        """A listen that completes after the start fires when_listening then."""
        endpoint = LaterEndpoint()
        service = PortService(endpoint, Factory())
        service.startService()
        waiting = service.when_listening()
        self.assertNoResult(waiting)
        port = FakePort(IPv4Address("TCP", "127.0.0.1", 8003))
        endpoint.attempt.callback(port)
        self.assertIs(self.successResultOf(waiting), port)
