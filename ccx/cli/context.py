"""
What every command of C{ccx} is given: where the service is, the console,
and the way to end early.
"""

from typing import Any, Callable, Optional

from twisted.internet.defer import Deferred, inlineCallbacks, succeed

from ccx.cli.client import RPCClientProtocol, connect
from ccx.cli.console import Console
from ccx.cli.status import EXIT_INTERRUPTED, EXIT_TERMINATED

class Context:
    """
    What every command needs: where the service is, the console, and the
    way to end early (Ctrl-C).

    @ivar client: the open connection, once L{connect} succeeded.
    """

    def __init__(
        self,
        reactor: Any,
        console: Console,
        url: str,
        token: Optional[str] = None,
        cacert: Optional[str] = None,
    ) -> None:
        self.reactor = reactor
        self.console = console
        self.url = url
        self.token = token
        self.cacert = cacert
        self.client: Optional[RPCClientProtocol] = None
        self.finished: Deferred = Deferred()
        self._on_interrupt: Optional[Callable[[], None]] = None
        self._abrupt = False

    @inlineCallbacks
    def connect(self) -> Any:
        client = yield connect(self.reactor, self.url, self.token, self.cacert)
        self.client = client
        return client

    def on_interrupt(self, handler: Optional[Callable[[], None]]) -> None:
        """
        Call C{handler} on Ctrl-C instead of leaving at once.
        """
        self._on_interrupt = handler

    def interrupt(self) -> None:
        """
        Ctrl-C (SIGINT).
        """
        if self.finished.called:
            return
        if self._on_interrupt is not None:
            self._on_interrupt()
        else:
            self.finish(EXIT_INTERRUPTED, abrupt=True)

    def terminate(self) -> None:
        """
        SIGTERM: leave at once.
        """
        self.finish(EXIT_TERMINATED, abrupt=True)

    def finish(self, status: int, abrupt: bool = False) -> None:
        """
        End the command with C{status} (the first call wins).

        @param abrupt: drop the connection rather than close it cleanly.
        """
        if not self.finished.called:
            self._abrupt = abrupt
            self.finished.callback(status)

    def close(self) -> Deferred:
        """
        Close the connection, if any.
        """
        client = self.client
        if client is None:
            return succeed(None)
        if self._abrupt:
            client.dropConnection(abort=True)
            return succeed(None)
        d = client.close()
        d.addTimeout(3, self.reactor, onTimeoutCancel=lambda *_: None)
        return d
