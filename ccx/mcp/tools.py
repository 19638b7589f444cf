"""
The MCP tools: their definitions (with the JSON Schemas of
L{ccx.mcp.schemas}) and their handlers, built on the same process layer as
the native methods (L{ccx.session.Session.launch}, the registry, each
process's held output).

A handler takes the tool's arguments and a L{ToolCall}, and returns the
structured result (or a L{Deferred} of it).  It raises L{RPCError} or a
L{ProcessError} for anything the caller can fix or must know (a program not
on the allow-list, an unknown process, bad arguments): C{tools/call} turns
that into a result with C{isError: true}, as MCP asks of tool execution
errors.
"""

import shutil
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from ccx.mcp.held import HeldStream, Readable
from ccx.mcp.progress import ProgressReporter, ProgressToken
from ccx.mcp.schemas import (
    DEFAULT_READ_BYTES,
    EXECUTE_INPUT,
    EXECUTE_OUTPUT,
    LIST_INPUT,
    LIST_OUTPUT,
    ONLY_PROCESS_ID,
    OUTPUT_INPUT,
    OUTPUT_OUTPUT,
    RESIZE_INPUT,
    RESIZE_OUTPUT,
    START_INPUT,
    WAIT_INPUT,
    WAIT_OUTPUT,
    START_OUTPUT,
    STATUS_OUTPUT,
    CANCEL_OUTPUT,
    WRITE_INPUT,
    WRITE_OUTPUT,
    control_output,
)
from ccx.mcp.session import McpSession, at_least
from ccx.mcp.text import (
    command_line,
    list_text,
    outcome,
    output_text,
    run_text,
    status_text,
    stream_view,
)
from ccx.mcp.waiting import Wait, wait_seconds
from ccx.native.wire import process_entry, whole_characters
from ccx.node import Node
from ccx.output.buffer import StreamBuffer
from ccx.output.events import PTY, STREAMS
from ccx.process.errors import NotAllowed, ProcessError, ProcessNotFound
from ccx.process.launch import LaunchSpec
from ccx.process.managed import ManagedProcess, State
from ccx.rpc.errors import PROCESS_NOT_FOUND, RPCError, as_rpc_error, invalid_params
from ccx.rpc.interfaces import INotificationChannel
from ccx.rpc.jsonrpc import Call
from ccx.rpc.params import LAUNCH_PARAMS, ParamReader, check_offsets, window_size


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


@dataclass(frozen=True)
class Answer:
    """
    A tool's result: the structured object its output schema describes, and
    the text a model reads (L{ccx.mcp.text}).
    """

    structured: Dict[str, Any]
    text: str


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
    # Whether a call may be a task (2025-11-25's execution.taskSupport).
    task_support: Optional[str] = None

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
        if version == "2025-11-25" and self.task_support is not None:
            entry["execution"] = {"taskSupport": self.task_support}
        return entry



# -- reading held output -------------------------------------------------

def read_text(
    buffer: Readable, offset: int, max_bytes: int
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
    data = whole_characters(data, buffer.closed and first + len(data) == buffer.end)
    return first, data.decode("utf-8", "replace"), first + len(data)


def _tail(buffer: Readable, limit: Optional[int]) -> Tuple[str, int]:
    """
    The end of what a finished stream holds, at most C{limit} bytes.

    @return: the text and how many bytes of the stream it shows.
    """
    size = buffer.held_bytes if limit is None else min(limit, buffer.held_bytes)
    if size <= 0:
        return "", 0
    first, text, next_offset = read_text(buffer, buffer.end - size, size)
    return text, next_offset - first


def _stream_names(process: ManagedProcess) -> Tuple[str, ...]:
    """
    The streams a tool's result shows: stdout and stderr always (empty for
    a program on a terminal), and pty for a program on a terminal.
    """
    return STREAMS + ((PTY,) if PTY in process.output.streams else ())


def _stream(process: ManagedProcess, name: str) -> Readable:
    if name in process.output.streams:
        return HeldStream(process.output, name)
    return StreamBuffer(0, 0)


def _status(process: ManagedProcess) -> str:
    """
    A process's state as the tools say it: running or paused, exiting while
    what its leader left behind is ended, then how it ended.
    """
    state = process.state
    if state == State.STARTING:
        return State.RUNNING.value
    if state == State.EXITED:
        return "exiting"
    return state.value


# How many allowed program names a description or a refusal lists.
MAX_NAMES = 24


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

    def allowed_names(self) -> str:
        """
        The names the allowed programs run under, kept short.
        """
        names = sorted({n for _, names in self._node.allow_list.entries() for n in names})
        if not names:
            return "none yet (the operator allows programs with --allow)"
        shown = ", ".join(names[:MAX_NAMES])
        if len(names) > MAX_NAMES:
            shown += f" and {len(names) - MAX_NAMES} more"
        return shown

    def _definitions(self) -> List[Tool]:
        destructive = {"readOnlyHint": False, "destructiveHint": True, "openWorldHint": True}
        control = {"readOnlyHint": False, "destructiveHint": False, "idempotentHint": True}
        reading = {"readOnlyHint": True, "openWorldHint": False}
        allowed = f" Allowed programs: {self.allowed_names()}."
        return [
            Tool(
                "execute",
                "Run a program to completion",
                "Run an allow-listed program, wait for it to finish, and return its exit "
                "status and output (the head and tail of a long stream, with the offsets "
                "to read the rest with output). With a progress token, output is streamed "
                "as progress notifications while it runs; cancelling the request ends the "
                "program and everything it started." + allowed,
                EXECUTE_INPUT,
                EXECUTE_OUTPUT,
                destructive,
                self.execute,
                task_support="optional",
            ),
            Tool(
                "start",
                "Start a program in the background",
                "Start an allow-listed program and return its process_id at once; follow "
                "it with wait, status and output, steer it with write, pause, resume and "
                "cancel." + allowed,
                START_INPUT,
                START_OUTPUT,
                destructive,
                self.start,
            ),
            Tool(
                "wait",
                "Wait for a process to end",
                "Wait until a process ends (or wait_seconds pass, 30 by default, at most "
                "60) and return what execute returns: its outcome and output. Call it "
                "again while it says running.",
                WAIT_INPUT,
                WAIT_OUTPUT,
                reading,
                self.wait,
            ),
            Tool(
                "status",
                "Status of a process",
                "The state of a process started by execute or start: running, paused, "
                "or how it ended, with its exit status and output sizes.",
                ONLY_PROCESS_ID,
                STATUS_OUTPUT,
                reading,
                self.status,
            ),
            Tool(
                "output",
                "Read a process's output",
                "Read what a process wrote to stdout and stderr from given byte offsets "
                "(pass back next_offset to read on). The service holds the end of each "
                "stream; skipped_bytes says how much before it is no longer held. With "
                "wait_seconds, it waits for new output or the end instead of answering "
                "with nothing new.",
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
                "resize",
                "Resize a process's terminal",
                "Change the window size of the terminal of a process started with pty; "
                "the program gets SIGWINCH and redraws.",
                RESIZE_INPUT,
                RESIZE_OUTPUT,
                control,
                self.resize,
            ),
            Tool(
                "pause",
                "Pause a process",
                "Stop a running process and everything it started (SIGSTOP to its group).",
                ONLY_PROCESS_ID,
                control_output("paused"),
                control,
                self.pause,
            ),
            Tool(
                "resume",
                "Resume a process",
                "Continue a paused process (SIGCONT to its group).",
                ONLY_PROCESS_ID,
                control_output("resumed"),
                control,
                self.resume,
            ),
            Tool(
                "cancel",
                "Cancel a process",
                "End a process and everything it started: SIGTERM to its group, SIGKILL "
                "after the grace period if anything is left. Cancelling a process that "
                "has already ended does nothing and says how it ended.",
                ONLY_PROCESS_ID,
                CANCEL_OUTPUT,
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
            Tool(
                "forget",
                "Forget a finished process",
                "Remove a finished process from the service: its record, the output it "
                "holds and its journal. A process still running is refused: cancel it first.",
                ONLY_PROCESS_ID,
                control_output("forgotten"),
                {"readOnlyHint": False, "destructiveHint": True, "idempotentHint": False},
                self.forget,
            ),
        ]

    # -- errors -------------------------------------------------------------

    def explain(self, failure: Failure) -> Optional[str]:
        """
        The text of a tool execution error, or L{None} when C{failure} is
        not one (an internal error, answered as a JSON-RPC error).  A
        program refused by the allow-list is told what is allowed; a word
        that names no program at all is not told to ask for C{--allow}.
        """
        error = failure.value
        if isinstance(error, NotAllowed) and error.setting == "allow" and error.value:
            return self._refused(error)
        return error_message(failure)

    def _refused(self, error: NotAllowed) -> str:
        word = str(error.value)
        allowed = f"the programs allowed are: {self.allowed_names()}"
        if "/" not in word and shutil.which(word, path=self._node.allow_list.search_path) is None:
            return (
                f"command not allowed: {error.message}, and no program of that name "
                "exists (a shell builtin or shell syntax runs only with shell: true, "
                f"when sh is allowed); {allowed}"
            )
        message = error_message(Failure(error)) or error.message
        return f"{message}; {allowed}"

    def _get(self, process_id: str, live: bool = False) -> ManagedProcess:
        """
        The process a tool names; an unknown id says where to look.
        """
        try:
            return self._node.registry.get(process_id, live=live)
        except ProcessNotFound as e:
            if e.finished:
                raise
            keep = self._node.config.keep_finished
            raise RPCError(
                PROCESS_NOT_FOUND,
                f"process not found: no process {process_id!r}; the list tool shows "
                "every process ccx knows (process ids look like the process_id that "
                f"execute and start return; a finished one is kept {keep:g} s).",
            ) from None

    # -- starting ---------------------------------------------------------

    def _launch(self, spec: LaunchSpec, call: ToolCall) -> Tuple[ManagedProcess, Deferred]:
        process, started = self._mcp.session.launch(spec)
        call.on_cancel(process.terminate)
        return process, started

    def _started_event(self, process: ManagedProcess) -> Dict[str, Any]:
        return {
            "event": "started",
            "process_id": process.process_id,
            "pid": process.pid,
            "command": process.command.argv,
        }

    def _finished_event(self, process: ManagedProcess) -> Dict[str, Any]:
        completion = process.completion()
        return {
            "event": "finished",
            "process_id": process.process_id,
            "status": completion.status,
            "exit_code": completion.exit_code,
        }

    def output_limit(self, requested: Optional[int] = None) -> int:
        """
        The most bytes of each stream a result shows.  Each stream's text
        appears twice in the result (structured and as text content), and
        JSON escaping can grow it: keep the whole reply well inside the
        largest message a WebSocket may carry.
        """
        cap = self._node.config.max_message_size // 16
        return cap if requested is None else min(requested, cap)

    def execute_task(self, arguments: Dict[str, Any], call: ToolCall) -> Deferred:
        """
        C{execute} as a task: start the program and fire with it once it
        runs; it runs on when the client goes, and only C{tasks/cancel} (or
        C{cancel}) ends it; a durable one outlives ccx too.
        """
        r = self._execute_arguments(arguments)
        stdin_text = r.string("input", None)
        r.offset("max_output_bytes", None)
        spec = r.launch_spec(
            stdin=stdin_text is not None,
            blocking=False,
            cancel_on_disconnect=False,
            durable=r.durable(self._node.config.durable),
        )
        process, started = self._mcp.session.launch(spec)

        def running(_: object) -> ManagedProcess:
            call.send_log("info", self._started_event(process))
            if stdin_text is not None:
                try:
                    process.write(stdin_text.encode("utf-8", "surrogatepass"), eof=True)
                except ProcessError:
                    pass  # it has already exited: its result says how
            return process

        return started.addCallback(running)

    def _execute_arguments(self, arguments: Dict[str, Any]) -> ParamReader:
        return ParamReader(
            arguments,
            "execute",
            (*LAUNCH_PARAMS, "input", "max_output_bytes", "durable"),
        )

    def execute(self, arguments: Dict[str, Any], call: ToolCall) -> Deferred:
        r = self._execute_arguments(arguments)
        stdin_text = r.string("input", None)
        # A stateless-era request's program outlives its connection but for
        # a cancellation (the request's stream closed): no session holds it.
        spec = r.launch_spec(
            stdin=stdin_text is not None,
            blocking=False,
            cancel_on_disconnect=not self._mcp.stateless,
            durable=r.durable(self._node.config.durable),
        )
        limit = self.output_limit(r.offset("max_output_bytes", None))
        process, started = self._launch(spec, call)
        if process.finished:
            return started
        return Deferred.fromCoroutine(
            self._run_to_end(process, started, call, stdin_text, limit)
        )

    async def _run_to_end(
        self,
        process: ManagedProcess,
        started: Deferred,
        call: ToolCall,
        stdin_text: Optional[str],
        limit: int,
    ) -> Answer:
        """
        The rest of C{execute}: wait for the program to run, report its
        output as progress while it runs, and return how it ended.
        """
        session = self._mcp.session
        key = f"mcp-progress:{process.process_id}"
        reporter: Optional[ProgressReporter] = None
        if call.progress_token is not None:
            reporter = ProgressReporter(call.channel, call.progress_token, self._node.reactor)
            reporter.subscription = session.subscribe(
                process, reporter, blocking=False, key=key
            )
        # Waited for below, after the start: it may fire before then.
        ended = Deferred()
        process.ended.addBoth(lambda result: ended.callback(process) or result)
        try:
            await started
            call.send_log("info", self._started_event(process))
            if reporter is not None:
                reporter.announce(
                    f"started {' '.join(process.command.argv)} (pid {process.pid})"
                )
                reporter.subscription.activate()
            if stdin_text is not None:
                try:
                    process.write(stdin_text.encode("utf-8", "surrogatepass"), eof=True)
                except ProcessError:
                    pass  # it has already exited: its result says how
            await ended
        finally:
            if reporter is not None:
                if call.cancelled:
                    reporter.close()
                else:
                    reporter.finish()
                session.unsubscribe(key)
        call.send_log("info", self._finished_event(process))
        return self.run_answer(process, limit)

    def run_answer(self, process: ManagedProcess, limit: Optional[int] = None) -> Answer:
        """
        How a program ran (or runs so far): C{execute}'s result.
        """
        limit = self.output_limit(limit)
        running = process.output.completion is None
        completion = process.output.completion or process.completion()
        result: Dict[str, Any] = {
            "process_id": process.process_id,
            "command": process.command.argv,
            "status": _status(process) if running else completion.status,
            "exit_code": None if running else completion.exit_code,
            "signal": None if running else completion.signal,
            "duration": completion.duration,
        }
        totals = {
            "stdout": completion.stdout_bytes,
            "stderr": completion.stderr_bytes,
            PTY: completion.pty_bytes,
        }
        if running:
            totals = process.output.totals()
        names = _stream_names(process)
        for name in names:
            text, shown = _tail(_stream(process, name), limit)
            result[name] = text
            result[f"{name}_bytes"] = totals[name]
            result[f"{name}_truncated"] = shown < totals[name]
        result["dropped_bytes"] = (
            process.output.dropped_bytes if running else completion.dropped_bytes
        )
        result["error"] = None if running else completion.error
        views = [stream_view(n, _stream(process, n), limit) for n in names]
        return Answer(result, run_text(result, views))

    def start(self, arguments: Dict[str, Any], call: ToolCall) -> Deferred:
        r = ParamReader(
            arguments,
            "start",
            (*LAUNCH_PARAMS, "stdin", "on_disconnect", "durable"),
        )
        durable = r.durable(self._node.config.durable)
        spec = r.launch_spec(
            stdin=r.boolean("stdin", False),
            blocking=False,
            cancel_on_disconnect=r.on_disconnect() and not self._mcp.stateless and not durable,
            durable=durable,
        )
        process, started = self._launch(spec, call)

        def running(_: object) -> Answer:
            call.send_log("info", self._started_event(process))
            process.ended.addCallback(self._report_end)
            result = {
                "process_id": process.process_id,
                "pid": process.pid,
                "pgid": process.pid,
                "command": process.command.argv,
                "status": "started",
            }
            text = (
                f"started: process {process.process_id} (pid {process.pid}): "
                f"{command_line(process.command.argv)}\n"
                "follow it with wait or output, end it with cancel"
            )
            return Answer(result, text)

        return started.addCallback(running)

    def _report_end(self, process: ManagedProcess) -> ManagedProcess:
        """
        Tell the session (on its standalone stream) how a started process ended.
        """
        if process.output.completion is not None and not self._mcp.session.closed:
            self._mcp.send_log("info", self._finished_event(process))
        return process

    # -- watching and steering ----------------------------------------------

    def _process(self, arguments: Dict[str, Any], tool: str, live: bool) -> ManagedProcess:
        r = ParamReader(arguments, tool, ("process_id",))
        return self._get(r.string("process_id"), live=live)

    def status(self, arguments: Dict[str, Any], call: ToolCall) -> Answer:
        process = self._process(arguments, "status", live=False)
        completion = process.output.completion
        result = process_entry(process)
        result["status"] = _status(process)
        result["signal"] = process.signal_name
        result["duration"] = completion.duration if completion else None
        result["error"] = completion.error if completion else None
        # While it runs, the text says for how long so far.
        return Answer(result, status_text(result, process.completion().duration))

    def output(self, arguments: Dict[str, Any], call: ToolCall) -> Any:
        r = ParamReader(
            arguments, "output", ("process_id", "offsets", "max_bytes", "wait_seconds")
        )
        process_id = r.string("process_id")
        requested = r.offsets()
        max_bytes = min(
            r.offset("max_bytes", DEFAULT_READ_BYTES), self._node.config.max_message_size // 16
        )
        if max_bytes < 1:
            raise invalid_params("invalid params: output's 'max_bytes' must be 1 or more")
        process = self._get(process_id)
        check_offsets(requested, process.output.totals())
        names = _stream_names(process)
        offsets = {name: requested.get(name, 0) for name in names}
        seconds = wait_seconds(arguments, "output")
        nothing_new = all(_stream(process, n).end <= offsets[n] for n in names)
        if seconds and nothing_new and process.output.completion is None:
            wait = self._wait(call, seconds).for_output(process, offsets)
            return wait.done.addCallback(lambda _: self._read(process, offsets, max_bytes))
        return self._read(process, offsets, max_bytes)

    def _wait(self, call: ToolCall, seconds: float) -> Wait:
        """
        A waiting request of this client's, counted against its bound
        until it answers (or the client cancels it).
        """
        waits = self._mcp.waits
        waits.take()
        wait = Wait(self._node.reactor, seconds)
        call.on_cancel(wait.finish)
        answered = self._mcp.waiting(wait.finish)

        def done(result: Any) -> Any:
            waits.give()
            answered()
            return result

        wait.done.addBoth(done)
        return wait

    def wait(self, arguments: Dict[str, Any], call: ToolCall) -> Any:
        r = ParamReader(arguments, "wait", ("process_id", "wait_seconds", "max_output_bytes"))
        process = self._get(r.string("process_id"))
        seconds = wait_seconds(arguments, "wait", 30.0)
        limit = self.output_limit(r.offset("max_output_bytes", None))
        if seconds and process.output.completion is None:
            wait = self._wait(call, seconds).for_end(process)
            self._report_while_waiting(process, call, wait)
            return wait.done.addCallback(lambda _: self.run_answer(process, limit))
        return self.run_answer(process, limit)

    def _report_while_waiting(self, process: ManagedProcess, call: ToolCall, wait: Wait) -> None:
        """
        With a progress token, what the program writes while C{wait} waits
        flows as progress notifications, as during C{execute}: from where
        its streams are now, an observer that never slows it.
        """
        if call.progress_token is None:
            return
        session = self._mcp.session
        key = f"mcp-wait-progress:{process.process_id}:{id(wait)}"
        reporter = ProgressReporter(call.channel, call.progress_token, self._node.reactor)
        now = {name: _stream(process, name).end for name in _stream_names(process)}
        reporter.subscription = session.subscribe(
            process, reporter, blocking=False, offsets=now, key=key
        )
        reporter.subscription.activate()

        def stop(result: Any) -> Any:
            if call.cancelled:
                reporter.close()
            else:
                reporter.finish()
            session.unsubscribe(key)
            return result

        wait.done.addBoth(stop)

    def _read(self, process: ManagedProcess, offsets: Dict[str, int], max_bytes: int) -> Answer:
        result: Dict[str, Any] = {"process_id": process.process_id, "status": _status(process)}
        done = process.output.completion is not None
        for name in _stream_names(process):
            offset = offsets.get(name, 0)
            buffer = _stream(process, name)
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
        return Answer(result, output_text(result))

    def write(self, arguments: Dict[str, Any], call: ToolCall) -> Answer:
        r = ParamReader(arguments, "write", ("process_id", "data", "eof"))
        process_id = r.string("process_id")
        data = r.string("data", "").encode("utf-8", "surrogatepass")
        eof = r.boolean("eof", False)
        process = self._get(process_id, live=True)
        process.write(data, eof)
        closed = ", and closed it" if eof else ""
        return Answer(
            {"process_id": process.process_id, "bytes": len(data)},
            f"wrote {len(data)} bytes to the standard input of {process.process_id}{closed}",
        )

    def resize(self, arguments: Dict[str, Any], call: ToolCall) -> Answer:
        r = ParamReader(arguments, "resize", ("process_id", "rows", "cols"))
        process_id = r.string("process_id")
        size = window_size(r, "resize")
        process = self._get(process_id, live=True)
        process.resize(size)
        return Answer(
            {"process_id": process.process_id, "rows": size.rows, "cols": size.cols},
            f"resized: the terminal of process {process.process_id} is now "
            f"{size.rows} rows by {size.cols} columns",
        )

    def pause(self, arguments: Dict[str, Any], call: ToolCall) -> Answer:
        process = self._process(arguments, "pause", live=True)
        process.pause()
        return Answer(
            {"process_id": process.process_id, "status": "paused"},
            f"paused: process {process.process_id} and everything it started",
        )

    def resume(self, arguments: Dict[str, Any], call: ToolCall) -> Answer:
        process = self._process(arguments, "resume", live=True)
        process.resume()
        return Answer(
            {"process_id": process.process_id, "status": "resumed"},
            f"resumed: process {process.process_id}",
        )

    def cancel(self, arguments: Dict[str, Any], call: ToolCall) -> Answer:
        """
        End a process; one that has already ended is left as it is, and the
        answer says how it ended (the tool is idempotent, as declared).
        """
        process = self._process(arguments, "cancel", live=False)
        completion = process.output.completion
        if completion is not None:
            line = outcome(
                completion.status, completion.exit_code, completion.signal, completion.duration
            )
            return Answer(
                {"process_id": process.process_id, "status": completion.status},
                f"{line}\nprocess {process.process_id} had already ended; nothing to cancel",
            )
        process.cancel()
        grace = self._node.config.kill_grace
        return Answer(
            {"process_id": process.process_id, "status": "cancelled"},
            f"cancelled: process {process.process_id} is being ended (SIGTERM to its "
            f"group, SIGKILL after {grace:g} s if anything is left)",
        )

    def list(self, arguments: Dict[str, Any], call: ToolCall) -> Answer:
        ParamReader(arguments, "list", ())
        processes = [process_entry(p) for p in self._node.registry.all()]
        return Answer({"processes": processes}, list_text(processes))

    def forget(self, arguments: Dict[str, Any], call: ToolCall) -> Answer:
        r = ParamReader(arguments, "forget", ("process_id",))
        process_id = r.string("process_id")
        self._get(process_id)
        self._node.registry.forget(process_id)
        return Answer(
            {"process_id": process_id, "status": "forgotten"},
            f"forgotten: process {process_id}, its record and its output",
        )


def error_message(failure: Failure) -> Optional[str]:
    """
    The text of a tool execution error, or L{None} when C{failure} is not
    one (an internal error, answered as a JSON-RPC error).
    """
    error = as_rpc_error(failure.value)
    return None if error is None else error.message
