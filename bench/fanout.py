"""
Many programs, each watched by several connections: total MiB/s delivered,
the service's memory, and a check of every byte at every subscriber.

PROGRAMS programs each write the same MIB-MiB text file (64-byte lines).  Each
is started by one connection (execute, on_full "block", stdin open) and
attached by WATCHERS-1 more (attach, on_full "block", from offset 0), so that
there are PROGRAMS x WATCHERS connections.  A program waits for a line on its
stdin before it writes anything, so that no subscriber misses its start; once
all are subscribed, every program is released at once (write, eof) and the
clock runs until every subscriber has its process.completed.

Every subscriber decodes every chunk, checks that offsets are contiguous and
that the CRC-32 and length of what it received equal the file's.
"""

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import zlib
from typing import List

from _report import percentile, print_report, rounded
from _service import Service, check_python, raise_fd_limit, unwind_on_signals
from _streams import StreamCheck
from _wsclient import AsyncClient

from ccx.testing.machine import machine
from ccx.testing.proc import MIB, cpu_seconds, peak_rss_mib, rss_mib
from ccx.testing.service import default_python

LINE_BYTES = 64


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--programs", type=int, default=200, help="programs (200)")
    parser.add_argument("--watchers", type=int, default=5,
                        help="connections per program, the starter included (5)")
    parser.add_argument("--mib", type=float, default=2.0, help="MiB each program writes (2)")
    parser.add_argument("--concurrency", type=int, default=50,
                        help="connections opened, or programs set up, at once (50)")
    parser.add_argument("--timeout", type=float, default=300.0,
                        help="seconds to wait for every subscriber to be done (300)")
    parser.add_argument("--python", default=default_python(), help="python that runs ccx")
    return parser.parse_args()


def write_data_file(directory: str, size: int) -> tuple:
    """
    A file of C{size} bytes of numbered 64-byte lines; its path and CRC-32.
    """
    lines = []
    total = 0
    number = 0
    while total < size:
        line = f"fanout line {number:09d} ".ljust(LINE_BYTES - 1, "abcdefgh"[number % 8]) + "\n"
        lines.append(line)
        total += len(line)
        number += 1
    data = "".join(lines).encode("ascii")[:size]
    path = os.path.join(directory, "output.txt")
    with open(path, "wb") as f:
        f.write(data)
    return path, zlib.crc32(data)


class Subscriber:
    """
    One connection watching one program.
    """

    def __init__(self, client: AsyncClient) -> None:
        self.client = client
        self.check = StreamCheck(decode=True, checksum=True)
        self.completed_at = None
        client.on_output = self.check.output
        client.on_notification = self._notification

    def _notification(self, message: dict) -> None:
        self.check.notification(message)
        if self.check.done and self.completed_at is None:
            self.completed_at = time.perf_counter()


async def bounded(limit: int, coroutines) -> list:
    """
    Run C{coroutines}, at most C{limit} at a time; their results in order.
    """
    semaphore = asyncio.Semaphore(limit)

    async def one(coroutine):
        async with semaphore:
            return await coroutine

    return await asyncio.gather(*(one(c) for c in coroutines))


async def connect_all(port: int, count: int, limit: int) -> List[Subscriber]:
    clients = await bounded(limit, (AsyncClient.connect(port) for _ in range(count)))
    return [Subscriber(client) for client in clients]


async def set_up(group: List[Subscriber], command: str) -> str:
    """
    Start the program from the group's first connection, attach the others.
    """
    starter, watchers = group[0], group[1:]
    result = await starter.client.call(
        "execute", {"command": command, "shell": True, "stdin": True}
    )
    process_id = result["process_id"]
    for watcher in watchers:
        attached = await watcher.client.call(
            "attach", {"process_id": process_id, "on_full": "block"}
        )
        assert attached["offsets"]["stdout"] == 0, attached
    return process_id


async def run(args: argparse.Namespace, service: Service, path: str) -> tuple:
    """
    Connect, subscribe and stream; the figures, and each subscriber's check.
    """
    total = args.programs * args.watchers
    began = time.perf_counter()
    subscribers = await connect_all(service.port, total, args.concurrency)
    figures = {"connect_s": rounded(time.perf_counter() - began, 2)}
    try:
        groups = [subscribers[i : i + args.watchers] for i in range(0, total, args.watchers)]
        began = time.perf_counter()
        command = f"read go && exec cat {path}"
        process_ids = await bounded(args.concurrency, (set_up(g, command) for g in groups))
        figures["subscribe_s"] = rounded(time.perf_counter() - began, 2)
        figures.update(await stream(service, groups, process_ids, args.timeout))
        return figures, [s.check for s in subscribers]
    finally:
        for subscriber in subscribers:
            subscriber.client.close()


async def stream(service: Service, groups: list, process_ids: list, timeout: float) -> dict:
    """
    Release every program at once and wait until every subscriber is done.
    """
    subscribers = [s for group in groups for s in group]
    idle_rss = peak_rss = rss_mib(service.pid)
    service_cpu = cpu_seconds(service.pid)
    client_cpu = time.process_time()
    released = time.perf_counter()
    await asyncio.gather(*(
        group[0].client.call("write", {"process_id": p, "data": "go\n", "eof": True})
        for group, p in zip(groups, process_ids)
    ))
    while not all(s.check.done for s in subscribers):
        if time.perf_counter() - released > timeout:
            waiting = sum(not s.check.done for s in subscribers)
            raise RuntimeError(f"{waiting} subscribers still waiting after {timeout} s")
        await asyncio.sleep(0.05)
        peak_rss = max(peak_rss, rss_mib(service.pid))
    elapsed = time.perf_counter() - released
    return {
        "stream_s": rounded(elapsed, 2),
        "service_cpu_pct": rounded(100 * (cpu_seconds(service.pid) - service_cpu) / elapsed, 1),
        "client_cpu_pct": rounded(100 * (time.process_time() - client_cpu) / elapsed, 1),
        "service_rss_before_mib": rounded(idle_rss, 1),
        "service_rss_peak_sampled_mib": rounded(peak_rss, 1),
        "completion_s": [s.completed_at - released for s in subscribers],
        "received_bytes": sum(s.check.bytes for s in subscribers),
        "wire_bytes": sum(s.client.reader.wire_bytes for s in subscribers),
    }


def verify(checks: List[StreamCheck], size: int, crc: int) -> list:
    problems = []
    for index, check in enumerate(checks):
        found = check.problems(size)
        if check.crc != crc:
            found.append("CRC-32 differs")
        if found:
            problems.append(f"subscriber {index}: " + "; ".join(found))
    return problems


def main() -> int:
    args = parse_args()
    unwind_on_signals()
    check_python(args.python)
    total = args.programs * args.watchers
    fd_limit = raise_fd_limit(2 * total + 4 * args.programs + 256)
    size = int(args.mib * MIB)
    options = [
        "--max-processes", str(max(256, args.programs)),
        "--max-connections", str(max(2000, total)),
    ]
    with tempfile.TemporaryDirectory(prefix="ccx-fanout-") as directory:
        path, crc = write_data_file(directory, size)
        with Service(allow=["sh"], options=options, python=args.python) as service:
            result, checks = asyncio.run(run(args, service, path))
            memory = {"VmRSS": rss_mib(service.pid), "VmHWM": peak_rss_mib(service.pid)}
    problems = verify(checks, size, crc)
    show(args, result, memory, problems, fd_limit)
    return 0 if not problems else 1


def show(args, result: dict, memory: dict, problems: list, fd_limit: int) -> None:
    total = args.programs * args.watchers
    delivered = result["received_bytes"] / MIB
    completions = result.pop("completion_s")
    record = dict(
        result,
        programs=args.programs,
        watchers=args.watchers,
        connections=total,
        mib_per_program=args.mib,
        delivered_mib=rounded(delivered, 1),
        wire_mib=rounded(result.pop("wire_bytes") / MIB, 1),
        mib_per_s=rounded(delivered / result["stream_s"], 1),
        first_done_s=rounded(min(completions), 2),
        median_done_s=rounded(statistics.median(completions), 2),
        p99_done_s=rounded(percentile(completions, 0.99), 2),
        service_peak_rss_mib=rounded(memory["VmHWM"], 1),
        service_rss_end_mib=rounded(memory["VmRSS"], 1),
        all_bytes_ok=not problems,
        problems=problems[:10],
        machine=machine(),
        benchmark="fanout",
    )
    rows = [
        ("setup", f"{args.programs} programs x {args.mib} MiB, each watched by "
                  f"{args.watchers} connections = {total} connections (fd limit {fd_limit})"),
        ("connect", f"{record['connect_s']} s to open {total} WebSockets"),
        ("execute + attach", f"{record['subscribe_s']} s"),
        ("streaming", f"{record['stream_s']} s for {record['delivered_mib']} MiB delivered "
                      f"({record['wire_mib']} MiB on the wire)"),
        ("delivered", f"{record['mib_per_s']} MiB/s in all"),
        ("subscribers done after", f"first {record['first_done_s']} s, median "
                                   f"{record['median_done_s']} s, p99 {record['p99_done_s']} s"),
        ("service RSS", f"{record['service_rss_before_mib']} MiB subscribed and idle, "
                        f"{record['service_rss_peak_sampled_mib']} MiB peak sampled while "
                        f"streaming, VmHWM {record['service_peak_rss_mib']} MiB"),
        ("CPU while streaming", f"service {record['service_cpu_pct']}%, "
                                f"client {record['client_cpu_pct']}% of a core"),
        ("every byte at every subscriber", "yes (offsets contiguous, length and CRC-32 equal)"
         if not problems else f"NO: {len(problems)} subscribers wrong, e.g. {problems[0]}"),
    ]
    print_report("ccx fan-out", rows, record)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
