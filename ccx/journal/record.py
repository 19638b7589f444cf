"""
A program's record: what it was, and how it ended, kept beside its journal.
"""

import json
import os
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Dict, List, Optional

RECORD_NAME = "record.json"


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
        extra = dict(values.pop("extra", None) or {})
        extra.update({k: v for k, v in raw.items() if k not in known})
        try:
            record = cls(extra=extra, **values)
        except TypeError as e:
            raise RecordError(str(e))
        if not isinstance(record.process_id, str) or not isinstance(record.argv, list):
            raise RecordError("process_id or argv missing")
        return record


def write_record(directory: str, record: Record) -> None:
    """
    Replace the record in C{directory} atomically: a reader (or a restart
    after a crash) sees the old record or the new one, never a mix.
    """
    path = os.path.join(directory, RECORD_NAME)
    temporary = path + ".tmp"
    with open(temporary, "w", encoding="utf-8") as f:
        json.dump(record.to_json(), f, sort_keys=True)
    os.replace(temporary, path)


def read_record(directory: str) -> Record:
    """
    @raise RecordError: when there is none, or it cannot be read.
    """
    path = os.path.join(directory, RECORD_NAME)
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
    except OSError as e:
        raise RecordError(f"{path}: {e.strerror}")
    except ValueError as e:
        raise RecordError(f"{path}: not JSON: {e}")
    return Record.from_json(raw)
