"""
The official MCP SDK's 1.x WebSocket client against ccx: run by
tests/clients/mcp_ws_check.sh, with that SDK in a virtualenv of its own.
"""

import os

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase

from tests.support import ServiceFixture
from tests.test_mcp import TOKEN, TOOLS, WS_CLIENT


class SdkWebSocketTests(TestCase):
    """
    Run by tests/clients/mcp_ws_check.sh (not by "trial tests": this module's
    name does not start with test_), which makes a virtualenv with the last
    1.x release of the SDK (the one with mcp.client.websocket) and names its
    Python in CCX_MCP_WS_PYTHON.
    """

    timeout = 120

    @inlineCallbacks
    def test_sdk_1x_websocket_client(self):
        """The SDK 1.x WebSocket client: initialize, tools, allowed and refused, progress, cancel."""
        python = os.environ["CCX_MCP_WS_PYTHON"]
        ccx = yield ServiceFixture(self, token=TOKEN).start()
        out, err, code = yield getProcessOutputAndValue(
            python,
            [WS_CLIENT, ccx.url() + f"?token={TOKEN}"],
            env=dict(os.environ, PYTHONWARNINGS="ignore"),
            reactor=reactor,
        )
        self.assertEqual(code, 0, err.decode())
        lines = out.decode().splitlines()
        self.assertEqual(
            lines,
            [
                "initialize: 2025-11-25 ccx",
                "tools: " + " ".join(TOOLS),
                "execute: completed, exit 0",
                "refused: isError",
                lines[4],
                "cancel: the program and its children are gone",
            ],
        )
        self.assertRegex(lines[4], r"^progress: \d+ notifications")
