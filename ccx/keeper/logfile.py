"""
C{keeper.log}, bounded: the keeper's standard error once it has detached.
"""

import os

# The most keeper.log holds before it becomes keeper.log.1 (the one before
# goes): the two together stay under twice this, however long the keeper
# runs and whatever its programs do.
LOG_BYTES = 1024 * 1024


class LogFile:
    """
    A log file on a descriptor (the keeper's standard error, so that what
    Python itself writes there, a traceback, lands in it too) that is
    rotated once it holds more than C{max_bytes}: it is renamed C{PATH.1},
    replacing the one before, and a new one begins.

    @param path: the file, relative to the working directory (the state
        dir) or absolute.
    @param fd: the descriptor it is kept on.
    """

    def __init__(self, path: str, max_bytes: int = LOG_BYTES, fd: int = 2) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.fd = fd

    def open(self) -> None:
        """
        Put the file on the descriptor; one already past its size is rotated
        first (an earlier keeper's).
        """
        self._open()
        self._check()

    def write(self, text: str) -> None:
        """
        Append C{text} (whole lines), then rotate if the file is now too long.
        """
        os.write(self.fd, text.encode("utf-8", "replace"))
        self._check()

    def _open(self) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
        if fd != self.fd:
            os.dup2(fd, self.fd)
            os.close(fd)

    def _check(self) -> None:
        if os.fstat(self.fd).st_size > self.max_bytes:
            os.replace(self.path, self.path + ".1")
            self._open()
