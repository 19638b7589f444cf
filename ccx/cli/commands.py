"""
The subcommands of C{ccx}: each takes a L{Context} and its parsed options
and returns a Deferred that fires with the command's exit status.
"""

import base64
import binascii
import shlex
import signal
from typing import Any, Callable, Dict, List, Optional

from twisted.internet.defer import Deferred, inlineCallbacks, succeed
from twisted.internet.interfaces import IPushProducer
from twisted.internet.task import deferLater
from zope.interface import implementer

from ccx.cli.client import (
    COMMAND_NOT_ALLOWED,
    INVALID_STATE,
    LIMIT_EXCEEDED,
    PROCESS_NOT_FOUND,
    SPAWN_FAILED,
    CallError,
    RPCClientProtocol,
    ServiceError,
    connect,
)
from ccx.cli.console import Console

STREAMS = ("stdout", "stderr")

# Exit statuses of ccx itself (see docs/cli.md).
EXIT_USAGE = 2
EXIT_NOT_ALLOWED = 126
EXIT_SPAWN_FAILED = 127
EXIT_TIMEOUT = 124
EXIT_INTERRUPTED = 128 + signal.SIGINT
EXIT_TERMINATED = 128 + signal.SIGTERM
EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE


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


# Exit statuses ---------------------------------------------------------------


def program_status(completed: dict) -> int:
    """
    The status a shell would report for the program: its exit code, or
    128+N when signal N killed it.
    """
    code = completed.get("exit_code")
    if not isinstance(code, int):
        return 1
    return code if code >= 0 else 128 - code


def exit_status(completed: dict, interrupted: bool = False) -> int:
    """
    The exit status of C{ccx run} and C{ccx attach} for a
    C{process.completed} notification (docs/cli.md):
      - C{completed}, C{failed}: the program's status (L{program_status});
      - C{timeout}: 124, like coreutils' C{timeout};
      - C{cancelled}: 130 when this client's Ctrl-C cancelled it, else the
        program's status, and 143 (SIGTERM) if that was 0.
    """
    status = completed.get("status")
    if status == "timeout":
        return EXIT_TIMEOUT
    if status == "cancelled":
        if interrupted:
            return EXIT_INTERRUPTED
        return program_status(completed) or EXIT_TERMINATED
    return program_status(completed)


# Streaming -------------------------------------------------------------------


class ChunkDecoder:
    """
    Turns the C{data} of C{process.output} back into bytes.

    C{ccx run} asks for base64. A process someone else started may carry
    UTF-8 text instead, and docs/protocol.md does not say which to the attacher:
    without a known encoding, a chunk that is valid, canonical base64 is
    read as base64, anything else as text, and once a chunk is not base64
    every later chunk is read as text.
    """

    def __init__(self, encoding: Optional[str] = None) -> None:
        self.encoding = encoding

    def __call__(self, text: str) -> bytes:
        if self.encoding != "utf-8" and text:
            try:
                data = base64.b64decode(text, validate=True)
            except (binascii.Error, ValueError):
                self.encoding = "utf-8"
            else:
                if base64.b64encode(data).decode("ascii") == text:
                    self.encoding = "base64"
                    return data
                self.encoding = "utf-8"
        return text.encode("utf-8", "surrogatepass")


@implementer(IPushProducer)
class _TransportGate:
    """
    The connection seen by one output as its producer: the WebSocket's
    transport is paused while any output is full, and resumed once none is.
    """

    def __init__(self, relay: "OutputRelay", name: str) -> None:
        self._relay = relay
        self._name = name

    def pauseProducing(self) -> None:
        self._relay._pause(self._name)

    def resumeProducing(self) -> None:
        self._relay._resume(self._name)

    def stopProducing(self) -> None:
        self._relay._output_lost(self._name)


class OutputRelay:
    """
    Writes one process's output to the console as it arrives: stdout to
    standard output, stderr to standard error, byte for byte.

    @ivar finished: fires with the C{process.completed} params, or fails
        with a L{ServiceError} if the connection closes first.
    @ivar broken: standard output or error broke (EPIPE).
    @ivar on_broken: called when an output breaks; by default the command
        ends at once with status 141, as a program killed by SIGPIPE would.
    """

    broken = False
    on_broken: Optional[Callable[[], None]] = None

    def __init__(
        self,
        context: Context,
        client: RPCClientProtocol,
        encoding: Optional[str] = None,
    ) -> None:
        self._context = context
        self._client = client
        self._console = context.console
        self._decode = ChunkDecoder(encoding)
        self._process_id: Optional[str] = None
        self._early: List[tuple] = []
        self._paused: set = set()
        self._done = False
        self._outputs = {"stdout": self._console.stdout, "stderr": self._console.stderr}
        self.finished: Deferred = Deferred()
        client.add_listener(self._notification)
        client.when_closed().addCallback(self._closed)
        for name, output in self._outputs.items():
            output.registerProducer(_TransportGate(self, name), True)

    def follow(self, process_id: str) -> None:
        """
        Relay the notifications of C{process_id} (including those that came
        before it was known).
        """
        self._process_id = process_id
        early, self._early = self._early, []
        for method, params in early:
            self._notification(method, params)

    def _notification(self, method: str, params: dict) -> None:
        if self._done or not method.startswith("process."):
            return
        if self._process_id is None:
            self._early.append((method, params))
            return
        if params.get("process_id") != self._process_id:
            return
        if method == "process.output":
            output = self._outputs.get(params.get("type"))
            if output is not None:
                output.write(self._decode(params.get("data", "")))
        elif method == "process.dropped":
            self._console.say(
                f"{params.get('bytes')} bytes of the program's {params.get('type')} (from "
                f"byte {params.get('offset')}) were dropped: the service no longer held them"
            )
        elif method == "process.completed":
            if params.get("error"):
                self._console.say(str(params["error"]))
            self._end(params)

    def discard(self) -> None:
        """
        Stop relaying, without firing L{finished}.
        """
        self._done = True
        self._client.remove_listener(self._notification)
        for output in self._outputs.values():
            output.unregisterProducer()
        if self._paused:
            self._paused.clear()
            self._transport_call("resumeProducing")

    def _end(self, result: Any) -> None:
        if not self._done:
            self.discard()
            self.finished.callback(result)

    def _closed(self, lost: ServiceError) -> None:
        if not self._done:
            self.discard()
            self.finished.errback(
                ServiceError(f"lost the connection to the service at {self._context.url}: {lost}")
            )

    def _transport_call(self, name: str) -> None:
        transport = self._client.transport
        if transport is not None and hasattr(transport, name):
            getattr(transport, name)()

    def _pause(self, name: str) -> None:
        if not self._paused:
            self._transport_call("pauseProducing")
        self._paused.add(name)

    def _resume(self, name: str) -> None:
        if name in self._paused:
            self._paused.discard(name)
            if not self._paused:
                self._transport_call("resumeProducing")

    def _output_lost(self, name: str) -> None:
        # Nobody reads that output any more (EPIPE): what still comes for it
        # is thrown away, and the command is told.
        self._resume(name)
        if not self._done and self._outputs[name].broken:
            self.broken = True
            if self.on_broken is not None:
                self.on_broken()
            else:
                self._context.finish(EXIT_BROKEN_PIPE, abrupt=True)


class StdinForwarder:
    """
    Sends the console's standard input to the program with C{write}, one
    chunk at a time (reading pauses while a write is in flight), and closes
    the program's stdin at end of file.
    """

    # Seconds to wait before sending again a write refused by the service's
    # request rate limit (-32001).
    retry_delay = 0.1

    def __init__(self, context: Context, client: RPCClientProtocol, process_id: str) -> None:
        self._context = context
        self._client = client
        self._process_id = process_id
        self._reader: Any = None
        self._done = False

    def start(self) -> None:
        self._reader = self._context.console.read_stdin(self)

    def stop(self) -> None:
        self._done = True
        if self._reader is not None:
            self._reader.stop()

    def data_received(self, data: bytes) -> None:
        if self._done:
            return
        self._reader.pauseProducing()
        d = self._write(base64.b64encode(data).decode("ascii"), eof=False)
        d.addCallback(lambda sent: sent and not self._done and self._reader.resumeProducing())

    def input_ended(self) -> None:
        if not self._done:
            self._done = True
            self._write("", eof=True)

    def _write(self, data: str, eof: bool) -> Deferred:
        """
        @return: a Deferred that fires with whether the data was written.
        """
        params: Dict[str, Any] = {
            "process_id": self._process_id,
            "data": data,
            "encoding": "base64",
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
        self.stop()
        if failure.check(CallError):
            if failure.value.code not in (PROCESS_NOT_FOUND, INVALID_STATE):
                self._context.console.say(
                    f"could not pass standard input on: {failure.value.message}"
                )
            # else the program finished, or closed its stdin: the rest is not wanted.
            return False
        if failure.check(ServiceError):
            return False  # the connection is gone; the relay says so
        return failure


# Commands --------------------------------------------------------------------


def _refusal(error: CallError) -> ServiceError:
    if error.code == COMMAND_NOT_ALLOWED:
        return ServiceError(error.message, EXIT_NOT_ALLOWED)
    if error.code == SPAWN_FAILED:
        return ServiceError(error.message, EXIT_SPAWN_FAILED)
    return error


@inlineCallbacks
def run(context: Context, options: Any) -> Any:
    """
    C{ccx run}: start a program and relay it until it ends.
    """
    client = yield context.connect()
    console = context.console
    params: Dict[str, Any] = {"command": list(options.argv), "encoding": "base64"}
    if options["keep"]:
        params["on_disconnect"] = "keep"
    if options["drop"]:
        params["on_full"] = "drop"
    if options["stdin"]:
        params["stdin"] = True
    if options["cwd"] is not None:
        params["cwd"] = options["cwd"]
    if options.env:
        params["env"] = dict(options.env)
    if options["timeout"] is not None:
        params["timeout"] = options["timeout"]

    state: Dict[str, Any] = {"interrupted": False, "process_id": None}

    def cancel() -> None:
        process_id = state["process_id"]
        if process_id is None:
            return
        d = client.call("control", {"type": "CANCEL", "process_id": process_id})

        def failed(failure: Any) -> None:
            if failure.check(CallError) and failure.value.code == PROCESS_NOT_FOUND:
                return  # it finished meanwhile; its completion is on the way
            if failure.check(ServiceError):
                console.say(f"could not cancel: {failure.value.message}")
                return
            return failure

        d.addErrback(failed)

    def interrupted() -> None:
        if state["interrupted"]:
            context.finish(EXIT_INTERRUPTED, abrupt=True)
            return
        state["interrupted"] = True
        console.say("cancelling the program (Ctrl-C again to leave at once)")
        cancel()

    context.on_interrupt(interrupted)
    relay = OutputRelay(context, client, encoding="base64")
    if not options["keep"]:
        # Like Ctrl-C: cancel the program and wait until nothing of it is left.
        relay.on_broken = cancel
    try:
        result = yield client.call("execute", params)
    except CallError as e:
        relay.discard()
        raise _refusal(e)
    except BaseException:
        relay.discard()
        raise
    process_id = state["process_id"] = result["process_id"]
    relay.follow(process_id)
    if options["verbose"] or options["keep"]:
        console.say(f"started {process_id} (pid {result.get('pid')})")
    if state["interrupted"] or relay.broken:
        cancel()
    forwarder = None
    if options["stdin"]:
        forwarder = StdinForwarder(context, client, process_id)
        forwarder.start()
    try:
        completed = yield relay.finished
    except ServiceError as e:
        if options["keep"]:
            e.message += f"; the program runs on: ccx attach {process_id}"
        raise e
    finally:
        if forwarder is not None:
            forwarder.stop()
    if relay.broken:
        return EXIT_BROKEN_PIPE
    if options["verbose"]:
        console.say(_summary(completed))
    return exit_status(completed, interrupted=state["interrupted"])


def _summary(completed: dict) -> str:
    how = f"exit code {completed.get('exit_code')}"
    if completed.get("signal"):
        how = f"signal {completed['signal']}"
    return (
        f"{completed.get('process_id')} {completed.get('status')} ({how}) after "
        f"{completed.get('duration', 0):.3f} s"
    )


@inlineCallbacks
def resolve_process(client: RPCClientProtocol, given: str) -> Any:
    """
    The process a person means by C{given}: its id, or an unambiguous prefix
    of one.

    @return: a Deferred firing with the process's C{list} entry, or with
        C{None} when the service knows none such.
    """
    listed = yield client.call("list", {})
    processes = listed.get("processes", [])
    for process in processes:
        if process.get("process_id") == given:
            return process
    matches = [p for p in processes if str(p.get("process_id", "")).startswith(given)]
    if len(matches) > 1:
        ids = ", ".join(p["process_id"] for p in matches)
        raise ServiceError(f"{given!r} is ambiguous: it begins {ids}", 1)
    return matches[0] if matches else None


def _not_found(given: str) -> ServiceError:
    return ServiceError(f"no process {given!r} (see `ccx ls`)", 1)


@inlineCallbacks
def attach(context: Context, options: Any) -> Any:
    """
    C{ccx attach}: relay a running (or kept) process until it ends.
    """
    client = yield context.connect()
    process = yield resolve_process(client, options.process_id)
    if process is None:
        raise _not_found(options.process_id)
    process_id = process["process_id"]
    if options["from-start"]:
        # From byte 0: the service replays what it holds and reports with
        # process.dropped what it no longer holds.
        offsets = {"stdout": 0, "stderr": 0}
    else:
        offsets = {
            "stdout": process.get("stdout_bytes", 0),
            "stderr": process.get("stderr_bytes", 0),
        }
    params: Dict[str, Any] = {"process_id": process_id, "offsets": offsets}
    # Ctrl-C leaves; the program runs on (this connection did not start it).
    context.on_interrupt(None)
    # The service says how this process's output is carried; a service
    # that does not leaves ChunkDecoder to tell.
    relay = OutputRelay(context, client, encoding=process.get("encoding"))
    relay.follow(process_id)
    try:
        yield client.call("attach", params)
    except BaseException:
        relay.discard()
        raise
    completed = yield relay.finished
    return exit_status(completed)


def _cell(value: Any) -> str:
    return "-" if value is None else str(value)


def _exit_cell(process: dict) -> str:
    code = process.get("exit_code")
    if not isinstance(code, int):
        return "-"
    if code < 0:
        try:
            return signal.Signals(-code).name
        except ValueError:
            return str(code)
    return str(code)


def format_table(processes: List[dict]) -> str:
    """
    The C{ccx ls} table: one row per process, oldest first.
    """
    header = ("ID", "PID", "STATE", "EXIT", "STDOUT", "STDERR", "COMMAND")
    rows = [header]
    for p in sorted(processes, key=lambda p: p.get("started_at") or 0):
        command = p.get("command") or []
        rows.append(
            (
                _cell(p.get("process_id")),
                _cell(p.get("pid")),
                _cell(p.get("state")),
                _exit_cell(p),
                _cell(p.get("stdout_bytes")),
                _cell(p.get("stderr_bytes")),
                shlex.join(str(a) for a in command),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    lines = []
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths)]
        lines.append("  ".join(cells + [row[-1]]).rstrip())
    return "\n".join(lines) + "\n"


@inlineCallbacks
def ls(context: Context, options: Any) -> Any:
    """
    C{ccx ls}: a table of the processes the service knows.
    """
    client = yield context.connect()
    listed = yield client.call("list", {})
    processes = listed.get("processes", [])
    if processes:
        context.console.stdout.write(format_table(processes).encode("utf-8", "replace"))
    else:
        context.console.say("no processes")
    return 0


def control(kind: str, done: str) -> Callable[[Context, Any], Deferred]:
    """
    C{ccx pause|resume|cancel ID}.
    """

    @inlineCallbacks
    def command(context: Context, options: Any) -> Any:
        client = yield context.connect()
        process = yield resolve_process(client, options.process_id)
        process_id = process["process_id"] if process else options.process_id
        result = yield client.call("control", {"type": kind, "process_id": process_id})
        context.console.stdout.write(f"{done} {result.get('process_id')}\n".encode("utf-8"))
        return 0

    return command


def signal_name(given: str) -> str:
    """
    C{INT}, C{sigint}, C{SIGINT} or C{2} -> C{SIGINT}.
    """
    name = given.strip().upper()
    if name.isdigit():
        try:
            return signal.Signals(int(name)).name
        except ValueError:
            return name
    return name if name.startswith("SIG") else "SIG" + name


@inlineCallbacks
def send_signal(context: Context, options: Any) -> Any:
    """
    C{ccx signal ID NAME}.
    """
    client = yield context.connect()
    process = yield resolve_process(client, options.process_id)
    process_id = process["process_id"] if process else options.process_id
    result = yield client.call(
        "signal", {"process_id": process_id, "signal": signal_name(options.signal)}
    )
    context.console.stdout.write(
        f"sent {result.get('signal')} to {result.get('process_id')}\n".encode("utf-8")
    )
    return 0
