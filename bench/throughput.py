"""
One program's output streamed to one client: end-to-end MiB/s, the service's
CPU seconds per GiB and its peak RSS.

Workloads (each against a fresh service):
  bulk   N MiB of 'a' with no newline (head -c N /dev/zero | tr '\\0' a)
  lines  N MiB of 100-byte lines (yes LINE | head -c N)

The client is a blocking, single-threaded WebSocket reader.  With
--client json (the default) it decodes every notification and checks that
offsets are contiguous; with --client raw it only counts frames.  Its own
CPU use is reported: below 100% of a core means it waited for the service.
"""

import argparse
import collections
import os
import shutil
import signal
import subprocess
import sys
import time

from _report import GIB, print_report, rounded
from _service import Service, check_python, unwind_on_signals
from _streams import StreamCheck
from _wsclient import Client

from ccx.testing.machine import machine
from ccx.testing.proc import MIB, cpu_seconds, peak_rss_mib
from ccx.testing.service import default_python

LINE = "x" * 99
WORKLOADS = {
    "bulk": "head -c {size} /dev/zero | tr '\\000' a",
    "lines": "yes " + LINE + " | head -c {size}",
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mib", type=int, default=512, help="MiB the program writes (512)")
    parser.add_argument(
        "--workload",
        choices=("bulk", "lines", "both"),
        default="both",
        help="what the program writes (both)",
    )
    parser.add_argument(
        "--client",
        choices=("json", "raw"),
        default="json",
        help="json: decode and check every chunk; raw: count frames only (json)",
    )
    parser.add_argument(
        "--encoding",
        choices=("utf-8", "base64", "binary"),
        default="utf-8",
        help="how ccx carries the output: process.output JSON, or binary frames (utf-8)",
    )
    parser.add_argument(
        "--profile",
        metavar="PREFIX",
        help="record the service with py-spy into PREFIX-WORKLOAD.txt (collapsed "
        "stacks) and print its top functions",
    )
    parser.add_argument(
        "--journal",
        choices=("on", "off"),
        default="on",
        help="keep the program's output in a journal on disk (a temporary state "
        "dir), or run the service with --no-journal, to measure its cost (on)",
    )
    parser.add_argument("--python", default=default_python(), help="python that runs ccx")
    return parser.parse_args()


class Profiler:
    """
    py-spy recording one process, in collapsed-stack ("raw") format.
    """

    def __init__(self, python: str, pid: int, path: str) -> None:
        here = os.path.join(os.path.dirname(python), "py-spy")
        binary = here if os.path.exists(here) else shutil.which("py-spy")
        if binary is None:
            sys.exit("--profile needs py-spy (pip install py-spy)")
        self.path = path
        self.process = subprocess.Popen(
            [binary, "record", "--pid", str(pid), "--rate", "250", "--format", "raw",
             "--nonblocking", "--output", path],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(1.0)  # let it attach

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def top_functions(path: str, count: int = 15) -> list:
    """
    From collapsed stacks: the functions with the most samples on top of the
    stack (self), with their share of all samples, and inclusive shares.
    """
    own = collections.Counter()
    inclusive = collections.Counter()
    total = 0
    with open(path) as f:
        for line in f:
            stack, _, samples = line.rstrip("\n").rpartition(" ")
            if not stack:
                continue
            samples = int(samples)
            frames = [frame.strip() for frame in stack.split(";")]
            total += samples
            own[frames[-1]] += samples
            for frame in set(frames):
                inclusive[frame] += samples
    return [
        (frame, 100 * samples / total, 100 * inclusive[frame] / total)
        for frame, samples in own.most_common(count)
    ]


def run_workload(args: argparse.Namespace, workload: str) -> dict:
    size = args.mib * MIB
    command = WORKLOADS[workload].format(size=size)
    check = StreamCheck(decode=args.client == "json", base64=args.encoding == "base64")
    options = ["--no-journal"] if args.journal == "off" else []
    with Service(allow=["sh"], options=options, python=args.python) as service:
        profiler = None
        if args.profile:
            profiler = Profiler(args.python, service.pid, f"{args.profile}-{workload}.txt")
        try:
            with Client(service.port, path="/ws") as client:
                client.on_output = check.output
                client.on_binary = check.frame
                client.on_notification = check.notification
                service_cpu = cpu_seconds(service.pid)
                client_cpu = time.process_time()
                began = time.perf_counter()
                client.call(
                    "execute", {"command": command, "shell": True, "encoding": args.encoding}
                )
                client.run_until(lambda: check.done)
                elapsed = time.perf_counter() - began
                client_cpu = time.process_time() - client_cpu
                service_cpu = cpu_seconds(service.pid) - service_cpu
                wire_bytes = client.reader.wire_bytes
        finally:
            if profiler is not None:
                profiler.stop()
        peak_rss = peak_rss_mib(service.pid)
    problems = check.problems(size)
    result = {
        "workload": workload,
        "client": args.client,
        "encoding": args.encoding,
        "journal": args.journal,
        "mib": args.mib,
        "seconds": rounded(elapsed, 3),
        "mib_per_s": rounded(size / MIB / elapsed, 1),
        "service_cpu_s": rounded(service_cpu, 2),
        "service_cpu_s_per_gib": rounded(service_cpu / (size / GIB), 2),
        "service_cpu_pct": rounded(100 * service_cpu / elapsed, 1),
        "service_peak_rss_mib": rounded(peak_rss, 1),
        "client_cpu_pct": rounded(100 * client_cpu / elapsed, 1),
        "frames": check.frames,
        "wire_mib": rounded(wire_bytes / MIB, 1),
        "bytes_ok": not problems,
        "problems": problems,
    }
    if args.profile:
        result["profile"] = f"{args.profile}-{workload}.txt"
    return result


def show(results: list, args: argparse.Namespace) -> None:
    rows = []
    for r in results:
        rows += [
            (f"[{r['workload']}] command", WORKLOADS[r["workload"]].format(size=r["mib"] * MIB)),
            (f"[{r['workload']}] time", f"{r['seconds']} s for {r['mib']} MiB "
             f"({r['frames']} frames, {r['wire_mib']} MiB on the wire)"),
            (f"[{r['workload']}] end to end", f"{r['mib_per_s']} MiB/s"),
            (f"[{r['workload']}] service CPU", f"{r['service_cpu_s']} s = "
             f"{r['service_cpu_s_per_gib']} s/GiB ({r['service_cpu_pct']}% of a core)"),
            (f"[{r['workload']}] service peak RSS", f"{r['service_peak_rss_mib']} MiB"),
            (f"[{r['workload']}] client CPU", f"{r['client_cpu_pct']}% of a core "
             f"({args.client} client)"),
            (f"[{r['workload']}] all bytes, in order", "yes" if r["bytes_ok"]
             else "NO: " + "; ".join(r["problems"])),
        ]
    print_report(
        "ccx throughput, one program to one client",
        rows,
        {"benchmark": "throughput", "machine": machine(), "results": results},
    )
    for r in results:
        if "profile" in r:
            print(f"\npy-spy, {r['workload']}: top functions by own samples "
                  f"(own%, inclusive%), stacks in {r['profile']}")
            for frame, own, inclusive in top_functions(r["profile"]):
                print(f"  {own:5.1f}% {inclusive:5.1f}%  {frame}")


def main() -> int:
    args = parse_args()
    unwind_on_signals()
    check_python(args.python)
    workloads = ("bulk", "lines") if args.workload == "both" else (args.workload,)
    results = [run_workload(args, workload) for workload in workloads]
    show(results, args)
    return 0 if all(r["bytes_ok"] for r in results) else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
