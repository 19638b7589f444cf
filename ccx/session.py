"""
One client connection's share of the service: its id, its subscriptions and
the processes it started.
"""

import uuid
from typing import Dict, List, Optional

from ccx.output.fanout import Subscription
from ccx.output.interfaces import IOutputSink
from ccx.process.managed import ManagedProcess


class Session:
    """
    What one connection holds.

    @ivar session_id: the id announced in C{connected}, and logged with
        every event that concerns this connection.
    """

    def __init__(self, sink: IOutputSink) -> None:
        self.session_id = uuid.uuid4().hex
        self.sink = sink
        self.closed = False
        self.subscriptions: Dict[str, Subscription] = {}
        self.started: List[ManagedProcess] = []
        self._pumped = 0

    def subscribe(
        self,
        process: ManagedProcess,
        blocking: bool,
        offsets: Optional[Dict[str, int]] = None,
        first: Optional[tuple] = None,
        sink: Optional[IOutputSink] = None,
        key: Optional[str] = None,
    ) -> Subscription:
        """
        Subscribe to a process's output, replacing this connection's earlier
        subscription to it.  The subscription delivers nothing until activated.

        @param sink: where the output goes, by default the connection itself;
            another sink of this connection (an MCP progress reporter) is
            pumped and closed with the connection's own subscriptions.
        @param key: what the subscription is kept under, by default the
            process id.
        """
        key = process.process_id if key is None else key
        self._prune()
        self.unsubscribe(key)
        subscription = process.output.subscribe(
            self.sink if sink is None else sink, blocking, offsets, first
        )
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
        The newest process this connection started that has not exited.
        """
        for process in reversed(self.started):
            if not process.finished and process.state != "exited":
                return process
        return None

    def pump(self) -> None:
        """
        The connection can take more: let every subscription deliver.
        """
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
                subscription.output.pump(subscription)

    def close(self) -> None:
        """
        The connection closed: drop its subscriptions and cancel the
        processes it started with C{on_disconnect: "cancel"}.
        """
        self.closed = True
        for process_id in list(self.subscriptions):
            self.unsubscribe(process_id)
        for process in self.started:
            if process.options.on_disconnect == "cancel":
                process.terminate()
        self.started = []
