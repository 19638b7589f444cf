"""
Knowing when a child has exited without a SIGCHLD handler: its pidfd.
"""

import os
from typing import Callable

from twisted.internet.abstract import FileDescriptor
from twisted.internet.interfaces import IReactorFDSet


class ExitWatcher(FileDescriptor):
    """
    A process's pidfd in the reactor: it turns readable once the process
    has exited, and C{readable} is called then (until L{close}).  Twisted's own reaping answers
    SIGCHLD only for the processes it spawned; this needs no signal handler
    and no private API, and a pidfd works for a process that is not ccx's
    own child as well (one started by a helper that reports its status).

    @ivar fd: the pidfd, which this watcher owns until it is closed.
    """

    connected = 1

    def __init__(self, reactor: IReactorFDSet, pid: int, readable: Callable[[], None]) -> None:
        """
        Open the pidfd of C{pid}, which must not have been reaped yet (so
        that the pid cannot belong to another process already).

        @param readable: called each time the pidfd is readable: it reaps
            the process and closes this watcher.
        @raise OSError: when the pidfd cannot be opened (out of descriptors).
        """
        super().__init__(reactor)
        self.fd = os.pidfd_open(pid)
        self._readable = readable

    def fileno(self) -> int:
        return self.fd

    def doRead(self) -> None:
        self._readable()

    def close(self) -> None:
        """
        Stop watching and close the pidfd.  Closing twice does nothing.
        """
        if self.fd >= 0:
            self.stopReading()
            os.close(self.fd)
            self.fd = -1
            self.connected = 0
