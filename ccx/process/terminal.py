"""
Programs on a pseudo-terminal: the window size, the terminal's master end
in the reactor, and the start of a program with the terminal as its
controlling terminal.

A program started with C{pty} gets the terminal's slave end as its
descriptors 0, 1 and 2, in a session of its own whose controlling terminal
it is (so it gets SIGWINCH when the window changes, and Ctrl-C typed into
the terminal becomes SIGINT for its foreground group).  ccx reads and
writes the master end: everything the program writes is one stream
(C{pty}), and what a client writes is what a person would type.

Standard library only (the keeper may start programs on terminals without
Twisted): the master end in the reactor is L{ccx.process.pipes.TerminalEnd}.

Why C{preexec_fn}: the child must call C{ioctl(0, TIOCSCTTY)} after
C{setsid()} and before C{exec}, and C{subprocess} offers no other hook
there; see docs/architecture.md, "Programs on a terminal".
"""

import fcntl
import os
import struct
import termios
from dataclasses import dataclass
from typing import Tuple

# The bounds of a window: larger than any screen, small enough that a
# program allocating a screen buffer of rows x cols cells cannot be made
# to allocate gigabytes.
MAX_ROWS = 1000
MAX_COLS = 1000

# The character a terminal in its default mode turns into end of file for
# a reading program (VEOF, Ctrl-D).
EOF_CHARACTER = b"\x04"

# What programs on a terminal are told it is, unless the client sets TERM.
TERM = "xterm-256color"

_WINSIZE = "HHHH"


@dataclass(frozen=True)
class WindowSize:
    """
    A terminal's size in character cells.
    """

    rows: int
    cols: int

    def __post_init__(self) -> None:
        for name, value, most in (("rows", self.rows, MAX_ROWS), ("cols", self.cols, MAX_COLS)):
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= most:
                raise ValueError(f"{name} must be a whole number from 1 to {most}")


def set_window_size(fd: int, size: WindowSize) -> None:
    """
    Set the window size of the terminal C{fd} is an end of; the kernel
    sends SIGWINCH to its foreground process group when it changed.
    """
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack(_WINSIZE, size.rows, size.cols, 0, 0))


def window_size(fd: int) -> WindowSize:
    """
    The window size of the terminal C{fd} is an end of.
    """
    rows, cols, _, _ = struct.unpack(
        _WINSIZE, fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * struct.calcsize(_WINSIZE))
    )
    return WindowSize(max(rows, 1), max(cols, 1))


def open_terminal(size: WindowSize) -> Tuple[int, int]:
    """
    A new pseudo-terminal of C{size}: its master and slave ends, both
    close-on-exec.
    """
    master, slave = os.openpty()
    try:
        set_window_size(master, size)
    except OSError:
        os.close(master)
        os.close(slave)
        raise
    return master, slave


def take_controlling_terminal() -> None:
    """
    Run in the child between C{setsid()} and C{exec} (C{preexec_fn}): make
    its standard input, the terminal's slave end, its controlling terminal.

    Only the C{fcntl} and C{termios} functions imported above run here: the
    child of a fork must not take locks (an import would).
    """
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)
