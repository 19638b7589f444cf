"""
The native dialect's wire format for program output: the C{process.*}
notifications of docs/protocol.md, their UTF-8 and base64 encodings, binary
output frames, and the entries C{list} reports.  This is the one place where
the process layer's typed events become what a native client reads.
"""

import base64
from typing import Any, Callable, Dict, Optional, Tuple

from zope.interface import implementer

from ccx.output.events import (
    PTY,
    STREAMS,
    Completion,
    OutputChunk,
    OutputDropped,
    ProcessStarted,
    StateChanged,
)
from ccx.output.fanout import MAX_CHUNK
from ccx.output.interfaces import IOutputSink
from ccx.protocol import BINARY, FRAME_HEADER_SIZE, UTF8, output_frame_encoder
from ccx.rpc.interfaces import IFrameChannel, INotificationChannel


def complete_utf8_length(data: bytes) -> int:
    """
    The length of the longest prefix of C{data} that does not end inside a
    UTF-8 character, so that a chunk never splits one.
    """
    size = len(data)
    for back in range(1, min(4, size) + 1):
        byte = data[size - back]
        if byte & 0xC0 != 0x80:
            if byte >= 0xF0:
                needed = 4
            elif byte >= 0xE0:
                needed = 3
            elif byte >= 0xC0:
                needed = 2
            else:
                needed = 1
            return size if needed <= back else size - back
    return size


def whole_characters(data: bytes, final: bool) -> bytes:
    """
    The longest prefix of C{data} that does not end inside a UTF-8
    character, or all of it when it is the end of its stream (C{final}):
    text sent in pieces never splits a character.
    """
    return data if final else data[: complete_utf8_length(data)]


def _utf8(data: bytes) -> str:
    return data.decode("utf-8", "replace")


def _base64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def encoder(encoding: str) -> Callable[[bytes], str]:
    """
    The function that turns a chunk into the C{data} string of C{process.output}.
    """
    return _utf8 if encoding == UTF8 else _base64


def decoder(encoding: str) -> Callable[[str], bytes]:
    """
    The function that turns C{write}'s C{data} into bytes.

    @raise ValueError: when C{data} is not valid base64.
    """
    if encoding == UTF8:
        return lambda text: text.encode("utf-8", "surrogatepass")
    return lambda text: base64.b64decode(text, validate=True)


def started_params(event: ProcessStarted) -> Dict[str, Any]:
    return {
        "process_id": event.process_id,
        "pid": event.pid,
        "pgid": event.pid,
        "command": list(event.argv),
    }


def dropped_params(event: OutputDropped) -> Dict[str, Any]:
    return {
        "process_id": event.process_id,
        "type": event.stream,
        "offset": event.offset,
        "bytes": event.size,
    }


def changed_params(event: StateChanged) -> Dict[str, Any]:
    return {
        "process_id": event.process_id,
        "status": event.change,
        "pid": event.pid,
        "pgid": event.pid,
    }


def completed_params(completion: Completion) -> Dict[str, Any]:
    params = {
        "process_id": completion.process_id,
        "status": completion.status,
        "pid": completion.pid,
        "pgid": completion.pid,
        "exit_code": completion.exit_code,
        "signal": completion.signal,
        "duration": completion.duration,
        "stdout_bytes": completion.stdout_bytes,
        "stderr_bytes": completion.stderr_bytes,
        "dropped_bytes": completion.dropped_bytes,
        "error": completion.error,
        "ended_at": completion.ended_at,
        "durable": completion.durable,
    }
    if completion.pty_bytes is not None:
        params["pty_bytes"] = completion.pty_bytes
    return params


# What a process.output notification holds besides its data, generously.
_ENVELOPE = 256


def _data_limit(encoding: str, max_message: Optional[int]) -> int:
    """
    The most output bytes one message may carry so that it stays within
    C{max_message} bytes: JSON can write a byte of text as six (C{\\u0000}),
    base64 writes three as four, a frame adds its header.  With no limit,
    L{MAX_CHUNK}: six times that is still under 1 MiB, the default message
    limit of common WebSocket clients.
    """
    if max_message is None:
        return MAX_CHUNK
    if encoding == BINARY:
        room = max_message - FRAME_HEADER_SIZE
    elif encoding == UTF8:
        room = (max_message - _ENVELOPE) // 6
    else:
        room = (max_message - _ENVELOPE) * 3 // 4
    return min(MAX_CHUNK, max(1, room))


def read_limit(encoding: str, max_message: Optional[int]) -> int:
    """
    The most bytes C{read} returns so that its reply fits in one message.
    """
    return _data_limit(encoding, max_message) if max_message is not None else MAX_CHUNK


def read_range(output: Any, stream: str, offset: int, size: int) -> Tuple[int, bytes]:
    """
    Up to C{size} held bytes of a stream from C{offset} on (from memory or
    the journal), contiguous: the offset of the first (later than
    C{offset} when that part is no longer held) and the bytes.
    """
    first = output.next_held(stream, offset)
    parts = []
    got = 0
    while got < size:
        at, data, _ = output.read(stream, first + got, size - got)
        if not data or at != first + got:
            break
        parts.append(data)
        got += len(data)
    return first, b"".join(parts)


class _ProcessNotices:
    """
    What both native sinks send as C{process.*} notifications on a
    client's channel: everything but output.

    @ivar max_chunk: the most output bytes one message carries, so that it
        fits the channel's largest message.
    """

    def __init__(
        self, channel: INotificationChannel, encoding: str, max_message: Optional[int]
    ) -> None:
        self.channel = channel
        self.max_chunk = _data_limit(encoding, max_message)

    @property
    def writable(self) -> bool:
        return self.channel.writable

    def started(self, event: ProcessStarted) -> None:
        self.channel.send_notification("process.started", started_params(event))

    def dropped(self, event: OutputDropped) -> None:
        self.channel.send_notification("process.dropped", dropped_params(event))

    def changed(self, event: StateChanged) -> None:
        self.channel.send_notification(f"process.{event.change}", changed_params(event))

    def completed(self, completion: Completion) -> None:
        self.channel.send_notification("process.completed", completed_params(completion))


@implementer(IOutputSink)
class NotificationSink(_ProcessNotices):
    """
    One subscription's output as the native C{process.*} notifications on
    a client's channel, its data carried as UTF-8 text (never splitting a
    character) or base64.

    @param max_message: the largest message the channel carries; chunks
        are small enough that their message fits (L{MAX_CHUNK} when
        L{None}).
    """

    def __init__(
        self,
        channel: INotificationChannel,
        encoding: str = UTF8,
        max_message: Optional[int] = None,
    ) -> None:
        super().__init__(channel, encoding, max_message)
        self.encoding = encoding
        self._encode = encoder(encoding)
        self._text = encoding == UTF8

    def output(self, chunk: OutputChunk) -> int:
        data = chunk.data
        if self._text:
            data = whole_characters(data, chunk.final)
            if not data:
                return 0
        self.channel.send_notification(
            "process.output",
            {
                "process_id": chunk.process_id,
                "type": chunk.stream,
                "data": self._encode(data),
                "offset": chunk.offset,
                "time": chunk.time,
                "truncated": False,
            },
        )
        return len(data)


@implementer(IOutputSink)
class FrameSink(_ProcessNotices):
    """
    One subscription's output as binary frames (C{encoding: "binary"}):
    each chunk is a small header and the raw bytes, with no JSON and no
    base64 on the way; drops, state changes and the completion stay JSON
    notifications on the same connection, in order.

    @param process_id: the process whose output this is.
    @param max_message: the largest message the channel carries; a frame,
        header included, fits in it.
    @raise ValueError: when C{process_id} is not 32 hex digits.
    """

    def __init__(
        self, channel: IFrameChannel, process_id: str, max_message: Optional[int] = None
    ) -> None:
        super().__init__(channel, BINARY, max_message)
        self._encode = output_frame_encoder(process_id)

    def output(self, chunk: OutputChunk) -> int:
        self.channel.send_frame(
            self._encode(chunk.stream, chunk.offset, chunk.time, chunk.data)
        )
        return len(chunk.data)


def list_state(process: Any) -> str:
    """
    A process's state as C{list} says it: C{running}, C{paused} or C{exited}.
    """
    state = process.state.value
    if state == "starting":
        return "running"
    if state in ("running", "paused"):
        return state
    return "exited"


def process_entry(process: Any) -> Dict[str, Any]:
    """
    A L{ccx.process.managed.ManagedProcess} as C{list} reports it.
    """
    output = process.output
    streams = output.streams
    entry: Dict[str, Any] = {
        "process_id": process.process_id,
        "pid": process.pid,
        "pgid": process.pid,
        "command": process.command.argv,
        "state": list_state(process),
        "started_at": process.started_at,
        "ended_at": process.ended_at,
        "exit_code": process.exit_code,
        "durable": process.options.durable,
    }
    for name in STREAMS:
        entry[f"{name}_bytes"] = streams[name].end if name in streams else 0
    if process.window is not None:
        # A program on a terminal: its one stream, and its window.
        entry["pty_bytes"] = streams[PTY].end
        entry["pty"] = {"rows": process.window.rows, "cols": process.window.cols}
    entry["dropped_bytes"] = output.dropped_bytes
    entry["subscribers"] = len(output.subscriptions)
    entry["encoding"] = process.options.encoding
    if output.store_error is not None:
        entry["journal_error"] = output.store_error
    # What all of its processes used, from its cgroup (null without one;
    # memory only where the memory controller is enabled).
    usage = process.usage()
    entry["cpu_seconds"] = None if usage is None else round(usage.cpu_seconds, 6)
    entry["memory_bytes"] = None if usage is None else usage.memory_bytes
    return entry
