"""
How big each scenario is: the full profile (the figures of the issue), and
a short one for CI that scales every scenario down to about 30 s in all.
"""

from dataclasses import dataclass
from typing import Dict

MIB = 1024 * 1024


@dataclass(frozen=True)
class Profile:
    """
    The size of every scenario.

    @ivar sessions: concurrent sessions, each streaming C{session_bytes}.
    @ivar toggles: PAUSE/RESUME pairs on one streaming C{seq}.
    @ivar storm_connects: connections opened and closed, C{storm_concurrency}
        at a time, each starting a program.
    @ivar cancels: programs cancelled at a random point (up to
        C{cancel_max_delay} seconds after their first output),
        C{cancel_concurrency} at a time.
    @ivar slow_bytes: what each slow or stalled client's program writes;
        C{slow_rate} is how fast (bytes/s) the slow clients read.
    @ivar soak_seconds: how long the soak runs; memory is compared with
        what it was after C{soak_warmup} seconds, and may grow by at most
        C{rss_margin} MiB.
    @ivar soak_workers: connections busy at once in the soak, each running
        programs of C{soak_bytes}.
    @ivar timeout: the most seconds any one scenario may take (the soak:
        this much more than C{soak_seconds}).
    """

    name: str
    sessions: int
    session_bytes: int
    toggles: int
    storm_connects: int
    storm_concurrency: int
    cancels: int
    cancel_concurrency: int
    cancel_max_delay: float
    slow_bytes: int
    slow_rate: int
    soak_seconds: float
    soak_warmup: float
    soak_workers: int
    soak_bytes: int
    rss_margin: float
    timeout: float


FULL = Profile(
    name="full",
    sessions=50,
    session_bytes=10 * MIB,
    toggles=1000,
    storm_connects=1000,
    storm_concurrency=25,
    cancels=200,
    cancel_concurrency=40,
    cancel_max_delay=1.0,
    slow_bytes=48 * MIB,
    slow_rate=8 * MIB,
    soak_seconds=300.0,
    soak_warmup=60.0,
    soak_workers=4,
    soak_bytes=2 * MIB,
    rss_margin=16.0,
    timeout=180.0,
)

SHORT = Profile(
    name="short",
    sessions=10,
    session_bytes=1 * MIB,
    toggles=100,
    storm_connects=100,
    storm_concurrency=10,
    cancels=30,
    cancel_concurrency=15,
    cancel_max_delay=0.3,
    slow_bytes=16 * MIB,
    slow_rate=8 * MIB,
    soak_seconds=10.0,
    soak_warmup=4.0,
    soak_workers=3,
    soak_bytes=1 * MIB,
    # Ten seconds are all warm-up for a fresh service (its RSS rises for
    # about 40 s, then stays flat): only a gross leak shows here.
    rss_margin=40.0,
    timeout=60.0,
)

PROFILES: Dict[str, Profile] = {profile.name: profile for profile in (SHORT, FULL)}
