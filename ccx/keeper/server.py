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
from dataclasses import replace
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple

from ccx.keeper import messages as m
from ccx.journal.program import PTY_STREAMS, ProgramJournal
from ccx.journal.record import Record
from ccx.journal.statedir import PROGRAMS
from ccx.process.cgroup import Cgroup, CgroupError, own_cgroup
from ccx.process.child import start_program
from ccx.process.errors import SpawnFailed
from ccx.process.terminal import (
    WindowSize,
    open_terminal,
    take_controlling_terminal,
    window_size,
)

# A program's output pipes are made this large (where the system lets
# them: F_SETPIPE_SZ), and read as much at once: fewer turns of the loop,
# writes and notices per MiB.
PIPE_SIZE = 1024 * 1024
READ_SIZE = PIPE_SIZE
# The one stream of a program on a terminal, and how much of it one read
# takes (a terminal hands out at most a few KiB at a time).
PTY = PTY_STREAMS[0]
TERMINAL_READ_SIZE = 64 * 1024
# What writing a journal can fail with (the bytes are then still in the pipe).
_JOURNAL_ERRORS = frozenset((errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EFBIG, errno.EROFS))
# Seconds a keeper nobody has connected to waits for its first ccx.
FIRST_CONNECTION = 30.0
# The most a ccx may leave unread on the socket before it is dropped.
MAX_QUEUED = 64 * 1024 * 1024
# Seconds the holds of a ccx whose connection dropped (it did not say
# leave) are kept: the time it has to connect again and read on from where
# it was, nothing evicted under it (ccx.durable.link's retries fit in it).
HOLD_GRACE = 60.0


def log_line(text: str) -> str:
    """
    C{text} as a line of keeper.log: when, and which keeper.
    """
    return f"{time.strftime('%Y-%m-%dT%H:%M:%S')} ccx-keeper[{os.getpid()}]: {text}\n"


def log(text: str) -> None:
    """
    A line for the keeper's standard error (a keeper run in the foreground).
    """
    sys.stderr.write(log_line(text))
    sys.stderr.flush()


def program_dir(state_dir: str, process_id: str) -> str:
    """
    A program's directory in the state dir (the journal's layout).

    @raise ValueError: for an id that is not a plain name (it comes from
        ccx, but a path must never be built from a separator or C{..}).
    """
    if not process_id or process_id in (".", "..") or "/" in process_id or "\0" in process_id:
        raise ValueError(f"not a process id: {process_id!r}")
    return os.path.join(state_dir, PROGRAMS, process_id)


class Program:
    """
    One durable program the keeper started and still holds: its child, the
    read ends of its output pipes, the write end of its standard input, and
    its journal (L{ProgramJournal}, the format ccx keeps every program's in).

    @ivar record: its L{Record}, as written in its directory.
    @ivar blocking: it is held back rather than lose output (C{on_full:
        "block"}): its journal's pins (what ccx's blocking subscribers have
        not read) are never evicted, and its pipes stop being read once the
        journal is full of them.
    @ivar returncode: its exit status once reaped (C{-N} for signal N).
    @ivar terminal: the master end of its terminal while open, for a
        program on one (C{readers["pty"]} too: its output, read here; ccx
        writes its input and sets its size through a duplicate).
    @ivar window: its terminal's size when last seen, or L{None}.
    """

    def __init__(
        self, record: Record, journal: ProgramJournal, popen: Any, pidfd: int, blocking: bool
    ) -> None:
        self.record = record
        self.journal = journal
        self.process_id: str = record.process_id
        self.popen = popen
        self.pid: int = popen.pid
        self.pidfd: Optional[int] = pidfd
        self.blocking = blocking
        self.readers: Dict[str, int] = {}
        self.stdin: Optional[int] = None
        self.terminal: Optional[int] = None
        self.window: Optional[WindowSize] = None
        self.returncode: Optional[int] = None
        self.paused = False
        # ccx says the state dir's total is full of bytes nothing may evict
        # (hold's C{full}): held back as at its own limit.
        self.total_full = False

    @property
    def streams(self) -> Tuple[str, ...]:
        return tuple(self.journal.streams)

    @property
    def input(self) -> Optional[int]:
        """
        What ccx is given a duplicate of to write the program's input: the
        write end of its stdin pipe, or its terminal's master.
        """
        return self.stdin if self.terminal is None else self.terminal

    def look_at_window(self) -> Optional[WindowSize]:
        """
        The terminal's size as the kernel has it now (ccx sets it through
        its duplicate of the master), kept in C{window} and the record.
        """
        if self.terminal is not None:
            try:
                self.window = window_size(self.terminal)
            except OSError:
                pass
        if self.window is not None:
            self.record = replace(self.record, pty=[self.window.rows, self.window.cols])
        return self.window

    @property
    def over(self) -> bool:
        """
        Whether the program must be held back: its journal, or the state
        dir's total (as ccx says), is at its limit with nothing it may evict.
        """
        return self.blocking and (self.total_full or self.journal.is_full())

    @property
    def done(self) -> bool:
        return self.pidfd is None and not self.readers

    def summary(self) -> Dict[str, Any]:
        window = self.look_at_window()
        return {
            "id": self.process_id,
            "pid": self.pid,
            "started_at": self.record.started_at,
            "stdin": self.input is not None,
            "starts": {s: self.journal.start(s) for s in self.streams},
            "ends": {s: self.journal.end(s) for s in self.streams},
            "closed": [s for s in self.streams if s not in self.readers],
            "returncode": self.returncode,
            "ended_at": self.record.ended_at,
            "pty": None if window is None else [window.rows, window.cols],
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
    @param write: how journal bytes are written (C{os.write}).
    """

    def __init__(
        self,
        state_dir: str,
        listener: socket.socket,
        clock: Callable[[], float] = time.time,
        first_connection: float = FIRST_CONNECTION,
        log: Callable[[str], None] = log,
        write: Callable[[int, bytes], int] = os.write,
    ) -> None:
        self.state_dir = state_dir
        self.log = log
        self._write = write
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
        self.hold_grace = HOLD_GRACE
        # The clock of the grace (tests set another).
        self.monotonic: Callable[[], float] = time.monotonic
        # When the holds of a ccx that dropped go (monotonic), if pending.
        self._release_at: Optional[float] = None
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
            timeout = None if self._seen_client else 1.0
            if self._release_at is not None:
                timeout = max(0.0, self._release_at - self.monotonic())
            self.run_once(timeout)
        self.close()

    def run_once(self, timeout: Optional[float]) -> None:
        """
        Wait up to C{timeout} seconds for something to happen, handle it,
        and send the notices it made.
        """
        for key, events in self.selector.select(timeout):
            key.data(key, events)
        if self._release_at is not None and self.monotonic() >= self._release_at:
            self._release_holds()
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
        # A ccx is back: the holds it left stand for it again.
        self._release_at = None
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

    def _drop(self, client: Client, left: bool = False) -> None:
        """
        Close a ccx's connection.  The last one gone, nothing holds a
        program back any more: at once when it said L{m.LEAVE} (ccx
        stopped), else after L{HOLD_GRACE} seconds, in which that ccx may
        connect again and read on from where it was.
        """
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
            if left:
                self._release_holds()
            else:
                self._release_at = self.monotonic() + self.hold_grace

    def _release_holds(self) -> None:
        """
        No ccx, so no blocking subscriber: nothing holds a program back.
        """
        self._release_at = None
        for program in self.programs.values():
            program.total_full = False
            self._pin(program, {s: None for s in program.streams})

    def _note(self, client: Client, message: Dict[str, Any]) -> None:
        """
        Keep what ccx says of a program in its record's C{extra} (L{m.NOTED}:
        numbers or null; the keeper's own fields are not ccx's to change).
        """
        extra = message["extra"]
        if not isinstance(extra, dict) or not all(
            key in m.NOTED
            and (value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)))
            for key, value in extra.items()
        ):
            raise ValueError(f"extra may hold {', '.join(m.NOTED)} as numbers")
        program = self.programs.get(message["id"])
        if program is None:
            return
        program.record = replace(program.record, extra={**program.record.extra, **extra})
        self._write_record(program)

    def _leave(self, client: Client, message: Dict[str, Any]) -> None:
        """
        The ccx is stopping on purpose: its holds go with it, at once.
        """
        self._drop(client, left=True)

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
            m.LEAVE: self._leave,
            m.NOTE: self._note,
            m.EVICT: self._evict,
        }.get(kind)
        if handler is None:
            self._refuse(client, f"unknown message type {kind!r}")
            return
        try:
            handler(client, message)
        except (KeyError, TypeError, ValueError) as e:
            self._refuse(client, f"malformed {kind}: {e!r}")

    def _hello(self) -> Dict[str, Any]:
        return {
            **self._list(),
            "type": m.HELLO,
            "version": m.VERSION,
            "pid": os.getpid(),
            "features": list(m.FEATURES),
        }

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
            and int(message["segment_bytes"]) > 0
        ):
            raise ValueError("argv, env, executable, cwd, journal_bytes or segment_bytes")
        # A program on a terminal of this size ([rows, cols]), or on pipes.
        pty = message.get("pty")
        window = None if pty is None else WindowSize(*pty)
        folder = program_dir(self.state_dir, process_id)
        if process_id in self.programs or os.path.exists(folder):
            self._reply(
                client,
                {"type": m.SPAWN_FAILED, "id": process_id, "reason": "the id is taken"},
            )
            return
        os.makedirs(folder, mode=0o700)
        try:
            program = self._start(message, window)
        except (SpawnFailed, CgroupError, OSError) as e:
            shutil.rmtree(folder, ignore_errors=True)
            reason = e.message if isinstance(e, SpawnFailed) else str(e)
            self._reply(client, {"type": m.SPAWN_FAILED, "id": process_id, "reason": reason})
            return
        self.programs[process_id] = program
        self.log(f"started {process_id}: {argv} (pid {program.pid})")
        fds = [program.input] if program.input is not None else []
        self._reply(
            client,
            {
                "type": m.SPAWNED,
                "id": process_id,
                "pid": program.pid,
                "started_at": program.record.started_at,
                "stdin": bool(fds),
                "closed": [s for s in program.streams if s not in program.readers],
            },
            fds,
        )

    def _start(self, message: Dict[str, Any], window: Optional[WindowSize] = None) -> Program:
        """
        Make the pipes and journals of a program and start it; on a new
        terminal of size C{window} when given (its slave end as the
        program's 0, 1 and 2 and its controlling terminal, as ccx starts
        programs on terminals), instead of pipes.

        @raise SpawnFailed: when it could not be executed.
        @raise OSError: when the keeper could not make its pipes or child.
        """
        process_id = message["id"]
        opened: List[int] = []
        child_ends: List[int] = []
        ours: Dict[str, int] = {}
        theirs: Dict[str, int] = {}
        stdin_ours: Optional[int] = None
        try:
            if window is not None:
                ours[PTY], stdin_child = open_terminal(window)
                opened.append(ours[PTY])
                theirs["stdout"] = theirs["stderr"] = stdin_child
            elif message.get("stdin"):
                stdin_child, stdin_ours = os.pipe()
                opened.append(stdin_ours)
            else:
                stdin_child, stdin_ours = os.open(os.devnull, os.O_RDONLY), None
            child_ends.append(stdin_child)
            # merge_stderr: one pipe for both, so that what the program
            # writes to either arrives in the order it wrote it.
            streams = ("stdout",) if message.get("merge_stderr") else m.STREAMS
            for stream in streams if window is None else ():
                ours[stream], theirs[stream] = os.pipe()
                opened.append(ours[stream])
                child_ends.append(theirs[stream])
            theirs.setdefault("stderr", theirs["stdout"])
            journal = ProgramJournal.create(
                program_dir(self.state_dir, process_id),
                int(message["journal_bytes"]),
                int(message["segment_bytes"]),
                write=self._write,
                names=m.STREAMS if window is None else PTY_STREAMS,
            )
            # ccx has read nothing yet: until its first hold, nothing may be
            # evicted (a program that fills its limit at once would lose its
            # first bytes before ccx saw them).
            for stream in journal.streams:
                journal.pin(stream, 0)
            try:
                popen = self._start_program(
                    message,
                    stdin_child,
                    theirs,
                    None if window is None else take_controlling_terminal,
                )
            except BaseException:
                journal.close()
                raise
        except BaseException:
            for fd in opened:
                os.close(fd)
            raise
        finally:
            for fd in child_ends:
                os.close(fd)
        # Opened while the child is unreaped: it names this child for good.
        pidfd = os.pidfd_open(popen.pid)
        record = Record(
            process_id=process_id,
            argv=list(message["argv"]),
            executable=message["executable"],
            cwd=message["cwd"],
            started_at=self.clock(),
            pid=popen.pid,
            encoding=str(message.get("encoding", "utf-8")),
            durable=True,
            cgroup=message.get("cgroup"),
            pty=None if window is None else [window.rows, window.cols],
            extra={
                # A terminal is always open for input.
                "stdin": bool(message.get("stdin")) or window is not None,
                "blocking": bool(message.get("blocking", True)),
                "keeper_pid": os.getpid(),
            },
        )
        program = Program(record, journal, popen, pidfd, bool(message.get("blocking", True)))
        program.stdin = stdin_ours
        if window is not None:
            program.terminal, program.window = ours[PTY], window
        journal.on_evicted = lambda stream, start, end: self._notice(
            {"type": m.EVICTED, "id": process_id, "stream": stream, "start": start, "end": end}
        )
        self._write_record(program)
        for stream, fd in ours.items():
            os.set_blocking(fd, False)
            try:
                if stream != PTY:
                    fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
            except OSError:
                pass  # over the user's pipe-user-pages-soft: the default size
            program.readers[stream] = fd
            self.selector.register(fd, selectors.EVENT_READ, self._pipe_callback(program, stream))
        self.selector.register(pidfd, selectors.EVENT_READ, lambda k, e: self._reap(program))
        return program

    def _start_program(
        self,
        message: Dict[str, Any],
        stdin: int,
        outputs: Dict[str, int],
        preexec: Optional[Callable[[], None]] = None,
    ) -> Any:
        """
        Start the program, in its cgroup when it has one: the keeper moves
        itself in, starts it and moves back, as ccx does, so that even the
        program's first fork is inside.  C{preexec} runs in the child before
        the exec (L{take_controlling_terminal} for a program on a terminal).

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
            preexec,
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
        fds = [program.input] if program.input is not None else []
        summary = program.summary()
        if program.terminal is not None:
            # Its size as ccx last set it, for the next start to find.
            self._write_record(program)
        self._reply(client, {"type": m.ADOPTED, **summary}, fds)

    def _hold(self, client: Client, message: Dict[str, Any]) -> None:
        program = self.programs.get(message["id"])
        if program is None:
            return
        offsets = message.get("offsets") or {}
        program.total_full = bool(message.get("full"))
        self._pin(program, {s: offsets.get(s) for s in program.streams})

    def _evict(self, client: Client, message: Dict[str, Any]) -> None:
        """
        ccx keeps the state dir's total: evict the oldest segment of a
        stream, the one starting at C{start}, unless it is held (then
        C{kept}).  One that starts earlier than the stream now does went
        already (its C{evicted} notice is on its way).  Answered as a
        notice, so that it comes in order with the C{evicted} ones.
        """
        process_id, stream, start = message["id"], str(message["stream"]), int(message["start"])
        program = self.programs.get(process_id)
        if program is not None and stream in program.journal.streams:
            if program.journal.start(stream) > start:
                return
            if program.journal.start(stream) == start and program.journal.evict_oldest(stream):
                self._balance(program)
                return
        self._notice(
            {
                "type": m.KEPT,
                "id": process_id,
                "stream": stream,
                "start": start,
                # Forgotten: its journal is ccx's alone from now on.
                "gone": program is None,
            }
        )

    def _pin(self, program: Program, offsets: Dict[str, Optional[int]]) -> None:
        """
        Never evict from each stream's journal what ccx has not read (or a
        blocking subscriber of it has not): C{offsets}, by stream, or
        L{None} for no such limit.  Then evict what the limit asks, and
        hold the program back, or read on, as its journal now says.
        """
        for stream, offset in offsets.items():
            program.journal.pin(stream, None if offset is None else int(offset))
        program.journal.trim()
        self._balance(program)

    def _close_stdin(self, client: Client, message: Dict[str, Any]) -> None:
        program = self.programs.get(message["id"])
        if program is not None and program.stdin is not None:
            os.close(program.stdin)
            program.stdin = None

    # -- programs ---------------------------------------------------------

    def _pipe_callback(self, program: Program, stream: str) -> Callable[[Any, int], None]:
        if stream == PTY:
            return lambda key, events: self._read_terminal(program)
        return lambda key, events: self._read(program, stream)

    def _read(self, program: Program, stream: str) -> None:
        """
        Move what the pipe holds to the end of the stream's journal, in the
        kernel (C{splice}: the bytes never pass through Python).  What cannot
        be written (the disk is full) is read, logged and lost, and the
        program goes on: offsets count what the journal holds, so that ccx
        reads exactly what they say.
        """
        fd = program.readers[stream]
        try:
            moved = program.journal.append_from(stream, fd, READ_SIZE, self.clock())
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            if e.errno not in _JOURNAL_ERRORS:
                moved = 0  # the pipe itself failed: as its end
            else:
                self._lose(program, stream, e)
                return
        if not moved:
            self._close_pipe(program, stream)
            return
        self._appended(program, stream)
        self._balance(program)

    def _read_terminal(self, program: Program) -> None:
        """
        Append what the terminal's master holds to the C{pty} journal.
        C{splice} needs a pipe at one end, so the bytes pass through here
        (a terminal hands out a few KiB per read anyway).  C{EIO} is the
        terminal's end of file: no process holds its slave end any more.
        """
        try:
            data = os.read(program.readers[PTY], TERMINAL_READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._close_pipe(program, PTY)
            return
        journal = program.journal
        before = journal.end(PTY)
        try:
            journal.append(PTY, data, self.clock())
        except OSError as e:
            self.log(
                f"{program.process_id}: {before + len(data) - journal.end(PTY)} bytes of "
                f"{PTY} lost: the journal cannot be written: {e}"
            )
        if journal.end(PTY) > before:
            self._appended(program, PTY)
        self._balance(program)

    def _lose(self, program: Program, stream: str, error: OSError) -> None:
        try:
            lost = len(os.read(program.readers[stream], READ_SIZE))
        except OSError:
            lost = 0
        self.log(
            f"{program.process_id}: {lost} bytes of {stream} lost: the journal cannot "
            f"be written: {error}"
        )

    def _appended(self, program: Program, stream: str) -> None:
        """
        The stream's journal grew: ccx is told its new end (one notice per
        stream per turn of the loop).
        """
        key = (program.process_id, stream)
        notice = self._pending_output.get(key)
        if notice is None:
            notice = self._pending_output[key] = {
                "type": m.OUTPUT,
                "id": program.process_id,
                "stream": stream,
            }
            self._notice(notice)
        notice["end"] = program.journal.end(stream)
        notice["time"] = self.clock()

    def _close_pipe(self, program: Program, stream: str) -> None:
        if stream == PTY:
            # Its last size, for the record; ccx's duplicate, if any, is
            # closed by ccx when told.
            program.look_at_window()
            program.terminal = None
        fd = program.readers.pop(stream)
        if not program.paused:
            self.selector.unregister(fd)
        os.close(fd)
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
        program.returncode = returncode
        now = self.clock()
        # Its exit, even while no ccx is connected; "finished" (a status)
        # only once its pipes are closed too (_maybe_forget).
        program.record = replace(
            program.record,
            ended_at=now,
            exit_code=returncode,
            signal=signal.Signals(-returncode).name if returncode < 0 else None,
            duration=round(max(0.0, now - (program.record.started_at or now)), 6),
        )
        self._write_record(program)
        self.log(f"{program.process_id} exited with {returncode}")
        self._notice(
            {
                "type": m.EXITED,
                "id": program.process_id,
                "returncode": returncode,
                "ended_at": now,
            }
        )
        self._maybe_forget(program)

    def _write_record(self, program: Program) -> None:
        try:
            program.journal.write_record(program.record)
        except OSError as e:
            self.log(f"{program.process_id}: cannot write its record: {e}")

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
        journal = program.journal
        program.record = replace(
            program.record,
            status="completed" if program.returncode == 0 else "failed",
            stdout_bytes=journal.end("stdout") if PTY not in journal.streams else 0,
            stderr_bytes=journal.end("stderr") if PTY not in journal.streams else 0,
            pty_bytes=journal.end(PTY) if PTY in journal.streams else 0,
        )
        self._write_record(program)
        journal.finish()
        if program.record.cgroup:
            # Its cgroup goes with it, once empty (ccx, if connected, also
            # tries; what is left in it is ended by ccx).
            try:
                os.rmdir(program.record.cgroup)
            except OSError:
                pass
        del self.programs[program.process_id]
