"""
The subcommands of C{ccx}: each takes a L{Context} and its parsed options
and returns a Deferred that fires with the command's exit status.
"""

import shlex
import signal
from typing import Any, Callable, Dict, List

from twisted.internet.defer import Deferred, inlineCallbacks

from ccx.cli.client import CallError, RPCClientProtocol, ServiceError
from ccx.cli.context import Context
from ccx.cli.relay import OutputRelay
from ccx.cli.status import (
    EXIT_BROKEN_PIPE,
    EXIT_INTERRUPTED,
    EXIT_NOT_ALLOWED,
    EXIT_SPAWN_FAILED,
    exit_status,
)
from ccx.cli.stdin import StdinForwarder
from ccx.protocol import (
    BINARY,
    COMMAND_NOT_ALLOWED,
    CONTROLS,
    PROCESS_NOT_FOUND,
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
    relay.follow(process_id)
    if options["verbose"] or keep:
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
        if keep:
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
        offsets = {stream: 0 for stream in STREAMS}
    else:
        offsets = {stream: process.get(f"{stream}_bytes", 0) for stream in STREAMS}
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
