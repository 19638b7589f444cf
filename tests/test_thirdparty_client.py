"""
A client written with another WebSocket library drives the real service.
"""

import os
import sys

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase

from tests.support import ServiceFixture

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "clients", "websockets_client.py")


class WebsocketsClientTests(TestCase):
    timeout = 60

    @inlineCallbacks
    def test_new_user_session(self):
        """seq 1 400000 arrives whole; pause and cancel reach a program's children."""
        ccx = yield ServiceFixture(self).start()
        out, err, code = yield getProcessOutputAndValue(
            sys.executable, [SCRIPT, ccx.url()], env=dict(os.environ), reactor=reactor
        )
        self.assertEqual(code, 0, err.decode())
        self.assertEqual(
            out.decode().splitlines(),
            [
                "seq: all 400000 lines",
                "pause: every member of the group stopped",
                "cancel: nothing of the group is left",
            ],
        )
