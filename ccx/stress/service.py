"""
The ccx service the stress suite starts for itself: C{twistd -n ccx} as a
child process on 127.0.0.1 port 0, its port read from its JSON log, and
everything it started ended again whatever happens.  Also the C{/proc}
figures read about it.
"""

import hashlib
import json
import os
import shutil
import signal
import sys
from collections import deque
from typing import Any, Dict, Iterable, List, Optional, Sequence

from twisted.internet.defer import Deferred, TimeoutError, succeed
from twisted.internet.error import ProcessDone
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

import ccx
from ccx.process.group import ProcessGroup, process_table

# The checkout (or installation) whose ccx is run: the directory that holds
# the ccx package, and twisted/plugins with it.
SOURCE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(ccx.__file__)))

# The programs the scenarios run.
PROGRAMS = ("sh", "seq", "head", "cat", "yes", "sleep")

# The child: a session of its own (the terminal's Ctrl-C reaches only the
# stress tool, which then stops the service), SIGTERM should the stress tool
# die without stopping it (PR_SET_PDEATHSIG is 1), then twistd.
_BOOT = (
    "import ctypes, os, signal; "
    "os.setsid(); "
    "ctypes.CDLL(None).prctl(1, signal.SIGTERM); "
    "from twisted.scripts.twistd import run; run()"
)


class ServiceFailed(Exception):
    """
    The service could not be started, or stopped badly; the message ends
    with the last lines it logged.
    """


class _ServiceProtocol(ProcessProtocol):
    """
    Reads the child's JSON log lines: the listening port, and every error.
    """

    def __init__(self) -> None:
        self.listening: Deferred = Deferred()
        self.tail: deque = deque(maxlen=30)
        self.errors: List[dict] = []
        self.exit_code: Optional[int] = None
        self._partial = b""
        self._ended: List[Deferred] = []

    def when_ended(self) -> Deferred:
        """
        Fire with the exit status once the child has exited.
        """
        if self.exit_code is not None:
            return succeed(self.exit_code)
        d: Deferred = Deferred()
        self._ended.append(d)
        return d

    def connectionMade(self) -> None:
        self.transport.closeStdin()

    def outReceived(self, data: bytes) -> None:
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            self._line(line.decode("utf-8", "replace"))

    def errReceived(self, data: bytes) -> None:
        for line in data.decode("utf-8", "replace").splitlines():
            self.tail.append(line)

    def _line(self, line: str) -> None:
        self.tail.append(line)
        try:
            record = json.loads(line)
        except ValueError:
            return
        if not isinstance(record, dict):
            return
        if record.get("level") in ("error", "critical"):
            self.errors.append(record)
        port = record.get("port")
        if (
            not self.listening.called
            and isinstance(port, int)
            and "listening on" in str(record.get("message"))
        ):
            self.listening.callback(port)

    def processEnded(self, reason: Failure) -> None:
        value = reason.value
        if reason.check(ProcessDone):
            self.exit_code = 0
        elif getattr(value, "exitCode", None) is not None:
            self.exit_code = value.exitCode
        else:
            self.exit_code = -(getattr(value, "signal", None) or 1)
        if not self.listening.called:
            self.listening.errback(
                ServiceFailed(f"the service exited with status {self.exit_code}")
            )
        waiting, self._ended = self._ended, []
        for d in waiting:
            d.callback(self.exit_code)


class ChildService:
    """
    A ccx service run with twistd as a child of this process.

    @ivar pid: the service's pid (also its process group's id), once started.
    @ivar port: the TCP port it listens on, on 127.0.0.1.
    @ivar settings: the C{twistd ccx} options it runs with, by name.
    """

    def __init__(self, reactor: Any, settings: Dict[str, Any]) -> None:
        self._reactor = reactor
        self.settings = dict(settings)
        self.pid: Optional[int] = None
        self.port: Optional[int] = None
        self._protocol = _ServiceProtocol()
        self._stopping: Optional[Deferred] = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/mcp"

    @property
    def errors(self) -> List[dict]:
        """
        The error (and critical) records the service has logged so far.
        """
        return self._protocol.errors

    @property
    def running(self) -> bool:
        return self.pid is not None and self._protocol.exit_code is None

    def argv(self) -> List[str]:
        argv = [sys.executable, "-c", _BOOT, "-n", "--pidfile=", "ccx"]
        argv += ["--port", "tcp:0:interface=127.0.0.1", "--log-format", "json"]
        argv += ["--log-level", "info"]
        for name in PROGRAMS:
            argv += ["--allow", shutil.which(name) or name]
        for name, value in self.settings.items():
            argv += [f"--{name.replace('_', '-')}", str(value)]
        return argv

    def start(self, timeout: float = 30.0) -> Deferred:
        """
        Start the service.

        @return: a Deferred firing with its port once it listens, or failing
            with L{ServiceFailed}.
        """
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [SOURCE_ROOT, env.get("PYTHONPATH")]))
        transport = self._reactor.spawnProcess(
            self._protocol, sys.executable, self.argv(), env=env, path=SOURCE_ROOT
        )
        self.pid = transport.pid
        listening = self._protocol.listening
        listening.addTimeout(timeout, self._reactor)

        def port(value: int) -> int:
            self.port = value
            return value

        def failed(failure: Failure) -> Deferred:
            message = f"cannot start the ccx service: {failure.getErrorMessage()}"
            return self.stop().addBoth(lambda _: Failure(ServiceFailed(self._with_log(message))))

        return listening.addCallbacks(port, failed)

    def _with_log(self, message: str) -> str:
        return message + "\n  " + "\n  ".join(self._protocol.tail)

    def stop(self, timeout: float = 20.0, strays: Iterable[int] = ()) -> Deferred:
        """
        SIGTERM, and wait for it to exit (the service cancels every program
        on the way out); after C{timeout} seconds, SIGKILL to its group and
        to the process groups in C{strays}.  Idempotent.

        @return: a Deferred firing with the exit status (None if it never
            started).
        """
        if self._stopping is None:
            self._stopping = Deferred.fromCoroutine(self._stop(timeout, list(strays)))
        return self._stopping

    async def _stop(self, timeout: float, strays: List[int]) -> Optional[int]:
        if self.pid is None:
            return None
        if self.running:
            os.kill(self.pid, signal.SIGTERM)
        try:
            return await self._protocol.when_ended().addTimeout(timeout, self._reactor)
        except TimeoutError:
            self._protocol.tail.append(f"(still running {timeout} s after SIGTERM: killed)")
            for pgid in [self.pid, *strays]:
                ProcessGroup(pgid).signal(signal.SIGKILL)
            return await self._protocol.when_ended()


def reference_digest(reactor: Any, argv: Sequence[str]) -> Deferred:
    """
    Run C{argv} here, as the service would, and hash its standard output.

    @return: a Deferred firing with C{(sha256 hex digest, size)}.
    """
    protocol = _Hashing()
    reactor.spawnProcess(protocol, shutil.which(argv[0]) or argv[0], list(argv), env=os.environ)
    return protocol.done


class _Hashing(ProcessProtocol):
    def __init__(self) -> None:
        self.done: Deferred = Deferred()
        self._hash = hashlib.sha256()
        self._size = 0

    def connectionMade(self) -> None:
        self.transport.closeStdin()

    def outReceived(self, data: bytes) -> None:
        self._hash.update(data)
        self._size += len(data)

    def processEnded(self, reason: Failure) -> None:
        self.done.callback((self._hash.hexdigest(), self._size))


# /proc ---------------------------------------------------------------------


def rss_mib(pid: int) -> Optional[float]:
    """
    The resident memory of process C{pid} (C{VmRSS}), in MiB; None when it
    is gone.
    """
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def open_fds(pid: int) -> Optional[int]:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def process_state(pid: int) -> Optional[str]:
    """
    The state letter of process C{pid} (C{R}, C{S}, C{T}, ...), None when
    it is gone.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    return stat[stat.rindex(b")") + 2 :].split()[0].decode()


def children_of(pid: int) -> List[int]:
    """
    The live processes whose parent is C{pid} (zombies do not count).
    """
    return [p.pid for p in process_table() if p.ppid == pid and p.state != "Z"]


def leftovers(pgids: Iterable[int]) -> Dict[int, List[int]]:
    """
    The process groups among C{pgids} that still have live members.
    """
    left = {pgid: ProcessGroup(pgid).members() for pgid in pgids}
    return {pgid: pids for pgid, pids in left.items() if pids}
