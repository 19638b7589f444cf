"""
Which programs may run.
"""

import os
import re
import shutil
from typing import Dict, Iterable, List, Optional, Set, Tuple

from ccx.process.errors import InvalidCommand, NotAllowed

SHELL = "/bin/sh"


# Programs that run whatever command or code they are given (shells,
# interpreters, command runners): allowing one allows every program.
RUNS_ANYTHING = frozenset(
    {
        "sh", "bash", "dash", "zsh", "ksh", "mksh", "fish", "csh", "tcsh", "rbash", "busybox",
        "python", "python2", "python3", "perl", "ruby", "node", "nodejs", "deno", "bun",
        "php", "lua", "tclsh", "wish", "awk", "gawk", "mawk", "nawk", "guile", "R", "Rscript",
        "env", "xargs", "nice", "nohup", "timeout", "setsid", "stdbuf", "chroot", "unshare",
        "nsenter", "sudo", "su", "doas", "runuser", "flock", "strace", "ltrace", "gdb",
        "script", "watch", "expect", "find", "make", "ssh", "docker", "podman",
    }
)
# python3.11, perl5.36, lua5.4 and the like.
_VERSIONED = re.compile(r"(python|perl|ruby|lua|php|node)[0-9.]*")


def runs_anything(name: str) -> bool:
    """
    Whether a program of this name runs any command or code it is given.
    """
    return name in RUNS_ANYTHING or _VERSIONED.fullmatch(name) is not None


class AllowListError(ValueError):
    """
    An allow-list entry names no executable program.
    """


def _is_executable_file(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


def program_name(word: str) -> str:
    """
    The name a program runs under when C{word} is its C{argv[0]}: what a
    multi-call program (busybox, C{pgrep}/C{pkill}, C{bash}/C{rbash},
    C{vim}/C{view}, C{xz}/C{xzcat}) looks at to choose what it does.
    """
    return word.rsplit("/", 1)[-1]


class AllowList:
    """
    The programs ccx may run, each identified by its real path (symlinks
    followed), so that neither another name nor a link can smuggle in a
    different program; and the names each may run under, since a program
    may choose what it does by the name in its C{argv[0]}.

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
        # real path -> the names (argv[0] basenames) it may run under
        self._allowed: Dict[str, Set[str]] = {}
        for program in programs:
            found = self._find(program, os.getcwd())
            if found is None:
                raise AllowListError(
                    f"--allow {program}: no executable program of that name "
                    f"(looked on PATH={self.search_path})"
                )
            names = self._allowed.setdefault(os.path.realpath(found), set())
            names.add(program_name(program))

    def __len__(self) -> int:
        return len(self._allowed)

    def entries(self) -> List[Tuple[str, List[str]]]:
        """
        What is allowed: each program's real path, with the names it may
        run under, sorted.
        """
        return [(path, sorted(names)) for path, names in sorted(self._allowed.items())]

    def runs_anything(self) -> List[str]:
        """
        The names of allowed programs that run any command they are given
        (L{RUNS_ANYTHING}), by a name they may run under or their file's.
        """
        return sorted(
            min(names)
            for path, names in self._allowed.items()
            if any(runs_anything(name) for name in names | {os.path.basename(path)})
        )

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

    def check_name(self, word: str, executable: str) -> None:
        """
        Refuse to run C{executable} (a real path from L{resolve}) with
        C{word} as its C{argv[0]} unless the program was allowed under that
        name: with C{--allow pgrep}, C{pkill} (a link to C{pgrep}) would
        kill.  Only the last path component counts, as it is all a
        multi-call program looks at; C{-bash} (a login shell) counts as its
        own name.

        @raise NotAllowed: when the name is not one the program was allowed under.
        """
        names = self._allowed.get(executable, set())
        name = program_name(word)
        if name in names:
            return
        allowed = " or ".join(repr(n) for n in sorted(names))
        raise NotAllowed(
            f"{word!r} runs {executable}, which is allowed only under the name "
            f"{allowed}: a program may choose what it does by the name it runs "
            f"under; run it as {allowed}",
            setting="allow",
            value=word,
        )

    def _refusal(self, program: str, real: Optional[str]) -> NotAllowed:
        where = f" ({real})" if real and real != program else ""
        return NotAllowed(
            f"{program!r}{where} is not on the allow-list",
            setting="allow",
            value="sh" if program == SHELL else program,
            nothing_allowed=not self._allowed,
        )
