"""
Tests for L{ccx.rpc.ratelimit} and its use by the dispatcher.
"""

import json

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from ccx.rpc.jsonrpc import Dispatcher
from ccx.rpc.ratelimit import TokenBucket


class TokenBucketTests(SynchronousTestCase):
    def test_burst_then_refuse(self):
        """A full bucket allows C{burst} calls at once, then refuses."""
        bucket = TokenBucket(Clock(), rate=3)
        self.assertEqual([bucket.take() for _ in range(4)], [True, True, True, False])

    def test_refills_with_time(self):
        """Tokens come back at C{rate} per second, up to C{burst}."""
        clock = Clock()
        bucket = TokenBucket(clock, rate=2, burst=2)
        bucket.take(), bucket.take()
        clock.advance(0.5)
        self.assertEqual([bucket.take(), bucket.take()], [True, False])
        clock.advance(100)
        self.assertEqual([bucket.take() for _ in range(3)], [True, True, False])


class DispatcherLimitTests(SynchronousTestCase):
    def test_refused_calls_get_limit_exceeded(self):
        """Calls past the limit get -32001 with their own id; the handler does not run."""
        ran = []
        dispatcher = Dispatcher(
            {"m": lambda params, call: ran.append(1) or {}},
            limiter=TokenBucket(Clock(), rate=2),
        )
        batch = [{"jsonrpc": "2.0", "id": i, "method": "m"} for i in range(3)]
        reply = json.loads(self.successResultOf(dispatcher.dispatch(json.dumps(batch))).payload)
        self.assertEqual([r.get("result") for r in reply[:2]], [{}, {}])
        self.assertEqual(reply[2]["id"], 2)
        self.assertEqual(reply[2]["error"]["code"], -32001)
        self.assertIn("requests per second", reply[2]["error"]["message"])
        self.assertEqual(len(ran), 2)
