"""
The text content of the MCP tools' results: what a model reads.

A tool's C{structuredContent} keeps every field for programs; its text
says the same for a reader: one line with the outcome (C{failed: exit 2
after 3.1 s}), then each stream's output under a label, the head and the
tail of a long one with a line saying how many bytes were left out and the
offsets that read them.  Terminal control sequences are stripped (a
carriage return keeps what a terminal would show last), and binary output
is named, not shown.

Everything here is a pure function of its arguments, so that the texts
can be checked word for word (tests/test_mcp_text.py).
"""

import json
import re
import shlex
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional

from ccx.native.wire import whole_characters
from ccx.mcp.held import Readable

# CSI and OSC sequences, other escapes, and C0 controls but tab and newline
# (carriage returns are handled line by line first).
_CONTROL = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"
    r"|\x1b[ -/]*[0-~]?"
    r"|[\x00-\x08\x0b-\x1f\x7f]"
)
# A stream whose shown bytes are more than this share of NUL bytes, control
# characters and invalid UTF-8 is binary.
_BINARY_SHARE = 0.1
_TEXT_CONTROLS = frozenset(b"\t\n\r\x1b\x08")


def seconds(duration: Optional[float]) -> str:
    """
    A duration as a person says it: C{0.3 s}, C{12.5 s}, C{340 s}.
    """
    if duration is None:
        return "? s"
    if duration < 100:
        return f"{duration:.1f} s"
    return f"{duration:.0f} s"


def outcome(
    status: str,
    exit_code: Optional[int],
    signal: Optional[str],
    duration: Optional[float],
) -> str:
    """
    The outcome line: the state word, then how (C{completed: exit 0 after
    0.2 s}, C{failed: killed by SIGKILL after 3.0 s}, C{running for 4.0 s}).
    """
    if status in ("running", "paused", "exiting", "starting"):
        return f"{status} for {seconds(duration)}" if duration is not None else status
    if signal is not None:
        how = f"killed by {signal}"
    elif exit_code is not None:
        how = f"exit {exit_code}"
    else:
        how = "never ran"
    return f"{status}: {how} after {seconds(duration)}"


def readable(data: bytes, final: bool = True) -> str:
    """
    Output bytes as text a model can read: UTF-8 (invalid bytes become
    U+FFFD), CRLF as LF, what a carriage return overwrites dropped, and
    terminal escape sequences and other control characters removed.
    """
    text = whole_characters(data, final).decode("utf-8", "replace")
    text = text.replace("\r\n", "\n")
    if "\r" in text:
        lines = []
        for line in text.split("\n"):
            shown = [part for part in line.split("\r") if part]
            lines.append(shown[-1] if shown else "")
        text = "\n".join(lines)
    return _CONTROL.sub("", text)


def is_binary(data: bytes) -> bool:
    """
    Whether C{data} is not text: it holds a NUL byte, or too many control
    characters and invalid UTF-8 sequences to be read.
    """
    if not data:
        return False
    if b"\0" in data:
        return True
    odd = sum(1 for byte in data if byte < 32 and byte not in _TEXT_CONTROLS)
    odd += data.decode("utf-8", "replace").count("\ufffd")
    return odd > len(data) * _BINARY_SHARE


@dataclass(frozen=True)
class StreamView:
    """
    What the text shows of one stream: all it holds, or its head and its tail.

    @ivar total: bytes written to it.
    @ivar start: the offset of the first byte still held.
    @ivar head: the bytes shown from C{start}.
    @ivar tail: the bytes shown at the end, when C{head} is not all of it.
    @ivar tail_start: the offset of C{tail}'s first byte (C{total} without one).
    """

    name: str
    total: int
    start: int
    head: bytes
    tail: bytes
    tail_start: int

    @property
    def head_end(self) -> int:
        return self.start + len(self.head)

    @property
    def left_out(self) -> int:
        return self.tail_start - self.head_end


def stream_view(name: str, buffer: Readable, limit: int) -> StreamView:
    """
    The view of a stream held in C{buffer}, at most C{limit} bytes: all of
    it when it fits, else a quarter from its head and the rest from its end,
    cut at line ends where there is one near the cut.
    """
    start, end = buffer.start, buffer.end
    if end - start <= limit:
        _, data, _ = buffer.read(start, max(end - start, 1))
        return StreamView(name, end, start, data, b"", end)
    _, head, _ = buffer.read(start, max(limit // 4, 1))
    newline = head.rfind(b"\n")
    if newline >= len(head) // 2:
        head = head[: newline + 1]
    head = whole_characters(head, False)
    size = max(limit - len(head), 1)
    tail_start, tail, _ = buffer.read(end - size, size)
    newline = tail.find(b"\n")
    if 0 <= newline < len(tail) // 2:
        tail, tail_start = tail[newline + 1 :], tail_start + newline + 1
    while tail and tail[0] & 0xC0 == 0x80:
        tail, tail_start = tail[1:], tail_start + 1
    return StreamView(name, end, start, head, tail, tail_start)


def _block(text: str) -> List[str]:
    return text.splitlines() if text else []


def stream_text(view: StreamView, process_id: str) -> List[str]:
    """
    The lines that show one stream: a label, what is no longer held, the
    head, the bytes left out with the offsets that read them, the tail.
    """
    shown = view.head + view.tail
    if is_binary(shown):
        return [f"--- {view.name}: {view.total} bytes of binary output, not shown ---"]
    lines = [f"--- {view.name}: {view.total} bytes ---"]
    if view.start > 0:
        lines.append(f"[the first {view.start} bytes are no longer held]")
    lines.extend(_block(readable(view.head, final=not view.tail)))
    if view.tail:
        offsets = json.dumps({view.name: view.head_end})
        lines.append(
            f"[... {view.left_out} bytes left out (offsets {view.head_end} to "
            f"{view.tail_start}): read them with output, process_id {process_id!r}, "
            f"offsets {offsets} ...]"
        )
        lines.extend(_block(readable(view.tail)))
    return lines


def command_line(argv: Iterable[str]) -> str:
    return shlex.join(list(argv))


def run_text(result: Dict[str, Any], views: Iterable[StreamView]) -> str:
    """
    The text of a run (C{execute}, C{wait}): the outcome, the process and
    its command, then its output.
    """
    lines = [
        outcome(result["status"], result["exit_code"], result["signal"], result["duration"]),
        f"process {result['process_id']}: {command_line(result['command'])}",
    ]
    if result.get("error"):
        lines.append(f"error: {result['error']}")
    shown = False
    for view in views:
        if view.total:
            lines.extend(stream_text(view, result["process_id"]))
            shown = True
    if not shown:
        lines.append("no output")
    if result.get("dropped_bytes"):
        lines.append(
            f"[{result['dropped_bytes']} bytes of output were dropped before they were read]"
        )
    return "\n".join(lines)


def output_text(result: Dict[str, Any]) -> str:
    """
    The text of an C{output} read: the state, each stream's new text, and
    the offsets to read on from.
    """
    lines = [f"{result['status']}: process {result['process_id']}"]
    following = {}
    new = False
    for name in ("stdout", "stderr", "pty"):
        chunk = result.get(name)
        if chunk is None:
            continue
        following[name] = chunk["next_offset"]
        if chunk["skipped_bytes"]:
            lines.append(f"[{chunk['skipped_bytes']} bytes of {name} are no longer held]")
        if chunk["next_offset"] > chunk["offset"]:
            new = True
            lines.append(
                f"--- {name}: bytes {chunk['offset']} to {chunk['next_offset']} "
                f"of {chunk['end']} ---"
            )
            lines.extend(_block(_overwrites(chunk["text"])))
    if not new:
        lines.append("no new output")
    if result["finished"]:
        lines.append("finished, and everything it wrote was read")
    else:
        lines.append(f"read on with offsets {json.dumps(following)}")
    return "\n".join(lines)


def _overwrites(text: str) -> str:
    return readable(text.encode("utf-8", "surrogatepass"))


def status_text(result: Dict[str, Any], duration: Optional[float] = None) -> str:
    """
    The text of C{status}: the outcome line (how long it has run, while it
    runs), the process, the sizes of its output.
    """
    line = outcome(
        result["status"],
        result["exit_code"],
        result.get("signal"),
        result["duration"] if result["duration"] is not None else duration,
    )
    return "\n".join(
        [
            line,
            f"process {result['process_id']} (pid {result['pid']}): "
            f"{command_line(result['command'])}",
            f"stdout {result['stdout_bytes']} bytes, stderr {result['stderr_bytes']} bytes",
        ]
        + ([f"error: {result['error']}"] if result.get("error") else [])
    )


def list_text(processes: List[Dict[str, Any]]) -> str:
    if not processes:
        return "no processes"
    return "\n".join(
        f"{p['process_id']}  {p['state']}"
        + (f" (exit {p['exit_code']})" if p["exit_code"] is not None else "")
        + f"  {command_line(p['command'])}"
        for p in processes
    )
