"""
Starting a program in a session (and so a process group) of its own, with
no interpreter between the starter and the program.

Standard library only: ccx's own spawner and the keeper
(L{ccx.keeper}, which must stay small) both start programs with it.
"""

import subprocess
from typing import Callable, List, Mapping, Optional

from ccx.process.errors import SpawnFailed


def start_program(
    argv: List[str],
    executable: str,
    cwd: str,
    env: Mapping[str, str],
    stdin: int,
    stdout: int,
    stderr: int,
    preexec: Optional[Callable[[], None]] = None,
) -> subprocess.Popen:
    """
    Start C{executable} as C{argv} with C{stdin}, C{stdout} and C{stderr} as
    its descriptors 0, 1 and 2, and nothing else open.

    Between fork and exec the child calls C{setsid()} (so C{pgid == pid}
    before the program runs, and what it starts at once belongs to the
    group), restores SIGPIPE and SIGXFSZ (Python ignores them) and enters
    C{cwd}.  C{subprocess} does this in C with C{vfork}: no interpreter
    starts, and the exec's outcome is known when this returns.

    @param preexec: run in the child before the exec (a program on a
        terminal takes it as its controlling terminal); with one, CPython
        forks instead of C{vfork}ing.

    @return: the child, running the program.
    @raise SpawnFailed: when the directory could not be entered or the
        program executed; the child is gone (reaped) then.
    @raise OSError: when no child could be made (out of descriptors or
        processes).
    """
    try:
        return subprocess.Popen(
            argv,
            executable=executable,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            cwd=cwd,
            env=env,
            close_fds=True,
            start_new_session=True,
            restore_signals=True,
            preexec_fn=preexec,
        )
    except OSError as e:
        # The child reports which step failed through the name it gives:
        # the executable for the exec, the directory for what came before.
        if e.filename == executable:
            raise SpawnFailed(f"{executable!r}: {e.strerror}") from None
        if e.filename == cwd:
            raise SpawnFailed(f"cannot enter directory {cwd!r}: {e.strerror}") from None
        raise
