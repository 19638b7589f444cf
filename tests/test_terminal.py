"""
Programs on a pseudo-terminal (execute's C{pty}): the window size the
program sees, C{resize} and SIGWINCH, input typed through C{write}, the one
C{pty} stream byte-exact through pause, resume and attach, and nothing left
behind.
"""

from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from tests.support import ServiceFixture


def pty_output(client, process_id: str, start: int = 0) -> bytes:
    return client.output(process_id, "pty", start)


class TerminalServiceTests(TestCase):
    """
    A real service running programs on terminals for a native client.
    """

    timeout = 30

    @inlineCallbacks
    def setUp(self):
        self.ccx = yield ServiceFixture(self).start()
        self.client = yield self.ccx.connect("/ws")

    def output_contains(self, process_id: str, text: bytes):
        return self.client.wait_for(
            lambda m: text in pty_output(self.client, process_id)
        )

    @inlineCallbacks
    def test_program_sees_the_window_size(self):
        """stty size on the terminal shows the rows and columns asked for."""
        started = yield self.ccx.execute(
            self.client,
            {"command": ["sh", "-c", "stty size; tty; printf done"], "pty": {"rows": 30, "cols": 101}},
        )
        done = yield self.client.notification("process.completed", started["process_id"])
        output = pty_output(self.client, started["process_id"])
        self.assertEqual(done["status"], "completed")
        self.assertTrue(output.startswith(b"30 101\r\n/dev/pts/"), output)
        self.assertTrue(output.endswith(b"done"), output)
        self.assertEqual(done["pty_bytes"], len(output))
        self.assertEqual((done["stdout_bytes"], done["stderr_bytes"]), (0, 0))
