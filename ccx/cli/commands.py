"""
The subcommands of C{ccx}: each takes a L{Context} and its parsed options
and returns a Deferred that fires with the command's exit status.
"""

import json
import signal
import termios
from typing import Any, Callable, Dict, List, Optional, Tuple

from twisted.internet.defer import Deferred, DeferredList, FirstError, inlineCallbacks

from ccx.cli.client import CallError, RPCClientProtocol, ServiceError
from ccx.cli.context import Context
from ccx.cli.listing import format_status, format_table
from ccx.cli.relay import OutputRelay
from ccx.cli.status import (
    EXIT_BROKEN_PIPE,
    EXIT_INTERRUPTED,
    EXIT_NOT_ALLOWED,
    EXIT_REFUSED,
    EXIT_SPAWN_FAILED,
    EXIT_USAGE,
    exit_status,
)
from ccx.cli.rawmode import DETACH_HELP, RawMode, TerminalInput, local_window_size
from ccx.cli.stdin import StdinForwarder
from ccx.protocol import (
    BINARY,
    COMMAND_NOT_ALLOWED,
    CONTROLS,
    INVALID_STATE,
    PROCESS_NOT_FOUND,
    PTY,
    SPAWN_FAILED,
    STREAMS,
)


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
    # Binary frames where the service has them: raw bytes, no JSON, no base64.
    encoding = yield client.output_encoding()
    params: Dict[str, Any] = {"command": list(options.argv), "encoding": encoding}
    # A durable program outlives this client as it outlives the service.
    keep = options["keep"] or options["durable"]
    if options["durable"]:
        params["durable"] = True
    elif keep:
        params["on_disconnect"] = "keep"
    if options["drop"]:
        params["on_full"] = "drop"
    if options["stdin"]:
        params["stdin"] = True
    if options["merge-stderr"]:
        params["merge_stderr"] = True
    if options["cwd"] is not None:
        params["cwd"] = options["cwd"]
    if options.env:
        params["env"] = dict(options.env)
    if options["timeout"] is not None:
        params["timeout"] = options["timeout"]
    if options["tty"]:
        size = local_window_size()
        params["pty"] = {"rows": size.rows, "cols": size.cols}

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

    def detach() -> None:
        # --keep: Ctrl-C leaves the program running, and says how to return.
        process_id = state["process_id"]
        console.say(f"detached; {process_id} runs on: ccx attach {process_id}")
        context.finish(EXIT_INTERRUPTED)

    def interrupted() -> None:
        if state["interrupted"]:
            context.finish(EXIT_INTERRUPTED, abrupt=True)
            return
        state["interrupted"] = True
        if keep:
            if state["process_id"] is not None:
                detach()
            return  # detached once execute has answered
        console.say("cancelling the program (Ctrl-C again to leave at once)")
        cancel()

    context.on_interrupt(interrupted)
    relay = OutputRelay(context, client, encoding=encoding)
    if not keep:
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
    if options["detach"]:
        relay.discard()
        console.stdout.write(f"{process_id}\n".encode("ascii"))
        return 0
    relay.follow(process_id)
    if keep:
        relay.on_lost = f"; to follow it again: ccx attach {process_id}"
    if options["verbose"] or keep:
        console.say(f"started {process_id} (pid {result.get('pid')})")
    if options["verbose"]:
        relay.on_change = _say_change(context, state)
    if state["interrupted"]:
        if keep:
            detach()
            return EXIT_INTERRUPTED
        cancel()
    elif relay.broken:
        cancel()
    if options["tty"]:
        completed = yield _on_terminal(context, client, relay, process_id, redraw=False)
        if completed is None:
            return 0
        return exit_status(completed)
    forwarder = None
    if options["stdin"]:
        forwarder = StdinForwarder(context, client, process_id)
        forwarder.done.addErrback(lambda _: None)  # the relay tells how it ended
        forwarder.start()
    try:
        completed = yield relay.finished
    finally:
        if forwarder is not None:
            forwarder.stop()
    if relay.broken:
        return EXIT_BROKEN_PIPE
    if options["verbose"]:
        console.say(_summary(completed))
    return exit_status(completed, interrupted=state["interrupted"])


@inlineCallbacks
def _on_terminal(
    context: Context,
    client: RPCClientProtocol,
    relay: OutputRelay,
    process_id: str,
    redraw: bool,
) -> Any:
    """
    Give the person's terminal to a program on a terminal until it ends or
    the detach keys are typed.

    @return: a Deferred firing with the C{process.completed} params, or
        L{None} once detached (the program runs on).
    """
    console = context.console
    raw = RawMode(0)
    try:
        raw.enter()
    except termios.error:
        raise ServiceError("-t needs a terminal: standard input is not one", EXIT_USAGE)
    keys = TerminalInput(context, client, process_id, local_window_size)
    try:
        keys.start(redraw=redraw)
        ended = yield DeferredList(
            [relay.finished, keys.detached], fireOnOneCallback=True, fireOnOneErrback=True,
            consumeErrors=True,
        )
    except FirstError as e:
        e.subFailure.raiseException()
    finally:
        keys.stop()
        raw.restore()
    completed, which = ended
    if which == 1:
        relay.discard()
        console.say(
            f"detached ({DETACH_HELP}); {process_id} runs on: ccx attach -t {process_id}"
        )
        return None
    return completed


def _say_change(context: Context, state: Dict[str, Any]) -> Callable[[str], None]:
    """
    C{-v}: say when the program was paused, resumed or cancelled, except
    for a cancel this ccx asked for (Ctrl-C, already told).
    """

    def said(change: str) -> None:
        if change == "cancelled" and state.get("interrupted"):
            return
        context.console.say(f"the program was {change}")

    return said


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
        raise ServiceError(f"{given!r} is ambiguous: it begins {ids}", EXIT_REFUSED)
    return matches[0] if matches else None


def _not_found(given: str) -> ServiceError:
    return ServiceError(f"no process {given!r} (see `ccx ls`)", EXIT_REFUSED)


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
    if options["tty"] and "pty" not in process:
        raise ServiceError(
            f"process {process_id} does not run on a terminal: attach without -t", EXIT_USAGE
        )
    if options["from-start"]:
        # From byte 0: the service replays what it holds and reports with
        # process.dropped what it no longer holds.
        offsets = {stream: 0 for stream in _streams(process)}
    else:
        offsets = {stream: process.get(f"{stream}_bytes", 0) for stream in _streams(process)}
    params: Dict[str, Any] = {"process_id": process_id, "offsets": offsets}
    encoding = yield client.output_encoding()
    if encoding == BINARY:
        params["encoding"] = BINARY
    else:
        # A service without binary frames takes no encoding on attach: the
        # output comes as the process was started, which list says.
        encoding = process.get("encoding")
    # Ctrl-C leaves; the program runs on (this connection did not start it).
    context.on_interrupt(None)
    relay = OutputRelay(context, client, encoding=encoding)
    relay.follow(process_id)
    relay.on_lost = f"; to follow it again: ccx attach {process_id}"
    if options["verbose"]:
        relay.on_change = _say_change(context, {})
    try:
        yield client.call("attach", params)
    except BaseException:
        relay.discard()
        raise
    if options["tty"] and process.get("state") != "exited":
        completed = yield _on_terminal(context, client, relay, process_id, redraw=True)
        if completed is None:
            return 0
    else:
        completed = yield relay.finished
    return exit_status(completed)


def _streams(process: dict) -> Tuple[str, ...]:
    """
    The streams of a process as C{list} shows it: C{pty} alone for one on
    a terminal.
    """
    return (PTY,) if "pty" in process else STREAMS


def _selected(processes: List[dict], options: Any) -> List[dict]:
    state = options["state"]
    if options["running"]:
        return [p for p in processes if p.get("state") in ("running", "paused")]
    if options["finished"]:
        return [p for p in processes if p.get("state") == "exited"]
    if state is not None:
        return [p for p in processes if p.get("state") == state]
    return processes


@inlineCallbacks
def ls(context: Context, options: Any) -> Any:
    """
    C{ccx ls}: a table of the processes the service knows (C{--json}: their
    entries; C{-q}: their ids).
    """
    client = yield context.connect()
    listed = yield client.call("list", {})
    processes = _selected(listed.get("processes", []), options)
    processes.sort(key=lambda p: p.get("started_at") or 0)
    out = context.console.stdout
    if options["json"]:
        out.write(json.dumps(processes, indent=2).encode("utf-8") + b"\n")
    elif options["quiet"]:
        out.write("".join(f"{p.get('process_id')}\n" for p in processes).encode("utf-8"))
    elif processes:
        out.write(format_table(processes).encode("utf-8", "replace"))
    else:
        context.console.say("no processes")
    return 0


@inlineCallbacks
def _known(context: Context, given: str) -> Any:
    """
    Connect, and find the process a person means by C{given}.

    @return: a Deferred firing with (client, its C{list} entry).
    @raise ServiceError: (exit 1) when there is none such, or several.
    """
    client = yield context.connect()
    process = yield resolve_process(client, given)
    if process is None:
        raise _not_found(given)
    return client, process


@inlineCallbacks
def status(context: Context, options: Any) -> Any:
    """
    C{ccx status ID}: one process, for a person (C{--json}: its entry).
    """
    _client, process = yield _known(context, options.process_id)
    if options["json"]:
        text = json.dumps(process, indent=2) + "\n"
    else:
        text = format_status(process)
    context.console.stdout.write(text.encode("utf-8", "replace"))
    return 0


class _StreamCursor(OutputRelay):
    """
    C{ccx logs}: the output of the chosen streams, and where each has got
    to; with C{until}, the relay ends once every chosen stream reached it.
    """

    def __init__(
        self,
        context: Context,
        client: RPCClientProtocol,
        encoding: Optional[str],
        streams: List[str],
        positions: Dict[str, int],
        until: Optional[Dict[str, int]],
    ) -> None:
        super().__init__(context, client, encoding=encoding)
        self.streams = streams
        self.positions = dict(positions)
        self.until = until

    def reached(self) -> bool:
        return self.until is not None and all(
            self.positions[s] >= self.until[s] for s in self.streams
        )

    def _advance(self, stream: str, end: int) -> None:
        self.positions[stream] = max(self.positions[stream], end)
        if self.reached():
            self._end(None)

    def output_received(self, stream: str, offset: int, data: bytes) -> None:
        if stream not in self.streams:
            return
        super().output_received(stream, offset, data)
        self._advance(stream, offset + len(data))

    def dropped_received(self, stream: str, offset: int, size: int) -> None:
        if stream in self.streams:
            super().dropped_received(stream, offset, size)
            self._advance(stream, offset + size)


@inlineCallbacks
def logs(context: Context, options: Any) -> Any:
    """
    C{ccx logs ID}: what the service holds of a process's output, from
    C{--since} (byte 0 by default); with C{-f}, then what comes, until it ends.
    """
    client, process = yield _known(context, options.process_id)
    process_id = process["process_id"]
    # A program on a terminal has one stream, whatever --stdout or --stderr says.
    streams = list(_streams(process)) if "pty" in process else options.streams
    ends = {stream: int(process.get(f"{stream}_bytes") or 0) for stream in _streams(process)}
    start = {stream: min(options["since"], ends[stream]) for stream in ends}
    follow = options["follow"] and process.get("state") != "exited"
    context.on_interrupt(None)  # Ctrl-C leaves; the program runs on
    until = None if follow else ends
    params: Dict[str, Any] = {"process_id": process_id, "offsets": start}
    encoding = yield client.output_encoding()
    if encoding == BINARY:
        params["encoding"] = BINARY
    else:
        encoding = process.get("encoding")  # as attach does
    cursor = _StreamCursor(context, client, encoding, streams, start, until)
    if cursor.reached():
        cursor.discard()
        return 0
    cursor.follow(process_id)
    try:
        yield client.call("attach", params)
    except BaseException:
        cursor.discard()
        raise
    yield cursor.finished
    return 0


class _Completion(OutputRelay):
    """
    C{ccx wait}: only how the process ends.
    """

    def output_received(self, stream: str, offset: int, data: bytes) -> None:
        pass

    def dropped_received(self, stream: str, offset: int, size: int) -> None:
        pass


@inlineCallbacks
def wait(context: Context, options: Any) -> Any:
    """
    C{ccx wait ID}: wait for a process to end; exit with its status.
    """
    client, process = yield _known(context, options.process_id)
    process_id = process["process_id"]
    context.on_interrupt(None)
    relay = _Completion(context, client)
    relay.follow(process_id)
    # From the live end: the service sends nothing but what comes, then
    # process.completed (at once for a finished process).
    offsets = {stream: int(process.get(f"{stream}_bytes") or 0) for stream in _streams(process)}
    params: Dict[str, Any] = {"process_id": process_id, "offsets": offsets}
    encoding = yield client.output_encoding()
    if encoding == BINARY:
        params["encoding"] = BINARY
    try:
        yield client.call("attach", params)
    except BaseException:
        relay.discard()
        raise
    completed = yield relay.finished
    return exit_status(completed)


@inlineCallbacks
def write(context: Context, options: Any) -> Any:
    """
    C{ccx write ID}: this command's standard input to the program's, then
    end of file.
    """
    client, process = yield _known(context, options.process_id)
    forwarder = StdinForwarder(context, client, process["process_id"], report_errors=False)
    forwarder.start()
    try:
        yield forwarder.done
    except CallError as e:
        if e.code == INVALID_STATE:
            raise ServiceError(e.message + " (see `ccx run --stdin`)", EXIT_REFUSED)
        raise
    return 0


@inlineCallbacks
def rm(context: Context, options: Any) -> Any:
    """
    C{ccx rm ID...}: forget finished processes, their output and journal.
    """
    client = yield context.connect()
    for given in options.process_ids:
        process = yield resolve_process(client, given)
        if process is None:
            raise _not_found(given)
        result = yield client.call("forget", {"process_id": process["process_id"]})
        context.console.stdout.write(f"removed {result.get('process_id')}\n".encode("utf-8"))
    return 0


def control(kind: str) -> Callable[[Context, Any], Deferred]:
    """
    C{ccx pause|resume|cancel ID}: C{kind} is one of L{CONTROLS}.
    """
    done = CONTROLS[kind]

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
