"""
The JSON Schemas of the MCP tools: what each takes and what it returns
(its structured output).
"""

from typing import Any, Dict, Tuple

# What one call of the output tool returns per stream unless told otherwise.
DEFAULT_READ_BYTES = 64 * 1024


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
ONLY_PROCESS_ID = _object({"process_id": _PROCESS_ID}, ("process_id",))

_PROCESS = _object(
    {
        "process_id": _PROCESS_ID,
        "pid": _nullable("integer", "Its process id on the host."),
        "pgid": _nullable("integer", "Its process group (the same as pid)."),
        "command": _COMMAND_OUT,
        "state": {"type": "string", "enum": ["running", "paused", "exited"]},
        "started_at": _nullable("number", "When it started, in seconds since the epoch."),
        "ended_at": _nullable(
            "number", "When it ended, in seconds since the epoch; null while it runs."
        ),
        "durable": {
            "type": "boolean",
            "description": "It outlives the service's restarts (durable: true).",
        },
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
            "enum": ["utf-8", "base64", "binary"],
            "description": "How its process.output data is carried.",
        },
        "cpu_seconds": _nullable(
            "number",
            "CPU time of all its processes, from its cgroup; null where programs "
            "are held in process groups.",
        ),
        "memory_bytes": _nullable(
            "integer",
            "Memory all its processes hold now (the last figure once it ended); "
            "null without a cgroup or where the memory controller is not enabled.",
        ),
        "journal_error": {
            "type": "string",
            "description": "Why its journal stopped keeping its output (disk full, an I/O "
            "error): present only then; its output goes on in memory alone.",
        },
        "pty_bytes": {
            "type": "integer",
            "description": "Bytes written to its terminal so far (a program started with "
            "pty only; its stdout_bytes and stderr_bytes are 0).",
        },
        "pty": {
            "type": "object",
            "description": "Its terminal's window size (a program started with pty only).",
        },
    },
    (
        "process_id",
        "pid",
        "pgid",
        "command",
        "state",
        "started_at",
        "ended_at",
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
        "description": (
            "Environment variables added to the program's base environment; only "
            "names the service allows (twistd ccx --allow-env), none by default."
        ),
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
    "durable": {
        "type": "boolean",
        "description": (
            "Keep the program running when the service stops, restarts or dies; the "
            "next start takes it back (default: the service's --durable)."
        ),
    },
    "merge_stderr": {
        "type": "boolean",
        "default": False,
        "description": (
            "Send the program's standard error to its standard output, so that both "
            "arrive as stdout in the order it wrote them (as a terminal shows them)."
        ),
    },
    "limits": _object(
        {
            "memory": {
                "type": "integer",
                "minimum": 1024 * 1024,
                "maximum": 2**62,
                "description": "Bytes of memory all its processes together may hold.",
            },
            "cpu": {
                "type": "number",
                "minimum": 0.01,
                "maximum": 1024,
                "description": "CPUs' worth of time it may use (0.5: half of one CPU).",
            },
            "pids": {
                "type": "integer",
                "minimum": 1,
                "maximum": 4 * 1024 * 1024,
                "description": "Processes and threads it may have at once.",
            },
        }
    ),
}
_WINDOW = {
    "rows": {"type": "integer", "minimum": 1, "maximum": 1000},
    "cols": {"type": "integer", "minimum": 1, "maximum": 1000},
}
_RUN_PROPERTIES["pty"] = _object(_WINDOW, ("rows", "cols"))
_RUN_PROPERTIES["pty"]["description"] = (
    "Run the program on a pseudo-terminal of this size (its controlling terminal) "
    "instead of pipes, for programs that behave differently on a terminal (colours, "
    "progress bars, REPLs): its output is one stream, pty (the terminal's, with \\r\\n "
    "line ends and echoed input); write types into it; resize changes its size."
)
_RUN_PROPERTIES["limits"]["description"] = (
    "What the program may use, all its processes together; needs cgroup "
    "containment with the controllers enabled, else the call fails saying what is missing."
)

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
        "pty": {
            "type": "string",
            "description": "What it wrote to its terminal (UTF-8), when started with pty.",
        },
        "pty_bytes": {"type": "integer", "description": "Bytes it wrote to its terminal."},
        "pty_truncated": {
            "type": "boolean",
            "description": "pty holds only the end of what was written.",
        },
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

WAIT_INPUT = _object(
    {
        "process_id": _PROCESS_ID,
        "wait_seconds": {
            "type": "number",
            "minimum": 0,
            "maximum": 60,
            "default": 30,
            "description": (
                "Answer as soon as the program ends, or after this many seconds with "
                "how it runs so far (status running)."
            ),
        },
        "max_output_bytes": EXECUTE_INPUT["properties"]["max_output_bytes"],
    },
    ("process_id",),
)

WAIT_OUTPUT = _object(
    dict(
        EXECUTE_OUTPUT["properties"],
        status=dict(
            _STATUS,
            description=(
                "completed, failed, cancelled or timeout once it ended (as execute says); "
                "running, paused or exiting when the wait ended first."
            ),
        ),
    ),
    tuple(EXECUTE_OUTPUT["required"]),
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
            {"stdout": _OFFSET, "stderr": _OFFSET, "pty": _OFFSET},
        ),
        "max_bytes": {
            "type": "integer",
            "minimum": 1,
            "default": DEFAULT_READ_BYTES,
            "description": "The most bytes to return of each stream.",
        },
        "wait_seconds": {
            "type": "number",
            "minimum": 0,
            "maximum": 60,
            "default": 0,
            "description": (
                "When nothing past the offsets is there yet, wait up to this many "
                "seconds for new output or the program's end (instead of polling)."
            ),
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
        "pty": _CHUNK,
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

RESIZE_INPUT = _object(dict(process_id=_PROCESS_ID, **_WINDOW), ("process_id", "rows", "cols"))

RESIZE_OUTPUT = _object(
    dict(process_id=_PROCESS_ID, **_WINDOW), ("process_id", "rows", "cols")
)

WRITE_OUTPUT = _object(
    {"process_id": _PROCESS_ID, "bytes": {"type": "integer"}},
    ("process_id", "bytes"),
)


def control_output(status: str) -> Dict[str, Any]:
    return _object(
        {"process_id": _PROCESS_ID, "status": {"type": "string", "enum": [status]}},
        ("process_id", "status"),
    )


CANCEL_OUTPUT = _object(
    {
        "process_id": _PROCESS_ID,
        "status": {
            "type": "string",
            "enum": ["cancelled", "completed", "failed", "timeout"],
            "description": (
                "cancelled: this call is ending it (SIGTERM to its group, SIGKILL after "
                "the grace period); completed, failed or timeout: it had already ended "
                "so, and was left as it was."
            ),
        },
    },
    ("process_id", "status"),
)

LIST_INPUT: Dict[str, Any] = {"type": "object", "additionalProperties": False}
LIST_OUTPUT = _object(
    {"processes": {"type": "array", "items": _PROCESS}}, ("processes",)
)
