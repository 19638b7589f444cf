"""
How C{ccx ls} and C{ccx status} show processes to a person: short ids,
human byte sizes, times and durations.
"""

import shlex
import signal
import time
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

SHORT_ID = 12


def short_ids(process_ids: Iterable[str], length: int = SHORT_ID) -> Dict[str, str]:
    """
    For each id the shortest prefix of at least C{length} characters that
    no other of C{process_ids} begins with (the whole id at most).
    """
    ids = sorted(set(process_ids))
    short = {}
    for i, process_id in enumerate(ids):
        size = length
        for neighbour in ids[max(0, i - 1) : i] + ids[i + 1 : i + 2]:
            # Sorted, so only the neighbours can share a longer prefix.
            common = 0
            for a, b in zip(process_id, neighbour):
                if a != b:
                    break
                common += 1
            size = max(size, common + 1)
        short[process_id] = process_id[:size]
    return short


def human_bytes(size: Optional[int]) -> str:
    """
    C{1536} -> C{1.5 KiB}; below 1 KiB, exact bytes.
    """
    if not isinstance(size, int):
        return "-"
    if size < 1024:
        return f"{size} B"
    value = float(size)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024 or unit == "TiB":
            break
    return f"{value:.1f} {unit}"


def human_duration(seconds: Optional[float]) -> str:
    """
    C{0.25} -> C{0.2s}, C{75} -> C{1m15s}, C{7380} -> C{2h03m}, C{93600} -> C{1d02h}.
    """
    if not isinstance(seconds, (int, float)) or seconds < 0:
        return "-"
    if seconds < 10:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def human_time(when: Optional[float], now: float) -> str:
    """
    A local time: C{14:02:11} today, C{2024-05-01T14:02} on another day.
    """
    if not isinstance(when, (int, float)):
        return "-"
    moment = time.localtime(when)
    if time.strftime("%Y-%m-%d", moment) == time.strftime("%Y-%m-%d", time.localtime(now)):
        return time.strftime("%H:%M:%S", moment)
    return time.strftime("%Y-%m-%dT%H:%M", moment)


def duration(process: Dict[str, Any], now: float) -> Optional[float]:
    """
    How long it ran (until now while it runs), by the service's clock.
    """
    started = process.get("started_at")
    if not isinstance(started, (int, float)):
        return None
    ended = process.get("ended_at")
    if isinstance(ended, (int, float)):
        return ended - started
    if process.get("state") == "exited":
        return None  # a service that does not say when it ended
    return max(0.0, now - started)


def exit_cell(process: Dict[str, Any]) -> str:
    """
    The exit code, or the name of the signal that ended it; C{-} while it runs.
    """
    code = process.get("exit_code")
    if not isinstance(code, int):
        return "-"
    if code < 0:
        try:
            return signal.Signals(-code).name
        except ValueError:
            return str(code)
    return str(code)


def command_text(process: Dict[str, Any]) -> str:
    return shlex.join(str(a) for a in process.get("command") or [])


def _cell(value: Any) -> str:
    return "-" if value is None else str(value)


def _aligned(rows: Sequence[Tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = []
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths)]
        lines.append("  ".join(cells + [row[-1]]).rstrip())
    return "\n".join(lines) + "\n"


def format_table(processes: List[Dict[str, Any]], now: Optional[float] = None) -> str:
    """
    The C{ccx ls} table: one row per process, oldest first.
    """
    now = time.time() if now is None else now
    short = short_ids(str(p.get("process_id", "")) for p in processes)
    header = ("ID", "PID", "STATE", "STARTED", "DURATION", "EXIT", "STDOUT", "STDERR", "COMMAND")
    rows = [header]
    for p in sorted(processes, key=lambda p: p.get("started_at") or 0):
        rows.append(
            (
                short[str(p.get("process_id", ""))],
                _cell(p.get("pid")),
                _cell(p.get("state")),
                human_time(p.get("started_at"), now),
                human_duration(duration(p, now)),
                exit_cell(p),
                human_bytes(p.get("stdout_bytes")).replace(" ", ""),
                human_bytes(p.get("stderr_bytes")).replace(" ", ""),
                command_text(p),
            )
        )
    return _aligned(rows)


def format_status(process: Dict[str, Any], now: Optional[float] = None) -> str:
    """
    C{ccx status}: one process, a field a line.
    """
    now = time.time() if now is None else now
    cpu = process.get("cpu_seconds")
    fields = [
        ("id", _cell(process.get("process_id"))),
        ("command", command_text(process)),
        ("state", _cell(process.get("state"))),
        ("pid", _cell(process.get("pid"))),
        ("started", human_time(process.get("started_at"), now)),
        ("duration", human_duration(duration(process, now))),
        ("exit", exit_cell(process)),
        ("stdout", human_bytes(process.get("stdout_bytes"))),
        ("stderr", human_bytes(process.get("stderr_bytes"))),
        ("dropped", human_bytes(process.get("dropped_bytes"))),
        ("readers", _cell(process.get("subscribers"))),
        ("cpu", "-" if not isinstance(cpu, (int, float)) else f"{cpu:.2f}s"),
        ("memory", human_bytes(process.get("memory_bytes"))),
    ]
    if process.get("journal_error"):
        fields.append(("journal", str(process["journal_error"])))
    return _aligned([(f"{name}:", value) for name, value in fields])
