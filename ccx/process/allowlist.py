"""
Which programs may run.
"""

import os
import shutil
from typing import Dict, Iterable, Optional

from ccx.process.errors import InvalidCommand, NotAllowed

SHELL = "/bin/sh"


class AllowListError(ValueError):
    """
    An allow-list entry names no executable program.
    """


def _is_executable_file(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


class AllowList:
    """
    The programs ccx may run, each identified by its real path (symlinks
    followed), so that neither another name nor a link can smuggle in a
    different program.

    @param programs: names looked up on C{search_path}, or absolute paths.
    @param search_path: the C{PATH} used to find programs; the service's own
        by default.
    @raise AllowListError: when an entry names no executable program.
    """

    def __init__(
        self, programs: Iterable[str], search_path: Optional[str] = None
    ) -> None:
        path = search_path if search_path is not None else os.environ.get("PATH", os.defpath)
        # A relative entry ("." or empty) would look programs up in whatever
        # directory the service runs in.
        self.search_path = os.pathsep.join(
            entry for entry in path.split(os.pathsep) if os.path.isabs(entry)
        )
        self._allowed: Dict[str, str] = {}
        for program in programs:
            found = self._find(program, os.getcwd())
            if found is None:
                raise AllowListError(
                    f"--allow {program}: no executable program of that name "
                    f"(looked on PATH={self.search_path})"
                )
            self._allowed[os.path.realpath(found)] = program

    def __len__(self) -> int:
        return len(self._allowed)

    def _find(self, program: str, cwd: str) -> Optional[str]:
        if "/" in program:
            path = os.path.join(cwd, program)
            return path if _is_executable_file(path) else None
        return shutil.which(program, path=self.search_path)

    def resolve(self, program: str, cwd: str) -> str:
        """
        The real path of the executable to run for C{program}.

        @param program: a command's first word: a name looked up on C{PATH},
            or a path, resolved against C{cwd} when relative.
        @raise NotAllowed: when it is not allowed.
        @raise InvalidCommand: when it is not a program name at all.
        """
        if not program or "\0" in program:
            raise InvalidCommand("the program name is empty or holds a NUL byte")
        if ".." in program.split("/"):
            raise NotAllowed(
                f"{program!r} climbs out of a directory with "
                "'..'; name the program, or give its absolute path"
            )
        found = self._find(program, cwd)
        real = os.path.realpath(found) if found is not None else None
        if real is None or real not in self._allowed:
            raise self._refusal(program, real)
        return real

    def _refusal(self, program: str, real: Optional[str]) -> NotAllowed:
        where = f" ({real})" if real and real != program else ""
        return NotAllowed(
            f"{program!r}{where} is not on the allow-list",
            setting="allow",
            value="sh" if program == SHELL else program,
            nothing_allowed=not self._allowed,
        )
