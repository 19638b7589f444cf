"""
Bounded memory: the service's RSS while programs write far more than their
clients read.

Each case starts a fresh service, lets one or more programs write while
their clients stop reading for a while, then reads everything to the end.
A thread samples the service's RSS (/proc/PID/status) every 50 ms; the
figure is the largest RSS seen minus the RSS just before the programs
started.  Targets (issue 3): one program writing 300 MiB to a stalled
client grows RSS by well under 64 MiB, in block and in drop mode; 40 such
programs at once with --buffer-bytes 262144 by under 100 MiB.

    python bench/memory.py [--mib 300] [--programs 40] [--stall 5]
"""

import argparse
import sys
import threading
import time
from typing import Dict, List

from _report import print_report, rounded
from _service import Service, unwind_on_signals
from _streams import StreamCheck
from _wsclient import Client

from ccx.testing.proc import rss_mib


class RSSSampler(threading.Thread):
    """
    The largest RSS of a process, sampled until stopped.
    """

    def __init__(self, service: Service, interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.service = service
        self.interval = interval
        self.peak = 0.0
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            self.peak = max(self.peak, rss_mib(self.service.pid))
            time.sleep(self.interval)

    def stop(self) -> float:
        self._done.set()
        self.join()
        return self.peak


def flood(mib: int) -> List[str]:
    return ["sh", "-c", f"head -c {mib * 1024 * 1024} /dev/zero | tr '\\0' a"]


def run_case(name: str, programs: int, mib: int, on_full: str, stall: float,
             buffer_bytes: int) -> Dict[str, object]:
    options = ["--buffer-bytes", str(buffer_bytes), "--max-processes", str(programs + 8)]
    with Service(allow=["sh"], options=options) as service:
        clients = [Client(service.port) for _ in range(programs)]
        checks = [StreamCheck(decode=False) for _ in range(programs)]
        for client, check in zip(clients, checks):
            client.on_output = check.output
            client.on_notification = check.notification
        before = rss_mib(service.pid)
        sampler = RSSSampler(service)
        sampler.start()
        began = time.monotonic()
        for client in clients:
            client.call("execute", {"command": flood(mib), "on_full": on_full})
        time.sleep(stall)  # nobody reads: the sockets fill, then ccx holds back or drops
        stalled_rss = rss_mib(service.pid)
        for client, check in zip(clients, checks):
            client.run_until(lambda: check.done)
        elapsed = time.monotonic() - began
        peak = sampler.stop()
        for client in clients:
            client.close()
        written = sum(c.completion["stdout_bytes"] for c in checks)
        dropped = sum(c.completion["dropped_bytes"] for c in checks)
        return {
            "case": name,
            "programs": programs,
            "mib_each": mib,
            "on_full": on_full,
            "buffer_bytes": buffer_bytes,
            "stall_s": stall,
            "rss_before_mib": rounded(before, 1),
            "rss_after_stall_mib": rounded(stalled_rss, 1),
            "rss_peak_mib": rounded(peak, 1),
            "growth_mib": rounded(peak - before, 1),
            "written_mib": rounded(written / 2**20, 1),
            "dropped_mib": rounded(dropped / 2**20, 1),
            "seconds": rounded(elapsed, 2),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=300, help="MiB each program writes")
    parser.add_argument("--programs", type=int, default=40, help="programs in the 'many' cases")
    parser.add_argument("--many-mib", type=int, default=300,
                        help="MiB each program writes in the 'many' cases")
    parser.add_argument("--stall", type=float, default=5.0, help="seconds clients do not read")
    args = parser.parse_args()
    unwind_on_signals()
    cases = [
        run_case("one, block", 1, args.mib, "block", args.stall, 1024 * 1024),
        run_case("one, drop", 1, args.mib, "drop", args.stall, 1024 * 1024),
        run_case("many, drop", args.programs, args.many_mib, "drop", args.stall, 262144),
        run_case("many, block", args.programs, args.many_mib, "block", args.stall, 262144),
    ]
    rows = [
        (c["case"], f"RSS +{c['growth_mib']} MiB (before {c['rss_before_mib']}, "
                    f"peak {c['rss_peak_mib']}); {c['written_mib']} MiB written, "
                    f"{c['dropped_mib']} dropped, {c['seconds']} s")
        for c in cases
    ]
    print_report("memory: RSS growth while clients stall", rows, {"memory": cases})


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)
