"""
Output held for a client that never reads stays within --max-finished and
--held-output-bytes: end to end, with a real service, real programs and a
real WebSocket client that stops reading its socket.
"""

from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from tests.support import ServiceFixture, until
from tests.test_backpressure import covered, flood

BUFFER = 64 * 1024
BUDGET = 128 * 1024
MAX_FINISHED = 3
PROGRAMS = 8
SIZE = 100_000


class NeverReadingClientTests(TestCase):
    timeout = 120

    @inlineCallbacks
    def test_attaching_to_every_program(self):
        """
        A client that stops reading and attaches to every program while it
        runs keeps no more than --max-finished processes nor more than
        --held-output-bytes of output; when it reads again it gets exact
        drops and every process.completed.
        """
        ccx = yield ServiceFixture(
            self, buffer_bytes=BUFFER, max_finished=MAX_FINISHED, held_output_bytes=BUDGET
        ).start()
        registry = ccx.service.node.registry
        reader = yield ccx.connect()
        idle = yield ccx.connect()
        idle.transport.pauseProducing()
        # Fill the idle connection: a program it started writes more than
        # the sockets hold, until the service sees it cannot take more.
        idle.send_json(
            {"jsonrpc": "2.0", "id": 1, "method": "execute",
             "params": {"command": flood(64 * 1024 * 1024), "on_full": "drop"}}
        )
        yield until(lambda: any(not c.writable for c in ccx.service.node.connections))
        yield until(lambda: len(registry.all()) == 1 and registry.all()[0].finished)
        filler = registry.all()[0].process_id

        attached = []
        for index in range(PROGRAMS):
            # Each program waits for a line, so that the idle client attaches
            # while it runs, as a client watching it would.
            result = yield ccx.execute(
                reader,
                {"command": ["sh", "-c", f"read go; {' '.join(flood(SIZE)[2:])}"],
                 "stdin": True},
            )
            process_id = result["process_id"]
            process = registry.find(process_id)
            idle.send_json(
                {"jsonrpc": "2.0", "id": 2 + index, "method": "attach",
                 "params": {"process_id": process_id, "offsets": {"stdout": 0}}}
            )
            yield until(lambda: len(process.output.subscriptions) == 2)
            yield reader.call("write", {"process_id": process_id, "data": "go\n", "eof": True})
            yield reader.notification("process.completed", process_id)
            attached.append(process_id)
            self.assertLessEqual(len(registry.all()), MAX_FINISHED)
            held = sum(
                buffer.held_bytes
                for kept in registry.all()
                for buffer in kept.output.streams.values()
            )
            self.assertLessEqual(held, BUDGET)
            self.assertEqual(registry.held_output.held_bytes, held)
        self.assertNotIn(attached[0], [p.process_id for p in registry.all()])

        idle.transport.resumeProducing()
        for process_id in [filler] + attached:
            yield idle.notification("process.completed", process_id)
        drops = []
        for process_id in attached:
            chunks, missed, end = covered(idle, process_id)
            self.assertEqual(end, SIZE)
            self.assertTrue(all(data == b"a" * len(data) for _, data in chunks))
            drops.extend(missed)
        self.assertTrue(drops, "the idle client must have missed released output")
