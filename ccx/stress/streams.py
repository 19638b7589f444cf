"""
Following what a connection is sent about each process, and checking it:
offsets that tile each stream (delivered chunks and dropped ranges, with no
gap and no overlap), the exact bytes, and how the process ended.
"""

import hashlib
from collections import Counter
from typing import Callable, Dict, List, Optional, Tuple

from twisted.internet.defer import Deferred, succeed

# Several chunks' worth: a chunk never spans more than one tile.
_TILE = 512 * 1024
# Problems kept per process: the first ones say what went wrong.
_MAX_PROBLEMS = 5


class Pattern:
    """
    Output whose byte at every offset is known: C{TEXT} and a newline,
    repeated, as C{yes TEXT} writes it (cut at C{size} with C{head -c}).

    @ivar size: the bytes written, or L{None} for a program that never ends.
    """

    def __init__(self, text: str, size: Optional[int] = None) -> None:
        if not text.replace("-", "").isalnum():
            raise ValueError(f"pattern text must be letters, digits and dashes: {text!r}")
        self.text = text
        self.size = size
        self.line = (text + "\n").encode("ascii")
        self._tile = self.line * (_TILE // len(self.line) + 2)

    def command(self) -> List[str]:
        """
        The argv that writes this pattern.
        """
        if self.size is None:
            return ["yes", self.text]
        return ["sh", "-c", f"yes {self.text} | head -c {self.size}"]

    def matches(self, offset: int, data: bytes) -> bool:
        """
        Whether C{data} is exactly the pattern's bytes from C{offset} on.
        """
        period = len(self.line)
        tile = self._tile
        position = 0
        while position < len(data):
            start = (offset + position) % period
            piece = min(len(data) - position, len(tile) - start)
            if data[position : position + piece] != tile[start : start + piece]:
                return False
            position += piece
        return True


class Digest:
    """
    Output checked as a whole: the SHA-256 of the stream as received, to be
    compared with the same program's output made locally.
    """

    def __init__(self) -> None:
        self._hash = hashlib.sha256()

    def matches(self, offset: int, data: bytes) -> bool:
        self._hash.update(data)
        return True

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


class ProcessWatch:
    """
    Everything one connection is told about one process, checked as it
    arrives.

    @ivar content: checks the stdout bytes (a L{Pattern} or L{Digest}).
    @ivar allow_drops: whether C{process.dropped} is expected (a dropping
        subscriber); otherwise it is a problem.
    @ivar position: by stream, the offset up to which chunks and dropped
        ranges have tiled the stream.
    @ivar received: by stream, the bytes delivered.
    @ivar dropped: by stream, the bytes reported dropped.
    @ivar events: how many of each notification arrived.
    @ivar completion: the params of C{process.completed}, once it came.
    @ivar problems: what was wrong, for a person.
    """

    def __init__(self, process_id: str) -> None:
        self.process_id = process_id
        self.pid: Optional[int] = None
        self.content: Optional[object] = None
        self.allow_drops = False
        self.position: Dict[str, int] = {"stdout": 0, "stderr": 0}
        self.received: Dict[str, int] = {"stdout": 0, "stderr": 0}
        self.dropped: Dict[str, int] = {"stdout": 0, "stderr": 0}
        self.events: Counter = Counter()
        self.completion: Optional[dict] = None
        self.problems: List[str] = []
        self._waiting: List[Tuple[Callable[[], bool], Deferred]] = []

    def problem(self, text: str) -> None:
        if len(self.problems) < _MAX_PROBLEMS:
            self.problems.append(f"process {self.process_id[:8]}: {text}")

    # Notifications -------------------------------------------------------

    def notified(self, method: str, params: dict) -> None:
        self.events[method] += 1
        if self.completion is not None:
            self.problem(f"{method} after process.completed")
        if method == "process.output":
            self._output(params)
        elif method == "process.dropped":
            self._dropped(params)
        elif method == "process.completed":
            self._completed(params)
        self._wake()

    def _output(self, params: dict) -> None:
        stream = params["type"]
        data = params["data"].encode("utf-8")
        offset = params["offset"]
        if offset != self.position[stream]:
            self.problem(f"{stream} chunk at offset {offset}, expected {self.position[stream]}")
        if stream == "stdout" and self.content is not None:
            if not self.content.matches(offset, data):
                self.problem(f"stdout bytes at offset {offset} (+{len(data)}) differ")
        self.position[stream] = offset + len(data)
        self.received[stream] += len(data)

    def _dropped(self, params: dict) -> None:
        stream = params["type"]
        if not self.allow_drops:
            self.problem(f"{params['bytes']} {stream} bytes dropped at {params['offset']}")
        if params["offset"] != self.position[stream]:
            self.problem(
                f"{stream} dropped range at {params['offset']}, "
                f"expected {self.position[stream]}"
            )
        self.position[stream] = params["offset"] + params["bytes"]
        self.dropped[stream] += params["bytes"]

    def _completed(self, params: dict) -> None:
        self.completion = params
        for stream in ("stdout", "stderr"):
            written = params[f"{stream}_bytes"]
            if self.position[stream] != written:
                self.problem(
                    f"{stream}: chunks and dropped ranges reach {self.position[stream]}, "
                    f"but the program wrote {written}"
                )

    # Waiting -------------------------------------------------------------

    def when(self, condition: Callable[[], bool]) -> Deferred:
        """
        Fire (with this watch) once C{condition()} holds, looked at after
        every notification about this process.
        """
        if condition():
            return succeed(self)
        d: Deferred = Deferred()
        self._waiting.append((condition, d))
        return d

    def when_completed(self) -> Deferred:
        return self.when(lambda: self.completion is not None)

    def when_received(self, size: int = 1) -> Deferred:
        """
        Fire once C{size} stdout bytes arrived, or the process completed.
        """
        return self.when(
            lambda: self.received["stdout"] >= size or self.completion is not None
        )

    def _wake(self) -> None:
        waiting, self._waiting = self._waiting, []
        for condition, d in waiting:
            if condition():
                d.callback(self)
            else:
                self._waiting.append((condition, d))

    # Verdicts ------------------------------------------------------------

    def check_completed(self, status: str, stdout_bytes: Optional[int] = None) -> None:
        """
        Record a problem unless the process completed with C{status} (and
        wrote C{stdout_bytes}, when given).
        """
        completion = self.completion
        if completion is None:
            self.problem("no process.completed")
            return
        if completion["status"] != status:
            self.problem(
                f"completed with status {completion['status']!r} "
                f"(exit code {completion['exit_code']}, error {completion['error']!r}), "
                f"not {status!r}"
            )
        if stdout_bytes is not None and completion["stdout_bytes"] != stdout_bytes:
            self.problem(f"wrote {completion['stdout_bytes']} bytes, not {stdout_bytes}")

    def check_exact(self, size: int) -> None:
        """
        Record a problem unless all C{size} stdout bytes were delivered,
        none dropped.
        """
        if self.received["stdout"] != size or self.dropped["stdout"]:
            self.problem(
                f"received {self.received['stdout']} of {size} bytes "
                f"({self.dropped['stdout']} dropped)"
            )

    def check_drop_accounting(self) -> None:
        """
        For the only subscriber of a process: the ranges it was told it
        missed add up to the process's C{dropped_bytes}.
        """
        if self.completion is None:
            return
        reported = self.dropped["stdout"] + self.dropped["stderr"]
        if reported != self.completion["dropped_bytes"]:
            self.problem(
                f"dropped ranges add up to {reported} bytes, "
                f"dropped_bytes says {self.completion['dropped_bytes']}"
            )


class Tracker:
    """
    Routes one connection's notifications to a L{ProcessWatch} per process.

    A watch is made for any process the connection hears of, so that no
    notification is missed whatever the order in which a scenario asks for
    its watch.
    """

    def __init__(self) -> None:
        self.watches: Dict[str, ProcessWatch] = {}
        self.received_bytes = 0

    def watch(self, process_id: str) -> ProcessWatch:
        watch = self.watches.get(process_id)
        if watch is None:
            watch = self.watches[process_id] = ProcessWatch(process_id)
        return watch

    def notified(self, method: str, params: dict) -> None:
        """
        An L{ccx.cli.client.RPCClientProtocol} listener.
        """
        process_id = params.get("process_id")
        if not isinstance(process_id, str) or not method.startswith("process."):
            return
        if method == "process.output":
            self.received_bytes += len(params.get("data", ""))
        self.watch(process_id).notified(method, params)
