"""
Durable programs (durable: true) at scale, against a real service and its
keeper:

  1. N durable programs (100) each print M MiB (10) and stay running (the
     execute -> process.started latency of each is noted: they start while
     the earlier ones print).  Then, with those N there, --probes more
     durable programs (50, each `true`) are started one after the other:
     their execute -> process.started latency is the figure (p50, p90).
  2. Service-side memory: PSS of ccx and of the keeper (every helper
     process), in total and per program.
  3. The service is stopped (SIGTERM: durable programs run on) and started
     again on the same state dir: the time until list shows every program
     taken back with its pid, against a start with an empty state dir.
  4. Throughput: one program writing --throughput-mib MiB (256) to one
     client reading binary frames, plain and durable, on that service.

Everything is cancelled and stopped at the end, the keeper included.
"""

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from typing import Callable, Dict, List

from _report import percentile, print_report, rounded
from _service import Service, check_python, raise_fd_limit, unwind_on_signals
from _streams import StreamCheck
from _wsclient import Client

from ccx.testing.machine import machine
from ccx.testing.proc import MIB, keeper_pids
from ccx.testing.service import default_python

PRINT = "head -c {size} /dev/zero | tr '\\000' a; exec sleep 3600"
BULK = "head -c {size} /dev/zero | tr '\\000' a"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--programs", type=int, default=100, help="durable programs (100)")
    parser.add_argument("--mib", type=int, default=10, help="MiB each prints (10)")
    parser.add_argument(
        "--rounds", type=int, default=3, help="plain and durable throughput runs, alternated (3)"
    )
    parser.add_argument(
        "--probes", type=int, default=50, help="programs started to measure the latency (50)"
    )
    parser.add_argument(
        "--throughput-mib", type=int, default=256, help="MiB of the throughput runs (256)"
    )
    parser.add_argument("--python", default=default_python(), help="python that runs ccx")
    return parser.parse_args()


def pss_mib(pid: int) -> float:
    """
    The proportional set size of process C{pid}, in MiB: its private
    memory plus its share of what it shares.
    """
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1]) / 1024
    raise ValueError(f"no Pss for {pid}")


def wait(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """
    Look again every 10 ms until C{condition()} holds; the seconds it took.
    """
    began = time.perf_counter()
    while not condition():
        if time.perf_counter() - began > timeout:
            raise RuntimeError(f"{what}: not within {timeout} s")
        time.sleep(0.01)
    return time.perf_counter() - began


def service(state_dir: str, python: str) -> Service:
    return Service(
        allow=["sh"],
        options=["--state-dir", state_dir, "--max-processes", "1024", "--log-level", "warn"],
        python=python,
    )


def start_programs(client: Client, count: int, command: str) -> List[float]:
    """
    Start C{count} durable programs running C{command} one after the
    other; the latency of each from sending execute to receiving its
    process.started.
    """
    started: Dict[str, float] = {}
    client.on_notification = lambda m: (
        started.setdefault(m["params"]["process_id"], time.perf_counter())
        if m["method"] == "process.started"
        else None
    )
    latencies = []
    for _ in range(count):
        began = time.perf_counter()
        result = client.call(
            "execute",
            {"command": command, "shell": True, "durable": True, "encoding": "binary"},
        )
        process_id = result["process_id"]
        client.run_until(lambda: process_id in started)
        latencies.append(started[process_id] - began)
        # Its output is the keeper's and the journal's from now on.
        client.call("detach", {"process_id": process_id})
    return latencies


def journaled(state_dir: str, size: int) -> bool:
    """
    Whether every program's journal holds C{size} bytes of its stdout
    (its records say how far each stream got).
    """
    folder = os.path.join(state_dir, "programs")
    for name in os.listdir(folder):
        stream = os.path.join(folder, name, "stdout")
        held = sum(
            os.path.getsize(os.path.join(stream, n)) for n in os.listdir(stream) if n.endswith(".out")
        )
        if held < size:
            return False
    return True



def adopted(client: Client, count: int) -> bool:
    processes = client.call("list", {})["processes"]
    running = [p for p in processes if p["durable"] and p["state"] == "running"]
    return len(running) >= count and all(p["pid"] is not None for p in running)


def throughput(port: int, size: int, durable: bool) -> dict:
    check = StreamCheck(decode=False)
    with Client(port, path="/ws") as client:
        client.on_binary = check.frame
        client.on_notification = check.notification
        began = time.perf_counter()
        client.call(
            "execute",
            {
                "command": BULK.format(size=size),
                "shell": True,
                "durable": durable,
                "encoding": "binary",
            },
        )
        client.run_until(lambda: check.done)
        elapsed = time.perf_counter() - began
    return {
        "durable": durable,
        "seconds": rounded(elapsed, 3),
        "mib_per_s": rounded(size / MIB / elapsed, 1),
        "problems": check.problems(size),
    }


def cancel_all(client: Client) -> None:
    for process in client.call("list", {})["processes"]:
        if process["state"] != "exited":
            client.call("control", {"type": "CANCEL", "process_id": process["process_id"]})
    wait(
        lambda: all(p["state"] == "exited" for p in client.call("list", {})["processes"]),
        60,
        "every program ended",
    )


def main() -> int:
    args = parse_args()
    unwind_on_signals()
    check_python(args.python)
    raise_fd_limit(4 * args.programs + 1024)
    size = args.mib * MIB
    state_dir = tempfile.mkdtemp(prefix="ccx-bench-durable-")
    empty_dir = tempfile.mkdtemp(prefix="ccx-bench-empty-")
    second = None
    try:
        with service(state_dir, args.python) as first:
            with Client(first.port, path="/ws") as client:
                loaded = start_programs(client, args.programs, PRINT.format(size=size))
                wait(lambda: journaled(state_dir, size), 300, "every program printed")
                latencies = start_programs(client, args.probes, "true")
                [keeper] = keeper_pids(state_dir)
                ccx_pss, keeper_pss = pss_mib(first.pid), pss_mib(keeper)
        # The first service has stopped (SIGTERM): its programs run on.  A
        # start with nothing to take back, for comparison (the second one,
        # with warm caches, as the start that follows is).
        for _ in range(2):
            began = time.perf_counter()
            with service(empty_dir, args.python):
                baseline_start = time.perf_counter() - began
        began = time.perf_counter()
        second = service(state_dir, args.python)
        second.start()
        with Client(second.port, path="/ws") as client:
            wait(lambda: adopted(client, args.programs), 60, "every program taken back")
            readopt_start = time.perf_counter() - began
            runs = [
                throughput(second.port, args.throughput_mib * MIB, durable=durable)
                for _ in range(args.rounds)
                for durable in (False, True)
            ]
            cancel_all(client)
        second.stop()
        second = None
        wait(lambda: not keeper_pids(state_dir), 30, "the keeper exited")
    finally:
        if second is not None:
            second.stop()
        shutil.rmtree(state_dir, ignore_errors=True)
        shutil.rmtree(empty_dir, ignore_errors=True)

    total_pss = ccx_pss + keeper_pss
    plain_rates = [r["mib_per_s"] for r in runs if not r["durable"]]
    durable_rates = [r["mib_per_s"] for r in runs if r["durable"]]
    plain_rate, durable_rate = statistics.median(plain_rates), statistics.median(durable_rates)
    result = {
        "programs": args.programs,
        "mib_each": args.mib,
        "started_p50_ms": rounded(1000 * statistics.median(latencies), 2),
        "started_p90_ms": rounded(1000 * percentile(latencies, 0.9), 2),
        "started_max_ms": rounded(1000 * max(latencies), 2),
        "started_while_printing_p50_ms": rounded(1000 * statistics.median(loaded), 2),
        "started_while_printing_max_ms": rounded(1000 * max(loaded), 2),
        "ccx_pss_mib": rounded(ccx_pss, 1),
        "keeper_pss_mib": rounded(keeper_pss, 1),
        "pss_per_program_mib": rounded(total_pss / args.programs, 2),
        "start_empty_s": rounded(baseline_start, 2),
        "start_readopting_s": rounded(readopt_start, 2),
        "readoption_s": rounded(readopt_start - baseline_start, 2),
        "plain_mib_per_s": plain_rate,
        "durable_mib_per_s": durable_rate,
        "plain_runs": plain_rates,
        "durable_runs": durable_rates,
        "durable_vs_plain": rounded(durable_rate / plain_rate, 2),
        "problems": [p for r in runs for p in r["problems"]],
    }
    rows = [
        ("programs", f"{args.programs} durable, {args.mib} MiB each"),
        ("execute -> process.started", f"p50 {result['started_p50_ms']} ms, p90 "
         f"{result['started_p90_ms']} ms, max {result['started_max_ms']} ms "
         f"({args.probes} more, with the {args.programs} there)"),
        ("  while the others print", f"p50 {result['started_while_printing_p50_ms']} ms, "
         f"max {result['started_while_printing_max_ms']} ms (the first starts the keeper)"),
        ("PSS", f"ccx {result['ccx_pss_mib']} MiB + keeper {result['keeper_pss_mib']} MiB = "
         f"{result['pss_per_program_mib']} MiB per program"),
        ("start, empty state dir", f"{result['start_empty_s']} s (twistd until /health)"),
        ("start, taking back all", f"{result['start_readopting_s']} s until list shows "
         f"every pid: re-adoption {result['readoption_s']} s"),
        ("throughput (medians)", f"plain {result['plain_mib_per_s']} MiB/s, durable "
         f"{result['durable_mib_per_s']} MiB/s ({result['durable_vs_plain']}x); runs: "
         f"plain {plain_rates}, durable {durable_rates}"),
        ("all bytes, in order", "yes" if not result["problems"]
         else "NO: " + "; ".join(result["problems"])),
    ]
    print_report(
        "ccx durable programs",
        rows,
        {"benchmark": "durable", "machine": machine(), "result": result},
    )
    return 0 if not result["problems"] else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
