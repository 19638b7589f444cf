"""
Integration test: a burst of one-shot programs against --max-processes.
"""

from twisted.internet.defer import DeferredList, inlineCallbacks
from twisted.trial.unittest import TestCase

from tests.support import ServiceFixture

LIMIT = 32
BURST = 96


class SpawnBurstTests(TestCase):
    timeout = 60

    @inlineCallbacks
    def test_burst_at_the_limit_is_not_refused(self):
        """
        Three times --max-processes of `true` in one batch (one frame, so
        every request is read in one reactor turn) all run: between a few
        spawns the service reaps those that exited, so none is refused
        while fewer than the limit really run.
        """
        self.ccx = yield ServiceFixture(self, max_processes=LIMIT, max_batch=BURST).start()
        client = yield self.ccx.connect("/ws")
        batch = [
            {"jsonrpc": "2.0", "id": n, "method": "execute", "params": {"command": ["true"]}}
            for n in range(BURST)
        ]
        client.send_json(batch)
        reply = yield client.wait_for(lambda m: isinstance(m, list))
        errors = [r["error"] for r in reply if "error" in r]
        self.assertEqual(errors, [])
        self.assertEqual(sorted(r["id"] for r in reply), list(range(BURST)))
        self.ccx.groups.extend(r["result"]["pgid"] for r in reply)
        completions = yield DeferredList(
            [
                client.notification("process.completed", r["result"]["process_id"])
                for r in reply
            ],
            fireOnOneErrback=True,
        )
        self.assertEqual({c["status"] for _, c in completions}, {"completed"})
        self.assertEqual(self.ccx.service.node.registry.live_count, 0)
