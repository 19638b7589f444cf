"""
GET /metrics after real activity: what Prometheus would scrape.
"""

import treq
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from tests.support import ServiceFixture, until


def samples(text: str) -> dict:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


class MetricsTests(TestCase):
    timeout = 30

    @inlineCallbacks
    def scrape(self):
        response = yield treq.get(f"http://127.0.0.1:{self.ccx.port}/metrics", persistent=False)
        self.assertEqual(response.code, 200)
        self.assertIn(b"text/plain", response.headers.getRawHeaders(b"content-type")[0])
        text = yield response.text()
        return samples(text)

    @inlineCallbacks
    def test_scrape_after_activity(self):
        """Processes, bytes, connections, refusals and latency histograms are exposed."""
        self.ccx = yield ServiceFixture(self).start()
        client = yield self.ccx.connect()
        result = yield self.ccx.execute(client, {"command": ["sh", "-c", "printf 12345; printf ab >&2"]})
        yield client.notification("process.completed", result["process_id"])
        running = yield self.ccx.execute(client, {"command": "sleep 1000"})
        yield client.call("control", {"type": "PAUSE", "process_id": running["process_id"]})
        refused = yield client.request("execute", {"command": "rm -rf /"})
        self.assertEqual(refused["error"]["code"], -32002)
        found = yield self.scrape()
        self.assertEqual(found[("ccx_processes", (("state", "exited"),))], 1)
        self.assertEqual(found[("ccx_processes", (("state", "paused"),))], 1)
        self.assertEqual(found[("ccx_processes_started_total", ())], 2)
        self.assertEqual(found[("ccx_processes_finished_total", (("status", "completed"),))], 1)
        self.assertEqual(found[("ccx_output_bytes_total", (("stream", "stdout"),))], 5)
        self.assertEqual(found[("ccx_output_bytes_total", (("stream", "stderr"),))], 2)
        self.assertEqual(found[("ccx_dropped_bytes_total", ())], 0)
        self.assertEqual(found[("ccx_connections", ())], 1)
        self.assertEqual(found[("ccx_allowlist_refusals_total", ())], 1)
        self.assertEqual(found[("ccx_request_seconds_count", (("method", "control"),))], 1)
        self.assertEqual(found[("ccx_request_errors_total", (("code", "-32002"), ("method", "execute")))], 1)
        self.assertEqual(found[("ccx_spawn_seconds_count", ())], 2)

    @inlineCallbacks
    def test_totals_survive_forgetting(self):
        """Bytes of processes no longer kept still count: counters never go down."""
        self.ccx = yield ServiceFixture(self, keep_finished=0.01).start()
        client = yield self.ccx.connect()
        result = yield self.ccx.execute(client, {"command": "printf abc"})
        yield client.notification("process.completed", result["process_id"])
        registry = self.ccx.service.node.registry
        yield until(lambda: registry.find(result["process_id"]) is None)
        found = yield self.scrape()
        self.assertEqual(found[("ccx_output_bytes_total", (("stream", "stdout"),))], 3)
