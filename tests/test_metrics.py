"""
GET /metrics after real activity: what Prometheus would scrape.
"""

import json
from types import SimpleNamespace
from urllib.parse import urlencode

import treq
from prometheus_client.parser import text_string_to_metric_families
from treq.testing import StubTreq
from twisted.internet.defer import inlineCallbacks
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import TestCase

from ccx.config import build_config
from ccx.journal.statedir import StateDir
from ccx.node import Node
from ccx.web.site import build_site
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


TOKEN = "s3cret-token-for-tests"
CONTRACT_KEYS = {
    "status", "version", "uptime", "connections", "processes",
    "journal", "state_dir_bytes", "journal_errors",
}


class TokenGuardedHttpTests(TestCase):
    """
    C{/metrics} and C{/health} with and without a configured token, through
    the service's own resource tree (treq's C{StubTreq}, no socket).
    """

    def site(self, token=True, **settings):
        values = {"port": "tcp:0:interface=127.0.0.1", "allow": [], **settings}
        if token:
            values["token_file"] = self.mktemp()
            with open(values["token_file"], "w") as f:
                f.write(TOKEN + "\n")
        self.node = Node(build_config(values), MemoryReactorClock())
        return StubTreq(build_site(self.node).resource)

    @inlineCallbacks
    def get(self, http, path, token=None, query=None, **headers):
        url = f"http://127.0.0.1{path}"
        if query is not None:
            url += "?" + urlencode({"token": query})
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        response = yield http.get(url, headers={k: [v] for k, v in headers.items()})
        body = yield response.content()
        return response, body

    def assertRefused(self, response, body, code=401):
        self.assertEqual(response.code, code)
        self.assertNotIn(b"ccx_", body)
        if code == 401:
            self.assertEqual(
                response.headers.getRawHeaders("www-authenticate"), ['Bearer realm="ccx"']
            )

    @inlineCallbacks
    def test_metrics_need_the_token(self):
        """Without the token, with any prefix of it (empty included) or one character more: 401."""
        http = self.site()
        response, body = yield self.get(http, "/metrics")
        self.assertRefused(response, body)
        for wrong in [TOKEN[:end] for end in range(len(TOKEN))] + [TOKEN + "x"]:
            for given in ({"token": wrong}, {"query": wrong}):
                response, body = yield self.get(http, "/metrics", **given)
                self.assertRefused(response, body)
        response, body = yield self.get(http, "/metrics", Authorization=f"Basic {TOKEN}")
        self.assertRefused(response, body)

    @inlineCallbacks
    def test_metrics_with_the_token(self):
        """A bearer token (as Prometheus sends it) or ?token= gets the metrics."""
        http = self.site()
        for given in ({"token": TOKEN}, {"query": TOKEN}):
            response, body = yield self.get(http, "/metrics", **given)
            self.assertEqual(response.code, 200)
            self.assertIn(("ccx_connections", ()), samples(body.decode()))

    @inlineCallbacks
    def test_metrics_refuse_foreign_origins(self):
        """A web page's origin gets 403 even with the token, as on the WebSocket."""
        http = self.site(allow_origin=["https://ok.example"])
        response, body = yield self.get(
            http, "/metrics", token=TOKEN, Origin="https://ok.example.evil.com"
        )
        self.assertRefused(response, body, 403)
        response, body = yield self.get(http, "/metrics", token=TOKEN, Origin="https://ok.example")
        self.assertEqual(response.code, 200)

    @inlineCallbacks
    def test_metrics_open_without_a_configured_token(self):
        """Without a configured token (loopback only), /metrics needs none."""
        response, body = yield self.get(self.site(token=False), "/metrics")
        self.assertEqual(response.code, 200)

    @inlineCallbacks
    def test_health_without_the_token_says_only_status(self):
        """Without the token, or with a prefix of it, /health answers only its status."""
        http = self.site()
        for given in [{}] + [
            {"token": TOKEN[:end]} for end in range(len(TOKEN))
        ] + [{"query": TOKEN[:-1]}, {"token": TOKEN + "x"}]:
            response, body = yield self.get(http, "/health", **given)
            self.assertEqual(response.code, 200)
            self.assertEqual(json.loads(body), {"status": "ok"}, given)

    @inlineCallbacks
    def test_health_with_the_token(self):
        """With the token (bearer or ?token=), /health has every key of the contract."""
        http = self.site()
        for given in ({"token": TOKEN}, {"query": TOKEN}):
            response, body = yield self.get(http, "/health", **given)
            health = json.loads(body)
            self.assertLessEqual(CONTRACT_KEYS, set(health))
            self.assertEqual(health["status"], "ok")

    @inlineCallbacks
    def test_journal_in_health_and_metrics(self):
        """
        With the token, /health says whether the journal is on, the bytes
        the state dir holds and how many programs' journals failed; so does
        /metrics; without the token /health still says only its status.
        """
        http = self.site()
        response, body = yield self.get(http, "/health", token=TOKEN)
        health = json.loads(body)
        self.assertEqual(
            (health["journal"], health["state_dir_bytes"], health["journal_errors"]), (False, 0, 0)
        )
        state_dir = StateDir(self.mktemp(), 1000, 10000).open()
        self.node.registry.use_state_dir(state_dir)
        state_dir.create("p1").append("stdout", b"x" * 10, 0.0)
        failed = SimpleNamespace(output=SimpleNamespace(store_error="journal writing failed: I/O error"))
        fine = SimpleNamespace(output=SimpleNamespace(store_error=None))
        self.patch(self.node.registry, "all", lambda: [failed, fine])
        response, body = yield self.get(http, "/health", token=TOKEN)
        health = json.loads(body)
        self.assertEqual(
            (health["journal"], health["state_dir_bytes"], health["journal_errors"]), (True, 10, 1)
        )
        response, body = yield self.get(http, "/health")
        self.assertEqual(json.loads(body), {"status": "ok"})
        self.patch(self.node.registry, "all", lambda: [])
        response, body = yield self.get(http, "/metrics", token=TOKEN)
        found = samples(body.decode())
        self.assertEqual(found[("ccx_journal_enabled", ())], 1)
        self.assertEqual(found[("ccx_state_dir_bytes", ())], 10)
        self.assertEqual(found[("ccx_journal_errors", ())], 0)

    @inlineCallbacks
    def test_health_without_a_configured_token(self):
        """Without a configured token, /health has every key of the contract."""
        response, body = yield self.get(self.site(token=False), "/health")
        self.assertLessEqual(CONTRACT_KEYS, set(json.loads(body)))
