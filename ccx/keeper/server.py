"""
The keeper's loop: the programs it started, their pipes and journals, and
the ccx connections on its socket.  One thread, one C{selectors} loop.
"""

import errno
import fcntl
import os
import selectors
import shutil
import signal
import socket
import sys
import time
from collections import deque
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple

from ccx.keeper import messages as m
from ccx.keeper.records import journal_path, program_dir, proc_start_time, write_record
from ccx.process.cgroup import Cgroup, CgroupError, own_cgroup
from ccx.process.child import start_program
from ccx.process.errors import SpawnFailed

# A program's output pipes are made this large (where the system lets
# them: F_SETPIPE_SZ), and read as much at once: fewer turns of the loop,
# writes and notices per MiB, which is most of what the keeper costs.
PIPE_SIZE = 1024 * 1024
READ_SIZE = PIPE_SIZE
_NONBLOCK = os.SPLICE_F_NONBLOCK | os.SPLICE_F_MOVE
# What writing a journal can fail with (the pipe is then still full).
_JOURNAL_ERRORS = frozenset((errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EFBIG, errno.EROFS))
# Seconds a keeper nobody has connected to waits for its first ccx.
FIRST_CONNECTION = 30.0
# The most a ccx may leave unread on the socket before it is dropped.
MAX_QUEUED = 64 * 1024 * 1024


def log(text: str) -> None:
    """
    A line for keeper.log (the keeper's standard error).
    """
    sys.stderr.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} ccx-keeper[{os.getpid()}]: {text}\n")
    sys.stderr.flush()


class Program:
    """
    One durable program the keeper started and still holds: its child, the
    read ends of its output pipes, the write end of its standard input, and
    its journal files.

    @ivar ends: the bytes appended to each stream's journal so far.
    @ivar hold: the offsets ccx's blocking subscribers have not read past,
        by stream; L{None} when none is behind.
    """

    def __init__(self, record: Dict[str, Any], popen: Any, pidfd: int) -> None:
        self.record = record
        self.process_id: str = record["process_id"]
        self.popen = popen
        self.pid: int = popen.pid
        self.pidfd: Optional[int] = pidfd
        self.readers: Dict[str, int] = {}
        self.journals: Dict[str, int] = {}
        self.stdin: Optional[int] = None
        self.ends = {stream: 0 for stream in m.STREAMS}
        self.hold: Optional[Dict[str, int]] = None
        self.paused = False

    @property
    def blocking(self) -> bool:
        return bool(self.record.get("blocking"))

    @property
    def journal_bytes(self) -> int:
        return int(self.record["journal_bytes"])

    @property
    def over(self) -> bool:
        """
        Whether the journal holds C{journal_bytes} or more that a blocking
        subscriber has not read: the program is then held back.
        """
        if not self.blocking or self.hold is None:
            return False
        return any(
            self.ends[s] - int(self.hold.get(s, self.ends[s])) >= self.journal_bytes
            for s in self.readers
        )

    @property
    def done(self) -> bool:
        return self.pidfd is None and not self.readers

    def summary(self) -> Dict[str, Any]:
        return {
            "id": self.process_id,
            "pid": self.pid,
            "started_at": self.record["started_at"],
            "stdin": self.stdin is not None,
            "ends": dict(self.ends),
            "closed": [s for s in m.STREAMS if s not in self.readers],
            "returncode": self.record.get("returncode"),
            "ended_at": self.record.get("ended_at"),
        }


class Client:
    """
    One ccx connected to the keeper.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.received = bytearray()
        self.queue: Deque[Tuple[bytes, List[int]]] = deque()
        self.queued = 0
        self.greeted = False


class Keeper:
    """
    The keeper of one state dir.

    @param listener: its listening unix socket.
    @param clock: the time of day, in seconds since the epoch.
    @param log: where its lines go (L{log}: its standard error).
    """

    def __init__(
        self,
        state_dir: str,
        listener: socket.socket,
        clock: Callable[[], float] = time.time,
        first_connection: float = FIRST_CONNECTION,
        log: Callable[[str], None] = log,
    ) -> None:
        self.state_dir = state_dir
        self.log = log
        self.listener = listener
        self.clock = clock
        self.selector = selectors.DefaultSelector()
        self.programs: Dict[str, Program] = {}
        # The keeper's own cgroup, where it goes back after starting a
        # program in the program's.
        self._home: Optional[str] = None
        self.clients: List[Client] = []
        self._seen_client = False
        self._deadline = time.monotonic() + first_connection
        # Notices gathered in one turn of the loop, sent at its end: output
        # notices of one stream are merged into the first.
        self._notices: List[Dict[str, Any]] = []
        self._pending_output: Dict[Tuple[str, str], Dict[str, Any]] = {}
        listener.setblocking(False)
        self.selector.register(listener, selectors.EVENT_READ, self._accept)

    # -- the loop ---------------------------------------------------------

    @property
    def finished(self) -> bool:
        """
        Whether the keeper may exit: it holds no program and no ccx is
        connected (and one has been, or none came in time).
        """
        if self.programs or self.clients:
            return False
        return self._seen_client or time.monotonic() >= self._deadline

    def run(self) -> None:
        while not self.finished:
            self.run_once(None if self._seen_client else 1.0)
        self.close()

    def run_once(self, timeout: Optional[float]) -> None:
        """
        Wait up to C{timeout} seconds for something to happen, handle it,
        and send the notices it made.
        """
        for key, events in self.selector.select(timeout):
            key.data(key, events)
        self._flush_notices()

    def close(self) -> None:
        for client in list(self.clients):
            self._drop(client)
        self.selector.unregister(self.listener)
        self.listener.close()
        self.selector.close()

    # -- connections ------------------------------------------------------

    def _accept(self, key: Any, events: int) -> None:
        try:
            sock, _ = self.listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        sock.setblocking(False)
        client = Client(sock)
        self.clients.append(client)
        self._seen_client = True
        self.selector.register(sock, selectors.EVENT_READ, lambda k, e: self._ready(client, e))

    def _ready(self, client: Client, events: int) -> None:
        if events & selectors.EVENT_WRITE:
            self._send(client)
        if events & selectors.EVENT_READ and client in self.clients:
            self._receive(client)

    def _receive(self, client: Client) -> None:
        try:
            data = client.sock.recv(256 * 1024)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop(client)
            return
        client.received += data
        while client in self.clients:
            line_end = client.received.find(b"\n")
            if line_end < 0:
                if len(client.received) > m.MAX_LINE:
                    self._refuse(client, "message too long")
                return
            line = bytes(client.received[:line_end])
            del client.received[: line_end + 1]
            try:
                message = m.decode(line)
            except m.BadMessage as e:
                self._refuse(client, str(e))
                return
            self._handle(client, message)

    def _refuse(self, client: Client, reason: str) -> None:
        self.log(f"dropping a connection: {reason}")
        self._reply(client, {"type": m.ERROR, "message": reason})
        self._send(client)
        self._drop(client)

    def _drop(self, client: Client) -> None:
        if client not in self.clients:
            return
        self.clients.remove(client)
        self.selector.unregister(client.sock)
        client.sock.close()
        for fds in (fds for _, fds in client.queue):
            for fd in fds:
                os.close(fd)
        client.queue.clear()
        if not self.clients:
            # No ccx, so no blocking subscriber: nothing holds a program back.
            for program in self.programs.values():
                program.hold = None
                self._balance(program)

    def _reply(self, client: Client, message: Dict[str, Any], fds: List[int] = ()) -> None:
        """
        Queue C{message} for C{client}, with duplicates of C{fds} (closed
        once sent).
        """
        data = m.encode(message)
        client.queue.append((data, [os.dup(fd) for fd in fds]))
        client.queued += len(data)
        if client.queued > MAX_QUEUED:
            self.log("dropping a connection that does not read")
            self._drop(client)
            return
        self._send(client)

    def _send(self, client: Client) -> None:
        while client.queue:
            data, fds = client.queue[0]
            try:
                if fds:
                    sent = socket.send_fds(client.sock, [data], fds)
                else:
                    sent = client.sock.send(data)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self._drop(client)
                return
            for fd in fds:
                os.close(fd)
            client.queued -= sent
            if sent < len(data):
                # The descriptors went with the first byte.
                client.queue[0] = (data[sent:], [])
                break
            client.queue.popleft()
        wanted = selectors.EVENT_READ | (selectors.EVENT_WRITE if client.queue else 0)
        if client in self.clients and self.selector.get_key(client.sock).events != wanted:
            self.selector.modify(client.sock, wanted, self.selector.get_key(client.sock).data)

    def _broadcast(self, message: Dict[str, Any]) -> None:
        for client in list(self.clients):
            if client.greeted:
                self._reply(client, message)

    def _flush_notices(self) -> None:
        notices, self._notices = self._notices, []
        self._pending_output.clear()
        for notice in notices:
            self._broadcast(notice)

    def _notice(self, message: Dict[str, Any]) -> None:
        self._notices.append(message)

    # -- requests ---------------------------------------------------------

    def _handle(self, client: Client, message: Dict[str, Any]) -> None:
        kind = message["type"]
        if not client.greeted:
            if kind != m.HELLO:
                self._refuse(client, "the first message must be hello")
            elif message.get("version") != m.VERSION:
                self._refuse(
                    client, f"this keeper speaks version {m.VERSION}, not {message.get('version')!r}"
                )
            else:
                client.greeted = True
                self._reply(client, self._hello())
            return
        handler = {
            m.SPAWN: self._spawn,
            m.ADOPT: self._adopt,
            m.HOLD: self._hold,
            m.CLOSE_STDIN: self._close_stdin,
            m.LIST: lambda c, msg: self._reply(c, self._list()),
        }.get(kind)
        if handler is None:
            self._refuse(client, f"unknown message type {kind!r}")
            return
        try:
            handler(client, message)
        except (KeyError, TypeError, ValueError) as e:
            self._refuse(client, f"malformed {kind}: {e!r}")

    def _hello(self) -> Dict[str, Any]:
        return {**self._list(), "type": m.HELLO, "version": m.VERSION, "pid": os.getpid()}

    def _list(self) -> Dict[str, Any]:
        return {"type": m.LIST, "programs": [p.summary() for p in self.programs.values()]}

    def _spawn(self, client: Client, message: Dict[str, Any]) -> None:
        process_id = message["id"]
        argv = message["argv"]
        env = message["env"]
        if not (
            isinstance(argv, list)
            and argv
            and all(isinstance(a, str) for a in argv)
            and isinstance(env, dict)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in env.items())
            and isinstance(message["executable"], str)
            and isinstance(message["cwd"], str)
            and int(message["journal_bytes"]) > 0
        ):
            raise ValueError("argv, env, executable, cwd or journal_bytes")
        folder = program_dir(self.state_dir, process_id)
        if process_id in self.programs or os.path.exists(folder):
            self._reply(
                client,
                {"type": m.SPAWN_FAILED, "id": process_id, "reason": "the id is taken"},
            )
            return
        os.makedirs(folder, mode=0o700)
        try:
            program = self._start(message)
        except (SpawnFailed, CgroupError, OSError) as e:
            shutil.rmtree(folder, ignore_errors=True)
            reason = e.message if isinstance(e, SpawnFailed) else str(e)
            self._reply(client, {"type": m.SPAWN_FAILED, "id": process_id, "reason": reason})
            return
        self.programs[process_id] = program
        self.log(f"started {process_id}: {argv} (pid {program.pid})")
        fds = [program.stdin] if program.stdin is not None else []
        self._reply(
            client,
            {
                "type": m.SPAWNED,
                "id": process_id,
                "pid": program.pid,
                "started_at": program.record["started_at"],
                "stdin": bool(fds),
            },
            fds,
        )

    def _start(self, message: Dict[str, Any]) -> Program:
        """
        Make the pipes and journals of a program and start it.

        @raise SpawnFailed: when it could not be executed.
        @raise OSError: when the keeper could not make its pipes or child.
        """
        process_id = message["id"]
        opened: List[int] = []
        child_ends: List[int] = []
        try:
            if message.get("stdin"):
                stdin_child, stdin_ours = os.pipe()
                opened.append(stdin_ours)
            else:
                stdin_child, stdin_ours = os.open(os.devnull, os.O_RDONLY), None
            child_ends.append(stdin_child)
            ours: Dict[str, int] = {}
            theirs: Dict[str, int] = {}
            for stream in m.STREAMS:
                ours[stream], theirs[stream] = os.pipe()
                opened.append(ours[stream])
                child_ends.append(theirs[stream])
            journals = {}
            for stream in m.STREAMS:
                # Written at the offsets the keeper keeps (splice cannot
                # append to an O_APPEND file); the keeper is its one writer.
                journals[stream] = os.open(
                    journal_path(self.state_dir, process_id, stream),
                    os.O_WRONLY | os.O_CREAT | os.O_EXCL,
                    0o600,
                )
                opened.append(journals[stream])
            popen = self._start_program(message, stdin_child, theirs)
        except BaseException:
            for fd in opened:
                os.close(fd)
            raise
        finally:
            for fd in child_ends:
                os.close(fd)
        # Opened while the child is unreaped: it names this child for good.
        pidfd = os.pidfd_open(popen.pid)
        record = {
            "process_id": process_id,
            "argv": message["argv"],
            "executable": message["executable"],
            "cwd": message["cwd"],
            "stdin": bool(message.get("stdin")),
            "blocking": bool(message.get("blocking", True)),
            "journal_bytes": int(message["journal_bytes"]),
            "meta": message.get("meta") or {},
            "cgroup": message.get("cgroup"),
            "pid": popen.pid,
            "proc_start": proc_start_time(popen.pid),
            "started_at": self.clock(),
            "ended_at": None,
            "returncode": None,
            "keeper_pid": os.getpid(),
        }
        program = Program(record, popen, pidfd)
        program.stdin = stdin_ours
        program.journals = journals
        write_record(self.state_dir, record)
        for stream, fd in ours.items():
            os.set_blocking(fd, False)
            try:
                fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
            except OSError:
                pass  # over the user's pipe-user-pages-soft: the default size
            program.readers[stream] = fd
            self.selector.register(fd, selectors.EVENT_READ, self._pipe_callback(program, stream))
        self.selector.register(pidfd, selectors.EVENT_READ, lambda k, e: self._reap(program))
        return program

    def _start_program(
        self, message: Dict[str, Any], stdin: int, outputs: Dict[str, int]
    ) -> Any:
        """
        Start the program, in its cgroup when it has one: the keeper moves
        itself in, starts it and moves back, as ccx does, so that even the
        program's first fork is inside.

        @raise CgroupError: when the cgroup could not be joined (or left:
            the program is then killed).
        """
        start = lambda: start_program(  # noqa: E731
            message["argv"],
            message["executable"],
            message["cwd"],
            message["env"],
            stdin,
            outputs["stdout"],
            outputs["stderr"],
        )
        path = message.get("cgroup")
        if path is None:
            return start()
        if not isinstance(path, str):
            raise ValueError("cgroup")
        if self._home is None:
            self._home = own_cgroup()[0]
        popen = None
        try:
            with Cgroup(path, self._home).joined():
                popen = start()
        except CgroupError:
            if popen is not None:
                os.killpg(popen.pid, signal.SIGKILL)
                popen.wait()
            raise
        return popen

    def _adopt(self, client: Client, message: Dict[str, Any]) -> None:
        program = self.programs.get(message["id"])
        if program is None:
            self._reply(client, {"type": m.UNKNOWN, "id": message["id"]})
            return
        fds = [program.stdin] if program.stdin is not None else []
        self._reply(client, {"type": m.ADOPTED, **program.summary()}, fds)

    def _hold(self, client: Client, message: Dict[str, Any]) -> None:
        program = self.programs.get(message["id"])
        if program is None:
            return
        offsets = message.get("offsets")
        if offsets is not None:
            offsets = {s: int(offsets[s]) for s in m.STREAMS if s in offsets}
        program.hold = offsets
        self._balance(program)

    def _close_stdin(self, client: Client, message: Dict[str, Any]) -> None:
        program = self.programs.get(message["id"])
        if program is not None and program.stdin is not None:
            os.close(program.stdin)
            program.stdin = None

    # -- programs ---------------------------------------------------------

    def _pipe_callback(self, program: Program, stream: str) -> Callable[[Any, int], None]:
        return lambda key, events: self._read(program, stream)

    def _read(self, program: Program, stream: str) -> None:
        """
        Move what the pipe holds to the end of the stream's journal, in the
        kernel (C{splice}: the bytes never pass through Python).
        """
        fd = program.readers[stream]
        journal = program.journals[stream]
        try:
            moved = os.splice(
                fd, journal, READ_SIZE, offset_dst=program.ends[stream], flags=_NONBLOCK
            )
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            if e.errno in _JOURNAL_ERRORS:
                self._lose(program, stream, e)
                return
            moved = 0  # the pipe itself failed: as its end
        if not moved:
            self._close_pipe(program, stream)
            return
        self._appended(program, stream, moved)
        self._balance(program)

    def _lose(self, program: Program, stream: str, error: OSError) -> None:
        """
        The journal cannot be written (the disk is full): what the pipe
        holds is read and lost, logged, so that the program goes on;
        offsets count what the journal holds, so that ccx reads exactly
        what they say.
        """
        try:
            lost = len(os.read(program.readers[stream], READ_SIZE))
        except OSError:
            lost = 0
        self.log(
            f"{program.process_id}: {lost} bytes of {stream} lost: the journal cannot "
            f"be written: {error}"
        )

    def _appended(self, program: Program, stream: str, size: int) -> None:
        """
        C{size} bytes were added to the stream's journal: ccx is told its
        new end (one notice per stream per turn of the loop).
        """
        program.ends[stream] += size
        key = (program.process_id, stream)
        notice = self._pending_output.get(key)
        if notice is None:
            notice = self._pending_output[key] = {
                "type": m.OUTPUT,
                "id": program.process_id,
                "stream": stream,
            }
            self._notice(notice)
        notice["end"] = program.ends[stream]
        notice["time"] = self.clock()

    def _close_pipe(self, program: Program, stream: str) -> None:
        fd = program.readers.pop(stream)
        if not program.paused:
            self.selector.unregister(fd)
        os.close(fd)
        os.close(program.journals.pop(stream))
        self._pending_output.pop((program.process_id, stream), None)
        self._notice({"type": m.CLOSED, "id": program.process_id, "stream": stream})
        self._maybe_forget(program)

    def _balance(self, program: Program) -> None:
        """
        Stop reading a program's pipes while its journal is full of bytes a
        blocking subscriber has not read; read them again once it is not.
        """
        over = program.over
        if over and not program.paused:
            for fd in program.readers.values():
                self.selector.unregister(fd)
            program.paused = True
        elif not over and program.paused:
            program.paused = False
            for stream, fd in program.readers.items():
                self.selector.register(
                    fd, selectors.EVENT_READ, self._pipe_callback(program, stream)
                )

    def _reap(self, program: Program) -> None:
        returncode = program.popen.poll()
        if returncode is None:
            return
        self.selector.unregister(program.pidfd)
        os.close(program.pidfd)
        program.pidfd = None
        program.record["returncode"] = returncode
        program.record["ended_at"] = self.clock()
        try:
            write_record(self.state_dir, program.record)
        except OSError as e:
            self.log(f"{program.process_id}: could not record its end: {e}")
        self.log(f"{program.process_id} exited with {returncode}")
        self._notice(
            {
                "type": m.EXITED,
                "id": program.process_id,
                "returncode": returncode,
                "ended_at": program.record["ended_at"],
            }
        )
        self._maybe_forget(program)

    def _maybe_forget(self, program: Program) -> None:
        """
        A program that has exited and whose pipes are closed is the
        record's alone from now on.
        """
        if not program.done:
            return
        if program.stdin is not None:
            os.close(program.stdin)
            program.stdin = None
        del self.programs[program.process_id]
