"""
A server run as a child process, in a session (and process group) of its
own, and stopped again whatever happens, with the process groups it started.
"""

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import tempfile
import time
from typing import Any, Iterable, List, Optional, Sequence

from ccx.process.group import ProcessGroup
from ccx.testing.cgroups import remove_cgroups
from ccx.testing.polling import Stuck, until
from ccx.testing.ports import HOST
from ccx.testing.proc import children_of, leftovers

# prctl(PR_SET_PDEATHSIG, SIGTERM): the child is sent SIGTERM should this
# process die without stopping it.
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class ChildFailed(Exception):
    """
    The child could not be started, or exited early; the message ends with
    the last lines it wrote.
    """


class LaunchedChild:
    """
    A server process whose output goes to a temporary log file.

    A session of its own means the terminal's Ctrl-C reaches only the
    client, which then stops it.  L{stop} (blocking) and L{stopped} (for
    code running in a reactor) end it the same way: SIGTERM, then, after a
    timeout, SIGKILL to its group and to the groups it started.  The log
    is deleted then, unless C{keep_log} asks to keep it.

    @ivar argv: the command line.
    @ivar log_path: the log file, once started (None before).
    """

    def __init__(
        self,
        argv: Sequence[str],
        env: Optional[dict] = None,
        cwd: Optional[str] = None,
        keep_log: bool = False,
    ) -> None:
        self.argv = list(argv)
        self.env = env
        self.cwd = cwd
        self.keep_log = keep_log
        self.process: Optional[subprocess.Popen] = None
        self.returncode: Optional[int] = None
        self.log_path: Optional[str] = None

    @property
    def pid(self) -> Optional[int]:
        return self.process.pid if self.process is not None else None

    def spawn(self) -> None:
        """
        Start the process (it is not ready to serve yet).
        """
        fd, self.log_path = tempfile.mkstemp(prefix="ccx-child-", suffix=".log")
        os.close(fd)
        try:
            # Append mode: the lines of L{note} are not overwritten by the child.
            with open(self.log_path, "ab") as log:
                self.process = subprocess.Popen(
                    self.argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=self.env,
                    cwd=self.cwd,
                    start_new_session=True,
                    preexec_fn=_die_with_parent,
                )
        except BaseException:
            self._remove_log()
            raise

    @property
    def running(self) -> bool:
        """
        Whether it was started and has not exited (the exit status is then
        in L{returncode}: negative for a signal, as with C{subprocess}).
        """
        if self.process is None:
            return False
        self.returncode = self.process.poll()
        return self.returncode is None

    def ready(self) -> bool:
        """
        Whether it serves; L{ChildFailed} if it has exited.  The default is
        always ready.
        """
        self.check_running()
        return True

    def check_running(self) -> None:
        """
        @raise ChildFailed: if the process has exited.
        """
        if not self.running:
            raise ChildFailed(self.with_log(f"{self.argv[0]} exited with {self.returncode}"))

    # Starting ----------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> "LaunchedChild":
        """
        Start it and wait, blocking, until L{ready}.

        @raise ChildFailed: if it exited, or was not ready in C{timeout}
            seconds (it is then stopped).
        """
        self.spawn()
        deadline = time.monotonic() + timeout
        try:
            while not self.ready():
                if time.monotonic() > deadline:
                    raise ChildFailed(self.with_log(f"{self.argv[0]} did not start"))
                time.sleep(0.05)
        except BaseException:
            self.stop()
            raise
        return self

    async def started(self, reactor: Any, timeout: float = 30.0) -> "LaunchedChild":
        """
        L{start}, for code running in C{reactor}: it waits without blocking.
        """
        self.spawn()
        try:
            await until(reactor, self.ready, timeout, 0.05, f"{self.argv[0]} did not start")
        except BaseException:
            await self.stopped(reactor)
            raise
        return self

    async def exited(self, reactor: Any, timeout: float = 30.0) -> Optional[int]:
        """
        Start it and wait, without blocking, until it exits by itself (a
        start refused); its log stays until L{stop}.

        @return: its exit status.
        """
        self.spawn()
        await until(reactor, lambda: not self.running, timeout, 0.05, f"{self.argv[0]} did not exit")
        return self.returncode

    # Stopping ----------------------------------------------------------------

    def stop(self, timeout: float = 15.0, strays: Iterable[int] = ()) -> Optional[int]:
        """
        SIGTERM, and wait for it to exit; after C{timeout} seconds, SIGKILL
        to its group, to the groups of the children it had and to the
        process groups in C{strays}.  Idempotent.

        @return: its exit status (None if it never started).
        """
        groups = self._terminate(strays)
        if groups is not None:
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self._kill(groups)
                self.process.wait()
                # SIGKILL is delivered asynchronously: the rest of a group
                # may still be dying when its leader has been reaped.
                deadline = time.monotonic() + 30.0
                while self._left(groups) and time.monotonic() < deadline:
                    time.sleep(0.01)
        return self._ended()

    async def stopped(
        self, reactor: Any, timeout: float = 15.0, strays: Iterable[int] = ()
    ) -> Optional[int]:
        """
        L{stop}, for code running in C{reactor}: it waits without blocking.
        """
        groups = self._terminate(strays)
        if groups is not None:
            try:
                await until(reactor, lambda: not self.running, timeout, 0.05)
            except Stuck:
                self._kill(groups)
                await until(reactor, lambda: not self.running, 30.0, 0.05)
                await until(reactor, lambda: not self._left(groups), 30.0, 0.01)
        return self._ended()

    def _terminate(self, strays: Iterable[int]) -> Optional[List[int]]:
        """
        Send SIGTERM if it runs; the groups to kill should it not exit.
        """
        if not self.running:
            return None
        # Its own group, then those of the programs it had started (ccx
        # starts each in a group whose id is its pid).
        groups = [self.process.pid, *children_of(self.process.pid), *strays]
        self.process.send_signal(signal.SIGTERM)
        return groups

    @staticmethod
    def _left(groups: Iterable[int]) -> bool:
        """
        Whether anything of C{groups} is still alive.
        """
        return bool(leftovers(groups))

    def _kill(self, groups: Iterable[int]) -> None:
        self.note(f"(pid {self.process.pid} still running after SIGTERM: killed)")
        for pgid in groups:
            ProcessGroup(pgid).signal(signal.SIGKILL)
        # A killed service leaves its programs' cgroups (and escapees in them).
        remove_cgroups(self.process.pid)

    def _ended(self) -> Optional[int]:
        if self.process is not None:
            self.returncode = self.process.poll()
        if not self.keep_log:
            self._remove_log()
        return self.returncode

    # The log -----------------------------------------------------------------

    def note(self, line: str) -> None:
        """
        Add a line of the client's own to the log.
        """
        if self.log_path is not None:
            with contextlib.suppress(OSError), open(self.log_path, "a") as f:
                f.write(line + "\n")

    def log_lines(self) -> List[str]:
        """
        The lines of the log so far (none once it is deleted).
        """
        if self.log_path is None:
            return []
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read().splitlines()
        except OSError:
            return []

    def with_log(self, message: str, lines: int = 30) -> str:
        """
        C{message}, followed by the last C{lines} lines of the log.
        """
        return message + ":\n  " + "\n  ".join(self.log_lines()[-lines:])

    def _remove_log(self) -> None:
        if self.log_path is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.log_path)
            self.log_path = None

    def __enter__(self) -> "LaunchedChild":
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()


class ListeningChild(LaunchedChild):
    """
    A child that is ready once its TCP port on 127.0.0.1 accepts connections.

    @ivar port: that port.
    """

    def __init__(self, argv: Sequence[str], port: int, **kwargs: Any) -> None:
        super().__init__(argv, **kwargs)
        self.port = port

    def ready(self) -> bool:
        self.check_running()
        try:
            socket.create_connection((HOST, self.port), timeout=1).close()
        except OSError:
            return False
        return True
