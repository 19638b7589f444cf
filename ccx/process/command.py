"""
What to run: a command checked against the allow-list, ready to spawn.
"""

import os
import shlex
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Dict, List, Mapping, Optional, Sequence, Union

from ccx.process.allowlist import SHELL, AllowList
from ccx.process.errors import InvalidCommand, NotAllowed
from ccx.process.terminal import TERM, WindowSize


@dataclass(frozen=True)
class Command:
    """
    A program to run.

    @ivar executable: the real path of the program, as checked by the allow-list.
    @ivar argv: its arguments, C{argv[0]} as the client wrote it: its last
        component is a name the program was allowed under.
    @ivar cwd: the working directory.
    @ivar env: the whole environment: the base environment and what the
        client set.
    @ivar stdin: whether standard input stays open for C{write}.
    @ivar merge_stderr: whether its standard error is its standard output's
        pipe (one stream, in the order the program wrote it).
    @ivar pty: the window size of the pseudo-terminal the program runs on,
        or L{None} to run it on pipes.
    """

    executable: str
    argv: List[str]
    cwd: str
    env: Dict[str, str] = field(default_factory=dict)
    stdin: bool = False
    merge_stderr: bool = False
    pty: Optional[WindowSize] = None


def _argv(command: Union[str, list], shell: bool) -> List[str]:
    if isinstance(command, str) and "\0" in command:
        raise InvalidCommand("'command' holds a NUL byte")
    if shell:
        if not isinstance(command, str):
            raise InvalidCommand("with shell: true, 'command' must be one string")
        return ["sh", "-c", command]
    if isinstance(command, str):
        try:
            argv = shlex.split(command)
        except ValueError as e:
            raise InvalidCommand(f"cannot split 'command' into words: {e}")
    elif isinstance(command, list) and all(isinstance(word, str) for word in command):
        argv = list(command)
    else:
        raise InvalidCommand("'command' must be a string or an array of strings")
    if not argv:
        raise InvalidCommand("'command' is empty")
    if any("\0" in word for word in argv):
        raise InvalidCommand("'command' holds a NUL byte")
    return argv


def _cwd(cwd: Optional[str], default: str) -> str:
    if cwd is None:
        return default
    if "\0" in cwd:
        raise InvalidCommand("'cwd' holds a NUL byte")
    path = os.path.normpath(os.path.join(default, cwd))
    if not os.path.isdir(path):
        raise InvalidCommand(f"'cwd' {cwd!r} is not an existing directory")
    return path


# What every program's environment starts from, besides PATH (docs/running.md):
# output goes to pipes that ccx decodes as UTF-8, not to a terminal.
BASE_ENVIRONMENT = {"LANG": "C.UTF-8", "TERM": "dumb"}


def base_environment(
    search_path: str,
    pass_env: Sequence[str] = (),
    environ: Optional[Mapping[str, str]] = None,
) -> Dict[str, str]:
    """
    The environment every program starts from: C{PATH} set to the
    service's search path, L{BASE_ENVIRONMENT}, and the service's own
    variables named in C{pass_env} (those it has), never the rest of the
    service's environment.

    @param search_path: the C{PATH} programs are found on (the allow-list's).
    @param environ: the service's environment (C{os.environ} by default).
    """
    environ = os.environ if environ is None else environ
    env = {"PATH": search_path or os.defpath, **BASE_ENVIRONMENT}
    env.update({name: environ[name] for name in pass_env if name in environ})
    return env


def _env(
    base: Mapping[str, str],
    extra: Mapping[str, str],
    allow: Sequence[str],
    deny: Sequence[str],
) -> Dict[str, str]:
    for name, value in extra.items():
        if not name or "=" in name or "\0" in name or "\0" in value:
            raise InvalidCommand(
                f"'env' entry {name!r} is not a valid variable "
                "(a name without '=' or NUL, a value without NUL)"
            )
        # The deny list is checked first: allowing a denied name would not help.
        for pattern in deny:
            if fnmatchcase(name, pattern):
                raise NotAllowed(
                    f"'env' may not set {name!r}, which changes what code a "
                    f"program runs (denied by {pattern!r})",
                    setting="deny_env",
                )
        if not any(fnmatchcase(name, pattern) for pattern in allow):
            raise NotAllowed(
                f"'env' may not set {name!r}: clients set only the variables "
                "the service allows",
                setting="allow_env",
                value=name,
                nothing_allowed=not allow,
            )
    env = dict(base)
    env.update(extra)
    return env


def build_command(
    allow_list: AllowList,
    command: Union[str, list],
    shell: bool = False,
    cwd: Optional[str] = None,
    env: Optional[Mapping[str, str]] = None,
    stdin: bool = False,
    default_cwd: Optional[str] = None,
    base_env: Optional[Mapping[str, str]] = None,
    allow_env: Sequence[str] = (),
    deny_env: Sequence[str] = (),
    merge_stderr: bool = False,
    pty: Optional[WindowSize] = None,
) -> Command:
    """
    Check a client's command and turn it into a L{Command}.

    @param base_env: the environment the program starts from; by default
        L{base_environment} on the allow-list's search path.
    @param allow_env: patterns of the variables C{env} may set (none by default).
    @param deny_env: patterns of the variables C{env} may never set.
    @param merge_stderr: give the program its standard output's pipe as
        its standard error too.
    @param pty: run it on a terminal of this size: its input is open (the
        terminal's), and C{TERM} says what the terminal is unless C{env}
        sets it.

    @raise InvalidCommand: for a malformed command.
    @raise NotAllowed: when the program is not allowed.
    """
    argv = _argv(command, shell)
    directory = _cwd(cwd, default_cwd or os.getcwd())
    program = SHELL if shell else argv[0]
    executable = allow_list.resolve(program, directory)
    allow_list.check_name(argv[0], executable)
    if base_env is None:
        base_env = base_environment(allow_list.search_path)
    if pty is not None:
        base_env = {**base_env, "TERM": TERM}
    environment = _env(base_env, env or {}, allow_env, deny_env)
    return Command(
        executable,
        argv,
        directory,
        environment,
        stdin or pty is not None,
        merge_stderr,
        pty,
    )
