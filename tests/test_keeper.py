"""
Tests for the keeper (L{ccx.keeper}): its messages, driven in this process
over its real socket, with real programs.
"""

import errno
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import time

from twisted.trial.unittest import SynchronousTestCase

from ccx.keeper import messages as m
from ccx.journal.program import ProgramJournal
from ccx.journal.record import read_record
from ccx.keeper.logfile import LOG_BYTES, LogFile
from ccx.keeper.server import program_dir
from ccx.keeper.server import READ_SIZE, TERMINAL_READ_SIZE, Keeper
from ccx.process.terminal import WindowSize, set_window_size, window_size
from ccx.process.group import ProcessGroup
from ccx.testing.proc import keeper_pids

SH = shutil.which("sh")
YES = shutil.which("yes")
SEQ = b"".join(b"%d\n" % i for i in range(1, 20001))


class StandardLibraryTests(SynchronousTestCase):
    """
    The keeper stays small: it imports nothing beyond the standard library.
    """

    def test_no_twisted(self):
        """python -S (no site-packages) imports the keeper, and no Twisted with it."""
        code = (
            "import sys, ccx.keeper.__main__, ccx.keeper.server; "
            "print(sorted(m for m in sys.modules if m.startswith(('twisted', 'zope'))))"
        )
        root = os.path.dirname(os.path.dirname(os.path.abspath(m.__file__)))
        out = subprocess.run(
            [sys.executable, "-S", "-c", code],
            env={"PYTHONPATH": os.path.dirname(root)},
            capture_output=True,
            check=True,
        )
        self.assertEqual(out.stdout, b"[]\n")


class MessagesTests(SynchronousTestCase):
    """
    L{m.encode} and L{m.decode}.
    """

    def test_round_trip(self):
        """A message is one line of compact JSON, and reads back the same."""
        line = m.encode({"type": m.OUTPUT, "id": "a", "end": 3})
        self.assertEqual(line, b'{"type":"output","id":"a","end":3}\n')
        self.assertEqual(m.decode(line[:-1]), {"type": "output", "id": "a", "end": 3})

    def test_not_a_message(self):
        """Not JSON, not an object, or no string type: BadMessage."""
        for line in (b"{", b"[1]", b'{"id": "a"}', b'{"type": 1}'):
            self.assertRaises(m.BadMessage, m.decode, line)


class LogFileTests(SynchronousTestCase):
    """
    keeper.log stays bounded: past its size it becomes keeper.log.1.
    """

    def setUp(self):
        self.folder = os.path.abspath(self.mktemp())
        os.makedirs(self.folder)
        self.path = os.path.join(self.folder, m.LOG_NAME)
        # A descriptor of the test's own, standing for standard error.
        self.fd = os.open(os.devnull, os.O_WRONLY)
        self.addCleanup(os.close, self.fd)

    def test_rotated_past_its_size(self):
        """
        At its size exactly it is kept; one byte more and it is keeper.log.1
        (the one before replaced), and a new keeper.log begins.
        """
        log = LogFile(self.path, 100, self.fd)
        log.open()
        log.write("a" * 99 + "\n")
        self.assertEqual(os.path.getsize(self.path), 100)
        self.assertFalse(os.path.exists(self.path + ".1"))
        log.write("b\n")
        self.assertEqual(open(self.path + ".1").read(), "a" * 99 + "\nb\n")
        self.assertEqual(os.path.getsize(self.path), 0)
        for _ in range(1000):
            log.write("c" * 9 + "\n")
        self.assertLessEqual(os.path.getsize(self.path), 100)
        self.assertEqual(open(self.path + ".1").read(), "c" * 9 + "\n" + "c" * 9 + "\n" + ("c" * 9 + "\n") * 9)
        self.assertEqual(sorted(os.listdir(self.folder)), [m.LOG_NAME, m.LOG_NAME + ".1"])
        # What else writes on the descriptor (a traceback) goes to the new file.
        os.write(self.fd, b"raw\n")
        self.assertTrue(open(self.path).read().endswith("raw\n"))

    def test_long_one_rotated_at_open(self):
        """An earlier keeper's log already past the size is rotated when opened."""
        with open(self.path, "w") as f:
            f.write("x" * 101)
        LogFile(self.path, 100, self.fd).open()
        self.assertEqual(os.path.getsize(self.path + ".1"), 101)
        self.assertEqual(os.path.getsize(self.path), 0)

    def test_not_through_a_link(self):
        """A link planted at keeper.log is not written through."""
        target = os.path.join(self.folder, "elsewhere")
        os.symlink(target, self.path)
        with self.assertRaises(OSError):
            LogFile(self.path, 100, self.fd).open()
        self.assertFalse(os.path.exists(target))


class KeeperTests(SynchronousTestCase):
    """
    A L{Keeper} on a real socket, one turn of its loop at a time.
    """

    def setUp(self):
        self.state_dir = os.path.abspath(self.mktemp())
        os.makedirs(self.state_dir)
        # A test's directory may be longer than a socket address: reach it
        # through a descriptor, as ccx does.
        directory = os.open(self.state_dir, os.O_PATH)
        self.addCleanup(os.close, directory)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.path = f"/proc/self/fd/{directory}/{m.SOCKET_NAME}"
        listener.bind(self.path)
        listener.listen(4)
        self.logged = []
        self.keeper = Keeper(self.state_dir, listener, log=self.logged.append)
        self.addCleanup(self.end_programs)
        self.received = b""
        self.fds = []
        # Every message received, across calls of messages().
        self.everything = []

    def end_programs(self):
        for fd in self.fds:
            os.close(fd)
        for program in list(self.keeper.programs.values()):
            ProcessGroup(program.pid).signal(signal.SIGKILL)
            program.popen.wait()
        self.keeper.close()

    def connect(self, version=m.VERSION):
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.connect(self.path)
        client.setblocking(False)
        self.turn()
        if version is not None:
            self.send(client, {"type": m.HELLO, "version": version})
        return client

    def turn(self, timeout=0.05):
        self.keeper.run_once(timeout)

    def send(self, client, message):
        client.sendall(m.encode(message))
        self.turn()

    def messages(self, client, until=lambda found: False, turns=400):
        """
        The messages the keeper has sent, turning its loop until C{until}
        holds of them (or the turns run out); with the descriptors that came.
        """
        found, fds = [], []
        for _ in range(turns):
            try:
                data, new_fds, _, _ = socket.recv_fds(client, 65536, 4)
            except BlockingIOError:
                data, new_fds = None, []
            fds += new_fds
            if data == b"":
                break
            if data:
                self.received += data
                *lines, self.received = self.received.split(b"\n")
                found += [m.decode(line) for line in lines]
                self.everything += [m.decode(line) for line in lines]
            if until(found):
                break
            self.turn()
        self.fds += fds
        return found, fds

    def journaled(self, process_id, stream):
        """
        What a program's journal holds of C{stream}, from its start.
        """
        journal = ProgramJournal.open(
            program_dir(self.state_dir, process_id), 1 << 30, 1 << 20, names=(stream,)
        )
        first, data, _ = journal.read(stream, 0, 1 << 20)
        self.assertEqual(first, 0)
        return data

    def spawn(self, client, argv, **extra):
        message = {
            "type": m.SPAWN,
            "id": extra.pop("id", "p1"),
            "argv": argv,
            "executable": extra.pop("executable", argv[0]),
            "cwd": "/",
            "env": {},
            "stdin": False,
            "journal_bytes": 1 << 20,
            "segment_bytes": 1 << 16,
            "blocking": True,
        }
        message.update(extra)
        self.send(client, message)

    def test_hello(self):
        """hello is answered with the version, the keeper's pid and its programs."""
        client = self.connect()
        found, _ = self.messages(client, lambda f: f)
        self.assertEqual(found[0]["type"], m.HELLO)
        self.assertEqual(found[0]["version"], m.VERSION)
        self.assertEqual(found[0]["pid"], os.getpid())
        self.assertEqual(found[0]["programs"], [])
        self.assertEqual(found[0]["features"], ["pty", "total"])

    def test_other_version_refused(self):
        """A ccx speaking another version is told which and disconnected."""
        client = self.connect(version=m.VERSION + 1)
        found, _ = self.messages(client)
        self.assertEqual(found[0]["type"], m.ERROR)
        self.assertIn(f"version {m.VERSION}", found[0]["message"])
        self.assertEqual(self.keeper.clients, [])

    def test_hello_first(self):
        """Anything before hello is refused."""
        client = self.connect(version=None)
        self.send(client, {"type": m.LIST})
        found, _ = self.messages(client)
        self.assertEqual([f["type"] for f in found], [m.ERROR])

    def test_malformed_spawn(self):
        """A spawn missing a field, or with a wrong one, drops the connection."""
        client = self.connect()
        self.messages(client, lambda f: f)
        self.send(client, {"type": m.SPAWN, "id": "p1", "argv": "sh"})
        found, _ = self.messages(client)
        self.assertEqual(found[-1]["type"], m.ERROR)
        self.assertEqual(self.keeper.programs, {})

    def test_bad_id(self):
        """An id that is not a plain name never becomes a path."""
        client = self.connect()
        self.messages(client, lambda f: f)
        self.spawn(client, [SH, "-c", "true"], id="../x")
        found, _ = self.messages(client)
        self.assertEqual(found[-1]["type"], m.ERROR)
        self.assertFalse(os.path.exists(os.path.join(self.state_dir, "x")))

    def test_spawn_failed(self):
        """A program that cannot run: the reason in ccx's own words, nothing left."""
        client = self.connect()
        self.spawn(client, ["/nonexistent"])
        found, _ = self.messages(client, lambda f: any(x["type"] == m.SPAWN_FAILED for x in f))
        self.assertEqual(
            found[-1],
            {
                "type": m.SPAWN_FAILED,
                "id": "p1",
                "reason": "'/nonexistent': No such file or directory",
            },
        )
        self.assertEqual(self.keeper.programs, {})
        self.assertFalse(os.path.exists(program_dir(self.state_dir, "p1")))

    def test_id_taken(self):
        """A second spawn with an id in use is refused."""
        client = self.connect()
        self.spawn(client, [SH, "-c", "sleep 5"])
        self.spawn(client, [SH, "-c", "true"])
        found, _ = self.messages(client, lambda f: any(x["type"] == m.SPAWN_FAILED for x in f))
        self.assertEqual(found[-1]["reason"], "the id is taken")

    def test_program_life(self):
        """
        Output goes to the journal, notices give its new end, and the exit
        is recorded with its real status and time, in that order.
        """
        client = self.connect()
        before = time.time()
        self.spawn(client, [SH, "-c", "echo out; echo err >&2; exit 3"])
        found, _ = self.messages(
            client, lambda f: sum(x["type"] in (m.EXITED, m.CLOSED) for x in f) == 3
        )
        kinds = [f["type"] for f in found]
        self.assertEqual(kinds[:2], [m.HELLO, m.SPAWNED])
        ends = {f["stream"]: f["end"] for f in found if f["type"] == m.OUTPUT}
        self.assertEqual(ends, {"stdout": 4, "stderr": 4})
        for stream in m.STREAMS:
            about = [f["type"] for f in found if f.get("stream") == stream]
            # Its end notice before the notice that it closed, once each.
            self.assertEqual(about, [m.OUTPUT, m.CLOSED])
        exited = [f for f in found if f["type"] == m.EXITED][0]
        self.assertEqual(exited["returncode"], 3)
        self.assertEqual(self.journaled("p1", "stdout"), b"out\n")
        record = read_record(program_dir(self.state_dir, "p1"))
        self.assertEqual((record.exit_code, record.status, record.durable), (3, "failed", True))
        self.assertEqual(record.ended_at, exited["ended_at"])
        self.assertEqual((record.stdout_bytes, record.stderr_bytes), (4, 4))
        self.assertLessEqual(before, record.started_at)
        self.assertEqual(record.argv, [SH, "-c", "echo out; echo err >&2; exit 3"])
        # Over: the keeper holds it no more.
        self.assertEqual(self.keeper.programs, {})

    def test_journal_full(self):
        """
        A journal that cannot be written (the disk is full): what the pipe
        held is lost and logged, the program goes on and ends as ever, and
        the ends count only what the journal holds.
        """
        failures = []
        real_splice = os.splice

        def splice(*args, **kwargs):
            if not failures:
                failures.append(True)
                raise OSError(errno.ENOSPC, "No space left on device")
            return real_splice(*args, **kwargs)

        self.patch(os, "splice", splice)
        client = self.connect()
        self.spawn(client, [SH, "-c", "echo lost; read x; echo kept"], stdin=True)
        _, [stdin] = self.messages(client, lambda f: any(x["type"] == m.SPAWNED for x in f))
        for _ in range(400):
            if failures and any("bytes of" in line for line in self.logged):
                break
            self.turn(0.01)
        # Lost: now the program goes on.
        os.write(stdin, b"\n")
        found, _ = self.messages(
            client, lambda f: sum(x["type"] in (m.EXITED, m.CLOSED) for x in f) == 3
        )
        self.assertEqual([f["returncode"] for f in found if f["type"] == m.EXITED], [0])
        [lost] = [line for line in self.logged if "bytes of" in line]
        self.assertIn("5 bytes of stdout lost", lost)
        self.assertIn("No space left on device", lost)
        self.assertEqual(self.journaled("p1", "stdout"), b"kept\n")
        ends = [f["end"] for f in found if f["type"] == m.OUTPUT and f["stream"] == "stdout"]
        self.assertEqual(ends[-1], 5)

    def test_stdin_passed(self):
        """
        ccx gets a descriptor of the program's standard input; the program
        sees its end only once the keeper's own is closed too.
        """
        client = self.connect()
        self.spawn(client, ["/bin/cat"], stdin=True)
        found, fds = self.messages(client, lambda f: any(x["type"] == m.SPAWNED for x in f))
        self.assertEqual(found[-1]["stdin"], True)
        self.assertEqual(len(fds), 1)
        os.write(fds[0], b"typed\n")
        self.messages(client, lambda f: any(x["type"] == m.OUTPUT for x in f))
        os.close(fds[0])
        self.fds.remove(fds[0])
        # The keeper's copy keeps it open: no end of file yet.
        self.turn(0.1)
        self.assertIn("p1", self.keeper.programs)
        self.send(client, {"type": m.CLOSE_STDIN, "id": "p1"})
        found, _ = self.messages(client, lambda f: any(x["type"] == m.EXITED for x in f))
        self.assertEqual([f["returncode"] for f in found if f["type"] == m.EXITED], [0])

    def hold_test(self, hold, expect_paused):
        client = self.connect()
        limit = 256 * 1024
        self.spawn(client, [YES], journal_bytes=limit, segment_bytes=limit // 4)
        self.messages(client, lambda f: any(x["type"] == m.OUTPUT for x in f))
        self.send(client, {"type": m.HOLD, "id": "p1", "offsets": hold})
        program = self.keeper.programs["p1"]
        for _ in range(2000):
            if program.paused if expect_paused else program.journal.end("stdout") > 8 * limit:
                break
            self.turn(0.01)
        self.assertEqual(
            program.paused,
            expect_paused,
            (program.journal.start("stdout"), program.journal.end("stdout"), program.returncode),
        )
        return client, program, limit

    def test_hold_pauses_at_the_limit(self):
        """
        A blocking program is held back once its journal holds its limit of
        bytes past the offset ccx holds (pinned: never evicted): the limit,
        at most one read more.
        """
        client, program, limit = self.hold_test({"stdout": 0, "stderr": 0}, True)
        end, start = program.journal.end("stdout"), program.journal.start("stdout")
        # (It may have evicted before the hold came: nothing since.)
        self.assertGreaterEqual(program.journal.held_bytes, limit)
        # One read past the limit at most.
        self.assertLess(program.journal.held_bytes, limit + READ_SIZE)
        for _ in range(20):
            self.turn(0.01)
        self.assertEqual(
            (program.journal.start("stdout"), program.journal.end("stdout")), (start, end)
        )
        # A hold moved on reads again; released, it reads on.
        self.send(client, {"type": m.HOLD, "id": "p1", "offsets": {"stdout": end, "stderr": 0}})
        self.assertFalse(program.paused)
        self.assertGreater(program.journal.start("stdout"), start)
        self.send(client, {"type": m.HOLD, "id": "p1", "offsets": None})
        self.assertFalse(program.paused)

    def test_no_hold_no_pause(self):
        """
        Nothing held (no ccx reading, no blocking subscriber): the journal
        evicts its oldest segments and ccx is told each exact range.
        """
        client, program, limit = self.hold_test(None, False)
        start = program.journal.start("stdout")
        self.assertGreater(start, 0)
        self.assertLessEqual(program.journal.held_bytes, limit + READ_SIZE)
        self.messages(client, turns=5)
        evicted = [(f["start"], f["end"]) for f in self.everything if f["type"] == m.EVICTED]
        self.assertEqual(evicted[0][0], 0)
        for (_, end), (start_next, _) in zip(evicted, evicted[1:]):
            self.assertEqual(end, start_next)
        self.assertLessEqual(evicted[-1][1], program.journal.start("stdout"))

    def test_nothing_evicted_before_the_first_hold(self):
        """
        ccx has read nothing until its first hold: a blocking program that
        fills its limit before it comes is held back, not evicted.
        """
        client = self.connect()
        limit = 64 * 1024
        self.spawn(client, [YES], journal_bytes=limit, segment_bytes=limit // 4)
        program = self.keeper.programs["p1"]
        for _ in range(2000):
            if program.paused:
                break
            self.turn(0.01)
        self.assertTrue(program.paused)
        self.assertEqual(program.journal.start("stdout"), 0)
        self.assertNotIn(m.EVICTED, [f["type"] for f in self.messages(client, turns=5)[0]])

    def printed(self, client, size=4096):
        """
        A program that printed L{SEQ} (in segments of C{size} bytes) and
        waits, with ccx's hold at its end.
        """
        self.spawn(
            client, ["/bin/sh", "-c", "seq 1 20000; exec sleep 60"], executable="/bin/sh",
            segment_bytes=size,
        )
        program = self.keeper.programs["p1"]
        self.messages(client, lambda f: program.journal.end("stdout") == len(SEQ))
        self.send(client, {"type": m.HOLD, "id": "p1", "offsets": {"stdout": len(SEQ), "stderr": 0}})
        return program

    def test_evict_for_the_total(self):
        """
        ccx keeps the state dir's total: the keeper evicts the segment it
        names, and says so as for its own limit.
        """
        client = self.connect()
        program = self.printed(client)
        first = program.journal.streams["stdout"].oldest_segment_end()
        self.send(client, {"type": m.EVICT, "id": "p1", "stream": "stdout", "start": 0})
        found, _ = self.messages(client, lambda f: any(x["type"] == m.EVICTED for x in f))
        self.assertEqual(
            [(f["stream"], f["start"], f["end"]) for f in found if f["type"] == m.EVICTED],
            [("stdout", 0, first)],
        )
        self.assertEqual(program.journal.start("stdout"), first)
        # Asked again (it crossed an eviction): nothing more goes, nothing is said.
        self.send(client, {"type": m.EVICT, "id": "p1", "stream": "stdout", "start": 0})
        self.assertEqual(program.journal.start("stdout"), first)
        self.assertEqual(self.messages(client, turns=5)[0], [])

    def test_evict_held(self):
        """
        A segment past ccx's hold (one byte is enough) is kept, and ccx is
        told.
        """
        client = self.connect()
        program = self.printed(client)
        first = program.journal.streams["stdout"].oldest_segment_end()
        self.send(client, {"type": m.HOLD, "id": "p1", "offsets": {"stdout": first - 1, "stderr": 0}})
        self.send(client, {"type": m.EVICT, "id": "p1", "stream": "stdout", "start": 0})
        found, _ = self.messages(client, lambda f: any(x["type"] == m.KEPT for x in f))
        self.assertEqual(
            [f for f in found if f["type"] in (m.KEPT, m.EVICTED)],
            [{"type": m.KEPT, "id": "p1", "stream": "stdout", "start": 0, "gone": False}],
        )
        self.assertEqual(program.journal.start("stdout"), 0)
        # The hold at the segment's end: it may go.
        self.send(client, {"type": m.HOLD, "id": "p1", "offsets": {"stdout": first, "stderr": 0}})
        self.send(client, {"type": m.EVICT, "id": "p1", "stream": "stdout", "start": 0})
        self.assertEqual(program.journal.start("stdout"), first)

    def test_evict_forgotten(self):
        """
        A program the keeper no longer holds: ccx is told it is gone (the
        journal is ccx's from then on).
        """
        client = self.connect()
        self.send(client, {"type": m.EVICT, "id": "nope", "stream": "stdout", "start": 0})
        found, _ = self.messages(client, lambda f: any(x["type"] == m.KEPT for x in f))
        self.assertEqual(
            found[-1], {"type": m.KEPT, "id": "nope", "stream": "stdout", "start": 0, "gone": True}
        )

    def test_held_back_for_the_total(self):
        """
        ccx says the total is full of bytes nothing may evict: a blocking
        program is held back under its own limit, and reads on once told
        there is room.
        """
        client = self.connect()
        # Under its own limit (1 MiB), with nothing held: free to read on.
        program = self.printed(client)
        self.assertFalse(program.paused)
        self.send(client, {"type": m.HOLD, "id": "p1", "offsets": None, "full": True})
        self.assertTrue(program.paused)
        self.send(client, {"type": m.HOLD, "id": "p1", "offsets": None, "full": False})
        self.assertFalse(program.paused)

    def test_drop_mode_never_held(self):
        """A program in drop mode is never held back, whatever ccx holds."""
        client = self.connect()
        self.spawn(client, [YES], journal_bytes=64 * 1024, blocking=False)
        self.messages(client, lambda f: any(x["type"] == m.OUTPUT for x in f))
        self.send(client, {"type": m.HOLD, "id": "p1", "offsets": {"stdout": 0}})
        program = self.keeper.programs["p1"]
        for _ in range(200):
            self.turn(0.01)
            if program.journal.end("stdout") > 256 * 1024:
                break
        self.assertFalse(program.paused)
        self.assertGreater(program.journal.end("stdout"), 256 * 1024)

    def test_ccx_gone_releases(self):
        """When ccx leaves (it stops), nothing holds a program back any more."""
        client, program, limit = self.hold_test({"stdout": 0, "stderr": 0}, True)
        client.sendall(m.encode({"type": m.LEAVE}))
        client.close()
        self.turn()
        self.turn()
        self.assertEqual(self.keeper.clients, [])
        self.assertFalse(program.paused)

    def test_dropped_ccx_held_for_the_grace(self):
        """
        A ccx whose connection dropped (it did not leave) keeps its holds
        for the grace, to connect again and read on: held just before it
        ends, released once it has; a ccx connecting within it keeps them.
        """
        now = [1000.0]
        self.keeper.monotonic = lambda: now[0]
        client, program, limit = self.hold_test({"stdout": 0, "stderr": 0}, True)
        start = program.journal.start("stdout")
        client.close()
        self.turn()
        self.turn()
        self.assertEqual(self.keeper.clients, [])
        now[0] += self.keeper.hold_grace - 0.001
        self.turn()
        self.assertTrue(program.paused)
        self.assertEqual(program.journal.start("stdout"), start)
        # Back within the grace: still held, and past it too.
        again = self.connect()
        now[0] += 1.0
        self.turn()
        self.assertTrue(program.paused)
        again.close()
        self.turn()
        now[0] += self.keeper.hold_grace
        self.turn()
        self.assertFalse(program.paused)

    def test_adopt(self):
        """
        A second ccx adopts a running program: its pid, start, ends so far
        and standard input; an id it does not hold is unknown.
        """
        first = self.connect()
        self.spawn(first, [SH, "-c", "echo hi; exec cat"], stdin=True)
        self.messages(first, lambda f: any(x["type"] == m.OUTPUT for x in f))
        first.close()
        self.turn()
        self.received = b""
        second = self.connect()
        found, _ = self.messages(second, lambda f: f)
        self.assertEqual([p["id"] for p in found[0]["programs"]], ["p1"])
        self.send(second, {"type": m.ADOPT, "id": "p1"})
        self.send(second, {"type": m.ADOPT, "id": "p2"})
        found, fds = self.messages(second, lambda f: len(f) >= 2)
        adopted = found[0]
        self.assertEqual(adopted["type"], m.ADOPTED)
        self.assertEqual(adopted["ends"], {"stdout": 3, "stderr": 0})
        self.assertEqual(adopted["closed"], [])
        self.assertIsNone(adopted["returncode"])
        self.assertEqual(len(fds), 1)
        self.assertEqual(found[1], {"type": m.UNKNOWN, "id": "p2"})

    def test_finished_when_idle(self):
        """
        The keeper may exit once it holds no program and no ccx is
        connected, not before.
        """
        self.assertFalse(self.keeper.finished)
        client = self.connect()
        self.assertFalse(self.keeper.finished)
        self.spawn(client, [SH, "-c", "exec cat"], stdin=True)
        _, fds = self.messages(client, lambda f: any(x["type"] == m.SPAWNED for x in f))
        os.close(fds[0])
        self.fds.remove(fds[0])
        client.close()
        self.turn()
        self.assertFalse(self.keeper.finished)
        self.send_close_stdin_as_new_client()
        for _ in range(200):
            if self.keeper.finished:
                break
            self.turn(0.01)
        self.assertTrue(self.keeper.finished)

    def send_close_stdin_as_new_client(self):
        client = self.connect()
        self.send(client, {"type": m.CLOSE_STDIN, "id": "p1"})
        client.close()
        self.turn()

    def test_record_while_running(self):
        """
        While the program runs its record is the journal's, unfinished, with
        what a later ccx needs to take it back (durable, pid, stdin, mode).
        """
        client = self.connect()
        self.spawn(client, [SH, "-c", "exec cat"], stdin=True, blocking=False)
        found, _ = self.messages(client, lambda f: any(x["type"] == m.SPAWNED for x in f))
        record = read_record(program_dir(self.state_dir, "p1"))
        self.assertEqual(
            (record.durable, record.status, record.pid, record.extra["stdin"], record.extra["blocking"]),
            (True, None, found[-1]["pid"], True, False),
        )

    def test_program_on_a_terminal(self):
        """
        With pty, the program runs on a new terminal of that size, its
        controlling terminal; ccx gets a duplicate of the master, through
        which it types and sets the size; the keeper journals the one
        stream pty and records the last size and the byte count.
        """
        client = self.connect()
        script = "stty size; tty >/dev/null && echo tty; read x; stty size; echo got $x"
        self.spawn(client, [SH, "-c", script], pty=[24, 80])
        found, fds = self.messages(client, lambda f: any(x["type"] == m.SPAWNED for x in f))
        spawned = found[-1]
        self.assertEqual((spawned["stdin"], spawned["closed"]), (True, []))
        [master] = fds
        self.assertTrue(os.isatty(master))
        self.messages(client, lambda f: b"tty" in self.journaled("p1", "pty"))
        self.assertEqual(self.journaled("p1", "pty"), b"24 80\r\ntty\r\n")
        record = read_record(program_dir(self.state_dir, "p1"))
        self.assertEqual((record.pty, record.extra["stdin"]), ([24, 80], True))
        set_window_size(master, WindowSize(30, 100))
        os.write(master, b"hello\n")
        found, _ = self.messages(
            client, lambda f: sum(x["type"] in (m.EXITED, m.CLOSED) for x in f) == 2
        )
        self.assertEqual([f["stream"] for f in found if f["type"] == m.CLOSED], ["pty"])
        data = self.journaled("p1", "pty")
        self.assertTrue(data.endswith(b"30 100\r\ngot hello\r\n"), data)
        record = read_record(program_dir(self.state_dir, "p1"))
        self.assertEqual(
            (record.status, record.pty, record.pty_bytes, record.stdout_bytes),
            ("completed", [30, 100], len(data), 0),
        )
        self.assertEqual(self.keeper.programs, {})

    def test_terminal_adopted_with_its_size(self):
        """
        A second ccx adopts a program on a terminal: its ends by stream
        (pty only), the master again, and the size the first ccx set (in
        the record too).
        """
        first = self.connect()
        self.spawn(first, [SH, "-c", "echo hi; exec cat"], pty=[24, 80])
        _, [master] = self.messages(first, lambda f: any(x["type"] == m.OUTPUT for x in f))
        set_window_size(master, WindowSize(40, 132))
        first.close()
        self.turn()
        self.received = b""
        second = self.connect()
        self.messages(second, lambda f: f)
        self.send(second, {"type": m.ADOPT, "id": "p1"})
        found, fds = self.messages(second, lambda f: any(x["type"] == m.ADOPTED for x in f))
        adopted = found[-1]
        self.assertEqual(adopted["pty"], [40, 132])
        self.assertEqual((adopted["ends"], adopted["closed"]), ({"pty": 4}, []))
        self.assertEqual(len(fds), 1)
        self.assertEqual(window_size(fds[0]), WindowSize(40, 132))
        self.assertEqual(read_record(program_dir(self.state_dir, "p1")).pty, [40, 132])

    def test_terminal_back_pressure(self):
        """
        A blocking program on a terminal is held back, as on pipes, once
        its journal holds its limit past what ccx holds.
        """
        client = self.connect()
        limit = 64 * 1024
        self.spawn(client, [YES], pty=[24, 80], journal_bytes=limit, segment_bytes=limit // 4)
        self.messages(client, lambda f: any(x["type"] == m.OUTPUT for x in f))
        self.send(client, {"type": m.HOLD, "id": "p1", "offsets": {"pty": 0}})
        program = self.keeper.programs["p1"]
        for _ in range(2000):
            if program.paused:
                break
            self.turn(0.01)
        self.assertTrue(program.paused)
        self.assertEqual(program.journal.start("pty"), 0)
        self.assertLess(program.journal.held_bytes, limit + TERMINAL_READ_SIZE)

    def test_malformed_window(self):
        """A pty that is not [rows, cols] within bounds is a malformed spawn: nothing starts."""
        for pty in ([0, 80], [24, 1001], [24], "24x80"):
            client = self.connect()
            self.spawn(client, [SH, "-c", "true"], pty=pty)
            found, _ = self.messages(client)
            self.assertEqual(found[-1]["type"], m.ERROR, pty)
            self.assertEqual(self.keeper.programs, {})
            self.assertFalse(os.path.exists(program_dir(self.state_dir, "p1")))
            self.received = b""

    def test_note(self):
        """
        A note keeps ccx's fields (timeout, paused time) in the record's
        extra, beside the keeper's own, which it cannot change.
        """
        client = self.connect()
        self.spawn(client, [SH, "-c", "exec cat"], stdin=True)
        self.messages(client, lambda f: any(x["type"] == m.SPAWNED for x in f))
        self.send(client, {"type": m.NOTE, "id": "p1", "extra": {"timeout": 60, "paused_at": None}})
        self.send(client, {"type": m.NOTE, "id": "p1", "extra": {"paused_at": 1000.5, "paused_seconds": 2.25}})
        record = read_record(program_dir(self.state_dir, "p1"))
        self.assertEqual(
            (record.extra["timeout"], record.extra["paused_at"], record.extra["paused_seconds"], record.extra["stdin"]),
            (60, 1000.5, 2.25, True),
        )

    def test_note_refused(self):
        """
        A note of the keeper's own fields, or of a value that is not a
        number (a boolean is not), is refused: error, connection dropped,
        record unchanged.
        """
        for extra in ({"stdin": False}, {"timeout": True}, {"timeout": "60"}, ["timeout"]):
            client = self.connect()
            self.messages(client, lambda f: f)
            if "p1" not in self.keeper.programs:
                self.spawn(client, [SH, "-c", "exec cat"], stdin=True)
                self.messages(client, lambda f: any(x["type"] == m.SPAWNED for x in f))
            self.send(client, {"type": m.NOTE, "id": "p1", "extra": extra})
            found, _ = self.messages(client)
            self.assertEqual(found[-1]["type"], m.ERROR, extra)
            record = read_record(program_dir(self.state_dir, "p1"))
            self.assertEqual((record.extra["stdin"], "timeout" in record.extra), (True, False))
            client.close()


class KeeperProcessTests(SynchronousTestCase):
    """
    C{python -S -m ccx.keeper}: one keeper per state dir, detached, on a
    socket only its owner may use, gone once nothing is left to keep.
    """

    def run_keeper(self, state_dir):
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(m.__file__))))
        return subprocess.run(
            [sys.executable, "-S", "-m", "ccx.keeper", "--state-dir", state_dir],
            env={"PYTHONPATH": root},
            capture_output=True,
            timeout=30,
        )

    def test_one_keeper_detached(self):
        state_dir = os.path.abspath(self.mktemp())
        self.addCleanup(lambda: [os.kill(pid, signal.SIGKILL) for pid in keeper_pids(state_dir)])
        first = self.run_keeper(state_dir)
        self.assertEqual((first.returncode, first.stderr), (0, b""))
        [pid] = keeper_pids(state_dir)
        # Detached: in a session of its own, not this process's child.
        self.assertEqual(os.getsid(pid), pid)
        path = os.path.join(state_dir, m.SOCKET_NAME)
        self.assertEqual(os.stat(path).st_mode & 0o777, 0o600)
        # A second one sees the first holds the dir, and leaves it be.
        second = self.run_keeper(state_dir)
        self.assertEqual(second.returncode, 0)
        self.assertEqual(keeper_pids(state_dir), [pid])
        # A ccx comes and goes, with nothing to keep: the keeper exits.
        directory = os.open(state_dir, os.O_PATH)
        self.addCleanup(os.close, directory)
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.connect(f"/proc/self/fd/{directory}/{m.SOCKET_NAME}")
        client.sendall(m.encode({"type": m.HELLO, "version": m.VERSION}))
        self.assertEqual(m.decode(client.makefile("rb").readline())["pid"], pid)
        exited = os.pidfd_open(pid)
        self.addCleanup(os.close, exited)
        client.close()
        # Readable once it has exited.
        self.assertEqual(select.select([exited], [], [], 10)[0], [exited])
        self.assertEqual(keeper_pids(state_dir), [])
        self.assertFalse(os.path.exists(path))

    def test_log_bounded(self):
        """
        The detached keeper's log is a L{LogFile}: an earlier keeper's log
        past the size is keeper.log.1 when a new keeper starts, and the new
        one's lines begin a keeper.log of their own.
        """
        state_dir = os.path.abspath(self.mktemp())
        os.makedirs(state_dir)
        log = os.path.join(state_dir, m.LOG_NAME)
        with open(log, "w") as f:
            f.write("x" * (LOG_BYTES + 1))
        self.addCleanup(lambda: [os.kill(pid, signal.SIGKILL) for pid in keeper_pids(state_dir)])
        self.assertEqual(self.run_keeper(state_dir).returncode, 0)
        [pid] = keeper_pids(state_dir)
        exited = os.pidfd_open(pid)
        self.addCleanup(os.close, exited)
        directory = os.open(state_dir, os.O_PATH)
        self.addCleanup(os.close, directory)
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.connect(f"/proc/self/fd/{directory}/{m.SOCKET_NAME}")
        client.sendall(m.encode({"type": m.HELLO, "version": m.VERSION}))
        client.makefile("rb").readline()
        client.close()
        self.assertEqual(select.select([exited], [], [], 10)[0], [exited])
        self.assertEqual(os.path.getsize(log + ".1"), LOG_BYTES + 1)
        lines = open(log).read().splitlines()
        self.assertEqual(len(lines), 2, lines)
        self.assertTrue(lines[0].endswith(f"ccx-keeper[{pid}]: keeping {state_dir}"), lines)
        self.assertTrue(lines[1].endswith("nothing left to keep: exiting"), lines)

    def test_unusable_state_dir(self):
        """A state dir that cannot be made: one line on stderr, status 1."""
        blocker = os.path.abspath(self.mktemp())
        with open(blocker, "w"):
            pass
        result = self.run_keeper(os.path.join(blocker, "state"))
        self.assertEqual(result.returncode, 1)
        self.assertTrue(result.stderr.startswith(b"ccx-keeper: cannot use the state dir"))
        self.assertEqual(result.stderr.count(b"\n"), 1)
