"""
A program's record: what it was, and how it ended, kept beside its journal.
"""

import json
import math
import os
import stat
from dataclasses import dataclass, field, fields
from typing import Any, Dict, List, Optional, Union, get_args, get_origin

RECORD_NAME = "record.json"
# Far more than any record written (an argv is at most a few MiB with
# ARG_MAX raised): a bigger file is not read into memory at start.
MAX_RECORD_BYTES = 16 * 1024 * 1024


class RecordError(Exception):
    """
    A record cannot be read: the message says which and why.
    """


@dataclass(frozen=True)
class Record:
    """
    One program as the state dir keeps it.

    @ivar status: how it ended (C{"completed"}, C{"failed"}, C{"cancelled"},
        C{"timeout"}), or L{None} while it runs.
    @ivar ended_at: when it finished, in seconds since the epoch.
    @ivar durable: whether it outlives ccx (issue 10 part 3).
    @ivar cgroup: the path of its cgroup, when it has one.
    @ivar pty: C{[rows, cols]} of the terminal it ran on, or L{None} (on
        pipes); its one stream is then C{pty}, C{pty_bytes} long.
    """

    process_id: str
    argv: List[str]
    executable: str
    cwd: str
    started_at: Optional[float] = None
    pid: Optional[int] = None
    encoding: str = "utf-8"
    durable: bool = False
    cgroup: Optional[str] = None
    status: Optional[str] = None
    ended_at: Optional[float] = None
    exit_code: Optional[int] = None
    signal: Optional[str] = None
    duration: float = 0.0
    stdout_bytes: int = 0
    stderr_bytes: int = 0
    dropped_bytes: int = 0
    error: Optional[str] = None
    pty: Optional[List[int]] = None
    pty_bytes: int = 0
    extra: Dict[str, Any] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return self.status is not None

    def to_json(self) -> Dict[str, Any]:
        # Shallow: every value is already JSON (asdict's deep copy cost more
        # than the rest of a short program's bookkeeping).
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_json(cls, raw: Any) -> "Record":
        """
        @raise RecordError: when C{raw} is not a record.
        """
        if not isinstance(raw, dict):
            raise RecordError("not a JSON object")
        known = {f.name for f in fields(cls)}
        # Fields a later release added are kept, not lost, when rewritten.
        values = {k: v for k, v in raw.items() if k in known}
        extra = values.pop("extra", None) or {}
        if not isinstance(extra, dict):
            raise RecordError(f"extra is {extra!r}: not a valid value")
        extra = dict(extra)
        extra.update({k: v for k, v in raw.items() if k not in known})
        try:
            record = cls(extra=extra, **values)
        except TypeError as e:
            raise RecordError(str(e))
        if not isinstance(record.process_id, str) or not isinstance(record.argv, list):
            raise RecordError("process_id or argv missing")
        for f in fields(cls):
            value = getattr(record, f.name)
            if f.name != "extra" and not _valid(value, f.type, f.name):
                # A record edited by hand or cut short by a full disk must
                # not stop the service at start nor reach a client as such.
                raise RecordError(f"{f.name} is {value!r}: not a valid value")
        return record


def _valid(value: Any, kind: Any, name: str = "") -> bool:
    """
    Whether C{value} is of the field's declared C{kind} (every field,
    those a later field adds too): times finite (NaN or infinity would
    reach clients as JSON no parser accepts), byte counts not negative,
    a pid a process's (never 0 or -1, which C{kill} reads as a group or
    every process).
    """
    if kind is Any:
        return True
    origin, args = get_origin(kind), get_args(kind)
    if origin is Union:
        return any(_valid(value, arg, name) for arg in args)
    if origin is list:
        return isinstance(value, list) and all(_valid(item, args[0]) for item in value)
    if origin is dict:
        return isinstance(value, dict)
    if kind is type(None):
        return value is None
    if kind is bool:
        return isinstance(value, bool)
    if kind is float:
        return (
            isinstance(value, (int, float))
            and not isinstance(value, bool)
            and math.isfinite(value)
        )
    if kind is int:
        if not isinstance(value, int) or isinstance(value, bool):
            return False
        if name == "pid":
            return value > 0
        return value >= 0 or not name.endswith("_bytes")
    return isinstance(value, kind)


def write_record(directory: str, record: Record) -> None:
    """
    Replace the record in C{directory} atomically: a reader (or a restart
    after a crash) sees the old record or the new one, never a mix.
    """
    path = os.path.join(directory, RECORD_NAME)
    temporary = path + ".tmp"
    try:
        os.unlink(temporary)
    except FileNotFoundError:
        pass
    # Created anew, never through a link left there: argv and cwd are the
    # owner's alone.
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    with open(fd, "w", encoding="utf-8") as f:
        json.dump(record.to_json(), f, sort_keys=True)
    os.replace(temporary, path)


def read_record(directory: str) -> Record:
    """
    @raise RecordError: when there is none, or it cannot be read.
    """
    path = os.path.join(directory, RECORD_NAME)
    try:
        # Not a symlink, and a FIFO put there must not block the reactor.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise RecordError(f"{path}: {e.strerror}")
    with open(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise RecordError(f"{path}: not a regular file")
        try:
            text = f.read(MAX_RECORD_BYTES + 1)
        except OSError as e:
            raise RecordError(f"{path}: {e.strerror}")
    if len(text) > MAX_RECORD_BYTES:
        raise RecordError(f"{path}: more than {MAX_RECORD_BYTES} bytes: not a record")
    try:
        raw = json.loads(text)
    except ValueError as e:
        raise RecordError(f"{path}: not JSON: {e}")
    try:
        return Record.from_json(raw)
    except RecordError as e:
        raise RecordError(f"{path}: {e}")
