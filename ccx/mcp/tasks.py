"""
MCP tasks: a C{tools/call} of C{execute} answered at once with a task, whose
result is fetched later.  A task is a ccx process: its id is the process
id, it runs on when the client goes (C{on_disconnect: "keep"}), and any
connection can ask for it.  Two forms, each where its era has it:

- the handshake era's experimental tasks (2025-11-25): C{params.task} on
  the call, C{CreateTaskResult} C{{task}}, C{tasks/get}, C{tasks/result},
  C{tasks/list}, C{tasks/cancel};
- the stateless era's extension C{io.modelcontextprotocol/tasks}: a client
  that declares it gets a task (C{resultType: "task"}), then C{tasks/get}
  (with the final result inline), C{tasks/update}, C{tasks/cancel}.
"""

import time
from datetime import datetime, timezone
from typing import Any, Dict, Optional

from ccx.mcp.held import HeldStream
from ccx.mcp.text import outcome, readable
from ccx.process.managed import ManagedProcess, State

# How often a client is asked to poll, in milliseconds.
POLL_INTERVAL_MS = 1000
# The key of a message's _meta that names its task (2025-11-25).
RELATED_TASK_KEY = "io.modelcontextprotocol/related-task"


def _iso(seconds: Optional[float]) -> str:
    when = time.time() if seconds is None else seconds
    return datetime.fromtimestamp(when, timezone.utc).isoformat().replace("+00:00", "Z")


def task_status(process: ManagedProcess) -> str:
    """
    The task's status: working while the program runs, cancelled once
    cancelled (a cancellation is final), else completed: a program that
    failed is a tool call that completed (its result says how).
    """
    if process.outcome == State.CANCELLED:
        return "cancelled"
    if process.output.completion is None:
        return "working"
    return "completed"


def _last_line(process: ManagedProcess) -> Optional[str]:
    newest = None
    for name in process.output.streams:
        # From the journal too: a durable program taken back after a
        # restart holds nothing in memory until it writes again.
        stream = HeldStream(process.output, name)
        if not stream.held_bytes:
            continue
        _, data, when = stream.read(max(stream.start, stream.end - 512), 512)
        lines = [line for line in readable(data).splitlines() if line.strip()]
        if lines and (newest is None or when >= newest[0]):
            newest = (when, lines[-1][-200:])
    return newest[1] if newest else None


def status_message(process: ManagedProcess) -> str:
    """
    What a model reads of a task: how it ended, or how long it has run,
    how much it wrote and its last line of output.
    """
    completion = process.output.completion
    if completion is not None:
        return outcome(
            completion.status, completion.exit_code, completion.signal, completion.duration
        )
    totals = process.output.totals()
    sizes = ", ".join(f"{n} {totals[n]} bytes" for n in process.output.streams if n in totals)
    message = f"running for {process.completion().duration:.1f} s; {sizes}"
    last = _last_line(process)
    return message + (f"; last line: {last}" if last else "")


def task_fields(process: ManagedProcess, keep_finished: float, stateless: bool) -> Dict[str, Any]:
    """
    The task a process is, in the era's words (C{ttlMs}/C{pollIntervalMs}
    in the stateless era, C{ttl}/C{pollInterval} in 2025-11-25): its time
    to live is unlimited while it runs, then how long ccx keeps it.
    """
    ttl: Optional[int] = None
    if process.ended_at is not None and process.started_at is not None:
        ttl = int((process.ended_at - process.started_at + keep_finished) * 1000)
    suffix = "Ms" if stateless else ""
    return {
        "taskId": process.process_id,
        "status": task_status(process),
        "statusMessage": status_message(process),
        "createdAt": _iso(process.started_at),
        "lastUpdatedAt": _iso(process.ended_at),
        "ttl" + suffix: ttl,
        "pollInterval" + suffix: POLL_INTERVAL_MS,
    }

