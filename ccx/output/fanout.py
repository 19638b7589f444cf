"""
One process's output and its subscribers.

L{ProcessOutput} holds each stream in a L{StreamBuffer}, hands chunks to
every L{Subscription} at that subscriber's pace, evicts what nobody needs
any more, and decides when the program's pipes must stop being read: the
point where back-pressure from the slowest blocking subscriber reaches the
program.
"""

from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

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
from ccx.output.interfaces import IOutputSink, IOutputStore, IReadControl

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
            for name, buffer in streams.items():
                cursor = self.cursors[name]
                held = output.next_held(name, cursor)
                if cursor < held:
                    sink.dropped(OutputDropped(process_id, name, cursor, held - cursor))
                    cursor = self.cursors[name] = held
                    moved = True
                if cursor >= buffer.end:
                    continue
                first, data, when = output.read(name, cursor, max_chunk)
                if first > cursor:
                    # Lost while being read (the journal failed).
                    sink.dropped(OutputDropped(process_id, name, cursor, first - cursor))
                    self.cursors[name] = first
                    moved = True
                    if not sink.writable:
                        break
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
            and all(self.cursors[n] >= streams[n].end for n in streams)
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
    @ivar store: where the output is kept beyond the buffers (the journal),
        or L{None}: while it keeps every byte, the buffers are its cache.
    @ivar store_error: why the store stopped keeping output, if it did:
        the program goes on with the buffers alone.
    @ivar streams: a L{StreamBuffer} by stream name: C{stdout} and
        C{stderr}, or C{pty} alone for a program on a terminal.
    """

    log = Logger()

    def __init__(
        self,
        process_id: str,
        max_bytes: int,
        max_lines: int,
        blocking: bool,
        streams: Sequence[str] = STREAMS,
    ) -> None:
        self.process_id = process_id
        self.blocking = blocking
        self.streams = {name: StreamBuffer(max_bytes, max_lines) for name in streams}
        self.subscriptions: List[Subscription] = []
        self.dropped_bytes = 0
        self.completion: Optional[Completion] = None
        self._reader: Optional[IReadControl] = None
        self._reading_paused = False
        self._released = False
        self.budget: Optional[OutputBudget] = None
        self._held = 0
        self.store: Optional[IOutputStore] = None
        self.store_error: Optional[str] = None

    def set_store(self, store: Optional[IOutputStore]) -> None:
        """
        Keep the output in C{store} too, from the start of each stream.
        """
        self.store = store
        self.store_error = None
        if store is not None:
            store.on_evicted = self._store_evicted
            store.on_room = self._rebalance

    def restore(self, store: IOutputStore, lengths: Dict[str, int], dropped: int) -> None:
        """
        Stand for the output of a process that ran before this service:
        nothing in memory, C{store} holding what it still has of streams
        C{lengths} long.
        """
        self.set_store(store)
        self.dropped_bytes = dropped
        for name, buffer in self.streams.items():
            buffer.start = buffer.end = max(lengths.get(name, 0), store.end(name))

    @property
    def journaling(self) -> bool:
        """
        Whether the store holds every byte read so far (and has not failed).
        """
        return self.store is not None and self.store_error is None

    def _store_failed(self, error: OSError, doing: str) -> None:
        self.store_error = f"journal {doing} failed: {error.strerror or error}"
        self.log.error(
            "process {process_id}: {error}; its output is held in memory only from now on",
            process_id=self.process_id,
            error=self.store_error,
        )

    def _store_evicted(self, stream: str, start: int, end: int) -> None:
        """
        The store evicted C{[start, end)} of C{stream}: what the buffer does
        not hold of it is lost.  (Its subscribers learn it when next pumped.)
        """
        self._count_dropped(
            stream, start, min(end, self.streams[stream].start), live=self.completion is None
        )

    def _count_lost(self, stream: str, start: int, end: int, live: bool = True) -> None:
        """
        The buffer evicted C{[start, end)} of C{stream}: count what the store
        does not hold of it.
        """
        store = self.store
        if store is None:
            self._count_dropped(stream, start, end, live)
            return
        kept_from, kept_to = store.start(stream), store.end(stream)
        if start < kept_from:
            self._count_dropped(stream, start, min(end, kept_from), live)
        if end > kept_to:
            self._count_dropped(stream, max(start, kept_to), end, live)

    def _drop_store(self) -> None:
        """
        Go on without the store: what only it held is lost, counted as
        dropped as its readers are told (when next pumped).
        """
        store, self.store = self.store, None
        live = self.completion is None
        for name, buffer in self.streams.items():
            self._count_dropped(
                name, store.start(name), min(store.end(name), buffer.start), live=live
            )
        self._unpin(store)
        store.finish()

    def _unpin(self, store: IOutputStore) -> None:
        """
        Nothing holds C{store}'s bytes any more: its pins must not hold
        back the programs sharing its total.
        """
        for name in self.streams:
            store.pin(name, None)

    def next_held(self, stream: str, offset: int) -> int:
        """
        The first offset at or after C{offset} still held, in the buffer or
        the store (the stream's end when none is).
        """
        buffer = self.streams[stream]
        if offset >= buffer.start:
            return offset
        store = self.store
        if store is not None:
            kept_from, kept_to = store.start(stream), store.end(stream)
            if kept_from <= offset < kept_to:
                return offset
            if offset < kept_from < kept_to:
                return min(kept_from, buffer.start)
        return buffer.start

    def read(self, stream: str, offset: int, max_bytes: int) -> Tuple[int, bytes, float]:
        """
        Read from C{offset} on, from the buffer, or from the store for what
        the buffer no longer holds.

        @return: as L{StreamBuffer.read}.
        """
        buffer = self.streams[stream]
        store = self.store
        if offset < buffer.start and store is not None:
            try:
                first, data, when = store.read(
                    stream, offset, min(max_bytes, buffer.start - offset)
                )
            except OSError as e:
                self._store_failed(e, "reading")
                self._drop_store()
            else:
                if data:
                    return first, data, when
        return buffer.read(offset, max_bytes)

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
        if self.journaling:
            try:
                self.store.append(stream, data, when)
            except OSError as e:
                self._store_failed(e, "writing")
                self._unpin(self.store)
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
        if self.store is not None:
            self.store.finish()
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
        cursors = {name: self.next_held(name, 0) for name in self.streams}
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
        if self.store is not None:
            self.store.close()
            self.store = None
        self.streams = {name: StreamBuffer(0, 0) for name in self.streams}
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
        store, self.store = self.store, None
        if store is not None:
            # What only the store held goes with it.
            store.close()
            for name, buffer in self.streams.items():
                self._count_dropped(
                    name, store.start(name), min(store.end(name), buffer.start), live=False
                )
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
            self._count_lost(name, evicted_from, buffer.start, live=False)
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
        if self._released:
            return None
        if self.journaling:
            return self.store.start(stream)
        return self.streams[stream].start

    def _rebalance(self) -> None:
        if self.journaling:
            full = self._rebalance_journaled()
        else:
            full = self._rebalance_buffers()
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

    def _rebalance_journaled(self) -> bool:
        """
        The store holds everything: the buffers are a cache that evicts
        freely, and the store's limits (and pins) decide what is lost and
        when the pipes stop being read.

        @return: whether the pipes must stop being read.
        """
        store = self.store
        for name, buffer in self.streams.items():
            store.pin(name, self._keep_from(name))
            if buffer.held_bytes > buffer.max_bytes or buffer.held_lines > buffer.max_lines:
                evicted_from = buffer.start
                if buffer.evict():
                    self._count_lost(name, evicted_from, buffer.start)
        store.trim()
        return store.is_full()

    def _rebalance_buffers(self) -> bool:
        """
        The buffers alone hold the output (no store, or a failed one).

        @return: whether the pipes must stop being read.
        """
        full = False
        for name, buffer in self.streams.items():
            keep_from = self._keep_from(name)
            if (
                buffer.held_bytes > buffer.max_bytes or buffer.held_lines > buffer.max_lines
            ) and (keep_from is None or keep_from > buffer.start):
                evicted_from = buffer.start
                if buffer.evict(keep_from):
                    self._count_lost(name, evicted_from, buffer.start)
            if keep_from is not None and buffer.is_full(keep_from):
                full = True
        return full

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
