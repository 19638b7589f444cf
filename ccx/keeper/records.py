"""
Where the keeper keeps each durable program in the state dir: its record
(what it runs, its pid, when it started and how it ended) and its output.
Standard library only: the keeper writes these, ccx reads them.

Layout, under C{STATE_DIR/durable/PROCESS_ID/}: C{record.json}, and the
journal of each stream (C{stdout}, C{stderr}: the bytes as read, offset 0
first).  A record carries L{FORMAT}; a later release reads every format
an earlier one wrote (tests/fixtures/durable-1 keeps that promise).
"""

import json
import os
from typing import Any, Dict, List, Optional

FORMAT = 1
RECORD_NAME = "record.json"
DURABLE_DIR = "durable"


def programs_dir(state_dir: str) -> str:
    return os.path.join(state_dir, DURABLE_DIR)


def program_dir(state_dir: str, process_id: str) -> str:
    """
    The directory of one durable program.

    @raise ValueError: for an id that is not a plain name (it comes from
        ccx, but a path must never be built from a separator or C{..}).
    """
    if not process_id or process_id in (".", "..") or "/" in process_id or "\0" in process_id:
        raise ValueError(f"not a process id: {process_id!r}")
    return os.path.join(programs_dir(state_dir), process_id)


def journal_path(state_dir: str, process_id: str, stream: str) -> str:
    return os.path.join(program_dir(state_dir, process_id), stream)


def write_record(state_dir: str, record: Dict[str, Any]) -> None:
    """
    Write a program's record whole (a reader never sees half of one).
    """
    folder = program_dir(state_dir, record["process_id"])
    temporary = os.path.join(folder, RECORD_NAME + ".new")
    with open(temporary, "w") as f:
        json.dump(dict(record, format=FORMAT), f)
    os.replace(temporary, os.path.join(folder, RECORD_NAME))


def read_record(folder: str) -> Optional[Dict[str, Any]]:
    """
    The record in C{folder}, or L{None} when there is none or it is not
    one this release can read.
    """
    try:
        with open(os.path.join(folder, RECORD_NAME)) as f:
            record = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        return None
    return record


def read_records(state_dir: str) -> List[Dict[str, Any]]:
    """
    Every durable program's record, oldest start first.
    """
    try:
        names = os.listdir(programs_dir(state_dir))
    except FileNotFoundError:
        return []
    records = []
    for name in names:
        record = read_record(os.path.join(programs_dir(state_dir), name))
        if record is not None and record.get("process_id") == name:
            records.append(record)
    records.sort(key=lambda r: r.get("started_at") or 0)
    return records


def proc_start_time(pid: int) -> Optional[int]:
    """
    When process C{pid} started, in clock ticks since boot (C{/proc/PID/stat}
    field 22), or L{None} when there is no such process: with the pid it
    names one process for good, a recycled pid having another start time.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    # fields[0] is field 3 (state): field 22 is fields[19].
    return int(fields[19])
