"""
The same programs streamed through websocketd and through ccx to the same
client, in one run, and the ratio of their speeds.

  lines  seq 1 N: websocketd sends one text message per line (its default);
         ccx sends process.output JSON chunks.
  bulk   N MiB of 'a' (head -c N /dev/zero | tr '\\0' a): websocketd in
         --binary mode; ccx with binary output frames (encoding "binary";
         --ccx-encoding chooses another).

Every run checks that all bytes arrived.  The time of each run covers
everything from opening the connection to the end of the output.
"""

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from typing import Callable, Dict, List

from _report import print_report, rounded
from _service import Service, check_python, unwind_on_signals
from _streams import StreamCheck
from _wsclient import Client, ConnectionClosed

from ccx.testing.child import ListeningChild
from ccx.testing.machine import machine
from ccx.testing.ports import free_port
from ccx.testing.proc import MIB
from ccx.testing.service import default_python

BULK = "head -c {size} /dev/zero | tr '\\000' a"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lines", type=int, default=5_000_000,
                        help="seq 1 LINES for the line workload (5000000)")
    parser.add_argument("--mib", type=int, default=256,
                        help="MiB written by the bulk workload (256)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="runs of each server and workload; the median is reported (1)")
    parser.add_argument("--workload", choices=("lines", "bulk", "both"), default="both",
                        help="which workloads to run (both)")
    parser.add_argument("--client-nap", type=float, default=0.0, metavar="MS",
                        help="sleep MS milliseconds after each read, for both servers: "
                        "fewer, larger reads make the client cheaper (0)")
    parser.add_argument("--ccx-encoding", choices=("binary", "utf-8", "base64"),
                        default="binary",
                        help="how ccx carries the bulk workload's output (binary)")
    parser.add_argument("--python", default=default_python(), help="python that runs ccx")
    return parser.parse_args()


def ensure_websocketd() -> str:
    path = shutil.which("websocketd")
    if path is None:
        print("websocketd is not installed; installing the Debian package", flush=True)
        subprocess.run(["apt-get", "install", "-y", "websocketd"], check=True)
        path = shutil.which("websocketd")
    if path is None:
        sys.exit("websocketd could not be installed")
    return path


def seq_bytes(count: int) -> int:
    """
    The length of the output of C{seq 1 count}.
    """
    total = 0
    digits = 1
    low = 1
    while low <= count:
        high = min(count, low * 10 - 1)
        total += (high - low + 1) * (digits + 1)
        low *= 10
        digits += 1
    return total


class Measurement:
    """
    One run: wall time, client CPU time, bytes and messages received.
    """

    def __init__(self) -> None:
        self.bytes = 0
        self.messages = 0
        self.problems: List[str] = []
        self._wall = time.perf_counter()
        self._cpu = time.process_time()

    def finish(self) -> "Measurement":
        self.seconds = time.perf_counter() - self._wall
        self.client_cpu = time.process_time() - self._cpu
        return self


def via_websocketd(port: int, binary: bool, nap: float) -> Measurement:
    """
    Connect (which starts the program) and read until websocketd closes.
    In line mode each message is a line without its newline.
    """
    m = Measurement()
    newline = 0 if binary else 1

    def count(payload: bytes) -> None:
        m.bytes += len(payload) + newline
        m.messages += 1

    client = Client(port, path="/")
    client.nap = nap
    with client:
        if binary:
            client.on_binary = count
        else:
            client.on_text = count
        try:
            client.run_until(lambda: client.closed)
        except ConnectionClosed:
            pass
    return m.finish()


def via_ccx(port: int, command: str, nap: float, encoding: str = "utf-8") -> Measurement:
    m = Measurement()
    check = StreamCheck(base64=encoding == "base64")
    with Client(port, path="/ws") as client:
        client.nap = nap
        client.on_output = check.output
        client.on_binary = check.frame
        client.on_notification = check.notification
        client.call("execute", {"command": command, "shell": True, "encoding": encoding})
        client.run_until(lambda: check.done)
    m.finish()
    m.bytes = check.bytes
    m.messages = check.frames
    m.problems = check.gaps
    return m


def websocketd_server(websocketd: str, binary: bool, command: str) -> ListeningChild:
    port = free_port()
    argv = [websocketd, "--port", str(port), "--address", "127.0.0.1", "--loglevel", "error"]
    if binary:
        argv.append("--binary")
    return ListeningChild(argv + ["sh", "-c", command], port)


def compare(
    name: str,
    command: str,
    expected: int,
    args: argparse.Namespace,
    websocketd: str,
    binary: bool,
    encoding: str = "utf-8",
) -> Dict:
    runs: Dict[str, List[Measurement]] = {"websocketd": [], "ccx": []}
    nap = args.client_nap / 1000
    with websocketd_server(websocketd, binary, command) as wsd, Service(
        allow=["sh"], python=args.python
    ) as ccx:
        for _ in range(args.repeat):
            runs["websocketd"].append(via_websocketd(wsd.port, binary, nap))
            runs["ccx"].append(via_ccx(ccx.port, command, nap, encoding))
    result = {"workload": name, "command": command, "bytes": expected, "ccx_encoding": encoding}
    for server, measurements in runs.items():
        result[server] = summarise(measurements, expected)
    result["ratio_ccx_over_websocketd"] = rounded(
        result["ccx"]["mib_per_s"] / result["websocketd"]["mib_per_s"], 2
    )
    return result


def summarise(measurements: List[Measurement], expected: int) -> Dict:
    seconds = statistics.median(m.seconds for m in measurements)
    problems = [p for m in measurements for p in m.problems]
    problems += [f"received {m.bytes} bytes, not {expected}"
                 for m in measurements if m.bytes != expected]
    return {
        "seconds": rounded(seconds, 3),
        "runs": [rounded(m.seconds, 3) for m in measurements],
        "mib_per_s": rounded(expected / MIB / seconds, 1),
        "messages": measurements[-1].messages,
        "client_cpu_pct": rounded(
            100 * statistics.median(m.client_cpu / m.seconds for m in measurements), 1
        ),
        "bytes_ok": not problems,
        "problems": problems,
    }


def rows_for(result: Dict) -> List:
    name = result["workload"]
    rows = [(f"[{name}] command", result["command"])]
    for server in ("websocketd", "ccx"):
        r = result[server]
        rows.append((
            f"[{name}] {server}",
            f"{r['seconds']} s, {r['mib_per_s']} MiB/s, {r['messages']} messages, "
            f"client CPU {r['client_cpu_pct']}%, all bytes: "
            + ("yes" if r["bytes_ok"] else "NO: " + "; ".join(r["problems"][:3])),
        ))
    rows.append((f"[{name}] ccx / websocketd", f"{result['ratio_ccx_over_websocketd']}x"))
    return rows


def main() -> int:
    args = parse_args()
    unwind_on_signals()
    check_python(args.python)
    websocketd = ensure_websocketd()
    workloads: Dict[str, Callable[[], Dict]] = {
        "lines": lambda: compare(
            "lines", f"seq 1 {args.lines}", seq_bytes(args.lines), args,
            websocketd, binary=False,
        ),
        "bulk": lambda: compare(
            "bulk", BULK.format(size=args.mib * MIB), args.mib * MIB, args,
            websocketd, binary=True, encoding=args.ccx_encoding,
        ),
    }
    chosen = ("lines", "bulk") if args.workload == "both" else (args.workload,)
    results = [workloads[name]() for name in chosen]
    rows = [row for result in results for row in rows_for(result)]
    version = subprocess.run([websocketd, "--version"], capture_output=True, text=True)
    print_report(
        "ccx vs websocketd, one program to one client",
        rows,
        {
            "benchmark": "vs_websocketd",
            "machine": machine(),
            "websocketd": version.stdout.strip(),
            "client_nap_ms": args.client_nap,
            "results": results,
        },
    )
    ok = all(r[s]["bytes_ok"] for r in results for s in ("websocketd", "ccx"))
    return 0 if ok else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
