"""
Property tests over the JSON-RPC layer with the real native methods: every
input gets a well-formed answer or none, and nothing is spawned by mistake.
"""

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from ccx.config import build_config
from ccx.native.methods import NativeMethods
from ccx.node import Node
from ccx.rpc.jsonrpc import Dispatcher

METHODS = ["execute", "control", "signal", "write", "list", "attach", "detach", "ping", "pong", "nope"]
CODES = {-32700, -32600, -32601, -32602, -32603, -32001, -32002, -32003, -32004, -32005}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
params = st.dictionaries(
    st.sampled_from(["command", "shell", "cwd", "env", "timeout", "stdin", "on_full", "on_disconnect",
                     "encoding", "type", "process_id", "signal", "data", "eof", "offsets", "bogus"]),
    json_values,
    max_size=5,
) | json_values
requests = st.fixed_dictionaries(
    {"jsonrpc": st.sampled_from(["2.0", "2.0", "1.0", 2]), "method": st.sampled_from(METHODS) | json_values},
    optional={"id": st.integers() | st.text(max_size=5) | st.none() | st.booleans() | st.floats(allow_nan=False),
              "params": params},
)
frames = (
    requests.map(json.dumps)
    | st.lists(requests, max_size=5).map(json.dumps)
    | json_values.map(json.dumps)
    | st.text(max_size=40)
    | st.binary(max_size=40)
)


class Sink:
    writable = True

    def send_notification(self, method, params):
        raise AssertionError("nothing may be started, so nothing is notified")


def well_formed(response):
    assert isinstance(response, dict), response
    assert response["jsonrpc"] == "2.0"
    assert "id" in response
    assert ("result" in response) != ("error" in response), response
    if "error" in response:
        error = response["error"]
        assert error["code"] in CODES, error
        assert isinstance(error["message"], str) and error["message"]


class FuzzTests(SynchronousTestCase):
    def setUp(self):
        config = build_config({"port": "tcp:0:interface=127.0.0.1"})
        self.node = Node(config, Clock())
        self.dispatcher = Dispatcher(NativeMethods(self.node, self.node.new_session(), Sink()).table())

    @settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(frames)
    def test_every_frame_gets_a_well_formed_answer_or_none(self, frame):
        """Any frame: a JSON-RPC response, a batch of them, or nothing; the registry stays empty."""
        reply = self.successResultOf(self.dispatcher.dispatch(frame))
        if reply.payload is not None:
            answer = json.loads(reply.payload)
            if isinstance(answer, list):
                self.assertTrue(answer)
                for response in answer:
                    well_formed(response)
            else:
                well_formed(answer)
        self.assertEqual(self.node.registry.all(), [])
        self.assertEqual(self.flushLoggedErrors(), [])
