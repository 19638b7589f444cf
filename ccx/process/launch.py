"""
Starting a program for a client, from the client's words to a spawned
L{ManagedProcess}: what every dialect's "start a program" goes through.
"""

from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IProcessTransport
from twisted.internet.protocol import ProcessProtocol

from ccx.process.allowlist import AllowList
from ccx.process.cgroup import Cgroup, CgroupError, CgroupTree, ControllersMissing, Limits
from ccx.process.command import Command, build_command
from ccx.process.errors import InvalidCommand, LimitsUnavailable, SpawnFailed
from ccx.process.managed import ManagedProcess, RunOptions, Spawner
from ccx.process.registry import ProcessRegistry
from ccx.process.spawner import spawn
from ccx.process.terminal import WindowSize

# How to spawn with a given reactor (L{ccx.process.spawner.spawn}): with
# the reactor bound, a L{ccx.process.managed.Spawner}.
SpawnFunction = Callable[[Any, ProcessProtocol, Command], IProcessTransport]


@dataclass(frozen=True)
class LaunchSpec:
    """
    A client's request to run a program; see C{execute} in docs/protocol.md.

    @ivar command: argv as an array, or a string split like a shell would
        (or run with C{/bin/sh -c} when C{shell}).
    @ivar blocking: hold the program back rather than lose output.
    @ivar cancel_on_disconnect: end it when its starter goes away.
    @ivar encoding: how its starter wants its output carried (kept for
        the edges).
    @ivar durable: run it under the keeper, so that it outlives ccx.
    @ivar limits: what all of its processes together may use (needs a
        cgroup with the controllers).
    @ivar merge_stderr: its standard error goes to its standard output.
    @ivar pty: run it on a pseudo-terminal of this size (one C{pty} stream,
        input always open) instead of pipes.
    """

    command: Any
    shell: bool = False
    cwd: Optional[str] = None
    env: Dict[str, str] = field(default_factory=dict)
    timeout: Optional[float] = None
    stdin: bool = False
    blocking: bool = True
    cancel_on_disconnect: bool = True
    encoding: str = "utf-8"
    durable: bool = False
    limits: Optional[Limits] = None
    merge_stderr: bool = False
    pty: Optional[WindowSize] = None


@dataclass(frozen=True)
class LaunchSettings:
    """
    The service's settings every launched program gets.

    @ivar default_cwd: the working directory of programs that name none
        (the service's own when L{None}).
    @ivar base_env: the environment every program starts from
        (L{ccx.process.command.base_environment} when L{None}).
    @ivar allow_env: patterns of the environment variables clients may set.
    @ivar deny_env: patterns of environment variables clients may never set,
        even when allowed.
    @ivar journal_bytes: a durable program's journal limit (see
        L{ccx.process.managed.RunOptions}).
    """

    kill_grace: float = 5.0
    buffer_bytes: int = 1024 * 1024
    buffer_lines: int = 10000
    default_cwd: Optional[str] = None
    base_env: Optional[Mapping[str, str]] = None
    allow_env: Sequence[str] = ()
    deny_env: Sequence[str] = ()
    journal_bytes: int = 64 * 1024 * 1024


@dataclass
class Launcher:
    """
    What starting a program needs, and nothing more: the allow-list, the
    registry, the reactor and the settings.

    @ivar spawn_durable: how to spawn a durable program (the keeper's
        L{ccx.durable.link.KeeperLink.spawn}), or L{None} where there is
        no keeper.
    @ivar spawn: how to spawn (L{ccx.process.spawner.spawn}); given a
        C{cgroup} keyword when the program has one.
    @ivar cgroups: where programs' cgroups are made, or L{None} where ccx
        contains programs in process groups only.
    """

    allow_list: AllowList
    registry: ProcessRegistry
    reactor: Any
    settings: LaunchSettings
    spawn: SpawnFunction = spawn
    spawn_durable: Optional[Spawner] = None
    cgroups: Optional[CgroupTree] = None

    def launch(
        self,
        spec: LaunchSpec,
        owner: Optional[str] = None,
        check: Optional[Callable[[Command], None]] = None,
    ) -> Tuple[ManagedProcess, Deferred]:
        """
        Check C{spec} against the allow-list and the limits, and spawn it.

        @param owner: the session id of the client starting it.
        @param check: called with the checked command before it is spawned;
            what it raises refuses the command.
        @return: the process, and a L{Deferred} that fires once the program
            runs, or fails with L{SpawnFailed} (or the refusal of a program
            that waited its turn to start: see L{ProcessRegistry.start}).
            When the spawn failed at once, the process is already
            C{finished}; until it runs, it has no C{pid}.
        @raise LimitReached: at the process limit.
        @raise InvalidCommand: for a malformed command.
        @raise NotAllowed: when the program is not allowed.
        @raise LimitsUnavailable: when its limits cannot be applied.
        @raise SpawnFailed: when its cgroup cannot be made.
        """
        settings = self.settings
        if spec.merge_stderr and spec.pty is not None:
            # A terminal already merges them: the program's 1 and 2 are one.
            raise InvalidCommand(
                "'merge_stderr' does not go with 'pty': a program on a terminal writes "
                "stdout and stderr to the terminal, one stream (pty), in the order written",
                parameter="merge_stderr",
            )
        if spec.durable and self.spawn_durable is None:
            raise InvalidCommand(
                "durable programs need the state dir, which this service keeps no "
                "journal in",
                setting="no_journal",
            )
        # Refused at the limit before any work on the command (the allow-list
        # looks at files); registry.start checks again, for its other callers.
        self.registry.check_capacity()
        program = build_command(
            self.allow_list,
            spec.command,
            shell=spec.shell,
            cwd=spec.cwd,
            env=spec.env,
            stdin=spec.stdin,
            default_cwd=settings.default_cwd,
            base_env=settings.base_env,
            allow_env=settings.allow_env,
            deny_env=settings.deny_env,
            merge_stderr=spec.merge_stderr,
            pty=spec.pty,
        )
        if check is not None:
            check(program)
        options = RunOptions(
            blocking=spec.blocking,
            # A durable program outlives its starter's connection as it
            # outlives ccx.
            cancel_on_disconnect=spec.cancel_on_disconnect and not spec.durable,
            encoding=spec.encoding,
            timeout=spec.timeout,
            kill_grace=settings.kill_grace,
            buffer_bytes=settings.buffer_bytes,
            buffer_lines=settings.buffer_lines,
            durable=spec.durable,
            journal_bytes=settings.journal_bytes,
        )
        process_id = self.registry.new_process_id()
        cgroup = self._make_cgroup(process_id, spec.limits)
        process = ManagedProcess(
            process_id, program, options, self.reactor, owner=owner, cgroup=cgroup
        )
        if spec.durable:
            spawner = partial(self.spawn_durable, cgroup=cgroup)
        elif cgroup is None:
            spawner = partial(self.spawn, self.reactor)
        else:
            spawner = partial(self.spawn, self.reactor, cgroup=cgroup)
        try:
            started = self.registry.start(process, spawner)
        except BaseException:
            # Refused before it was spawned: its cgroup is empty.
            if cgroup is not None:
                cgroup.remove()
            raise
        return process, started

    def _make_cgroup(self, process_id: str, limits: Optional[Limits]) -> Optional[Cgroup]:
        """
        The cgroup a program runs in, with its limits; L{None} where ccx
        contains programs in process groups.
        """
        if self.cgroups is None:
            if limits is not None:
                raise LimitsUnavailable(
                    "limits need a cgroup per program, and ccx runs programs in "
                    "process groups only (no writable cgroup v2 hierarchy)",
                    setting="containment",
                    parameter="limits",
                )
            return None
        try:
            return self.cgroups.create(process_id, limits)
        except ControllersMissing as e:
            raise LimitsUnavailable(
                f"limits cannot be applied: {e} (their parent is {self.cgroups.base}; "
                "under systemd, Delegate=yes delegates the controllers)",
                parameter="limits",
            ) from None
        except CgroupError as e:
            raise SpawnFailed(str(e)) from None
