"""
One process's output and its subscribers.

L{ProcessOutput} holds each stream in a L{StreamBuffer}, hands chunks to
every L{Subscription} at that subscriber's pace, evicts what nobody needs
any more, and decides when the program's pipes must stop being read: the
point where back-pressure from the slowest blocking subscriber reaches the
program.
"""

from typing import Any, Callable, Dict, List, Optional

from twisted.logger import Logger

from ccx.output.budget import OutputBudget
from ccx.output.buffer import StreamBuffer
from ccx.output.events import (
    STREAMS,
    Completion,
    OutputChunk,
    OutputDropped,
    ProcessStarted,
    StateChanged,
)
from ccx.output.interfaces import IOutputSink, IReadControl

# The most bytes one chunk carries: it bounds one event (a sink may ask for
# less, IOutputSink.max_chunk).
MAX_CHUNK = 128 * 1024


class Subscription:
    """
    One subscriber's cursor over a process's output.

    A subscription is created inactive and starts delivering once
    L{activate} is called, so that the reply which created it is sent first.

    @ivar blocking: whether this subscriber holds the program back rather
        than lose output.
    @ivar cursors: the next offset this subscriber needs, by stream.
    """

    def __init__(
        self,
        output: "ProcessOutput",
        sink: IOutputSink,
        blocking: bool,
        cursors: Dict[str, int],
        first: Optional[ProcessStarted] = None,
    ) -> None:
        self.output = output
        self.sink = sink
        self.blocking = blocking
        self.cursors = cursors
        self.active = False
        self.done = False
        self._first = first

    @property
    def delivering(self) -> bool:
        """
        Whether this subscription is activated and has not ended: it still
        has output, or the process's completion, to deliver.
        """
        return self.active and not self.done

    @property
    def announcing(self) -> bool:
        """
        Whether it still has to tell its sink the announcement it was made
        with (it is not activated yet).
        """
        return self._first is not None

    def activate(self) -> None:
        """
        Start delivering: first the announcement this subscription was made
        with (L{ProcessStarted} for the program's starter), then output.
        """
        if self.active or self.done:
            return
        self.active = True
        if self._first is not None:
            first, self._first = self._first, None
            self.output.call_sink(self, self.sink.started, first)
        self.output.pump(self)

    def pump(self) -> None:
        """
        Deliver what this subscriber can take now.
        """
        self.output.pump(self)

    def deliver(self) -> None:
        """
        Hand the sink what it can take now, reporting ranges no longer held,
        and the completion once everything has been delivered.
        """
        output = self.output
        sink = self.sink
        process_id = output.process_id
        streams = output.streams
        max_chunk = min(MAX_CHUNK, sink.max_chunk)
        while sink.writable and not self.done:
            moved = False
            for name in STREAMS:
                buffer = streams[name]
                cursor = self.cursors[name]
                if cursor < buffer.start:
                    sink.dropped(
                        OutputDropped(process_id, name, cursor, buffer.start - cursor)
                    )
                    cursor = self.cursors[name] = buffer.start
                    moved = True
                if cursor >= buffer.end:
                    continue
                first, data, when = buffer.read(cursor, max_chunk)
                final = buffer.closed and first + len(data) == buffer.end
                taken = sink.output(OutputChunk(process_id, name, first, data, when, final))
                if taken:
                    self.cursors[name] = first + taken
                    moved = True
            if not moved:
                break
        if (
            not self.done
            and output.completion is not None
            and all(self.cursors[n] >= streams[n].end for n in STREAMS)
        ):
            self.done = True
            sink.completed(output.completion)


class ProcessOutput:
    """
    The output of one process: its buffers, its subscribers, and the
    decision to stop or restart reading its pipes.

    @param blocking: its pipes stop being read rather than let a blocking
        subscriber lose output, and while it has no blocking subscriber,
        rather than evict anything.
    @ivar dropped_bytes: bytes evicted before every subscriber had them.
    @ivar completion: how the process ended, once known.
    @ivar budget: the service's L{OutputBudget}, told how much this output
        holds, which may release it once the process is over.
    """

    log = Logger()

    def __init__(
        self,
        process_id: str,
        max_bytes: int,
        max_lines: int,
        blocking: bool,
    ) -> None:
        self.process_id = process_id
        self.blocking = blocking
        self.streams = {name: StreamBuffer(max_bytes, max_lines) for name in STREAMS}
        self.subscriptions: List[Subscription] = []
        self.dropped_bytes = 0
        self.completion: Optional[Completion] = None
        self._reader: Optional[IReadControl] = None
        self._reading_paused = False
        self._released = False
        self.budget: Optional[OutputBudget] = None
        self._held = 0

    @property
    def reading_paused(self) -> bool:
        return self._reading_paused

    def set_reader(self, reader: Optional[IReadControl]) -> None:
        """
        Connect (or, with L{None}, disconnect) the pipes' read control.
        """
        self._reader = reader
        self._reading_paused = False
        if reader is not None:
            self._rebalance()

    def receive(self, stream: str, data: bytes, when: float) -> None:
        """
        Take bytes read from one of the program's pipes.
        """
        self.streams[stream].append(data, when)
        self.pump_all()

    def end_stream(self, stream: str) -> None:
        self.streams[stream].close()
        self.pump_all()

    def complete(self, completion: Completion) -> None:
        """
        The process is over and all its output is in: each subscriber gets
        the completion once it has been given everything before it.
        """
        for buffer in self.streams.values():
            buffer.close()
        self.completion = completion
        self.pump_all()
        if self.budget is not None:
            self.budget.finished(self)

    def subscribe(
        self,
        sink: IOutputSink,
        blocking: bool,
        offsets: Optional[Dict[str, int]] = None,
        first: Optional[ProcessStarted] = None,
    ) -> Subscription:
        """
        Add a subscriber, inactive until L{Subscription.activate}.

        @param offsets: where to start in each stream; by default the oldest
            byte held.
        @param first: the event to tell before any output.
        """
        cursors = {name: buffer.start for name, buffer in self.streams.items()}
        if offsets:
            cursors.update(offsets)
        subscription = Subscription(self, sink, blocking, cursors, first)
        self.subscriptions.append(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        subscription.done = True
        if subscription in self.subscriptions:
            self.subscriptions.remove(subscription)
            self._rebalance()

    def broadcast(self, event: StateChanged) -> None:
        """
        Tell every active subscriber that the process was paused, resumed
        or cancelled.
        """
        for subscription in list(self.subscriptions):
            if subscription.delivering:
                self.call_sink(subscription, subscription.sink.changed, event)

    def pump(self, subscription: Subscription) -> None:
        """
        Deliver what one subscriber can take now, then let the buffers and
        the pipes follow.
        """
        if subscription.active:
            self.call_sink(subscription, subscription.deliver)
        self._rebalance()

    def pump_all(self) -> None:
        for subscription in list(self.subscriptions):
            if subscription.active:
                self.call_sink(subscription, subscription.deliver)
        self._rebalance()

    def call_sink(self, subscription: Subscription, action: Callable, *args: Any) -> None:
        """
        Run C{action}: a sink that fails loses its subscription, and never
        stops the program's output from reaching the others (or its end).
        """
        try:
            action(*args)
        except Exception:
            self.log.failure(
                "process {process_id}: a subscriber failed and was dropped",
                process_id=self.process_id,
            )
            self.unsubscribe(subscription)

    def totals(self) -> Dict[str, int]:
        """
        Bytes written to each stream, and bytes dropped.
        """
        totals = {name: buffer.end for name, buffer in self.streams.items()}
        totals["dropped"] = self.dropped_bytes
        return totals

    @property
    def held_bytes(self) -> int:
        return sum(buffer.held_bytes for buffer in self.streams.values())

    def close(self) -> None:
        """
        Forget everything held, and every subscriber: the service is
        stopping, or the program never ran.
        """
        for subscription in self.subscriptions:
            subscription.done = True
        self.subscriptions = []
        self._reader = None
        self.streams = {name: StreamBuffer(0, 0) for name in STREAMS}
        self._forget_budget()

    def retire(self) -> None:
        """
        The finished process is no longer kept: release everything held.
        Each subscriber still gets L{OutputDropped} for what it had not
        read, then the completion (at once when it can take them, else
        when its consumer pumps it).  A subscription never activated has
        been told nothing and is told nothing more, unless it is to announce
        the program to its starter: the reply that made it (say a batch's,
        whose other programs still wait their turn to start) promised the
        rest, so it is told the same once activated.
        """
        for subscription in self.subscriptions:
            if not subscription.active and not subscription.announcing:
                subscription.done = True
        for name, buffer in self.streams.items():
            buffer.max_bytes = buffer.max_lines = 0
            evicted_from = buffer.start
            if buffer.evict():
                self._count_dropped(name, evicted_from, buffer.start, live=False)
        self._reader = None
        self._forget_budget()
        self.pump_all()
        # Those still behind keep this object (its offsets, no bytes) alive.
        self.subscriptions = [s for s in self.subscriptions if not s.done]

    def shed(self, size: int) -> int:
        """
        Drop up to C{size} of the oldest bytes held, whichever stream they
        are in, whatever the limits: the service is over its budget.
        Subscribers behind them get L{OutputDropped} for the exact range.

        @return: how many bytes were dropped.
        """
        released = 0
        while released < size:
            name, buffer = min(self.streams.items(), key=lambda item: item[1].oldest_time)
            evicted_from = buffer.start
            taken = buffer.release_oldest(size - released)
            if not taken:
                break
            self._count_dropped(name, evicted_from, buffer.start, live=False)
            released += taken
        self._account()
        return released

    def _forget_budget(self) -> None:
        if self.budget is not None:
            self.budget.forget(self)
        self._account()

    def _account(self) -> None:
        """
        Tell the budget how much more or less this output holds.
        """
        held = self.held_bytes
        delta = held - self._held
        self._held = held
        if delta and self.budget is not None:
            self.budget.change(delta)

    def release(self) -> None:
        """
        The program is ending: the held buffer no longer stands in for an
        absent blocking subscriber, so that its pipes are read to the end
        (evicting, and counting as dropped, what nobody has taken).
        Blocking subscribers still hold it back.
        """
        self._released = True
        self._rebalance()

    def _keep_from(self, stream: str) -> Optional[int]:
        """
        The oldest offset that must not be evicted from C{stream}.
        """
        if not self.blocking:
            return None
        cursors = [s.cursors[stream] for s in self.subscriptions if s.blocking]
        if cursors:
            return min(cursors)
        return None if self._released else self.streams[stream].start

    def _rebalance(self) -> None:
        full = False
        for name, buffer in self.streams.items():
            keep_from = self._keep_from(name)
            if (
                buffer.held_bytes > buffer.max_bytes or buffer.held_lines > buffer.max_lines
            ) and (keep_from is None or keep_from > buffer.start):
                evicted_from = buffer.start
                if buffer.evict(keep_from):
                    self._count_dropped(name, evicted_from, buffer.start)
            if keep_from is not None and buffer.is_full(keep_from):
                full = True
        self._account()
        reader = self._reader
        if reader is None:
            return
        if full and not self._reading_paused:
            self._reading_paused = True
            reader.pauseProducing()
        elif not full and self._reading_paused:
            self._reading_paused = False
            reader.resumeProducing()

    def _count_dropped(self, stream: str, start: int, end: int, live: bool = True) -> None:
        """
        Count the evicted bytes C{[start, end)} that some subscriber (or, with
        none, while the program runs, anybody) had not been given.

        @param live: whether the bytes are evicted while the program runs;
            a finished process's output released with no subscriber counts
            as nobody's loss.
        """
        cursors = [s.cursors[stream] for s in self.subscriptions]
        if not cursors and not live:
            return
        slowest = min(cursors) if cursors else start
        self.dropped_bytes += max(0, end - max(start, slowest))
