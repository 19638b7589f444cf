"""
The messages between ccx and its keeper: one JSON object per line on the
keeper's unix socket, each with a C{type}.  Standard library only: both
sides import it.

The first message either side sends is C{hello}, with the L{VERSION} it
speaks; a keeper answers a version it does not speak with C{error} and
closes the connection.  Every message is described in
docs/architecture.md.
"""

import json
from typing import Any, Dict

# The version of these messages; a change that an older peer would
# misread gets a new number.
VERSION = 1

# The longest line either side accepts: a spawn carries a whole
# environment and argv.
MAX_LINE = 16 * 1024 * 1024

# The name of the keeper's socket, and of its lock and log, in the state dir.
SOCKET_NAME = "keeper.sock"
LOCK_NAME = "keeper.lock"
LOG_NAME = "keeper.log"

# ccx -> keeper
HELLO = "hello"
SPAWN = "spawn"
ADOPT = "adopt"
HOLD = "hold"
CLOSE_STDIN = "close_stdin"
LIST = "list"
LEAVE = "leave"
NOTE = "note"
# Evict a stream's oldest segment for the state dir's total (feature "total").
EVICT = "evict"
# What a note may keep in a record's extra: ccx's, for the next ccx.
NOTED = ("timeout", "paused_at", "paused_seconds")
# keeper -> ccx
SPAWNED = "spawned"
SPAWN_FAILED = "spawn_failed"
ADOPTED = "adopted"
UNKNOWN = "unknown"
OUTPUT = "output"
CLOSED = "closed"
EVICTED = "evicted"
EXITED = "exited"
# An evict that evicted nothing (the segment is held, or the program gone).
KEPT = "kept"
ERROR = "error"

STREAMS = ("stdout", "stderr")

# What a keeper can do beyond version 1's first release, listed in its
# hello's C{features}: a keeper an older ccx started (still holding its
# programs) lacks them, and a newer ccx asks it for nothing it would
# misread (an older keeper ignores fields it does not know).
FEATURES = (
    # spawn's pty: the program on a terminal the keeper holds.
    "pty",
    # evict, and hold's full: ccx keeps the state dir's total across the
    # journals it writes and those the keeper writes.
    "total",
)


class BadMessage(ValueError):
    """
    A line that is not one of these messages.
    """


def encode(message: Dict[str, Any]) -> bytes:
    """
    One message as the line that carries it.
    """
    return json.dumps(message, separators=(",", ":")).encode("utf-8") + b"\n"


def decode(line: bytes) -> Dict[str, Any]:
    """
    The message a line (without its newline) carries.

    @raise BadMessage: when it is not a JSON object with a string C{type}.
    """
    try:
        message = json.loads(line)
    except ValueError as e:
        raise BadMessage(f"not JSON: {e}") from None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise BadMessage("not an object with a type")
    return message
