"""
What starting a program costs: the round trip of a program that does nothing,
and a burst of one-shot clients against the process limit.

Parts (each against a fresh service):
  roundtrip  one client runs `true` N times, one after the other: the time
             from sending `execute` to receiving its `process.completed`
             (after a warm-up)
  burst      C clients connect, then all at once each run `echo` and close
             once its `process.completed` came, with --max-processes M; a
             separate process polls /health all along.  Reported: refusals
             (-32001), the most processes /health showed live, the most live
             (non-zombie) children of the service seen in /proc, and
             /health's latency: all along, and split by what the clients
             were doing while a poll was waiting (connecting: 300
             WebSocket handshakes at once; executing: from the go to the
             last completion).

Run it against another checkout with CCX_CHECKOUT=/path (the service comes
from there, the client from here) to compare.
"""

import argparse
import asyncio
import http.client
import json
import multiprocessing
import sys
import threading
import time
from typing import Dict, List, Optional, Tuple

from _report import percentile, print_report, rounded
from _service import Service, check_python, raise_fd_limit, unwind_on_signals
from _wsclient import AsyncClient, Client, RPCError

from ccx.protocol import LIMIT_EXCEEDED
from ccx.testing.machine import machine
from ccx.testing.ports import HOST
from ccx.testing.proc import children_of, cpu_seconds
from ccx.testing.service import ServiceProcess, default_python

# How long the service may take to have no live process after a burst.
SETTLE_TIMEOUT = 30.0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--part", choices=("roundtrip", "burst", "both"), default="both")
    parser.add_argument("--runs", type=int, default=1000, help="round trips measured (1000)")
    parser.add_argument("--warmup", type=int, default=100, help="round trips first (100)")
    parser.add_argument("--clients", type=int, default=300, help="one-shot clients (300)")
    parser.add_argument("--max-processes", type=int, default=256, help="the limit (256)")
    parser.add_argument("--bursts", type=int, default=3, help="bursts in a row (3)")
    parser.add_argument(
        "--health-interval", type=float, default=0.01, help="seconds between /health polls (0.01)"
    )
    parser.add_argument("--python", default=default_python(), help="python that runs ccx")
    parser.add_argument(
        "--service-option",
        action="append",
        default=[],
        metavar="OPTION",
        help="one more twistd ccx option for the service, e.g. --service-option=--no-journal "
        "(repeatable): to see what a feature costs",
    )
    return parser.parse_args()


def ms(seconds: float) -> float:
    return rounded(1000 * seconds, 2)


def latency_figures(values: List[float]) -> dict:
    return {
        "count": len(values),
        "p50_ms": ms(percentile(values, 0.5)),
        "p90_ms": ms(percentile(values, 0.9)),
        "p99_ms": ms(percentile(values, 0.99)),
        "max_ms": ms(max(values)),
    }


# -- round trip ------------------------------------------------------------


def roundtrip(args: argparse.Namespace) -> dict:
    times: List[float] = []
    # Faster than the default request rate limit allows one connection.
    options = ["--max-requests", "100000", *args.service_option]
    with Service(allow=["true"], python=args.python, options=options) as service:
        with Client(service.port, path="/ws") as client:
            completed = set()

            def notification(message: dict) -> None:
                if message["method"] == "process.completed":
                    completed.add(message["params"]["process_id"])

            client.on_notification = notification
            service_cpu = 0.0
            for run in range(args.warmup + args.runs):
                if run == args.warmup:
                    service_cpu = cpu_seconds(service.pid)
                began = time.perf_counter()
                process_id = client.call("execute", {"command": ["true"]})["process_id"]
                client.run_until(lambda: process_id in completed)
                if run >= args.warmup:
                    times.append(time.perf_counter() - began)
                completed.discard(process_id)
            service_cpu = cpu_seconds(service.pid) - service_cpu
    return {
        "part": "roundtrip",
        "runs": args.runs,
        "warmup": args.warmup,
        **latency_figures(times),
        "service_cpu_ms_per_run": ms(service_cpu / args.runs),
    }


# -- burst ------------------------------------------------------------------


def poll_health(port: int, interval: float, stop, started, results) -> None:
    """
    In a process of its own (the clients' CPU must not count): GET /health
    every C{interval} until C{stop} is set; send C{None} to C{started}
    after the first answer, and the latencies and the most processes it
    showed to C{results} at the end.
    """
    # (when it was sent, on the machine's monotonic clock, how long it took)
    latencies: List[Tuple[float, float]] = []
    most = 0
    failures = 0
    while not stop.is_set():
        began = time.monotonic()
        try:
            connection = http.client.HTTPConnection(HOST, port, timeout=10)
            connection.request("GET", "/health")
            body = connection.getresponse().read()
            connection.close()
            latencies.append((began, time.monotonic() - began))
            most = max(most, json.loads(body).get("processes", 0))
        except (OSError, ValueError, http.client.HTTPException):
            failures += 1
        else:
            if started is not None:
                started.send(None)
                started = None
        time.sleep(interval)
    results.send({"latencies": latencies, "most_processes": most, "failures": failures})


class ChildCounter(threading.Thread):
    """
    Samples the service's live (non-zombie) children from /proc: whether a
    refusal came while the limit's worth of programs really ran.
    """

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.most = 0
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            self.most = max(self.most, len(children_of(self.pid)))
            time.sleep(0.002)


def idle(service: ServiceProcess) -> bool:
    """
    Whether /health shows no live process.
    """
    return service.health()["processes"] == 0


async def settled(service: ServiceProcess) -> None:
    """
    Wait until L{idle}.
    """
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while not idle(service):
        if time.monotonic() > deadline:
            raise RuntimeError(f"processes still live {SETTLE_TIMEOUT:g} s after a burst")
        await asyncio.sleep(0.01)


async def one_shot(client: AsyncClient, go: asyncio.Event, outcome: Dict[str, list]) -> None:
    completed = asyncio.get_running_loop().create_future()

    def notification(message: dict) -> None:
        if message["method"] == "process.completed" and not completed.done():
            completed.set_result(message["params"])

    client.on_notification = notification
    await go.wait()
    began = time.perf_counter()
    try:
        await client.call("execute", {"command": ["echo", "hi"]})
        await completed
        outcome["times"].append(time.perf_counter() - began)
    except RPCError as e:
        outcome["refused" if e.code == LIMIT_EXCEEDED else "errors"].append(str(e))
    finally:
        client.close()


async def bursts(service: ServiceProcess, args: argparse.Namespace) -> Dict[str, list]:
    outcome: Dict[str, list] = {
        "times": [], "refused": [], "errors": [], "burst_s": [], "connecting": [], "executing": []
    }
    for _ in range(args.bursts):
        connecting = time.monotonic()
        clients = await asyncio.gather(
            *(AsyncClient.connect(service.port, path="/ws") for _ in range(args.clients))
        )
        outcome["connecting"].append((connecting, time.monotonic()))
        go = asyncio.Event()
        tasks = [asyncio.ensure_future(one_shot(c, go, outcome)) for c in clients]
        # Every task runs up to go.wait() before this one goes on.
        await asyncio.sleep(0)
        began = time.perf_counter()
        executing = time.monotonic()
        go.set()
        await asyncio.gather(*tasks)
        outcome["executing"].append((executing, time.monotonic()))
        outcome["burst_s"].append(time.perf_counter() - began)
        await settled(service)
    return outcome


def during(polls: List[Tuple[float, float]], windows: List[Tuple[float, float]]) -> Optional[dict]:
    """
    The figures of the polls that were waiting for an answer at some time
    inside one of C{windows}.
    """
    took = [
        latency
        for sent, latency in polls
        if any(sent <= end and sent + latency >= start for start, end in windows)
    ]
    return latency_figures(took) if took else None


def burst(args: argparse.Namespace) -> dict:
    raise_fd_limit(4 * args.clients + 256)
    options = ["--max-processes", str(args.max_processes), *args.service_option]
    with Service(allow=["echo"], python=args.python, options=options) as service:
        context = multiprocessing.get_context("spawn")
        stop = context.Event()
        receive, send = context.Pipe(duplex=False)
        first, started = context.Pipe(duplex=False)
        poller = context.Process(
            target=poll_health, args=(service.port, args.health_interval, stop, started, send)
        )
        poller.start()
        counter = ChildCounter(service.pid)
        counter.start()
        try:
            # The poller is under way once it has answered once.
            if not first.poll(30):
                raise RuntimeError("the /health poller did not start")
            first.recv()
            outcome = asyncio.run(bursts(service, args))
        finally:
            stop.set()
            counter.stopping.set()
            health: Optional[dict] = receive.recv() if receive.poll(30) else None
            poller.join(30)
            if poller.is_alive():
                poller.terminate()
                poller.join()
            counter.join(5)
    health = health or {"latencies": [(0.0, 0.0)], "most_processes": None, "failures": -1}
    polls = health["latencies"]
    return {
        "part": "burst",
        "clients": args.clients,
        "bursts": args.bursts,
        "max_processes": args.max_processes,
        "completed": len(outcome["times"]),
        "refused": len(outcome["refused"]),
        "refusals": sorted(set(outcome["refused"]))[:3],
        "other_errors": outcome["errors"][:3],
        "burst_s": [rounded(s, 3) for s in outcome["burst_s"]],
        "client_ms": latency_figures(outcome["times"]) if outcome["times"] else None,
        "most_processes_health": health["most_processes"],
        "most_live_children": counter.most,
        "health_ms": latency_figures([took for _, took in polls]),
        "health_connecting_ms": during(polls, outcome["connecting"]),
        "health_executing_ms": during(polls, outcome["executing"]),
        "health_failures": health["failures"],
    }


def show(results: List[dict]) -> None:
    rows = []
    for r in results:
        if r["part"] == "roundtrip":
            rows += [
                ("[roundtrip] `true`, execute → process.completed",
                 f"p50 {r['p50_ms']} ms, p90 {r['p90_ms']} ms, p99 {r['p99_ms']} ms, "
                 f"max {r['max_ms']} ms ({r['runs']} runs after {r['warmup']})"),
                ("[roundtrip] service CPU", f"{r['service_cpu_ms_per_run']} ms per run"),
            ]
        else:
            h = r["health_ms"]
            rows += [
                ("[burst] clients", f"{r['clients']} one-shot `echo` clients × {r['bursts']} "
                 f"bursts, --max-processes {r['max_processes']}"),
                ("[burst] outcome", f"{r['completed']} completed, {r['refused']} refused "
                 f"(-32001), {len(r['other_errors'])} other errors; bursts took "
                 f"{r['burst_s']} s"),
                ("[burst] most live", f"{r['most_processes_health']} processes per /health, "
                 f"{r['most_live_children']} live children in /proc"),
                ("[burst] /health", f"p50 {h['p50_ms']} ms, p99 {h['p99_ms']} ms, max "
                 f"{h['max_ms']} ms ({h['count']} polls, {r['health_failures']} failed)"),
            ]
            for phase in ("connecting", "executing"):
                p = r[f"health_{phase}_ms"]
                if p:
                    rows.append((f"[burst] /health while {phase}", f"p50 {p['p50_ms']} ms, "
                                 f"p99 {p['p99_ms']} ms, max {p['max_ms']} ms "
                                 f"({p['count']} polls)"))
            if r["client_ms"]:
                c = r["client_ms"]
                rows.append(("[burst] execute → completed", f"p50 {c['p50_ms']} ms, "
                             f"p99 {c['p99_ms']} ms, max {c['max_ms']} ms"))
            if r["refusals"]:
                rows.append(("[burst] refusals said", "; ".join(r["refusals"])))
    print_report("ccx spawning", rows, {"benchmark": "spawn", "machine": machine(),
                                        "results": results})


def main() -> int:
    args = parse_args()
    unwind_on_signals()
    check_python(args.python)
    results = []
    if args.part in ("roundtrip", "both"):
        results.append(roundtrip(args))
    if args.part in ("burst", "both"):
        results.append(burst(args))
    show(results)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
