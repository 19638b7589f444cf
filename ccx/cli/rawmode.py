"""
C{ccx run -t} and C{ccx attach -t}: the person's terminal given to a program
on the service's pseudo-terminal.

The local terminal is put in raw mode (every key, Ctrl-C and Ctrl-Z
included, goes to the program as a byte; the program's terminal does the
echoing and the line editing), its window size is sent at the start and on
every SIGWINCH, and the detach keys (Ctrl-P Ctrl-Q, as docker's) leave the
program running.  Raw mode is put back on every way out: the command's end,
an error, a signal that ends the command (see L{restore_all}).
"""

import signal
import termios
import tty
from typing import Any, Callable, Dict, List, Optional, Tuple

from twisted.internet.defer import Deferred

from ccx.cli.client import CallError, RPCClientProtocol, ServiceError
from ccx.cli.context import Context
from ccx.cli.stdin import StdinForwarder
from ccx.process.terminal import MAX_ROWS, WindowSize, window_size

# Ctrl-P Ctrl-Q: leave the program running (docker's default detach keys).
DETACH_KEYS = b"\x10\x11"
DETACH_HELP = "Ctrl-P Ctrl-Q"

# Every terminal now in raw mode, to be put back however the command ends.
_RAW: List["RawMode"] = []


class RawMode:
    """
    A terminal in raw mode, and how it was before.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._saved: Optional[list] = None

    def enter(self) -> None:
        """
        @raise termios.error: when C{fd} is not a terminal.
        """
        self._saved = termios.tcgetattr(self.fd)
        tty.setraw(self.fd, termios.TCSANOW)
        _RAW.append(self)

    def restore(self) -> None:
        """
        Put the terminal back as it was (once; later calls do nothing).
        """
        saved, self._saved = self._saved, None
        if self in _RAW:
            _RAW.remove(self)
        if saved is not None:
            try:
                termios.tcsetattr(self.fd, termios.TCSADRAIN, saved)
            except termios.error:
                pass  # the terminal is gone: nothing to put back


def restore_all() -> None:
    """
    Put back every terminal still in raw mode (the command is ending).
    """
    for raw in list(_RAW):
        raw.restore()


class DetachKeys:
    """
    Finds the detach keys in what the person types, even split across
    reads: a Ctrl-P is held back until the next byte says whether it began
    the sequence (then both go, as typed, when it did not).
    """

    def __init__(self, keys: bytes = DETACH_KEYS) -> None:
        self._keys = keys
        self._held = b""

    def feed(self, data: bytes) -> Tuple[bytes, bool]:
        """
        @return: the bytes to send on, and whether the keys were typed
            (what follows them is not sent).
        """
        out = bytearray()
        for byte in data:
            candidate = self._held + bytes((byte,))
            if self._keys.startswith(candidate):
                if candidate == self._keys:
                    self._held = b""
                    return bytes(out), True
                self._held = candidate
                continue
            self._held = b""
            if self._keys.startswith(bytes((byte,))):
                # The held bytes went nowhere; this one may begin it anew.
                out += candidate[:-1]
                self._held = bytes((byte,))
            else:
                out += candidate
        return bytes(out), False


class TerminalInput:
    """
    The person's keys to the program (through L{StdinForwarder}: C{write}),
    with the detach keys taken out, and the window size sent as C{resize}
    at the start and on every SIGWINCH.

    @ivar detached: fires once the detach keys were typed.
    """

    def __init__(
        self,
        context: Context,
        client: RPCClientProtocol,
        process_id: str,
        size: Callable[[], WindowSize],
    ) -> None:
        self._context = context
        self._client = client
        self._process_id = process_id
        self._size = size
        self._keys = DetachKeys()
        self._forwarder = StdinForwarder(context, client, process_id)
        self._forwarder.done.addErrback(lambda _: None)  # the relay tells how it ended
        self._previous: Dict[int, Any] = {}
        self._stopped = False
        self.detached: Deferred = Deferred()

    def start(self, redraw: bool = False) -> None:
        """
        Send the window size (with C{redraw}, first a different one, so that
        a full-screen program repaints), then the keys as they are typed.
        """
        reactor = self._context.reactor
        self._previous[signal.SIGWINCH] = signal.signal(
            signal.SIGWINCH, lambda signum, frame: reactor.callFromThread(self.resize)
        )
        size = self._size()
        if redraw:
            taller = size.rows + 1 if size.rows < MAX_ROWS else size.rows - 1
            self._resize(WindowSize(taller, size.cols))
        self._resize(size)
        self._forwarder.start(self)

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._forwarder.stop()

    def resize(self) -> None:
        if not self._stopped:
            self._resize(self._size())

    def _resize(self, size: WindowSize) -> None:
        d = self._client.call(
            "resize", {"process_id": self._process_id, "rows": size.rows, "cols": size.cols}
        )
        # The program ended meanwhile, or the connection closed: the relay
        # says how; a resize has nothing to add.
        d.addErrback(lambda failure: failure.trap(CallError, ServiceError) and None)

    # -- the console's reader ---------------------------------------------

    def data_received(self, data: bytes) -> None:
        forward, detached = self._keys.feed(data)
        if forward:
            self._forwarder.data_received(forward)
        if detached and not self.detached.called:
            self.stop()
            self.detached.callback(None)

    def input_ended(self) -> None:
        # The person's terminal is gone (hung up): leave the program as it is
        # (end of input on a terminal is a key, Ctrl-D, not an end of file).
        self.stop()


def local_window_size(fd: int = 0) -> WindowSize:
    """
    The person's window size (24x80 where it cannot be read).
    """
    try:
        return window_size(fd)
    except OSError:
        return WindowSize(24, 80)
