"""
The ccx service: the listening port and the processes, started and stopped
together.
"""

import sys
from types import TracebackType
from typing import IO, Any, Optional, Type

import txaio
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError
from twisted.logger import ILogObserver, Logger

from ccx.config import (
    Config,
    ConfigError,
    accepts_directly,
    check_listening,
    listen_refusal,
)
from ccx.durable.orphans import end_orphans
from ccx.fdlimit import RESERVE, open_file_limit, raise_open_file_limit
from ccx.journal.statedir import StateDir, StateDirError
from ccx.logs import make_observer
from ccx.node import Node
from ccx.sdnotify import notify
from ccx.web.port import PortService
from ccx.web.site import build_site
from ccx.web.urls import service_urls


# What refuses a start for a reason the user can act on: a setting, a port
# taken or a state dir that cannot be used.  twistd lets an exception from
# makeService or privilegedStartService reach the top of the interpreter.
REFUSALS = (ConfigError, CannotListenError)


def show_refusals_briefly(stream: Optional[IO[str]] = None) -> None:
    """
    Show a refusal at start (L{REFUSALS}) as its one line, C{ccx: WHY},
    rather than a traceback; the exit status stays 1.  Anything else
    uncaught is shown as Python shows it.

    @param stream: where the line goes (C{sys.stderr} at that time: twistd
        may have made it its log by then).
    """
    previous = sys.excepthook

    def excepthook(
        kind: Type[BaseException], value: BaseException, traceback: Optional[TracebackType]
    ) -> None:
        if issubclass(kind, REFUSALS):
            out = stream if stream is not None else sys.stderr
            out.write(f"ccx: {value}\n")
            out.flush()
        else:
            previous(kind, value, traceback)

    sys.excepthook = excepthook


class CCXService(MultiService):
    """
    Listens on the configured endpoint; on stop, stops listening, cancels
    every process group and waits for them, then closes every connection
    once it has delivered its programs' completions, and waits for that.

    @ivar node: the service's L{Node}.
    @ivar port_service: the L{PortService} that listens.
    """

    log = Logger()

    def __init__(self, config: Config, reactor: Optional[Any] = None) -> None:
        super().__init__()
        if reactor is None:
            from twisted.internet import reactor
        self.config = config
        # Autobahn logs through txaio, whose level is global.
        txaio.set_global_log_level(config.log_level)
        self.node = Node(config, reactor)
        self.state_dir: Optional[StateDir] = None
        if config.journal:
            self._open_state_dir()
        self.site = build_site(self.node)
        endpoint = serverFromString(reactor, config.port)
        direct = accepts_directly(endpoint)
        self.port_service = PortService(
            endpoint,
            self.site,
            check=lambda port: check_listening(config, port.getHost(), direct),
            explain=listen_refusal,
        )
        self.port_service.setServiceParent(self)

    def _open_state_dir(self) -> None:
        """
        Keep records and journals in C{--state-dir}, and take up the finished
        programs an earlier service left there.

        @raise ConfigError: when it cannot be used.
        """
        config = self.config
        try:
            state_dir = StateDir(
                config.state_dir, config.journal_bytes, config.journal_total_bytes
            ).open()
            # Before anything in it is touched: another live service's
            # programs would otherwise be ended below as orphans.
            state_dir.lock()
        except StateDirError as e:
            raise ConfigError(f"--state-dir: {e}") from None
        self.state_dir = state_dir
        try:
            # What a killed ccx left running is ended first, and listed failed.
            end_orphans(state_dir, self.node.reactor)
            self.node.registry.use_state_dir(state_dir)
            # Durable programs' journals count in the same total.
            self.node.keeper.space = state_dir.space
        except BaseException:
            state_dir.unlock()
            raise

    def setServiceParent(self, parent: Any) -> None:
        """
        When the parent is a twistd application and C{--log-format} or
        C{--log-level} was given, give it our log observer, writing to
        standard output: twistd then uses it for its own lines too.
        Otherwise twistd logs as it always does (C{twistd.log} when
        daemonised, C{--logfile}, C{--syslog}).
        """
        super().setServiceParent(parent)
        if hasattr(parent, "setComponent") and self.config.log_format_given:
            parent.setComponent(ILogObserver, self.log_observer())

    def log_observer(self) -> ILogObserver:
        return self.log_observer_to(sys.stdout)

    def log_observer_to(self, out: IO[str]) -> ILogObserver:
        """
        An observer writing this service's log format and level to C{out},
        with the token redacted.
        """
        return make_observer(
            self.config.log_format,
            self.config.log_level,
            out,
            secrets=[self.config.token] if self.config.token else [],
        )

    def when_listening(self) -> Deferred:
        """
        Fire with the L{IListeningPort} once the service listens (useful
        with port 0), or fail as listening failed.
        """
        return self.port_service.when_listening()

    def privilegedStartService(self) -> None:
        # twistd calls this before the reactor runs: what --containment
        # cgroup refuses stops twistd with its one line, as a refused port does.
        self.node.open_containment()
        try:
            super().privilegedStartService()
        except BaseException:
            self.node.close_containment()
            raise

    def startService(self) -> None:
        self._raise_open_file_limit()
        self.node.open_containment()
        try:
            # Before listening: a client's first list shows them.
            self.node.readopt()
            super().startService()
        except BaseException:
            self.node.close_containment()
            raise
        # A failure to listen is the port service's to raise or log.
        self.when_listening().addCallbacks(self._listening, lambda failure: None)

    def _raise_open_file_limit(self) -> None:
        """
        Take every file descriptor the system allows (the soft limit up to
        the hard one), and say when C{--max-connections} cannot be reached.
        """
        raised = raise_open_file_limit()
        if raised is not None:
            self.log.info(
                "raised the open file limit (RLIMIT_NOFILE) from {old} to {new}",
                old=raised[0],
                new=raised[1],
            )
        limit = open_file_limit()
        if limit is not None and self.config.max_connections + RESERVE > limit:
            self.log.warn(
                "--max-connections {count} needs more file descriptors than the limit "
                "({limit}, of which {reserve} are kept in reserve); raise LimitNOFILE= "
                "or ulimit -Hn",
                count=self.config.max_connections,
                limit=limit,
                reserve=RESERVE,
            )

    def _listening(self, port: Any) -> None:
        """
        Say where to connect (from the address actually bound), what is
        allowed, and which allowed programs can run anything.
        """
        address = port.getHost()
        self.log.info(
            "ccx {version} listening on {endpoint} ({address}); {allowed} programs allowed",
            version=self.node.version,
            endpoint=self.config.port,
            address=str(address),
            host=getattr(address, "host", None),
            port=getattr(address, "port", None),
            allowed=len(self.node.allow_list),
        )
        urls = service_urls(address, tls=self.config.port.startswith("ssl:"))
        self.log.info(
            "connect: WebSocket {websocket} (MCP: subprotocol mcp, or {websocket_mcp}); "
            "MCP over HTTP {mcp}; health {health}; metrics {metrics}",
            **urls,
        )
        entries = self.node.allow_list.entries()
        self.log.info(
            "allowed: {programs}",
            programs="; ".join(f"{path} as {', '.join(names)}" for path, names in entries)
            or "nothing (give --allow PROGRAM)",
            allow=[path for path, names in entries],
        )
        for name in self.node.allow_list.runs_anything():
            self.log.warn("{program} is allowed: any command can run", program=name)
        # Type=notify: systemd starts what depends on ccx once it listens.
        notify("READY=1")

    @inlineCallbacks
    def stopService(self) -> Deferred:
        notify("STOPPING=1")
        yield super().stopService()
        live = self.node.registry.live()
        durable = sum(1 for p in live if p.options.durable)
        if len(live) > durable:
            self.log.info("stopping: cancelling {count} processes", count=len(live) - durable)
        if durable:
            self.log.info("stopping: {count} durable processes go on running", count=durable)
        # Cancel first and close connections after, so that clients are told
        # how their processes ended; and wait for the closing handshakes, so
        # that the reactor does not stop with that still unsent.
        yield self.node.registry.shutdown()
        self.node.close_containment()
        yield self.node.close_connections("ccx is stopping")
        # Durable programs go on under the keeper.
        self.node.keeper.close()
        if self.state_dir is not None:
            self.state_dir.unlock()
        self.log.info("stopped")
