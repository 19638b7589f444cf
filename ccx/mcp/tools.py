"""
The MCP tools: their definitions (a JSON Schema for the input and one for
the structured output of each) and their handlers, built on the process
layer the native methods use (L{ccx.process.launch}, the registry, each
process's held output).

A handler takes the tool's arguments and a L{ToolCall}, and returns the
structured result (or a L{Deferred} of it).  It raises L{RPCError} for
anything the caller can fix or must know (a program not on the allow-list,
an unknown process, bad arguments): C{tools/call} turns that into a result
with C{isError: true}, as MCP asks of tool execution errors.
"""

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from ccx.node import Node
from ccx.output.buffer import StreamBuffer
from ccx.output.encoding import complete_utf8_length
from ccx.output.fanout import STREAMS
from ccx.process.launch import LaunchSpec, launch
from ccx.process.managed import EXITED, STARTING, ManagedProcess
from ccx.mcp.progress import ProgressReporter, ProgressToken
from ccx.mcp.session import McpSession, at_least
from ccx.rpc.errors import RPCError, invalid_params
from ccx.rpc.interfaces import INotificationChannel
from ccx.rpc.jsonrpc import Call
from ccx.rpc.params import ParamReader

# What one call of the output tool returns per stream unless told otherwise.
DEFAULT_READ_BYTES = 64 * 1024


class ToolCall:
    """
    One C{tools/call} as its tool sees it.

    @ivar channel: where notifications about this call go: the WebSocket, or
        the SSE stream of the HTTP request that carries it.
    @ivar progress_token: the request's C{_meta.progressToken}, or L{None}.
    @ivar cancelled: whether the client cancelled the request.
    """

    def __init__(
        self,
        mcp: McpSession,
        call: Call,
        channel: INotificationChannel,
        progress_token: Optional[ProgressToken],
    ) -> None:
        self.mcp = mcp
        self.channel = channel
        self.progress_token = progress_token
        self.cancelled = False
        self._call = call
        self._on_cancel: List[Callable[[], None]] = []

    def on_cancel(self, action: Callable[[], None]) -> None:
        """
        Run C{action} if the client cancels this call.
        """
        self._on_cancel.append(action)

    def cancel(self) -> None:
        """
        The client cancelled this call: stop its work and send no response.
        """
        if self.cancelled:
            return
        self.cancelled = True
        self._call.withhold_reply()
        for action in self._on_cancel:
            action()

    def send_log(self, level: str, data: Any) -> None:
        self.mcp.send_log(level, data, self.channel)


ToolHandler = Callable[[Dict[str, Any], ToolCall], Any]


@dataclass(frozen=True)
class Tool:
    """
    One tool as C{tools/list} shows it, and its handler.
    """

    name: str
    title: str
    description: str
    input_schema: Dict[str, Any]
    output_schema: Dict[str, Any]
    annotations: Dict[str, Any]
    handler: ToolHandler

    def describe(self, version: Optional[str]) -> Dict[str, Any]:
        """
        The tool's entry in C{tools/list}, with what the negotiated version
        knows (titles and output schemas came with 2025-06-18, annotations
        with 2025-03-26).
        """
        entry: Dict[str, Any] = {
            "name": self.name,
            "description": self.description,
            "inputSchema": self.input_schema,
        }
        if at_least(version, "2025-03-26"):
            entry["annotations"] = dict(self.annotations, title=self.title)
        if at_least(version, "2025-06-18"):
            entry["title"] = self.title
            entry["outputSchema"] = self.output_schema
        return entry


# -- schemas -------------------------------------------------------------

def _object(properties: Dict[str, Any], required: Tuple[str, ...] = ()) -> Dict[str, Any]:
    schema: Dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
    }
    if required:
        schema["required"] = list(required)
    return schema


def _nullable(kind: str, description: str) -> Dict[str, Any]:
    return {"type": [kind, "null"], "description": description}


_PROCESS_ID = {
    "type": "string",
    "description": "The process id that execute or start returned (see also list).",
}
_COMMAND_OUT = {
    "type": "array",
    "items": {"type": "string"},
    "description": "The program's arguments (argv).",
}
_STATUS = {
    "type": "string",
    "enum": ["running", "paused", "exiting", "completed", "failed", "cancelled", "timeout"],
    "description": (
        "running or paused while it runs; exiting while what it left behind is "
        "ended; then completed (exit status 0), failed (any other exit status or "
        "a signal), cancelled, or timeout."
    ),
}
_ONLY_PROCESS_ID = _object({"process_id": _PROCESS_ID}, ("process_id",))

_PROCESS = _object(
    {
        "process_id": _PROCESS_ID,
        "pid": _nullable("integer", "Its process id on the host."),
        "pgid": _nullable("integer", "Its process group (the same as pid)."),
        "command": _COMMAND_OUT,
        "state": {"type": "string", "enum": ["running", "paused", "exited"]},
        "started_at": _nullable("number", "When it started, in seconds since the epoch."),
        "exit_code": _nullable(
            "integer", "Its exit status once exited; -N when ended by signal N."
        ),
        "stdout_bytes": {"type": "integer", "description": "Bytes written to stdout so far."},
        "stderr_bytes": {"type": "integer", "description": "Bytes written to stderr so far."},
        "dropped_bytes": {
            "type": "integer",
            "description": "Output bytes no longer held before every reader had them.",
        },
        "subscribers": {"type": "integer", "description": "Readers of its output."},
        "encoding": {
            "type": "string",
            "enum": ["utf-8", "base64"],
            "description": "How its process.output data is carried.",
        },
    },
    (
        "process_id",
        "pid",
        "pgid",
        "command",
        "state",
        "started_at",
        "exit_code",
        "stdout_bytes",
        "stderr_bytes",
        "dropped_bytes",
        "subscribers",
        "encoding",
    ),
)

_RUN_PROPERTIES: Dict[str, Any] = {
    "command": {
        "description": (
            "The program and its arguments: an array of strings (argv), or one "
            "string split into words as a POSIX shell would (no shell runs; "
            "quotes group words). The program must be on the service's allow-list."
        ),
        "anyOf": [
            {"type": "string", "minLength": 1},
            {"type": "array", "items": {"type": "string"}, "minItems": 1},
        ],
    },
    "shell": {
        "type": "boolean",
        "default": False,
        "description": (
            "Run command (one string) with /bin/sh -c, for pipes and redirections; "
            "allowed only when sh is on the allow-list."
        ),
    },
    "cwd": {
        "type": "string",
        "description": "Working directory (relative to the service's default directory).",
    },
    "env": {
        "type": "object",
        "additionalProperties": {"type": "string"},
        "description": "Environment variables added to the service's environment.",
    },
    "timeout": {
        "type": "number",
        "exclusiveMinimum": 0,
        "maximum": 1e9,
        "description": (
            "Cancel the program after this many seconds of running (time spent "
            "paused does not count)."
        ),
    },
}

EXECUTE_INPUT = _object(
    dict(
        _RUN_PROPERTIES,
        input={
            "type": "string",
            "description": "Text written to the program's standard input, which is then closed.",
        },
        max_output_bytes={
            "type": "integer",
            "minimum": 0,
            "description": (
                "Return at most this many bytes of each stream (its end). By default, "
                "and at most, a sixteenth of the service's --max-message-size, so that "
                "the reply fits in one message; read the rest with the output tool."
            ),
        },
    ),
    ("command",),
)

EXECUTE_OUTPUT = _object(
    {
        "process_id": _PROCESS_ID,
        "command": _COMMAND_OUT,
        "status": {
            "type": "string",
            "enum": ["completed", "failed", "cancelled", "timeout"],
            "description": (
                "completed (exit status 0), failed (another exit status, or killed by "
                "a signal), cancelled, or timeout."
            ),
        },
        "exit_code": _nullable("integer", "The exit status; -N when killed by signal N."),
        "signal": _nullable("string", "The signal that ended it (SIGTERM, ...), if any."),
        "duration": {"type": "number", "description": "Seconds it ran."},
        "stdout": {"type": "string", "description": "Its standard output (UTF-8)."},
        "stderr": {"type": "string", "description": "Its standard error (UTF-8)."},
        "stdout_bytes": {"type": "integer", "description": "Bytes it wrote to stdout."},
        "stderr_bytes": {"type": "integer", "description": "Bytes it wrote to stderr."},
        "stdout_truncated": {
            "type": "boolean",
            "description": "stdout holds only the end of what was written.",
        },
        "stderr_truncated": {
            "type": "boolean",
            "description": "stderr holds only the end of what was written.",
        },
        "dropped_bytes": {
            "type": "integer",
            "description": "Output bytes the service no longer held when the program ended.",
        },
        "error": _nullable("string", "What went wrong around the program, if anything."),
    },
    (
        "process_id",
        "command",
        "status",
        "exit_code",
        "signal",
        "duration",
        "stdout",
        "stderr",
        "stdout_bytes",
        "stderr_bytes",
        "stdout_truncated",
        "stderr_truncated",
        "dropped_bytes",
        "error",
    ),
)

START_INPUT = _object(
    dict(
        _RUN_PROPERTIES,
        stdin={
            "type": "boolean",
            "default": False,
            "description": "Keep standard input open for the write tool.",
        },
        on_disconnect={
            "type": "string",
            "enum": ["cancel", "keep"],
            "default": "cancel",
            "description": (
                "cancel: end the program when this MCP session ends; keep: let it run on."
            ),
        },
    ),
    ("command",),
)

START_OUTPUT = _object(
    {
        "process_id": _PROCESS_ID,
        "pid": {"type": "integer"},
        "pgid": {"type": "integer"},
        "command": _COMMAND_OUT,
        "status": {"type": "string", "enum": ["started"]},
    },
    ("process_id", "pid", "pgid", "command", "status"),
)

STATUS_OUTPUT = _object(
    dict(
        _PROCESS["properties"],
        status=_STATUS,
        signal=_nullable("string", "The signal that ended it, if any."),
        duration=_nullable("number", "Seconds it ran, once finished."),
        error=_nullable("string", "What went wrong around the program, if anything."),
    ),
    tuple(_PROCESS["required"]) + ("status", "signal", "duration", "error"),
)

_OFFSET = {"type": "integer", "minimum": 0}

OUTPUT_INPUT = _object(
    {
        "process_id": _PROCESS_ID,
        "offsets": _object(
            {"stdout": _OFFSET, "stderr": _OFFSET},
        ),
        "max_bytes": {
            "type": "integer",
            "minimum": 1,
            "default": DEFAULT_READ_BYTES,
            "description": "The most bytes to return of each stream.",
        },
    },
    ("process_id",),
)
OUTPUT_INPUT["properties"]["offsets"]["description"] = (
    "Where to read each stream from, in bytes (default 0); pass the next_offset "
    "values of the previous call to read on."
)

_CHUNK = _object(
    {
        "text": {"type": "string", "description": "The output read (UTF-8)."},
        "offset": {"type": "integer", "description": "The offset of its first byte."},
        "next_offset": {"type": "integer", "description": "Where to read on from."},
        "skipped_bytes": {
            "type": "integer",
            "description": "Bytes before offset that are no longer held.",
        },
        "end": {"type": "integer", "description": "The stream's length so far."},
    },
    ("text", "offset", "next_offset", "skipped_bytes", "end"),
)

OUTPUT_OUTPUT = _object(
    {
        "process_id": _PROCESS_ID,
        "status": _STATUS,
        "stdout": _CHUNK,
        "stderr": _CHUNK,
        "finished": {
            "type": "boolean",
            "description": "The program has finished and everything it wrote was read.",
        },
    },
    ("process_id", "status", "stdout", "stderr", "finished"),
)

WRITE_INPUT = _object(
    {
        "process_id": _PROCESS_ID,
        "data": {"type": "string", "default": "", "description": "Text to write (UTF-8)."},
        "eof": {
            "type": "boolean",
            "default": False,
            "description": "Close the program's standard input after the data.",
        },
    },
    ("process_id",),
)

WRITE_OUTPUT = _object(
    {"process_id": _PROCESS_ID, "bytes": {"type": "integer"}},
    ("process_id", "bytes"),
)


def _control_output(status: str) -> Dict[str, Any]:
    return _object(
        {"process_id": _PROCESS_ID, "status": {"type": "string", "enum": [status]}},
        ("process_id", "status"),
    )


LIST_INPUT: Dict[str, Any] = {"type": "object", "additionalProperties": False}
LIST_OUTPUT = _object(
    {"processes": {"type": "array", "items": _PROCESS}}, ("processes",)
)


# -- reading held output -------------------------------------------------

def read_text(
    buffer: StreamBuffer, offset: int, max_bytes: int
) -> Tuple[int, str, int]:
    """
    Read held output as text, never splitting a UTF-8 character: a read that
    starts after bytes no longer held skips the rest of a character cut in
    two, and one that ends inside a character stops before it (unless the
    stream has ended there).

    @return: C{(first, text, next_offset)}: the offset of the first byte
        read, the text, and the offset to read on from.
    """
    first, data, _ = buffer.read(offset, max_bytes)
    if first > offset:
        lead = 0
        while lead < min(3, len(data)) and data[lead] & 0xC0 == 0x80:
            lead += 1
        first += lead
        data = data[lead:]
    end = first + len(data)
    if not (buffer.closed and end == buffer.end):
        data = data[: complete_utf8_length(data)]
    return first, data.decode("utf-8", "replace"), first + len(data)


def _tail(buffer: StreamBuffer, limit: Optional[int]) -> Tuple[str, int]:
    """
    The end of what a finished stream holds, at most C{limit} bytes.

    @return: the text and how many bytes of the stream it shows.
    """
    size = buffer.held_bytes if limit is None else min(limit, buffer.held_bytes)
    if size <= 0:
        return "", 0
    first, text, next_offset = read_text(buffer, buffer.end - size, size)
    return text, next_offset - first


def _status(process: ManagedProcess) -> str:
    completion = process.output.completion
    if completion is not None:
        return completion["status"]
    if process.state == EXITED:
        return "exiting"
    return "running" if process.state == STARTING else process.state


class Tools:
    """
    The tools of one MCP session.
    """

    def __init__(self, node: Node, mcp: McpSession) -> None:
        self._node = node
        self._mcp = mcp
        self.by_name: Dict[str, Tool] = {
            tool.name: tool for tool in self._definitions()
        }

    def _definitions(self) -> List[Tool]:
        destructive = {"readOnlyHint": False, "destructiveHint": True, "openWorldHint": True}
        control = {"readOnlyHint": False, "destructiveHint": False, "idempotentHint": True}
        reading = {"readOnlyHint": True, "openWorldHint": False}
        return [
            Tool(
                "execute",
                "Run a program to completion",
                "Run an allow-listed program, wait for it to finish, and return its exit "
                "status and output (the end of each stream when there is more than the "
                "service holds). With a progress token, output is streamed as progress "
                "notifications while it runs; cancelling the request ends the program "
                "and everything it started.",
                EXECUTE_INPUT,
                EXECUTE_OUTPUT,
                destructive,
                self.execute,
            ),
            Tool(
                "start",
                "Start a program in the background",
                "Start an allow-listed program and return its process_id at once; follow "
                "it with status and output, steer it with write, pause, resume and cancel.",
                START_INPUT,
                START_OUTPUT,
                destructive,
                self.start,
            ),
            Tool(
                "status",
                "Status of a process",
                "The state of a process started by execute or start: running, paused, "
                "or how it ended, with its exit status and output sizes.",
                _ONLY_PROCESS_ID,
                STATUS_OUTPUT,
                reading,
                self.status,
            ),
            Tool(
                "output",
                "Read a process's output",
                "Read what a process wrote to stdout and stderr from given byte offsets "
                "(pass back next_offset to read on). The service holds the end of each "
                "stream; skipped_bytes says how much before it is no longer held.",
                OUTPUT_INPUT,
                OUTPUT_OUTPUT,
                reading,
                self.output,
            ),
            Tool(
                "write",
                "Write to a process's standard input",
                "Write text to the standard input of a process started with stdin: true, "
                "and optionally close it (eof).",
                WRITE_INPUT,
                WRITE_OUTPUT,
                {"readOnlyHint": False, "destructiveHint": False},
                self.write,
            ),
            Tool(
                "pause",
                "Pause a process",
                "Stop a running process and everything it started (SIGSTOP to its group).",
                _ONLY_PROCESS_ID,
                _control_output("paused"),
                control,
                self.pause,
            ),
            Tool(
                "resume",
                "Resume a process",
                "Continue a paused process (SIGCONT to its group).",
                _ONLY_PROCESS_ID,
                _control_output("resumed"),
                control,
                self.resume,
            ),
            Tool(
                "cancel",
                "Cancel a process",
                "End a process and everything it started: SIGTERM to its group, SIGKILL "
                "after the grace period if anything is left.",
                _ONLY_PROCESS_ID,
                _control_output("cancelled"),
                dict(control, destructiveHint=True),
                self.cancel,
            ),
            Tool(
                "list",
                "List processes",
                "Every process the service knows, running or recently finished.",
                LIST_INPUT,
                LIST_OUTPUT,
                reading,
                self.list,
            ),
        ]

    # -- starting ---------------------------------------------------------

    def _launch(self, spec: LaunchSpec) -> Tuple[ManagedProcess, Deferred]:
        """
        Start a program for this session: it is cancelled with the session
        (unless it was started with C{on_disconnect: "keep"}), and forgotten
        by it once finished.
        """
        session = self._mcp.session
        process, started = launch(self._node, spec, owner=session.session_id)
        if process.pid is not None:
            session.started.append(process)

            def forget(result: Any) -> Any:
                if process in session.started:
                    session.started.remove(process)
                return result

            process.ended.addBoth(forget)
        return process, started

    def _started_event(self, process: ManagedProcess) -> Dict[str, Any]:
        return {
            "event": "started",
            "process_id": process.process_id,
            "pid": process.pid,
            "command": process.command.argv,
        }

    def execute(self, arguments: Dict[str, Any], call: ToolCall) -> Deferred:
        r = ParamReader(
            arguments,
            "execute",
            ("command", "shell", "cwd", "env", "timeout", "input", "max_output_bytes"),
        )
        spec_input = r.string("input", None)
        spec = LaunchSpec(
            r.any("command"),
            shell=r.boolean("shell", False),
            cwd=r.string("cwd", None),
            env=r.string_map("env"),
            timeout=r.number("timeout"),
            stdin=spec_input is not None,
            on_full="drop",
            on_disconnect="cancel",
        )
        # Each stream's text appears twice in the result (structured and as
        # text content), and JSON escaping can grow it: keep the whole reply
        # well inside the largest message a WebSocket may carry.
        cap = self._node.config.max_message_size // 16
        limit = min(r.offset("max_output_bytes", cap), cap)
        process, started = self._launch(spec)
        call.on_cancel(process.terminate)
        if process.pid is None:
            return started

        session = self._mcp.session
        key = f"mcp-progress:{process.process_id}"
        reporter: Optional[ProgressReporter] = None
        if call.progress_token is not None:
            reporter = ProgressReporter(call.channel, call.progress_token, self._node.reactor)
            reporter.subscription = session.subscribe(
                process, blocking=False, sink=reporter, key=key
            )
        ended: Deferred = Deferred()

        def passthrough(result: Any) -> Any:
            ended.callback(process)
            return result

        process.ended.addBoth(passthrough)

        def running(_: object) -> Deferred:
            call.send_log("info", self._started_event(process))
            if reporter is not None and reporter.subscription is not None:
                reporter.announce(
                    f"started {' '.join(process.command.argv)} (pid {process.pid})"
                )
                reporter.subscription.activate()
            if spec_input is not None:
                try:
                    process.write(spec_input.encode("utf-8", "surrogatepass"), eof=True)
                except RPCError:
                    pass  # it has already exited: its result says how
            return ended

        def finished(_: object) -> Dict[str, Any]:
            result = self._execute_result(process, limit)
            call.send_log(
                "info",
                {
                    "event": "finished",
                    "process_id": process.process_id,
                    "status": result["status"],
                    "exit_code": result["exit_code"],
                },
            )
            return result

        def done(result: Any) -> Any:
            if reporter is not None:
                if call.cancelled:
                    reporter.close()
                else:
                    reporter.finish()
                session.unsubscribe(key)
            return result

        return started.addCallback(running).addBoth(done).addCallback(finished)

    def _execute_result(
        self, process: ManagedProcess, limit: Optional[int]
    ) -> Dict[str, Any]:
        completion = process.output.completion or process.completion()
        result: Dict[str, Any] = {
            "process_id": process.process_id,
            "command": process.command.argv,
            "status": completion["status"],
            "exit_code": completion["exit_code"],
            "signal": completion["signal"],
            "duration": completion["duration"],
        }
        for name in STREAMS:
            total = completion[f"{name}_bytes"]
            text, shown = _tail(process.output.streams[name], limit)
            result[name] = text
            result[f"{name}_bytes"] = total
            result[f"{name}_truncated"] = shown < total
        result["dropped_bytes"] = completion["dropped_bytes"]
        result["error"] = completion["error"]
        return result

    def start(self, arguments: Dict[str, Any], call: ToolCall) -> Deferred:
        r = ParamReader(
            arguments,
            "start",
            ("command", "shell", "cwd", "env", "timeout", "stdin", "on_disconnect"),
        )
        spec = LaunchSpec(
            r.any("command"),
            shell=r.boolean("shell", False),
            cwd=r.string("cwd", None),
            env=r.string_map("env"),
            timeout=r.number("timeout"),
            stdin=r.boolean("stdin", False),
            on_full="drop",
            on_disconnect=r.string("on_disconnect", "cancel", choices=("cancel", "keep")),
        )
        process, started = self._launch(spec)
        call.on_cancel(process.terminate)

        def running(_: object) -> Dict[str, Any]:
            call.send_log("info", self._started_event(process))
            process.ended.addCallback(self._report_end)
            return {
                "process_id": process.process_id,
                "pid": process.pid,
                "pgid": process.pid,
                "command": process.command.argv,
                "status": "started",
            }

        return started.addCallback(running)

    def _report_end(self, process: ManagedProcess) -> ManagedProcess:
        """
        Tell the session (on its standalone stream) how a started process ended.
        """
        completion = process.output.completion
        if completion is not None and not self._mcp.session.closed:
            self._mcp.send_log(
                "info",
                {
                    "event": "finished",
                    "process_id": process.process_id,
                    "status": completion["status"],
                    "exit_code": completion["exit_code"],
                },
            )
        return process

    # -- watching and steering ----------------------------------------------

    def _process(self, arguments: Dict[str, Any], tool: str, live: bool) -> ManagedProcess:
        r = ParamReader(arguments, tool, ("process_id",))
        return self._node.registry.get(r.string("process_id"), live=live)

    def status(self, arguments: Dict[str, Any], call: ToolCall) -> Dict[str, Any]:
        process = self._process(arguments, "status", live=False)
        completion = process.output.completion
        result = process.describe()
        result["status"] = _status(process)
        result["signal"] = process.signal_name
        result["duration"] = completion["duration"] if completion else None
        result["error"] = completion["error"] if completion else None
        return result

    def output(self, arguments: Dict[str, Any], call: ToolCall) -> Dict[str, Any]:
        r = ParamReader(arguments, "output", ("process_id", "offsets", "max_bytes"))
        process_id = r.string("process_id")
        requested = r.object("offsets")
        max_bytes = min(
            r.offset("max_bytes", DEFAULT_READ_BYTES), self._node.config.max_message_size // 16
        )
        if max_bytes < 1:
            raise invalid_params("invalid params: output's 'max_bytes' must be 1 or more")
        unknown = sorted(set(requested) - set(STREAMS))
        if unknown:
            raise invalid_params(
                f"invalid params: output's 'offsets' has no stream {unknown[0]!r} "
                "(streams: stdout, stderr)"
            )
        process = self._node.registry.get(process_id)
        result: Dict[str, Any] = {"process_id": process.process_id, "status": _status(process)}
        done = process.output.completion is not None
        for name in STREAMS:
            offset = requested.get(name, 0)
            if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
                raise invalid_params(
                    f"invalid params: output's offsets.{name} must be a whole number "
                    "of bytes, 0 or more"
                )
            buffer = process.output.streams[name]
            if offset > buffer.end:
                raise invalid_params(
                    f"invalid params: offsets.{name} is {offset}, past the end of that "
                    f"stream ({buffer.end} bytes so far)"
                )
            first, text, next_offset = read_text(buffer, offset, max_bytes)
            result[name] = {
                "text": text,
                "offset": first,
                "next_offset": next_offset,
                "skipped_bytes": first - offset,
                "end": buffer.end,
            }
            done = done and next_offset >= buffer.end
        result["finished"] = done
        return result

    def write(self, arguments: Dict[str, Any], call: ToolCall) -> Dict[str, Any]:
        r = ParamReader(arguments, "write", ("process_id", "data", "eof"))
        process_id = r.string("process_id")
        data = r.string("data", "").encode("utf-8", "surrogatepass")
        eof = r.boolean("eof", False)
        process = self._node.registry.get(process_id, live=True)
        process.write(data, eof)
        return {"process_id": process.process_id, "bytes": len(data)}

    def pause(self, arguments: Dict[str, Any], call: ToolCall) -> Dict[str, Any]:
        process = self._process(arguments, "pause", live=True)
        process.pause()
        return {"process_id": process.process_id, "status": "paused"}

    def resume(self, arguments: Dict[str, Any], call: ToolCall) -> Dict[str, Any]:
        process = self._process(arguments, "resume", live=True)
        process.resume()
        return {"process_id": process.process_id, "status": "resumed"}

    def cancel(self, arguments: Dict[str, Any], call: ToolCall) -> Dict[str, Any]:
        process = self._process(arguments, "cancel", live=True)
        process.cancel()
        return {"process_id": process.process_id, "status": "cancelled"}

    def list(self, arguments: Dict[str, Any], call: ToolCall) -> Dict[str, Any]:
        ParamReader(arguments, "list", ())
        return {"processes": [p.describe() for p in self._node.registry.all()]}


def error_message(failure: Failure) -> Optional[str]:
    """
    The text of a tool execution error, or L{None} when C{failure} is not
    one (an internal error, answered as a JSON-RPC error).
    """
    if failure.check(RPCError):
        return failure.value.message
    return None
