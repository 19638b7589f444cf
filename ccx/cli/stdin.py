"""
C{ccx run --stdin}: the console's standard input, passed on to the program.
"""

import base64
from typing import Any, Dict

from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater

from ccx.cli.client import CallError, RPCClientProtocol, ServiceError
from ccx.cli.context import Context
from ccx.protocol import BASE64, INVALID_STATE, LIMIT_EXCEEDED, PROCESS_NOT_FOUND

class StdinForwarder:
    """
    Sends the console's standard input to the program with C{write}, one
    chunk at a time (reading pauses while a write is in flight), and closes
    the program's stdin at end of file.

    @ivar done: fires once the program's stdin was closed after everything
        was written (or once L{stop} was called), or fails with the
        L{ServiceError} that stopped the writing.
    """

    # Seconds to wait before sending again a write refused by the service's
    # request rate limit (-32001).
    retry_delay = 0.1

    def __init__(
        self,
        context: Context,
        client: RPCClientProtocol,
        process_id: str,
        report_errors: bool = True,
    ) -> None:
        """
        @param report_errors: say on stderr why the input could not be
            passed on (else only L{done} tells).
        """
        self._report_errors = report_errors
        self._context = context
        self._client = client
        self._process_id = process_id
        self._reader: Any = None
        self._done = False
        self.done: Deferred = Deferred()

    def start(self, receiver: Any = None) -> None:
        """
        Start reading the console's standard input, into this forwarder or
        into C{receiver} (which hands on to L{data_received} what it keeps).
        """
        self._reader = self._context.console.read_stdin(receiver or self)

    def stop(self) -> None:
        self._done = True
        if self._reader is not None:
            self._reader.stop()
        self._end(None)

    def _end(self, error: Any) -> None:
        if self.done.called:
            return
        if error is None:
            self.done.callback(None)
        else:
            self.done.errback(error)

    def data_received(self, data: bytes) -> None:
        if self._done:
            return
        self._reader.pauseProducing()
        d = self._write(base64.b64encode(data).decode("ascii"), eof=False)
        d.addCallback(lambda sent: sent and not self._done and self._reader.resumeProducing())

    def input_ended(self) -> None:
        if not self._done:
            self._done = True
            d = self._write("", eof=True)
            d.addCallback(lambda sent: sent and self._end(None))

    def _write(self, data: str, eof: bool) -> Deferred:
        """
        @return: a Deferred that fires with whether the data was written.
        """
        params: Dict[str, Any] = {
            "process_id": self._process_id,
            "data": data,
            "encoding": BASE64,
        }
        if eof:
            params["eof"] = True
        d = self._client.call("write", params)
        d.addCallback(lambda _: True)
        d.addErrback(self._failed, data, eof)
        return d

    def _failed(self, failure: Any, data: str, eof: bool) -> Any:
        if failure.check(CallError) and failure.value.code == LIMIT_EXCEEDED:
            if self._done and not eof:
                return False
            return deferLater(self._context.reactor, self.retry_delay, self._write, data, eof)
        error = failure.value if failure.check(ServiceError) else None
        if error is not None:
            # Told to whoever waits on done before stop() ends it quietly.
            self._end(error)
        self.stop()
        if failure.check(CallError):
            if self._report_errors and failure.value.code not in (
                PROCESS_NOT_FOUND,
                INVALID_STATE,
            ):
                self._context.console.say(
                    f"could not pass standard input on: {failure.value.message}"
                )
            # else the program finished, or closed its stdin: the rest is not wanted.
            return False
        if failure.check(ServiceError):
            return False  # the connection is gone; the relay says so
        return failure
