"""
Output held for a client that never reads (issue 9, item 7): one connection
attaches to every program while it runs and never reads a byte, while
another runs the programs and reads them to the end.  Before the fix every
finished process with that subscriber behind was kept, past
--max-finished; now --max-finished always holds and --held-output-bytes
bounds the output held.

The service runs with its defaults (--buffer-bytes 1 MiB, --max-finished 64,
--held-output-bytes 256 MiB unless given).  Figures: the service's RSS
before, after the last program and its peak (VmHWM), and how many processes
it still keeps (C{list}).

    python bench/held_output.py [--programs 400] [--mib 2] [--held-output-bytes N]

Set $CCX_CHECKOUT to run the service from another checkout (to compare).
"""

import argparse
import sys
import time

from _report import print_report, rounded
from _service import Service, unwind_on_signals
from _wsclient import Client

from ccx.testing.proc import peak_rss_mib, rss_mib


def waiting_flood(mib: int) -> list:
    return ["sh", "-c", f"read go; head -c {mib * 1024 * 1024} /dev/zero | tr '\\0' a"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--programs", type=int, default=400, help="programs run and attached")
    parser.add_argument("--mib", type=int, default=2, help="MiB each program writes")
    parser.add_argument("--held-output-bytes", type=int, default=None,
                        help="the service's --held-output-bytes (its default if not given)")
    args = parser.parse_args()
    unwind_on_signals()
    options = ["--ping-interval", "3600"]
    if args.held_output_bytes:
        options += ["--held-output-bytes", str(args.held_output_bytes)]
    with Service(allow=["sh"], options=options) as service:
        reader = Client(service.port)
        idle = Client(service.port)
        before = rss_mib(service.pid)
        began = time.monotonic()
        completed = set()
        reader.on_notification = lambda m: (
            m["method"] == "process.completed" and completed.add(m["params"]["process_id"])
        )
        for _ in range(args.programs):
            # Each program waits for a line, so that the idle connection
            # attaches while it runs; it asks for everything and never reads.
            process_id = reader.call(
                "execute", {"command": waiting_flood(args.mib), "stdin": True}
            )["process_id"]
            _, payload = idle.request("attach", {"process_id": process_id, "offsets": {"stdout": 0}})
            idle.send(payload)
            # The attach came on another connection: the service may read
            # this one first, so ask until list shows the second subscriber.
            while not any(
                p["process_id"] == process_id and p["subscribers"] == 2
                for p in reader.call("list", {})["processes"]
            ):
                time.sleep(0.001)
            reader.call("write", {"process_id": process_id, "data": "go\n", "eof": True})
            reader.run_until(lambda: process_id in completed)
        kept = len(reader.call("list", {})["processes"])
        after = rss_mib(service.pid)
        peak = peak_rss_mib(service.pid)
        elapsed = time.monotonic() - began
        idle.close()
        reader.close()
    figures = {
        "programs": args.programs,
        "mib_each": args.mib,
        "kept_processes": kept,
        "rss_before_mib": rounded(before, 1),
        "rss_after_mib": rounded(after, 1),
        "rss_peak_mib": rounded(peak, 1),
        "seconds": rounded(elapsed, 1),
    }
    rows = [
        ("processes kept", f"{kept} (of {args.programs}, each {args.mib} MiB written)"),
        ("service RSS", f"before {figures['rss_before_mib']} MiB, after "
                        f"{figures['rss_after_mib']} MiB, peak {figures['rss_peak_mib']} MiB"),
        ("time", f"{figures['seconds']} s"),
    ]
    print_report("held output: a connection that never reads attaches to every program",
                 rows, {"held_output": figures})


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)
