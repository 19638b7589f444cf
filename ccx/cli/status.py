"""
Exit statuses: those of C{ccx} itself, and the one a shell would report for
the program a command relayed (docs/cli.md, "Exit status").
"""

import signal

EXIT_USAGE = 2
# The service refused the request (unknown process, an ambiguous prefix, rm
# of a live program, write to a program without stdin, ...).
EXIT_REFUSED = 1
# Unexpected ends (lost connection, refused subprotocol): as wrong arguments
# and an unreachable service, status 2.
EXIT_LOST = 2
EXIT_NOT_ALLOWED = 126
EXIT_SPAWN_FAILED = 127
EXIT_TIMEOUT = 124
EXIT_INTERRUPTED = 128 + signal.SIGINT
EXIT_TERMINATED = 128 + signal.SIGTERM
EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE


def program_status(completed: dict) -> int:
    """
    The status a shell would report for the program: its exit code, or
    128+N when signal N killed it.
    """
    code = completed.get("exit_code")
    if not isinstance(code, int):
        return 1
    return code if code >= 0 else 128 - code


def exit_status(completed: dict, interrupted: bool = False) -> int:
    """
    The exit status of C{ccx run} and C{ccx attach} for a
    C{process.completed} notification (docs/cli.md):
      - C{completed}, C{failed}: the program's status (L{program_status});
      - C{timeout}: 124, like coreutils' C{timeout};
      - C{cancelled}: 130 when this client's Ctrl-C cancelled it, else the
        program's status, and 143 (SIGTERM) if that was 0.
    """
    status = completed.get("status")
    if status == "timeout":
        return EXIT_TIMEOUT
    if status == "cancelled":
        if interrupted:
            return EXIT_INTERRUPTED
        return program_status(completed) or EXIT_TERMINATED
    return program_status(completed)
