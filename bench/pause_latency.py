"""
PAUSE and RESUME round trips while many programs stream at full speed.

PROGRAMS copies of `yes LINE` (100-byte lines) are started over CONNECTIONS
connections, which keep reading everything.  Then ROUND_TRIPS PAUSE/RESUME
pairs (`control` requests) go to the programs in turn, and the time from
sending each request to reading its reply is measured:

  streaming  the requests go over the first streaming connection, so each
             reply queues behind that connection's output;
  separate   the requests go over one more connection that streams nothing,
             which isolates the service's own delay.

Programs run with on_full "block" by default (ccx's default): every byte they
write is read, encoded and sent, so the service, its sockets and the client
are as busy as the machine allows while the round trips are measured.  With
"drop" the service reads the pipes flat out and drops what a client cannot
take.
"""

import argparse
import asyncio
import statistics
import sys
import time
from typing import Dict, List

from _report import percentile, print_report, rounded
from _service import Service, check_python, unwind_on_signals
from _wsclient import AsyncClient

from ccx.testing.machine import machine
from ccx.testing.proc import MIB, cpu_seconds
from ccx.testing.service import default_python

LINE = "y" * 99


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--programs", type=int, default=50, help="streaming programs (50)")
    parser.add_argument("--connections", type=int, default=5,
                        help="connections the programs are spread over (5)")
    parser.add_argument("--round-trips", type=int, default=250,
                        help="PAUSE and RESUME requests each, per mode (250)")
    parser.add_argument("--gap", type=float, default=0.01,
                        help="seconds between one round trip and the next (0.01)")
    parser.add_argument("--warmup", type=float, default=2.0,
                        help="seconds of streaming before measuring (2)")
    parser.add_argument("--on-full", choices=("block", "drop"), default="block",
                        help="the programs' on_full (block)")
    parser.add_argument("--mode", choices=("streaming", "separate", "both"), default="both",
                        help="where the control requests go (both)")
    parser.add_argument("--python", default=default_python(), help="python that runs ccx")
    return parser.parse_args()


class Reader:
    """
    Counts what one streaming connection receives, without decoding output.
    """

    def __init__(self, client: AsyncClient) -> None:
        self.client = client
        self.frames = 0
        self.completed = 0
        client.on_output = self._output
        client.on_notification = self._notification

    def _output(self, payload: bytes) -> None:
        self.frames += 1

    def _notification(self, message: Dict) -> None:
        if message["method"] == "process.completed":
            self.completed += 1


async def start_programs(args: argparse.Namespace, port: int) -> tuple:
    readers = [Reader(await AsyncClient.connect(port)) for _ in range(args.connections)]
    process_ids = []
    for index in range(args.programs):
        reader = readers[index % len(readers)]
        result = await reader.client.call(
            "execute", {"command": ["yes", LINE], "on_full": args.on_full}
        )
        process_ids.append(result["process_id"])
    return readers, process_ids


async def output_bytes(client: AsyncClient) -> Dict[str, int]:
    listing = await client.call("list", {})
    return {p["process_id"]: p["stdout_bytes"] for p in listing["processes"]}


async def round_trips(
    client: AsyncClient, process_ids: List[str], count: int, gap: float
) -> Dict[str, List[float]]:
    times: Dict[str, List[float]] = {"PAUSE": [], "RESUME": []}
    for index in range(count):
        process_id = process_ids[index % len(process_ids)]
        for kind in ("PAUSE", "RESUME"):
            began = time.perf_counter()
            result = await client.call("control", {"type": kind, "process_id": process_id})
            times[kind].append(1000 * (time.perf_counter() - began))
            assert result["status"] == kind.lower() + "d", result
            await asyncio.sleep(gap)
    return times


async def measure_mode(
    mode: str, args: argparse.Namespace, service: Service, readers, observer, process_ids
) -> Dict:
    client = readers[0].client if mode == "streaming" else observer
    before = await output_bytes(observer)
    service_cpu = cpu_seconds(service.pid)
    client_cpu = time.process_time()
    began = time.perf_counter()
    times = await round_trips(client, process_ids, args.round_trips, args.gap)
    elapsed = time.perf_counter() - began
    client_cpu = time.process_time() - client_cpu
    service_cpu = cpu_seconds(service.pid) - service_cpu
    after = await output_bytes(observer)
    rates = [(after[p] - before[p]) / MIB / elapsed for p in process_ids]
    result = {"mode": mode, "seconds": rounded(elapsed, 2)}
    for kind, values in times.items():
        result[kind] = {
            "count": len(values),
            "p50_ms": rounded(percentile(values, 0.50), 3),
            "p99_ms": rounded(percentile(values, 0.99), 3),
            "max_ms": rounded(max(values), 3),
            "mean_ms": rounded(statistics.mean(values), 3),
        }
    result.update(
        streamed_mib_per_s=rounded(sum(rates), 1),
        slowest_program_mib_per_s=rounded(min(rates), 2),
        fastest_program_mib_per_s=rounded(max(rates), 2),
        service_cpu_pct=rounded(100 * service_cpu / elapsed, 1),
        client_cpu_pct=rounded(100 * client_cpu / elapsed, 1),
    )
    return result


async def cancel_all(observer: AsyncClient, readers, process_ids, timeout=30.0) -> None:
    """
    CANCEL every program and wait until each has completed, while its
    subscriber still reads.  (Closing the connections instead would leave
    on_full "block" programs unfinished in ccx 0.1.0: see docs/performance.md.)
    """
    await asyncio.gather(
        *(observer.call("control", {"type": "CANCEL", "process_id": p}) for p in process_ids)
    )
    deadline = time.monotonic() + timeout
    while sum(r.completed for r in readers) < len(process_ids):
        if time.monotonic() > deadline:
            print("warning: not every cancelled program completed", file=sys.stderr)
            return
        await asyncio.sleep(0.05)


async def run(args: argparse.Namespace, service: Service) -> List[Dict]:
    readers, process_ids = await start_programs(args, service.port)
    observer = await AsyncClient.connect(service.port)
    try:
        await asyncio.sleep(args.warmup)
        modes = ("streaming", "separate") if args.mode == "both" else (args.mode,)
        results = []
        for mode in modes:
            results.append(
                await measure_mode(mode, args, service, readers, observer, process_ids)
            )
        ended = sum(r.completed for r in readers)
        if ended:
            raise RuntimeError(f"{ended} programs ended while they should stream")
        await cancel_all(observer, readers, process_ids)
        return results
    finally:
        for client in [observer] + [r.client for r in readers]:
            client.close()


def show(args: argparse.Namespace, results: List[Dict]) -> None:
    rows = [
        ("setup", f"{args.programs} x `yes LINE` (100-byte lines), on_full {args.on_full}, "
                  f"over {args.connections} connections"),
    ]
    for r in results:
        m = r["mode"]
        for kind in ("PAUSE", "RESUME"):
            k = r[kind]
            rows.append((f"[{m}] {kind} round trip",
                         f"p50 {k['p50_ms']} ms, p99 {k['p99_ms']} ms, max {k['max_ms']} ms "
                         f"({k['count']} requests)"))
        rows.append((f"[{m}] streaming meanwhile",
                     f"{r['streamed_mib_per_s']} MiB/s in all; per program "
                     f"{r['slowest_program_mib_per_s']}..{r['fastest_program_mib_per_s']} MiB/s"))
        rows.append((f"[{m}] CPU", f"service {r['service_cpu_pct']}%, "
                                   f"client {r['client_cpu_pct']}% of a core"))
    print_report(
        "ccx PAUSE/RESUME latency under load",
        rows,
        {
            "benchmark": "pause_latency",
            "machine": machine(),
            "programs": args.programs,
            "connections": args.connections,
            "on_full": args.on_full,
            "gap_s": args.gap,
            "results": results,
        },
    )


def main() -> int:
    args = parse_args()
    unwind_on_signals()
    check_python(args.python)
    options = ["--max-processes", str(max(64, args.programs + 8))]
    with Service(allow=["yes"], options=options, python=args.python) as service:
        results = asyncio.run(run(args, service))
    show(args, results)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
