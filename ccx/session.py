"""
One client connection's share of the service: its id, its subscriptions and
the processes it started.
"""

import uuid
from typing import Any, Callable, Dict, List, Optional, Tuple

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from ccx.output.fanout import Subscription
from ccx.output.events import ProcessStarted
from ccx.output.interfaces import IOutputSink
from ccx.process.errors import InvalidCommand, ProcessError
from ccx.process.command import Command
from ccx.process.launch import Launcher, LaunchSpec
from ccx.process.managed import ManagedProcess, State
from ccx.rpc.jsonrpc import encode

log = Logger()


class Session:
    """
    What one connection holds.

    @param launcher: how this connection's programs are started.
    @param max_message_size: returns the largest message the connection
        carries (the service's setting as it is now): a program's argv,
        which C{process.started} and C{list} repeat, must fit in half of it.
    @param peer: who is connected (its address), for the audit trail.
    @ivar session_id: the id announced in C{connected}, and logged with
        every event that concerns this connection.
    @ivar feeds: what else delivers to this connection as it can take
        more (a L{ccx.native.watching.ProcessTableFeed}): each has
        C{pump()}, called with the subscriptions', and C{close()}, called
        when the connection closes.
    """

    def __init__(
        self,
        launcher: Optional[Launcher] = None,
        max_message_size: Callable[[], int] = lambda: 1024 * 1024,
        peer: str = "unknown",
    ) -> None:
        self.session_id = uuid.uuid4().hex
        self.peer = peer
        self.closed = False
        self.subscriptions: Dict[str, Subscription] = {}
        self.started: List[ManagedProcess] = []
        self._launcher = launcher
        self._max_message_size = max_message_size
        self._pumped = 0
        self.feeds: List[Any] = []

    def launch(self, spec: LaunchSpec) -> Tuple[ManagedProcess, Deferred]:
        """
        Start a program for this connection: every dialect's way in.  It is
        cancelled when the connection closes (unless
        C{spec.cancel_on_disconnect} is false), and forgotten by the
        connection once finished.

        @return: the process and its start L{Deferred}, as
            L{Launcher.launch} returns them.
        @raise ProcessError: as L{Launcher.launch}, and L{InvalidCommand}
            when the command is too long to report back in one message.
        """
        try:
            process, started = self._launcher.launch(
                spec, owner=self.session_id, check=self._check_argv
            )
        except ProcessError as e:
            self._refused(spec.command, e)
            raise
        started.addCallbacks(
            self._started, self._not_started, callbackArgs=(process,), errbackArgs=(process,)
        )
        # Kept unless it failed at once: one still waiting for its turn to
        # start is cancelled with the connection as surely as a running one.
        if not process.finished:
            self.started.append(process)

            def forget(result: object) -> object:
                if process in self.started:
                    self.started.remove(process)
                return result

            started.addErrback(forget)
        return process, started

    # The audit trail: every program started, and every one refused, with
    # who asked (session and peer), what (argv) and why not.

    def _started(self, result: object, process: ManagedProcess) -> object:
        log.info(
            "session {session_id} from {peer} started {process_id} (pid {pid}): {argv}",
            session_id=self.session_id,
            peer=self.peer,
            process_id=process.process_id,
            pid=process.pid,
            argv=process.command.argv,
            executable=process.command.executable,
            cwd=process.command.cwd,
        )
        return result

    def _not_started(self, failure: Failure, process: ManagedProcess) -> Failure:
        error = failure.value
        if isinstance(error, ProcessError):
            self._refused(process.command.argv, error, process.process_id)
        return failure

    def _refused(
        self, command: object, error: ProcessError, process_id: Optional[str] = None
    ) -> None:
        log.warn(
            "session {session_id} from {peer} refused {argv}: {reason}",
            session_id=self.session_id,
            peer=self.peer,
            argv=command,
            reason=error.message,
            refusal=type(error).__name__,
            process_id=process_id,
        )

    def _check_argv(self, command: Command) -> None:
        limit = self._max_message_size()
        if len(encode(command.argv)) > limit // 2:
            raise InvalidCommand(
                "the command is too long to report back (over half of the "
                "largest message)",
                setting="max_message_size",
                value=limit,
            )

    def subscribe(
        self,
        process: ManagedProcess,
        sink: IOutputSink,
        blocking: bool,
        offsets: Optional[Dict[str, int]] = None,
        first: Optional[ProcessStarted] = None,
        key: Optional[str] = None,
    ) -> Subscription:
        """
        Subscribe C{sink} to a process's output, replacing this connection's
        earlier subscription under the same key.  The subscription delivers
        nothing until activated; it is pumped and closed with the connection.

        @param key: what the subscription is kept under, by default the
            process id.
        """
        key = process.process_id if key is None else key
        self._prune()
        self.unsubscribe(key)
        subscription = process.output.subscribe(sink, blocking, offsets, first)
        self.subscriptions[key] = subscription
        return subscription

    def _prune(self) -> None:
        """
        Forget delivered subscriptions and finished processes, so that a
        long-lived connection holds only what is still going on.
        """
        for key in [k for k, s in self.subscriptions.items() if s.done]:
            del self.subscriptions[key]
        self.started = [p for p in self.started if not p.finished]

    def unsubscribe(self, process_id: str) -> bool:
        """
        @param process_id: the key of the subscription (its process id, or
            the key it was made with).
        @return: whether there was a subscription to drop.
        """
        subscription = self.subscriptions.pop(process_id, None)
        if subscription is None:
            return False
        subscription.output.unsubscribe(subscription)
        return True

    def newest_unfinished(self) -> Optional[ManagedProcess]:
        """
        The newest process this connection started whose leader has not exited.
        """
        for process in reversed(self.started):
            if not process.finished and process.state != State.EXITED:
                return process
        return None

    def delivering(self) -> bool:
        """
        Whether a subscription still has output, or its process's
        completion, to deliver.
        """
        return any(s.delivering for s in self.subscriptions.values())

    def pump(self) -> None:
        """
        The connection can take more: let every subscription and feed deliver.
        """
        for feed in list(self.feeds):
            feed.pump()
        subscriptions = list(self.subscriptions.items())
        if not subscriptions:
            return
        # Start with a different subscription each time: the first one may
        # fill the connection, and must not always be the same one.
        self._pumped = (self._pumped + 1) % len(subscriptions)
        for key, subscription in subscriptions[self._pumped :] + subscriptions[: self._pumped]:
            if subscription.done:
                del self.subscriptions[key]
            else:
                subscription.pump()

    def close(self) -> None:
        """
        The connection closed: drop its subscriptions and cancel the
        processes it started with C{on_disconnect: "cancel"}.
        """
        self.closed = True
        feeds, self.feeds = self.feeds, []
        for feed in feeds:
            feed.close()
        for process_id in list(self.subscriptions):
            self.unsubscribe(process_id)
        for process in self.started:
            if process.options.cancel_on_disconnect:
                process.terminate()
        self.started = []
