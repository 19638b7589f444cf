"""
Starting a program for a client: what the native C{execute} and the MCP
tools share, from the client's words to a spawned L{ManagedProcess}.
"""

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional, Tuple

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IProcessTransport
from twisted.internet.protocol import ProcessProtocol

from ccx.output.encoding import UTF8
from ccx.process.command import Command, build_command
from ccx.process.managed import ManagedProcess, RunOptions
from ccx.process.spawner import spawn
from ccx.rpc.errors import invalid_params
from ccx.rpc.jsonrpc import encode

if TYPE_CHECKING:  # pragma: no cover
    from ccx.node import Node


@dataclass(frozen=True)
class LaunchSpec:
    """
    A client's request to run a program; see C{execute} in docs/protocol.md.

    @ivar command: argv as an array, or a string split like a shell would
        (or run with C{/bin/sh -c} when C{shell}).
    """

    command: Any
    shell: bool = False
    cwd: Optional[str] = None
    env: Dict[str, str] = field(default_factory=dict)
    timeout: Optional[float] = None
    stdin: bool = False
    on_full: str = "block"
    on_disconnect: str = "cancel"
    encoding: str = UTF8


SpawnFunction = Callable[[Any, ProcessProtocol, Command], IProcessTransport]


def launch(
    node: "Node",
    spec: LaunchSpec,
    owner: Optional[str],
    spawn: SpawnFunction = spawn,
) -> Tuple[ManagedProcess, Deferred]:
    """
    Check C{spec} against the allow-list and the limits, and spawn it with
    the service's settings (grace period, buffers, default directory).

    @param owner: the session id of the client starting it.
    @param spawn: how to spawn it (L{ccx.process.spawner.spawn}).
    @return: the process, and a L{Deferred} that fires once the program
        runs or fails with a -32005 L{RPCError}.  When the spawn failed at
        once, the process has no C{pid}.
    @raise RPCError: -32001 at the process limit, -32602 for a malformed
        command, -32002 when the program is not allowed.
    """
    config = node.config
    registry = node.registry
    registry.check_capacity()
    program = build_command(
        node.allow_list,
        spec.command,
        shell=spec.shell,
        cwd=spec.cwd,
        env=spec.env,
        stdin=spec.stdin,
        default_cwd=config.cwd,
        deny_env=config.deny_env,
    )
    # process.started and list repeat the argv: it must fit in one message.
    if len(encode(program.argv)) > config.max_message_size // 2:
        raise invalid_params(
            "invalid params: the command is too long to report back "
            f"(over half of --max-message-size, {config.max_message_size} bytes)"
        )
    options = RunOptions(
        on_full=spec.on_full,
        on_disconnect=spec.on_disconnect,
        encoding=spec.encoding,
        timeout=spec.timeout,
        kill_grace=config.kill_grace,
        buffer_bytes=config.buffer_bytes,
        buffer_lines=config.buffer_lines,
    )
    process = ManagedProcess(
        registry.new_process_id(), program, options, node.reactor, owner=owner
    )
    reactor = node.reactor
    started = registry.start(process, lambda protocol, c: spawn(reactor, protocol, c))
    return process, started
