"""
The state one ccx service shares between its connections.
"""

import os
import time
from typing import Any, Optional, Set

from twisted.internet.defer import Deferred, DeferredList, maybeDeferred
from twisted.logger import Logger

from ccx import __version__
from ccx.config import Config, ConfigError
from ccx.durable.adoption import readopt
from ccx.durable.link import KeeperLink
from ccx.journal.statedir import StateDir
from ccx.metrics import Metrics
from ccx.process.allowlist import AllowList, AllowListError
from ccx.process.cgroup import CgroupError, open_tree, remove_stale
from ccx.process.command import base_environment
from ccx.process.launch import Launcher, LaunchSettings
from ccx.process.registry import ProcessRegistry
from ccx.session import Session
from ccx.web.interfaces import IConnection

log = Logger()


class Node:
    """
    One ccx service: its configuration, allow-list, processes and connections.

    @ivar connections: the open client connections (L{IConnection}s).
    @ivar handshakes: the HTTP connections whose request has not all
        arrived yet (L{ccx.web.channel.ClientChannel}).
    """

    version = __version__

    def __init__(self, config: Config, reactor: Any) -> None:
        self.config = config
        self.reactor = reactor
        try:
            self.allow_list = AllowList(config.allow)
        except AllowListError as e:
            raise ConfigError(str(e)) from None
        self.registry = ProcessRegistry(
            reactor,
            config.max_processes,
            config.keep_finished,
            config.max_finished,
            config.held_output_bytes,
            # A burst of one request per connection waits rather than
            # being refused while the programs before it are started.
            max_waiting=config.max_processes + config.max_connections,
        )
        # The keeper of the state dir: started with the first durable program.
        self.keeper = KeeperLink(
            reactor,
            config.state_dir,
            config.journal_bytes,
            StateDir(config.state_dir, config.journal_bytes, config.journal_total_bytes).segment_bytes,
        )
        self.launcher = Launcher(
            self.allow_list,
            self.registry,
            reactor,
            LaunchSettings(
                kill_grace=config.kill_grace,
                buffer_bytes=config.buffer_bytes,
                buffer_lines=config.buffer_lines,
                default_cwd=config.cwd,
                base_env=base_environment(self.allow_list.search_path, config.pass_env),
                allow_env=config.allow_env,
                deny_env=config.deny_env,
            ),
            # Durable programs need the state dir, which --no-journal leaves alone.
            spawn_durable=self.keeper.spawn if config.journal else None,
        )
        self.connections: Set[IConnection] = set()
        self.handshakes = 0
        self.metrics = Metrics(self)
        self.registry.on_spawned = self.metrics.observe_spawn
        self._started = time.monotonic()

    def readopt(self) -> int:
        """
        At start: take back the durable programs of the state dir.

        @return: how many.
        """
        if not self.config.journal:
            return 0
        adopted = readopt(
            self.keeper,
            self.registry,
            self.launcher.settings,
            self.reactor,
            self.launcher.cgroups,
        )
        # What a dead ccx left in the cgroup hierarchy goes once the
        # programs it held there are over.
        for process in adopted:
            process.ended.addBoth(self._after_adopted)
        return len(adopted)

    def _after_adopted(self, result: Any) -> Any:
        tree = self.launcher.cgroups
        if tree is not None and tree.owned:
            remove_stale(os.path.dirname(tree.base), os.getpid())
        return result

    @property
    def containment(self) -> str:
        """
        How programs started now are held: C{"cgroup"} or C{"process-group"}.
        """
        return "process-group" if self.launcher.cgroups is None else "cgroup"

    def open_containment(self) -> None:
        """
        Choose how programs are held (C{--containment}), at start: a cgroup
        per program where a cgroup v2 hierarchy can be written (C{auto},
        C{cgroup}), else their process groups.

        @raise ConfigError: for C{cgroup} where none can be written.
        """
        mode = self.config.containment
        if mode == "process-group" or self.launcher.cgroups is not None:
            return
        try:
            tree = open_tree()
        except CgroupError as e:
            if mode == "cgroup":
                raise ConfigError(f"--containment cgroup: {e}") from None
            log.info("programs are held in their process groups: {reason}", reason=str(e))
            return
        self.launcher.cgroups = tree
        log.info("each program runs in a cgroup of its own, in {base}", base=tree.base)

    def close_containment(self) -> None:
        """
        Remove the directory of program cgroups (the service has stopped
        and every program has ended).
        """
        tree, self.launcher.cgroups = self.launcher.cgroups, None
        if tree is None or tree.close():
            return
        if any(p.options.durable for p in self.registry.live()):
            log.info("cgroup {base} is kept: durable programs run in it", base=tree.base)
        else:
            log.warn("could not remove cgroup {base}: it is not empty", base=tree.base)

    def new_session(self) -> Session:
        """
        The share of the service a new connection gets (its edge sets its
        C{peer}).
        """
        return Session(self.launcher, lambda: self.config.max_message_size)

    def open_connections(self) -> int:
        """
        What C{--max-connections} bounds: the sockets clients hold, that is
        the WebSockets and the HTTP requests still arriving (a slow client
        holds its socket as surely as an open WebSocket does).
        """
        return self.handshakes + sum(1 for c in self.connections if c.holds_socket)

    def connection_refused(self) -> Optional[str]:
        """
        Why one more connection may not be served now (C{--max-connections}),
        logged; or L{None} when it may.
        """
        count = self.open_connections()
        limit = self.config.max_connections
        if count < limit:
            return None
        log.warn("refused a connection: {count} connections are open", count=count)
        return f"too many connections (--max-connections {limit})"

    def close_connections(self, reason: str) -> Deferred:
        """
        Close every open connection (the service is stopping), telling each
        client C{reason}.

        @return: a L{Deferred} that fires once every connection is closed;
            each connection bounds its own wait (L{IConnection.close}).
        """
        closing = [maybeDeferred(c.close, reason) for c in list(self.connections)]
        return DeferredList(closing, consumeErrors=True).addCallback(lambda _: None)

    @property
    def uptime(self) -> float:
        return time.monotonic() - self._started

    def health(self) -> dict:
        return {
            "status": "ok",
            "version": self.version,
            "uptime": round(self.uptime, 3),
            "connections": len(self.connections),
            "processes": self.registry.live_count,
            "durable": sum(1 for p in self.registry.live() if p.options.durable),
            "containment": self.containment,
        }
