"""
The named scenarios.  Each is one coroutine function taking the L{Target},
the L{Profile} and a seeded L{random.Random}, and returning a L{Result}
whose problems say what went wrong (none: it passed).

Every byte a scenario is sent is checked as it arrives (L{ProcessWatch}):
chunks and dropped ranges must tile each stream, and the bytes must be the
program's, which writes a known pattern (L{Pattern}) or output that is
hashed and compared with the same program run here (L{Digest}).
"""

import random
import statistics
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Coroutine, Dict, Iterable, List, Optional

from ccx.cli.client import CallError, ConnectionLost
from ccx.stress.harness import (
    RssSampler,
    Throttle,
    bounded,
    call_patiently,
    gather,
    spread,
    until_state,
)
from ccx.stress.profiles import MIB, Profile
from ccx.stress.reference import reference_digest
from ccx.stress.report import Result, mib
from ccx.stress.streams import Digest, Pattern, ProcessWatch
from ccx.stress.target import EXECUTE_TIMEOUT, Connection, Target
from ccx.testing.polling import Stuck, within
from ccx.testing.proc import children_of, leftovers

Scenario = Callable[[Target, Profile, random.Random], Coroutine[Any, Any, Result]]

# What a pipe holds, and the most one process.output carries.
PIPE_BYTES = 64 * 1024
MAX_CHUNK = 128 * 1024
# The receive buffer of the slow and stalled clients' sockets.
SLOW_RCVBUF = 256 * 1024
# A seq that never ends by itself (it would take days).
SEQ = ["seq", "1", "999999999999"]


# -- helpers -------------------------------------------------------------------


def _ending(target: Target) -> float:
    """
    How long a cancelled program may take to be reported completed: the
    grace period before SIGKILL, twice (for the leftovers of its group),
    and some.
    """
    return 2 * target.kill_grace + 10


def collect(result: Result, watches: Iterable[ProcessWatch]) -> None:
    for watch in watches:
        result.problems.extend(watch.problems)


# -- sessions ------------------------------------------------------------------


async def sessions(target: Target, profile: Profile, rng: random.Random) -> Result:
    """
    Many sessions at once, each on its own connection streaming its own
    pattern; every byte of every session checked.
    """
    result = Result("sessions")
    count, size = profile.sessions, profile.session_bytes
    connections = await gather(target.connect() for _ in range(count))
    sampler = RssSampler(target, 0.25).start()
    began = target.reactor.seconds()
    took: List[float] = []

    async def stream(index: int, connection: Connection) -> ProcessWatch:
        pattern = Pattern(f"session-{index}-" + "x" * (index % 37), size)
        watch = await connection.execute(
            command=pattern.command(), on_full="block", content=pattern
        )
        await watch.when_completed()
        took.append(target.reactor.seconds() - began)
        watch.check_completed("completed", size)
        watch.check_exact(size)
        return watch

    watches = await gather(stream(i, c) for i, c in enumerate(connections))
    elapsed = target.reactor.seconds() - began
    sampler.stop()
    collect(result, watches)
    total = count * size
    result.figures = {
        "sessions": count,
        "bytes_each": size,
        "mib_total": mib(total),
        "seconds": round(elapsed, 3),
        "mib_per_s": round(total / MIB / elapsed, 1),
        "session_seconds": spread(took),
        "rss_peak_mib": sampler.peak,
    }
    exact = sum(1 for w in watches if not w.problems)
    result.summary = (
        f"{count} sessions x {mib(size):g} MiB, {exact} exact to the byte: "
        f"{mib(total):g} MiB in {elapsed:.2f} s = {total / MIB / elapsed:.1f} MiB/s"
        + (f", service RSS peak {sampler.peak} MiB" if sampler.peak else "")
    )
    return result


# -- toggles -------------------------------------------------------------------


async def toggles(target: Target, profile: Profile, rng: random.Random) -> Result:
    """
    PAUSE/RESUME, over and over, on a program streaming C{seq}: each PAUSE
    must really stop it (C{T} in C{/proc}) and each RESUME continue it.
    Then it is cancelled, and all it wrote must have arrived exactly: the
    same bytes as C{seq} run here, cut at the same length.
    """
    result = Result("toggles")
    connection = await target.connect()
    digest = Digest()
    watch = await connection.execute(command=SEQ, on_full="block", content=digest)
    await watch.when_received(1)
    count = profile.toggles
    flowing = stopped = continued = 0
    round_trips: List[float] = []
    began = target.reactor.seconds()
    first = watch.received["stdout"]
    for _ in range(count):
        before = watch.received["stdout"]
        for kind, status in (("PAUSE", "paused"), ("RESUME", "resumed")):
            sent = target.reactor.seconds()
            reply = await call_patiently(
                connection, "control", {"type": kind, "process_id": watch.process_id}
            )
            round_trips.append((target.reactor.seconds() - sent) * 1000)
            result.check(reply.get("status") == status, f"{kind} answered {reply}")
            if kind == "PAUSE":
                stopped += await until_state(target, watch.pid, stopped=True)
            else:
                continued += await until_state(target, watch.pid, stopped=False)
        flowing += watch.received["stdout"] > before
    elapsed = target.reactor.seconds() - began
    streamed = watch.received["stdout"] - first
    # Still streaming after the last RESUME; then the end.
    await within(
        watch.when_received(watch.received["stdout"] + 1),
        10,
        "no output after the last RESUME",
        target.reactor,
    )
    await connection.control("CANCEL", watch)
    await within(watch.when_completed(), _ending(target), "no process.completed", target.reactor)
    watch.check_completed("cancelled")
    size = watch.completion["stdout_bytes"] if watch.completion else 0
    watch.check_exact(size)
    collect(result, [watch])
    expected, made = await reference_digest(
        target.reactor, ["sh", "-c", f"{' '.join(SEQ)} | head -c {size}"]
    )
    result.check(
        made == size and digest.hexdigest() == expected,
        f"the {size} bytes received differ from what seq writes",
    )
    result.check(
        stopped == count, f"the program was seen stopped after {stopped} of {count} PAUSEs"
    )
    result.check(
        continued == count, f"the program was seen running after {continued} of {count} RESUMEs"
    )
    for event in ("process.paused", "process.resumed"):
        result.check(
            watch.events[event] == count, f"{watch.events[event]} {event}, not {count}"
        )
    result.figures = {
        "toggles": count,
        "seconds": round(elapsed, 2),
        "output_during": flowing,
        "seen_stopped": stopped,
        "seen_running": continued,
        "mib_during_toggles": mib(streamed),
        "mib_exact": mib(size),
        "round_trip_ms": spread(round_trips, 2),
    }
    result.summary = (
        f"{count} PAUSE/RESUME in {elapsed:.1f} s on a streaming seq, each seen in /proc "
        f"(output arrived during {flowing}); {mib(size):g} MiB exact; round trip p50 "
        f"{result.figures['round_trip_ms'].get('p50')} ms, max "
        f"{result.figures['round_trip_ms'].get('max')} ms"
    )
    return result


# -- storm ---------------------------------------------------------------------


@dataclass(frozen=True)
class StormProgram:
    """
    What one connection of the storm starts, and how it should end.

    @ivar cancelled: ended by the connection closing (C{on_disconnect:
        "cancel"}); otherwise it is kept and ends by itself.
    @ivar pause: PAUSE it before leaving.
    """

    name: str
    params: Dict[str, Any]
    cancelled: bool
    pause: bool = False


STORM_PROGRAMS = (
    StormProgram("yes-block", {"command": ["yes", "storm"], "on_full": "block"}, True),
    StormProgram("yes-drop", {"command": ["yes", "storm"], "on_full": "drop"}, True),
    StormProgram("sleep", {"command": ["sleep", "600"]}, True),
    StormProgram("paused", {"command": ["yes", "storm"]}, True, pause=True),
    StormProgram("keep-seq", {"command": ["seq", "1", "2000"], "on_disconnect": "keep"}, False),
    StormProgram(
        "keep-drop",
        {
            "command": Pattern("storm-keep", 2 * MIB).command(),
            "on_full": "drop",
            "on_disconnect": "keep",
        },
        False,
    ),
)
# How a storm connection leaves: closing handshake once its program has
# started; TCP reset once it has started; closing right after sending
# execute, without waiting for the answer.
STORM_LEAVES = ("close", "abort", "close-at-once")


async def storm(target: Target, profile: Profile, rng: random.Random) -> Result:
    """
    Connections opened and closed as fast as the service takes them, each
    starting a program; afterwards the service must be healthy, with no
    process live, no cancelled program left, no file descriptor leaked.
    """
    result = Result("storm")
    fds_before = target.open_fds()
    started: Dict[str, StormProgram] = {}
    pgids: List[int] = []
    lost_answers = Counter()

    async def one(index: int) -> None:
        program = STORM_PROGRAMS[index % len(STORM_PROGRAMS)]
        leave = STORM_LEAVES[(index // len(STORM_PROGRAMS)) % len(STORM_LEAVES)]
        connection = await target.connect()
        if leave == "close-at-once":
            answer = connection.call("execute", program.params)
            await connection.close()
            try:
                reply = await answer
            except ConnectionLost:
                lost_answers["execute"] += 1
                return
            target.pgids.add(reply["pgid"])
            pgids.append(reply["pgid"])
            started[reply["process_id"]] = program
            return
        try:
            watch = await connection.execute(**program.params)
            pgids.append(watch.pid)
            started[watch.process_id] = program
            if program.pause:
                await connection.control("PAUSE", watch)
            await within(
                watch.when(lambda: watch.events["process.started"] > 0),
                EXECUTE_TIMEOUT,
                f"no process.started for {program.name} {watch.process_id[:8]}",
                target.reactor,
            )
        except Stuck as e:
            result.problems.append(f"connection {index} ({program.name}): {e}")
            await connection.abort()
            return
        if leave == "close":
            await connection.close()
        else:
            await connection.abort()

    began = target.reactor.seconds()
    count = profile.storm_connects
    await bounded(profile.storm_concurrency, (lambda i=i: one(i) for i in range(count)))
    elapsed = target.reactor.seconds() - began

    health = await target.settle(timeout=4 * target.kill_grace + 20)
    settled = target.reactor.seconds() - began - elapsed
    result.check(health["status"] == "ok", f"/health says {health}")
    unsettled = await target.unsettled(health)
    result.check(unsettled is None, f"after the storm: {unsettled}")
    left = leftovers(pgids)
    result.check(not left, f"process groups with members left: {sorted(left.items())[:5]}")
    if target.pid is not None:
        children = children_of(target.pid)
        result.check(not children, f"the service still has children: {children[:10]}")

    checked = await _check_storm_endings(target, started, result)
    fds_after = target.open_fds()
    if fds_before is not None and fds_after is not None:
        result.check(
            fds_after <= fds_before + 4,
            f"the service had {fds_before} open files before, {fds_after} after",
        )
    kinds = Counter(program.name for program in started.values())
    result.figures.update({
        "connects": count,
        "concurrency": profile.storm_concurrency,
        "seconds": round(elapsed, 2),
        "connects_per_s": round(count / elapsed, 1),
        "programs": dict(kinds),
        "answers_lost_to_close": lost_answers["execute"],
        "settled_after_s": round(settled, 2),
        "endings_checked": checked,
        "service_fds": [fds_before, fds_after],
    })
    result.summary = (
        f"{count} connects+disconnects ({count / elapsed:.0f}/s, {profile.storm_concurrency} "
        f"at a time), {len(started)} programs; after {settled:.1f} s: "
        f"{health['processes']} live, {len(left)} groups left, {checked} endings checked"
        + (f", service fds {fds_before} -> {fds_after}" if fds_before is not None else "")
    )
    return result


async def _check_storm_endings(
    target: Target, started: Dict[str, StormProgram], result: Result
) -> int:
    """
    The storm's programs that the service still lists must have ended as
    their kind says: cancelled ones by a signal, kept ones by themselves.
    """
    connection = await target.connect()
    try:
        listing = await connection.call("list", {})
    except CallError as e:
        # A service that keeps thousands of finished processes cannot list
        # them in one message.
        result.figures["endings_not_checked"] = e.message
        return 0
    finally:
        await connection.close()
        target.connections.remove(connection)
    checked = 0
    for entry in listing["processes"]:
        program = started.get(entry["process_id"])
        if program is None:
            continue
        checked += 1
        code = entry["exit_code"]
        if entry["state"] != "exited":
            result.problems.append(f"{program.name} {entry['process_id'][:8]}: {entry['state']}")
        elif program.cancelled and (code is None or code >= 0):
            result.problems.append(
                f"{program.name} {entry['process_id'][:8]}: exit code {code}, not cancelled"
            )
        elif not program.cancelled and code != 0:
            result.problems.append(f"{program.name} {entry['process_id'][:8]}: exit code {code}")
    return checked


# -- cancels -------------------------------------------------------------------


@dataclass(frozen=True)
class CancelProgram:
    """
    A program to cancel mid-stream.

    @ivar signal: the signal that must have ended it.
    """

    name: str
    text: str
    params: Dict[str, Any] = field(default_factory=dict)
    pause: bool = False
    signal: str = "SIGTERM"

    def command(self) -> List[str]:
        return Pattern(self.text).command()


CANCEL_PROGRAMS = (
    CancelProgram("block", "cancel-block", {"on_full": "block"}),
    CancelProgram("drop", "cancel-drop", {"on_full": "drop"}),
    CancelProgram("paused", "cancel-paused", {"on_full": "block"}, pause=True),
    CancelProgram(
        "term-ignored",
        "cancel-trap",
        {
            # SIGTERM is ignored by the program and by a grandchild in its
            # group: only the SIGKILL after the grace period ends them.
            "command": ["sh", "-c", "trap '' TERM; sleep 600 & exec yes cancel-trap"],
        },
        signal="SIGKILL",
    ),
)


async def cancels(target: Target, profile: Profile, rng: random.Random) -> Result:
    """
    Many programs streaming on a few connections, each cancelled at a random
    point: each must end with C{process.completed} status cancelled, by the
    right signal, with nothing of its group left at that moment, and with
    its output exact up to there.
    """
    result = Result("cancels")
    connections = await gather(target.connect() for _ in range(4))
    latencies: Dict[str, List[float]] = {p.name: [] for p in CANCEL_PROGRAMS}
    watches: List[ProcessWatch] = []
    left_at_completion: List[str] = []

    async def one(index: int) -> None:
        program = rng.choice(CANCEL_PROGRAMS)
        delay = rng.uniform(0, profile.cancel_max_delay)
        connection = connections[index % len(connections)]
        params = {"command": program.command(), **program.params}
        watch = await connection.execute(
            content=Pattern(program.text), drops=params.get("on_full") == "drop", **params
        )
        watches.append(watch)
        await watch.when_received(1)
        await target.sleep(delay)
        if program.pause:
            await call_patiently(
                connection, "control", {"type": "PAUSE", "process_id": watch.process_id}
            )
        sent = target.reactor.seconds()
        reply = await call_patiently(
            connection, "control", {"type": "CANCEL", "process_id": watch.process_id}
        )
        if reply.get("status") != "cancelled":
            watch.problem(f"CANCEL answered {reply}")
        await within(
            watch.when_completed(),
            _ending(target),
            f"no process.completed for {program.name} {watch.process_id[:8]} after CANCEL",
            target.reactor,
        )
        # At this very moment nothing of the group may be left.
        members = leftovers([watch.pid])
        if members:
            left_at_completion.append(f"{program.name}: {members}")
        latencies[program.name].append((target.reactor.seconds() - sent) * 1000)
        watch.check_completed("cancelled")
        if watch.completion and watch.completion["signal"] != program.signal:
            watch.problem(
                f"{program.name}: ended by {watch.completion['signal']}, not {program.signal}"
            )

    began = target.reactor.seconds()
    await bounded(
        profile.cancel_concurrency, (lambda i=i: one(i) for i in range(profile.cancels))
    )
    elapsed = target.reactor.seconds() - began
    collect(result, watches)
    result.check(
        not left_at_completion,
        f"group members left when process.completed came: {left_at_completion[:5]}",
    )
    kinds = {name: len(values) for name, values in latencies.items()}
    streamed = sum(w.received["stdout"] for w in watches)
    result.figures = {
        "cancelled": len(watches),
        "concurrency": profile.cancel_concurrency,
        "by_kind": kinds,
        "cancel_to_completed_ms": {
            name: spread(values, 1) for name, values in latencies.items() if values
        },
        "mib_streamed": mib(streamed),
        "seconds": round(elapsed, 2),
    }
    quick = [v for name, values in latencies.items() if name != "term-ignored" for v in values]
    cancelled = sum(
        1 for w in watches if w.completion and w.completion["status"] == "cancelled"
    )
    result.summary = (
        f"{len(watches)} programs cancelled at random points ({profile.cancel_concurrency} "
        f"at a time; {', '.join(f'{n} {k}' for n, k in kinds.items())}): {cancelled} "
        f"completed as cancelled, {len(left_at_completion)} with group members left; "
        f"CANCEL->completed p50 {spread(quick, 1).get('p50')} ms"
    )
    return result


# -- slow ----------------------------------------------------------------------


async def slow(target: Target, profile: Profile, rng: random.Random) -> Result:
    """
    Slow and stalled clients, with block and with drop, side by side.
    """
    result = Result("slow")
    control = await target.connect()
    bound = _lead_bound(target)
    figures = await gather(
        case(target, control, profile, bound, result)
        for case in (_slow_block, _stalled_block, _slow_drop, _stalled_drop)
    )
    result.figures = {"lead_bound_mib": mib(bound), **dict(figures)}
    f = result.figures
    result.summary = (
        f"{mib(profile.slow_bytes):g} MiB each: slow+block held back (lead <= "
        f"{f['slow_block']['max_lead_mib']} MiB) and exact; stalled+block held at "
        f"{f['stalled_block']['held_at_mib']} MiB, exact after; slow+drop and stalled+drop "
        f"not slowed, dropped {f['slow_drop']['dropped_mib']} and "
        f"{f['stalled_drop']['dropped_mib']} MiB, ranges tile the stream"
    )
    return result


def _lead_bound(target: Target) -> int:
    """
    The most a program may run ahead of a client that does not read, when
    it is held back: the held buffer, the pipe, the largest send buffer of
    the service's socket, the client's receive buffer (which the kernel
    doubles), and a chunk or two in flight.
    """
    try:
        with open("/proc/sys/net/ipv4/tcp_wmem") as f:
            send_buffer = int(f.read().split()[2])
    except (OSError, ValueError, IndexError):
        send_buffer = 4 * MIB
    return target.buffer_bytes + PIPE_BYTES + send_buffer + 2 * SLOW_RCVBUF + 2 * MAX_CHUNK


async def _slow_client(target: Target, text: str, size: int, on_full: str) -> tuple:
    connection = await target.connect()
    connection.limit_receive_buffer(SLOW_RCVBUF)
    pattern = Pattern(text, size)
    watch = await connection.execute(
        command=pattern.command(), on_full=on_full, content=pattern, drops=on_full == "drop"
    )
    return connection, watch


async def _slow_block(
    target: Target, control: Connection, profile: Profile, bound: int, result: Result
) -> tuple:
    size, rate = profile.slow_bytes, profile.slow_rate
    connection, watch = await _slow_client(target, "slow-block", size, "block")
    throttle = Throttle(connection, rate)
    throttle.start()
    max_lead = 0
    while watch.completion is None:
        entry = await control.describe(watch)
        if entry is not None:
            max_lead = max(max_lead, entry["stdout_bytes"] - watch.received["stdout"])
        await target.sleep(0.05)
    throttle.stop()
    watch.check_completed("completed", size)
    watch.check_exact(size)
    collect(result, [watch])
    result.check(
        max_lead <= bound,
        f"slow+block: the program ran {mib(max_lead)} MiB ahead of the client "
        f"(at most {mib(bound)} expected)",
    )
    return "slow_block", {
        "max_lead_mib": mib(max_lead),
        "program_seconds": watch.completion and watch.completion["duration"],
        "read_rate_mib_s": mib(rate),
    }


async def _stalled_block(
    target: Target, control: Connection, profile: Profile, bound: int, result: Result
) -> tuple:
    size = profile.slow_bytes
    connection, watch = await _slow_client(target, "stalled-block", size, "block")
    connection.stop_reading()
    entry = await _until_still(target, control, watch)
    lead = entry["stdout_bytes"] - watch.received["stdout"] if entry else None
    result.check(
        entry is not None and entry["state"] == "running" and entry["stdout_bytes"] < size,
        f"stalled+block: the program was not held back: {entry}",
    )
    result.check(
        lead is not None and lead <= bound,
        f"stalled+block: the program ran {lead} bytes ahead of the client",
    )
    connection.start_reading()
    await watch.when_completed()
    watch.check_completed("completed", size)
    watch.check_exact(size)
    collect(result, [watch])
    return "stalled_block", {
        "held_at_mib": mib(entry["stdout_bytes"]) if entry else None,
        "lead_mib": mib(lead) if lead is not None else None,
    }


async def _until_still(
    target: Target, control: Connection, watch: ProcessWatch, timeout: float = 15.0
) -> Optional[dict]:
    """
    Wait until the program's output stopped growing for a second (it is
    held back); its C{list} entry then, or None if it never stopped.
    """
    deadline = target.reactor.seconds() + timeout
    last, since = None, target.reactor.seconds()
    while target.reactor.seconds() < deadline:
        entry = await control.describe(watch)
        if entry is None or entry["state"] == "exited":
            return entry
        now = target.reactor.seconds()
        if last is None or entry["stdout_bytes"] != last["stdout_bytes"]:
            last, since = entry, now
        elif now - since >= 1.0:
            return entry
        await target.sleep(0.1)
    return None


async def _slow_drop(
    target: Target, control: Connection, profile: Profile, bound: int, result: Result
) -> tuple:
    size, rate = profile.slow_bytes, profile.slow_rate
    connection, watch = await _slow_client(target, "slow-drop", size, "drop")
    throttle = Throttle(connection, rate)
    throttle.start()
    await watch.when_completed()
    throttle.stop()
    _check_dropping(watch, size, result, "slow+drop")
    duration = watch.completion["duration"]
    result.check(
        duration < size / rate / 2,
        f"slow+drop: the program took {duration:.2f} s: it was slowed by its reader",
    )
    return "slow_drop", {
        "program_seconds": duration,
        "dropped_mib": mib(watch.dropped["stdout"]),
        "delivered_mib": mib(watch.received["stdout"]),
        "dropped_ranges": watch.events["process.dropped"],
    }


async def _stalled_drop(
    target: Target, control: Connection, profile: Profile, bound: int, result: Result
) -> tuple:
    size = profile.slow_bytes
    connection, watch = await _slow_client(target, "stalled-drop", size, "drop")
    connection.stop_reading()
    deadline = target.reactor.seconds() + 30
    entry = await control.describe(watch)
    while entry is not None and entry["state"] != "exited":
        if target.reactor.seconds() > deadline:
            break
        await target.sleep(0.05)
        entry = await control.describe(watch)
    result.check(
        entry is not None and entry["state"] == "exited",
        f"stalled+drop: the program did not finish while its client stalled: {entry}",
    )
    connection.start_reading()
    await watch.when_completed()
    _check_dropping(watch, size, result, "stalled+drop")
    result.check(watch.dropped["stdout"] > 0, "stalled+drop: nothing was dropped")
    return "stalled_drop", {
        "program_seconds": watch.completion["duration"],
        "dropped_mib": mib(watch.dropped["stdout"]),
        "delivered_mib": mib(watch.received["stdout"]),
        "dropped_ranges": watch.events["process.dropped"],
    }


def _check_dropping(watch: ProcessWatch, size: int, result: Result, name: str) -> None:
    """
    The only subscriber of a dropping program: completed, every byte either
    delivered (and exact) or reported dropped, in order, and the dropped
    ranges add up to C{dropped_bytes}.
    """
    watch.check_completed("completed", size)
    watch.check_drop_accounting()
    delivered = watch.received["stdout"] + watch.dropped["stdout"]
    result.check(
        delivered == size,
        f"{name}: delivered {watch.received['stdout']} + dropped {watch.dropped['stdout']} "
        f"bytes, not {size}",
    )
    collect(result, [watch])


# -- soak ----------------------------------------------------------------------


async def soak(target: Target, profile: Profile, rng: random.Random) -> Result:
    """
    Steady load for a while (connections come and go, programs stream,
    pause, resume, get cancelled), with the service's memory sampled every
    second: it must not keep growing after the warm-up.
    """
    result = Result("soak")
    sampler = RssSampler(target, 1.0).start()
    began = target.reactor.seconds()
    deadline = began + profile.soak_seconds
    totals: Counter = Counter()
    watches: List[ProcessWatch] = []

    async def worker(number: int) -> None:
        rounds = 0
        while target.reactor.seconds() < deadline:
            connection = await target.connect()
            leave = await _soak_round(connection, number, rounds, profile, totals, watches)
            target.connections.remove(connection)
            await (connection.abort() if leave == "abort" else connection.close())
            rounds += 1

    await gather(worker(n) for n in range(profile.soak_workers))
    elapsed = target.reactor.seconds() - began
    await target.settle(timeout=4 * target.kill_grace + 20)
    sampler.stop()
    collect(result, watches)
    result.figures = {
        "seconds": round(elapsed, 1),
        "workers": profile.soak_workers,
        "connections": totals["connections"],
        "programs": totals["programs"],
        "mib_exact": mib(totals["bytes"]),
    }
    memory = _memory_verdict(sampler.samples, profile, result)
    result.figures.update(memory)
    result.summary = (
        f"{elapsed:.0f} s: {totals['connections']} connections, {totals['programs']} programs, "
        f"{mib(totals['bytes']):g} MiB exact; "
        + (
            f"RSS start {memory['rss_start_mib']} / after warm-up {memory['rss_warm_mib']} / "
            f"max {memory['rss_max_mib']} / end {memory['rss_end_mib']} MiB "
            f"(+{memory['rss_growth_mib']} MiB, margin {profile.rss_margin:g})"
            if memory
            else "RSS not sampled (no service pid)"
        )
    )
    return result


async def _soak_round(
    connection: Connection,
    worker: int,
    number: int,
    profile: Profile,
    totals: Counter,
    watches: List[ProcessWatch],
) -> str:
    """
    One connection's work: a program streamed exactly, beside an endless
    one that is paused, resumed, and cancelled (every third round) or left
    to the disconnect (the others).

    @return: how to leave: C{"close"} or, every fourth round, C{"abort"}.
    """
    totals["connections"] += 1
    size = profile.soak_bytes
    pattern = Pattern(f"soak-{worker}-{number % 10}", size)
    exact = await connection.execute(command=pattern.command(), content=pattern)
    endless = Pattern("soak-endless")
    watch = await connection.execute(
        command=endless.command(), on_full="drop", content=endless, drops=True
    )
    watches += [exact, watch]
    totals["programs"] += 2
    for kind in ("PAUSE", "RESUME"):
        await call_patiently(
            connection, "control", {"type": kind, "process_id": watch.process_id}
        )
    await exact.when_completed()
    exact.check_completed("completed", size)
    exact.check_exact(size)
    totals["bytes"] += exact.received["stdout"]
    if number % 3 == 0:
        await connection.control("CANCEL", watch)
        await within(
            watch.when_completed(),
            _ending(connection.target),
            f"no process.completed for {watch.process_id[:8]} after CANCEL",
            connection.target.reactor,
        )
        watch.check_completed("cancelled")
    else:
        watches.remove(watch)
    return "abort" if number % 4 == 3 else "close"


def _memory_verdict(samples: List[tuple], profile: Profile, result: Result) -> Dict[str, Any]:
    """
    Start, after-warm-up, max and end RSS, and the growth since the warm-up
    (a problem beyond the profile's margin).
    """
    if len(samples) < 3:
        return {}
    warm = [rss for t, rss in samples if profile.soak_warmup - 3 <= t <= profile.soak_warmup]
    warm_rss = statistics.median(warm or [samples[0][1]])
    end_rss = statistics.median(rss for _, rss in samples[-5:])
    growth = end_rss - warm_rss
    after = [(t, rss) for t, rss in samples if t >= profile.soak_warmup]
    slope = None
    if len(after) >= 3:
        mean_t = statistics.mean(t for t, _ in after)
        mean_r = statistics.mean(r for _, r in after)
        spread_t = sum((t - mean_t) ** 2 for t, _ in after)
        if spread_t:
            slope = sum((t - mean_t) * (r - mean_r) for t, r in after) / spread_t * 60
    result.check(
        growth <= profile.rss_margin,
        f"RSS grew {growth:.1f} MiB after the warm-up ({warm_rss:.1f} -> {end_rss:.1f} MiB), "
        f"more than the margin of {profile.rss_margin:g} MiB",
    )
    return {
        "rss_samples": len(samples),
        "rss_start_mib": round(samples[0][1], 1),
        "rss_warm_mib": round(warm_rss, 1),
        "rss_max_mib": round(max(rss for _, rss in samples), 1),
        "rss_end_mib": round(end_rss, 1),
        "rss_growth_mib": round(growth, 1),
        "rss_slope_mib_per_min": round(slope, 2) if slope is not None else None,
        "rss_series_mib": _series(samples),
    }


def _series(samples: List[tuple], points: int = 31) -> List[list]:
    """
    At most C{points} samples, evenly spread, as C{[seconds, MiB]}.
    """
    step = max(1, -(-len(samples) // points))
    chosen = samples[::step]
    if chosen[-1] is not samples[-1]:
        chosen.append(samples[-1])
    return [[round(t), round(rss, 1)] for t, rss in chosen]


SCENARIOS: Dict[str, Scenario] = {
    "sessions": sessions,
    "toggles": toggles,
    "storm": storm,
    "cancels": cancels,
    "slow": slow,
    "soak": soak,
}
