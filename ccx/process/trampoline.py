"""
The child side of spawning a program: make a new session (and so a new
process group) before the program runs, then become the program.

Run as C{python -I -S trampoline.py CWD EXECUTABLE ARGV...} with file
descriptor 3 open for writing.  Descriptor 3 is closed by a successful exec,
so the parent reads end-of-file with no data; if anything fails, the parent
reads a message saying why instead.  This module must import nothing but the
standard library: it runs without site-packages.
"""

import os
import signal
import sys

STATUS_FD = 3


def main(argv):
    cwd, executable, args = argv[1], argv[2], argv[3:]
    try:
        os.set_inheritable(STATUS_FD, False)
        os.setsid()
        # Python ignores these at start-up; the program must not inherit that.
        for name in ("SIGPIPE", "SIGXFSZ"):
            if hasattr(signal, name):
                signal.signal(getattr(signal, name), signal.SIG_DFL)
        try:
            os.chdir(cwd)
        except OSError as e:
            raise OSError(e.errno, f"cannot enter directory {cwd!r}: {e.strerror}")
        os.execv(executable, args)
    except OSError as e:
        message = e.strerror if e.filename is None else f"{executable!r}: {e.strerror}"
        os.write(STATUS_FD, message.encode("utf-8", "replace"))
        os._exit(127)


if __name__ == "__main__":
    main(sys.argv)
