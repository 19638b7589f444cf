"""
C{python -S -m ccx.keeper --state-dir DIR}: the keeper of one state dir.

It takes the dir's lock (a second keeper exits at once: the first serves),
listens on C{DIR/keeper.sock} (mode 0600), and, unless C{--foreground},
leaves the process that ran it once it listens: that one exits, so that
its starter knows it may connect, and the keeper goes on in a session of
its own with its standard error in C{DIR/keeper.log}.
"""

import argparse
import fcntl
import os
import signal
import socket
import sys
from typing import List, Optional

from ccx.keeper.messages import LOCK_NAME, LOG_NAME, SOCKET_NAME
from ccx.keeper.server import Keeper, log


def listen(state_dir: str) -> socket.socket:
    """
    The keeper's socket, readable and writable by its owner only.  Bound by
    its name in the state dir, which is the working directory: a state
    dir's path may be longer than a unix socket address may be.
    """
    try:
        os.unlink(SOCKET_NAME)
    except FileNotFoundError:
        pass
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    mask = os.umask(0o177)
    try:
        listener.bind(SOCKET_NAME)
    finally:
        os.umask(mask)
    listener.listen(64)
    return listener


def detach(state_dir: str) -> None:
    """
    Go on in a child, in a session of its own, with nothing of the starter's
    terminal or pipes: the starter's process exits.
    """
    if os.fork():
        os._exit(0)
    os.setsid()
    null = os.open(os.devnull, os.O_RDWR)
    logfile = os.open(LOG_NAME, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.dup2(logfile, 2)
    os.close(null)
    os.close(logfile)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ccx.keeper")
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--foreground", action="store_true", help="do not detach")
    args = parser.parse_args(argv)
    state_dir = os.path.abspath(args.state_dir)
    try:
        os.makedirs(state_dir, mode=0o700, exist_ok=True)
        os.chdir(state_dir)
        lock = os.open(LOCK_NAME, os.O_WRONLY | os.O_CREAT, 0o600)
    except OSError as e:
        print(f"ccx-keeper: cannot use the state dir {state_dir}: {e}", file=sys.stderr)
        return 1
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        # Another keeper serves this dir: its starter connects to it.
        return 0
    try:
        listener = listen(state_dir)
    except OSError as e:
        print(f"ccx-keeper: cannot listen on {SOCKET_NAME}: {e}", file=sys.stderr)
        return 1
    if not args.foreground:
        detach(state_dir)
    # A terminal's or a session's hangup is not the keeper's end.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    log(f"keeping {state_dir}")
    keeper = Keeper(state_dir, listener)
    try:
        keeper.run()
    finally:
        os.unlink(SOCKET_NAME)
    log("nothing left to keep: exiting")
    return 0


if __name__ == "__main__":
    sys.exit(main())
