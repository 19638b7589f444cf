"""
File descriptors: as many as the system lets the service have, and a reserve
kept for what must still work when clients hold most of them (the listening
port accepting a real client, pipes for a new program, /health).
"""

import resource
from typing import Callable, Optional, Tuple

# Descriptors kept free: a connection accepted past this point is refused at
# once, so that a program can still get its pipes and the service never
# meets EMFILE (on which the listening port spins, accepting nobody).
RESERVE = 128

Limits = Tuple[int, int]


def raise_open_file_limit(
    getrlimit: Optional[Callable[[int], Limits]] = None,
    setrlimit: Optional[Callable[[int, Limits], None]] = None,
) -> Optional[Limits]:
    """
    Raise the soft C{RLIMIT_NOFILE} to the hard one (what an unprivileged
    process may do; systemd's default soft limit is 1024).

    @return: the soft limit before and after, or L{None} when nothing
        changed (it already was the hard limit, or could not be raised).
    """
    soft, hard = (getrlimit or resource.getrlimit)(resource.RLIMIT_NOFILE)
    # An unlimited hard limit (macOS) cannot be the soft one: leave it.
    if soft == hard or hard == resource.RLIM_INFINITY:
        return None
    try:
        (setrlimit or resource.setrlimit)(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):
        return None
    return soft, hard


def open_file_limit(getrlimit: Optional[Callable[[int], Limits]] = None) -> Optional[int]:
    """
    The soft C{RLIMIT_NOFILE}, or L{None} when unlimited.
    """
    soft, _ = (getrlimit or resource.getrlimit)(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else soft


def descriptors_low(fileno: int, getrlimit: Optional[Callable[[int], Limits]] = None) -> bool:
    """
    Whether a descriptor just opened leaves less than L{RESERVE} free: the
    kernel gives out the lowest free number, so one that high means nearly
    every number below it is in use.
    """
    limit = open_file_limit(getrlimit)
    return limit is not None and fileno >= limit - RESERVE
