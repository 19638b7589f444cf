"""
The service's listening port: listen on an endpoint when started, stop
listening when stopped, and refuse an address the configuration forbids.
"""

from typing import Callable, List, Optional, Union

from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, fail, maybeDeferred, succeed
from twisted.internet.interfaces import IListeningPort, IProtocolFactory, IStreamServerEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure


class PortService(Service):
    """
    Listens on C{endpoint} with C{factory}: in L{privilegedStartService}
    under twistd (before it sheds privileges), else in L{startService}.

    A failure known when listening starts (the port is in use, C{check}
    refused the address) is raised from there, so that twistd stops with
    it; one that comes later is logged.

    @param check: called with the L{IListeningPort} as soon as it listens
        (with Twisted's own endpoints, within C{listen}: before the reactor
        can accept anyone); what it raises refuses the port, which is then
        closed.
    @param explain: turns what listening failed with into what to raise
        and report instead (a port in use into a sentence saying what to do).
    """

    log = Logger()

    def __init__(
        self,
        endpoint: IStreamServerEndpoint,
        factory: IProtocolFactory,
        check: Optional[Callable[[IListeningPort], None]] = None,
        explain: Optional[Callable[[Exception], Exception]] = None,
    ) -> None:
        self.endpoint = endpoint
        self.factory = factory
        self._check = check
        self._explain = explain
        self._attempt: Optional[Deferred] = None
        self._outcome: Union[None, IListeningPort, Failure] = None
        self._waiting: List[Deferred] = []
        self._starting = False

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        self._listen()

    def startService(self) -> None:
        super().startService()
        if self._attempt is None:
            self._listen()

    def _listen(self) -> None:
        self._starting = True
        self._attempt = self.endpoint.listen(self.factory)
        self._attempt.addCallback(self._admit)
        if self._explain is not None:
            self._attempt.addErrback(self._explained)
        self._attempt.addBoth(self._settled)
        self._starting = False
        if isinstance(self._outcome, Failure):
            self._outcome.raiseException()

    def _admit(self, port: IListeningPort) -> IListeningPort:
        if self._check is not None:
            try:
                self._check(port)
            except Exception:
                port.stopListening()
                raise
        return port

    def _explained(self, failure: Failure) -> Failure:
        if failure.check(CancelledError):
            return failure
        assert self._explain is not None
        explained = self._explain(failure.value)
        return failure if explained is failure.value else Failure(explained)

    def _settled(self, outcome: Union[IListeningPort, Failure]) -> None:
        self._outcome = outcome
        if (
            isinstance(outcome, Failure)
            and not self._starting
            and not outcome.check(CancelledError)
        ):
            self.log.failure("could not listen", outcome)
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            if isinstance(outcome, Failure):
                d.errback(outcome)
            else:
                d.callback(outcome)

    def when_listening(self) -> Deferred:
        """
        Fire with the L{IListeningPort} once listening (useful with port 0),
        or fail as listening failed.
        """
        if self._outcome is None:
            d: Deferred = Deferred()
            self._waiting.append(d)
            return d
        if isinstance(self._outcome, Failure):
            return fail(self._outcome)
        return succeed(self._outcome)

    def stopService(self) -> Deferred:
        """
        Stop listening, or give up a listen that has not completed.
        """
        super().stopService()
        attempt, self._attempt = self._attempt, None
        outcome, self._outcome = self._outcome, None
        if attempt is not None and outcome is None:
            attempt.cancel()
        if outcome is None or isinstance(outcome, Failure):
            return succeed(None)
        return maybeDeferred(outcome.stopListening)
