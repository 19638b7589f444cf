"""
Prometheus metrics for one ccx service (C{GET /metrics}).

Figures that the service already holds (processes by state, bytes written
and dropped, connections) are read when scraped, so the output path pays
nothing for them; requests and spawns are observed as they happen.
"""

from typing import Any, Dict, Iterator, List, Optional

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from ccx.native.wire import list_state
from ccx.rpc.errors import COMMAND_NOT_ALLOWED

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
)


def journal_state(registry: Any) -> Dict[str, Any]:
    """
    What C{/health} and C{/metrics} say of the journal: whether it is on,
    the bytes its journals hold in the state dir (C{--journal-total-bytes}
    bounds them), and how many of the programs known have a journal that
    failed (disk full, an I/O error: C{journal_error} in their entry).
    """
    state_dir = registry.state_dir
    return {
        "journal": state_dir is not None,
        "state_dir_bytes": state_dir.space.held_bytes if state_dir is not None else 0,
        "journal_errors": sum(1 for p in registry.all() if p.output.store_error is not None),
    }


class _NodeCollector(Collector):
    """
    Reads the service's state at scrape time.
    """

    def __init__(self, node: Any) -> None:
        self._node = node

    def collect(self) -> Iterator[Any]:
        registry = self._node.registry
        states = GaugeMetricFamily(
            "ccx_processes", "Processes the service knows, by state.", labels=["state"]
        )
        counts = {"running": 0, "paused": 0, "exited": 0}
        for process in registry.all():
            state = list_state(process)
            counts[state] = counts.get(state, 0) + 1
        for state, count in sorted(counts.items()):
            states.add_metric([state], count)
        yield states

        started = CounterMetricFamily(
            "ccx_processes_started", "Processes whose program started running."
        )
        started.add_metric([], registry.started_total)
        yield started

        finished = CounterMetricFamily(
            "ccx_processes_finished", "Processes finished, by final status.", labels=["status"]
        )
        for status, count in sorted(registry.finished_total.items()):
            finished.add_metric([status], count)
        yield finished

        totals = registry.output_totals()
        output = CounterMetricFamily(
            "ccx_output_bytes", "Bytes programs wrote, by stream.", labels=["stream"]
        )
        for stream in ("stdout", "stderr"):
            output.add_metric([stream], totals[stream])
        yield output

        dropped = CounterMetricFamily(
            "ccx_dropped_bytes", "Output bytes evicted before every subscriber had them."
        )
        dropped.add_metric([], totals["dropped"])
        yield dropped

        yield from self._usage(registry.all())
        yield from self._journal(registry)

        connections = GaugeMetricFamily("ccx_connections", "Open client connections (WebSockets and MCP HTTP sessions).")
        connections.add_metric([], len(self._node.connections))
        yield connections


    @staticmethod
    def _journal(registry: Any) -> Iterator[Any]:
        state = journal_state(registry)
        for name, help_text, value in (
            ("ccx_journal_enabled", "1 when output is kept in a journal on disk (--state-dir).",
             int(state["journal"])),
            ("ccx_state_dir_bytes", "Output bytes the journals hold in the state dir.",
             state["state_dir_bytes"]),
            ("ccx_journal_errors", "Programs known whose journal failed (disk full, an I/O error).",
             state["journal_errors"]),
        ):
            gauge = GaugeMetricFamily(name, help_text)
            gauge.add_metric([], value)
            yield gauge

    @staticmethod
    def _usage(processes: List[Any]) -> Iterator[Any]:
        """
        Each program's CPU time and memory, where its cgroup tells them.
        """
        cpu = GaugeMetricFamily(
            "ccx_process_cpu_seconds",
            "CPU time of all of a program's processes (cgroup containment only).",
            labels=["process_id"],
        )
        memory = GaugeMetricFamily(
            "ccx_process_memory_bytes",
            "Memory a program's processes hold (where the memory controller is enabled).",
            labels=["process_id"],
        )
        for process in processes:
            usage = process.usage()
            if usage is None:
                continue
            cpu.add_metric([process.process_id], usage.cpu_seconds)
            if usage.memory_bytes is not None:
                memory.add_metric([process.process_id], usage.memory_bytes)
        yield cpu
        yield memory


class Metrics:
    """
    The metrics of one service, in a registry of its own.
    """

    def __init__(self, node: Any) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_NodeCollector(node))
        self.request_seconds = Histogram(
            "ccx_request_seconds",
            "Time to answer a JSON-RPC call, by method (control: PAUSE/RESUME/CANCEL).",
            ["method"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.request_errors = Counter(
            "ccx_request_errors",
            "JSON-RPC calls answered with an error, by method and code.",
            ["method", "code"],
            registry=self.registry,
        )
        self.refusals = Counter(
            "ccx_allowlist_refusals",
            "execute calls refused because the program is not allowed.",
            registry=self.registry,
        )
        self.spawn_seconds = Histogram(
            "ccx_spawn_seconds",
            "Time from spawning to the program running.",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )

    def observe_request(self, method: str, seconds: float, error_code: Optional[int]) -> None:
        """
        Count one answered call (a L{ccx.rpc.jsonrpc.Dispatcher} observer).
        """
        self.request_seconds.labels(method).observe(seconds)
        if error_code is not None:
            self.request_errors.labels(method, str(error_code)).inc()
            if error_code == COMMAND_NOT_ALLOWED:
                self.refusals.inc()

    def observe_spawn(self, seconds: float) -> None:
        self.spawn_seconds.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
