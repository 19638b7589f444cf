"""
A program's record: what it was, and how it ended, kept beside its journal.
"""

import json
import math
import os
import stat
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Dict, List, Optional

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
    extra: Dict[str, Any] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return self.status is not None

    def to_json(self) -> Dict[str, Any]:
        return asdict(self)

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
        for name, check in _CHECKS.items():
            if not check(getattr(record, name)):
                # A record edited by hand or cut short by a full disk must
                # not stop the service at start nor reach a client as such.
                raise RecordError(f"{name} is {getattr(record, name)!r}: not a valid value")
        return record


def _text(value: Any) -> bool:
    return isinstance(value, str)


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _number(value: Any) -> bool:
    # NaN or infinity would reach clients as JSON no parser accepts.
    return (
        isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    )


def _optional(check: Any) -> Any:
    return lambda value: value is None or check(value)


_CHECKS = {
    "argv": lambda value: all(isinstance(a, str) for a in value),
    "executable": _text,
    "cwd": _text,
    "started_at": _optional(_number),
    "pid": _optional(_count),
    "encoding": _text,
    "durable": lambda value: isinstance(value, bool),
    "cgroup": _optional(_text),
    "status": _optional(_text),
    "ended_at": _optional(_number),
    "exit_code": _optional(lambda value: isinstance(value, int) and not isinstance(value, bool)),
    "signal": _optional(_text),
    "duration": _number,
    "stdout_bytes": _count,
    "stderr_bytes": _count,
    "dropped_bytes": _count,
    "error": _optional(_text),
}


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
