"""
Tests for L{ccx.process.managed.ManagedProcess}, driven without real
processes: a fake spawner connects a fake process transport, a fake process
group records signals, and a L{Clock} stands in for time.
"""

import signal

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IProcessProtocol
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from ccx.output.interfaces import IOutputSink, IReadControl
from ccx.process.managed import _GROUP_POLL, ManagedProcess, RunOptions
from ccx.process.interfaces import IExecReport
from ccx.native.wire import process_entry
from ccx.process.errors import ProcessError, SpawnFailed
from ccx.rpc.errors import (
    INVALID_STATE,
    PROCESS_NOT_FOUND,
    SPAWN_FAILED,
    RPCError,
    rpc_error,
)
from tests.fakes import PID, START_TIME, FakeSink, FakeSpawner, Harness, make_command

COMPLETION_FIELDS = {
    "process_id",
    "status",
    "pid",
    "pgid",
    "exit_code",
    "signal",
    "duration",
    "stdout_bytes",
    "stderr_bytes",
    "dropped_bytes",
    "error",
    "ended_at",
    "durable",
}


class InterfaceTests(SynchronousTestCase):
    """
    L{ManagedProcess} provides the interfaces it is used through.
    """

    def test_read_control(self) -> None:
        """It provides L{IReadControl}."""
        self.assertTrue(verifyObject(IReadControl, Harness().process))

    def test_process_protocol(self) -> None:
        """It provides L{IProcessProtocol}."""
        self.assertTrue(verifyObject(IProcessProtocol, Harness().process))

    def test_exec_report(self) -> None:
        """It provides L{IExecReport}, which spawners report the exec to."""
        self.assertTrue(verifyObject(IExecReport, Harness().process))

    def test_fake_sink(self) -> None:
        """The fake sink provides L{IOutputSink}."""
        self.assertTrue(verifyObject(IOutputSink, FakeSink()))


class StartTests(SynchronousTestCase):
    """
    From spawn to running, or to a failure to start.
    """

    def test_spawned(self) -> None:
        """After spawning it is starting, with the transport's pid."""
        h = Harness()
        self.assertEqual(h.spawner.commands, [make_command()])
        self.assertEqual(h.process.state, "starting")
        self.assertEqual(h.process.pid, PID)
        self.assertEqual(h.process.started_at, START_TIME)
        self.assertNoResult(h.started)
        self.assertNoResult(h.process.ended)

    def test_real_group(self) -> None:
        """Connecting makes a process group whose id is the pid."""
        clock = Clock()
        process = ManagedProcess("p1", make_command(), RunOptions(), clock)
        process.start(FakeSpawner(pid=777))
        self.assertEqual(process.group.pgid, 777)

    def test_exec_succeeds(self) -> None:
        """exec_succeeded means running: start fires."""
        h = Harness().run()
        self.assertIs(self.successResultOf(h.started), h.process)
        self.assertEqual(h.process.state, "running")
        self.assertEqual(h.group.signals, [])

    def test_exec_fails(self) -> None:
        """exec_failed fails start with -32005 and the reason."""
        h = Harness()
        h.fail_exec("'/usr/bin/prog': Permission denied")
        error = rpc_error(self.failureResultOf(h.started, SpawnFailed).value)
        self.assertEqual(error.code, SPAWN_FAILED)
        self.assertEqual(
            error.message, "spawn failed: '/usr/bin/prog': Permission denied"
        )
        self.assertEqual(h.process.state, "starting")

    def test_spawner_reports_exec_failure(self) -> None:
        """A spawner raising SpawnFailed fails start with its reason whole, and logs no traceback."""
        clock = Clock()
        process = ManagedProcess("p1", make_command(), RunOptions(), clock)
        reason = "cannot enter directory '/tmp': No such file or directory"
        started = process.start(FakeSpawner(error=SpawnFailed(reason)))
        error = rpc_error(self.failureResultOf(started, SpawnFailed).value)
        self.assertEqual(error.code, SPAWN_FAILED)
        self.assertEqual(error.message, "spawn failed: " + reason)
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_spawner_exec_failure_ends_without_completion(self) -> None:
        """A program whose exec failed in the spawner ends at once, with no pid and no completion."""
        clock = Clock()
        process = ManagedProcess("p1", make_command(), RunOptions(), clock)
        started = process.start(FakeSpawner(error=SpawnFailed("'/usr/bin/prog': No such file")))
        self.failureResultOf(started, SpawnFailed)
        self.assertIs(self.successResultOf(process.ended), process)
        self.assertEqual(process.state, "failed")
        self.assertIsNone(process.pid)
        self.assertIsNone(process.output.completion)

    def test_exec_failure_ends_without_completion(self) -> None:
        """A program that never ran ends with no process.completed and no signal."""
        h = Harness()
        sink = h.subscribe()
        h.fail_exec()
        self.failureResultOf(h.started, SpawnFailed)
        h.exit(127)
        h.close_pipes()
        h.end()
        self.assertIs(self.successResultOf(h.process.ended), h.process)
        self.assertTrue(h.process.finished)
        self.assertIsNone(h.process.output.completion)
        self.assertNotIn("process.completed", sink.methods())
        self.assertEqual(h.group.signals, [])

    def test_exec_failure_with_group_left(self) -> None:
        """A failed start ends at once even if the fake group looks alive."""
        h = Harness()
        h.fail_exec()
        self.failureResultOf(h.started, SpawnFailed)
        h.exit(127, leftovers=[PID + 1])
        h.close_pipes()
        h.end()
        self.assertTrue(h.process.finished)
        self.assertEqual(h.group.signals, [])

    def test_spawner_raises_ends(self) -> None:
        """A spawner that raises ends the process with no completion."""
        clock = Clock()
        process = ManagedProcess("p1", make_command(), RunOptions(), clock)
        started = process.start(FakeSpawner(error=OSError("out of processes")))
        self.failureResultOf(started, SpawnFailed)
        self.assertIs(self.successResultOf(process.ended), process)
        self.assertTrue(process.finished)
        self.assertIsNone(process.pid)
        self.assertIsNone(process.output.completion)
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)

    def test_spawner_raises_fails_start(self) -> None:
        """A spawner that raises makes start return a -32005 failure."""
        clock = Clock()
        process = ManagedProcess("p1", make_command(), RunOptions(), clock)
        started = process.start(FakeSpawner(error=OSError("out of processes")))
        self.flushLoggedErrors(OSError)
        self.assertIsInstance(started, Deferred)
        error = rpc_error(self.failureResultOf(started, SpawnFailed).value)
        self.assertEqual(error.code, SPAWN_FAILED)
        self.assertEqual(error.message, "spawn failed: out of processes")

    def test_terminate_while_starting(self) -> None:
        """terminate() while starting cancels as soon as exec succeeds."""
        h = Harness()
        h.process.terminate()
        self.assertEqual(h.group.signals, [])
        h.run()
        self.assertIs(self.successResultOf(h.started), h.process)
        self.assertEqual(h.signal_names(), ["SIGTERM", "SIGCONT"])
        h.finish(None, signal.SIGTERM)
        self.assertEqual(h.process.output.completion.status, "cancelled")

    def test_terminate_while_starting_then_exec_fails(self) -> None:
        """terminate() of a program that then fails to start sends nothing."""
        h = Harness()
        h.process.terminate()
        h.fail_exec()
        self.failureResultOf(h.started, SpawnFailed)
        self.assertEqual(h.group.signals, [])

    def test_terminate_while_starting_with_timeout(self) -> None:
        """A program terminated while starting reports cancelled, not timeout."""
        h = Harness(timeout=1.0, kill_grace=5.0)
        h.process.terminate()
        h.run()
        h.clock.advance(2)
        h.finish(None, signal.SIGTERM)
        self.assertEqual(h.process.outcome, "cancelled")

    def test_output_before_exec_confirmed_never_blocks_the_status_pipe(self) -> None:
        """A first read that fills the buffer does not pause reading until exec is confirmed."""
        h = Harness(buffer_bytes=8)
        h.process.childDataReceived(1, b"x" * 64)
        self.assertEqual(h.transport.pauses, 0)
        h.run()
        self.successResultOf(h.started)
        self.assertEqual(h.transport.pauses, 1)

    def test_describe(self) -> None:
        """list reports a starting process as running."""
        h = Harness()
        self.assertEqual(
            process_entry(h.process),
            {
                "process_id": "p1",
                "pid": PID,
                "pgid": PID,
                "command": ["prog", "--flag"],
                "state": "running",
                "started_at": START_TIME,
                "ended_at": None,
                "exit_code": None,
                "durable": False,
                "stdout_bytes": 0,
                "stderr_bytes": 0,
                "dropped_bytes": 0,
                "subscribers": 0,
                "encoding": "utf-8",
                "cpu_seconds": None,
                "memory_bytes": None,
            },
        )


class ControlTests(SynchronousTestCase):
    """
    PAUSE, RESUME and signals, and when control is refused.
    """

    def assertCode(self, code: int, f, *args: object) -> RPCError:
        error = rpc_error(self.assertRaises(ProcessError, f, *args))
        self.assertEqual(error.code, code)
        return error

    def test_pause(self) -> None:
        """PAUSE sends SIGSTOP to the group."""
        h = Harness().run()
        h.process.pause()
        self.assertEqual(h.signal_names(), ["SIGSTOP"])
        self.assertEqual(h.process.state, "paused")
        self.assertEqual(process_entry(h.process)["state"], "paused")

    def test_pause_idempotent(self) -> None:
        """Pausing a paused process sends nothing more."""
        h = Harness().run()
        sink = h.subscribe()
        h.process.pause()
        h.process.pause()
        self.assertEqual(h.signal_names(), ["SIGSTOP"])
        self.assertEqual(sink.methods().count("process.paused"), 1)

    def test_resume(self) -> None:
        """RESUME sends SIGCONT to the group."""
        h = Harness().run()
        h.process.pause()
        h.process.resume()
        self.assertEqual(h.signal_names(), ["SIGSTOP", "SIGCONT"])
        self.assertEqual(h.process.state, "running")

    def test_resume_running(self) -> None:
        """Resuming a running process sends nothing."""
        h = Harness().run()
        sink = h.subscribe()
        h.process.resume()
        self.assertEqual(h.group.signals, [])
        self.assertNotIn("process.resumed", sink.methods())

    def test_send_signal(self) -> None:
        """A signal goes to the whole group and changes no state."""
        h = Harness().run()
        h.process.send_signal(signal.SIGUSR1)
        self.assertEqual(h.signal_names(), ["SIGUSR1"])
        self.assertEqual(h.process.state, "running")

    def test_control_while_starting(self) -> None:
        """Control of a starting process is refused with -32004."""
        h = Harness()
        self.assertCode(INVALID_STATE, h.process.pause)
        self.assertCode(INVALID_STATE, h.process.resume)
        self.assertCode(INVALID_STATE, h.process.cancel)
        self.assertCode(INVALID_STATE, h.process.send_signal, signal.SIGINT)
        self.assertEqual(h.group.signals, [])
        self.assertEqual(h.process.state, "starting")

    def test_control_after_exit(self) -> None:
        """Control of a process whose leader exited is refused with -32003."""
        h = Harness(stdin=True).run()
        h.exit(0)
        for call, args in [
            (h.process.pause, ()),
            (h.process.resume, ()),
            (h.process.cancel, ()),
            (h.process.send_signal, (signal.SIGINT,)),
            (h.process.write, (b"x",)),
        ]:
            error = self.assertCode(PROCESS_NOT_FOUND, call, *args)
            self.assertIn("already finished", error.message)
        self.assertEqual(h.group.signals, [])

    def test_control_after_finish(self) -> None:
        """Control of a finished process is refused with -32003."""
        h = Harness().run()
        h.finish()
        self.assertCode(PROCESS_NOT_FOUND, h.process.pause)
        self.assertCode(PROCESS_NOT_FOUND, h.process.cancel)

    def test_control_while_cancelling(self) -> None:
        """PAUSE, RESUME and signals are refused with -32004 once cancelled."""
        h = Harness().run()
        h.process.cancel()
        self.assertCode(INVALID_STATE, h.process.pause)
        self.assertCode(INVALID_STATE, h.process.resume)
        self.assertCode(INVALID_STATE, h.process.send_signal, signal.SIGINT)
        self.assertEqual(h.signal_names(), ["SIGTERM", "SIGCONT"])

    def test_broadcasts(self) -> None:
        """paused, resumed and cancelled reach an active subscriber."""
        h = Harness().run()
        sink = h.subscribe()
        h.process.pause()
        h.process.resume()
        h.process.cancel()

        def event(status: str) -> dict:
            return {"process_id": "p1", "status": status, "pid": PID, "pgid": PID}

        self.assertEqual(
            sink.sent,
            [
                ("process.paused", event("paused")),
                ("process.resumed", event("resumed")),
                ("process.cancelled", event("cancelled")),
            ],
        )

    def test_no_broadcast_to_inactive(self) -> None:
        """A subscription not yet activated is told nothing."""
        h = Harness().run()
        sink = FakeSink()
        subscription = h.process.output.subscribe(sink, blocking=True)
        h.process.pause()
        self.assertEqual(sink.sent, [])
        subscription.activate()
        h.process.resume()
        self.assertEqual(sink.methods(), ["process.resumed"])


class CancelTests(SynchronousTestCase):
    """
    CANCEL: SIGTERM and SIGCONT, then SIGKILL after the grace period.
    """

    def test_cancel(self) -> None:
        """CANCEL sends SIGTERM then SIGCONT to the group."""
        h = Harness().run()
        h.process.cancel()
        self.assertEqual(h.signal_names(), ["SIGTERM", "SIGCONT"])
        self.assertEqual(h.process.outcome, "cancelled")

    def test_kill_after_grace(self) -> None:
        """SIGKILL follows kill_grace seconds later if the group is alive."""
        h = Harness(kill_grace=2.0).run()
        h.process.cancel()
        h.clock.advance(1.999)
        self.assertNotIn(signal.SIGKILL, h.group.signals)
        h.clock.advance(0.001)
        self.assertEqual(h.signal_names(), ["SIGTERM", "SIGCONT", "SIGKILL"])

    def test_no_kill_when_group_empty(self) -> None:
        """No SIGKILL when nothing of the group is left at the deadline."""
        h = Harness(kill_grace=2.0).run()
        h.process.cancel()
        h.group.pids = []
        h.clock.advance(2.0)
        self.assertEqual(h.signal_names(), ["SIGTERM", "SIGCONT"])

    def test_no_kill_after_finish(self) -> None:
        """A process that finished within the grace period is never killed."""
        h = Harness(kill_grace=2.0).run()
        h.process.cancel()
        h.clock.advance(0.5)
        h.finish(None, signal.SIGTERM)
        self.assertTrue(h.process.finished)
        self.assertEqual(h.clock.getDelayedCalls(), [])
        h.group.pids = [PID]
        h.clock.advance(10)
        self.assertEqual(h.signal_names(), ["SIGTERM", "SIGCONT"])

    def test_cancel_paused(self) -> None:
        """Cancelling a paused process continues it so that it can die."""
        h = Harness().run()
        h.process.pause()
        h.process.cancel()
        self.assertEqual(h.signal_names(), ["SIGSTOP", "SIGTERM", "SIGCONT"])
        self.assertEqual(h.process.state, "running")
        h.finish(None, signal.SIGTERM)
        completion = h.process.output.completion
        self.assertEqual(completion.status, "cancelled")
        self.assertEqual(completion.exit_code, -signal.SIGTERM)
        self.assertEqual(completion.signal, "SIGTERM")

    def test_cancel_twice(self) -> None:
        """A second CANCEL sends nothing more and schedules no second kill."""
        h = Harness().run()
        sink = h.subscribe()
        h.process.cancel()
        h.process.cancel()
        self.assertEqual(h.signal_names(), ["SIGTERM", "SIGCONT"])
        self.assertEqual(len(h.clock.getDelayedCalls()), 1)
        self.assertEqual(sink.methods(), ["process.cancelled"])

    def test_terminate_running(self) -> None:
        """terminate() of a running process cancels it with the given status."""
        h = Harness().run()
        h.process.terminate()
        self.assertEqual(h.signal_names(), ["SIGTERM", "SIGCONT"])
        h.finish(None, signal.SIGTERM)
        self.assertEqual(h.process.output.completion.status, "cancelled")

    def test_terminate_finished(self) -> None:
        """terminate() of an exited or finished process does nothing."""
        h = Harness().run()
        h.exit(0)
        h.process.terminate()
        h.close_pipes()
        h.end()
        h.process.terminate()
        self.assertEqual(h.group.signals, [])
        self.assertEqual(h.process.output.completion.status, "completed")

    def test_cancelled_but_exits_zero(self) -> None:
        """A cancelled program that exits 0 on SIGTERM is still cancelled."""
        h = Harness().run()
        h.process.cancel()
        h.finish(0)
        completion = h.process.output.completion
        self.assertEqual(completion.status, "cancelled")
        self.assertEqual(completion.exit_code, 0)
        self.assertIsNone(completion.signal)


class TimeoutTests(SynchronousTestCase):
    """
    timeout: cancel after that much running time.
    """

    def test_timeout(self) -> None:
        """After timeout seconds of running the group gets SIGTERM."""
        h = Harness(timeout=10.0).run()
        sink = h.subscribe()
        h.clock.advance(9.999)
        self.assertEqual(h.group.signals, [])
        h.clock.advance(0.001)
        self.assertEqual(h.signal_names(), ["SIGTERM", "SIGCONT"])
        self.assertEqual(sink.methods(), ["process.cancelled"])
        h.finish(None, signal.SIGTERM)
        completion = h.process.output.completion
        self.assertEqual(completion.status, "timeout")
        self.assertEqual(completion.exit_code, -15)
        self.assertEqual(completion.signal, "SIGTERM")

    def test_timeout_kills_after_grace(self) -> None:
        """A program ignoring SIGTERM at its timeout gets SIGKILL."""
        h = Harness(timeout=1.0, kill_grace=3.0).run()
        h.clock.advance(1.0)
        h.clock.advance(3.0)
        self.assertEqual(h.signal_names(), ["SIGTERM", "SIGCONT", "SIGKILL"])
        h.finish(None, signal.SIGKILL)
        completion = h.process.output.completion
        self.assertEqual(completion.status, "timeout")
        self.assertEqual(completion.exit_code, -9)
        self.assertEqual(completion.signal, "SIGKILL")

    def test_paused_time_does_not_count(self) -> None:
        """Time spent paused does not count toward the timeout."""
        h = Harness(timeout=10.0).run()
        h.clock.advance(4)
        h.process.pause()
        h.clock.advance(100)
        self.assertEqual(h.signal_names(), ["SIGSTOP"])
        h.process.resume()
        h.clock.advance(5.999)
        self.assertEqual(h.signal_names(), ["SIGSTOP", "SIGCONT"])
        h.clock.advance(0.001)
        self.assertEqual(
            h.signal_names(), ["SIGSTOP", "SIGCONT", "SIGTERM", "SIGCONT"]
        )
        self.assertEqual(h.process.outcome, "timeout")

    def test_starting_time_does_not_count(self) -> None:
        """The timeout counts from the moment the program runs."""
        h = Harness(timeout=10.0)
        h.clock.advance(20)
        self.assertEqual(h.group.signals, [])
        h.run()
        h.clock.advance(9.999)
        self.assertEqual(h.group.signals, [])
        h.clock.advance(0.001)
        self.assertEqual(h.signal_names(), ["SIGTERM", "SIGCONT"])

    def test_no_timeout_after_exit(self) -> None:
        """A program that exits before its timeout completes normally."""
        h = Harness(timeout=10.0).run()
        h.clock.advance(5)
        h.finish(0)
        h.clock.advance(100)
        self.assertEqual(h.group.signals, [])
        self.assertEqual(h.process.output.completion.status, "completed")

    def test_cancel_before_timeout(self) -> None:
        """A program cancelled before its timeout reports cancelled."""
        h = Harness(timeout=10.0, kill_grace=50.0).run()
        h.clock.advance(2)
        h.process.cancel()
        h.clock.advance(20)
        self.assertEqual(h.signal_names(), ["SIGTERM", "SIGCONT"])
        h.finish(None, signal.SIGTERM)
        self.assertEqual(h.process.output.completion.status, "cancelled")


class CompletionTests(SynchronousTestCase):
    """
    process.completed: its status, its fields, and when it is sent.
    """

    def test_fields(self) -> None:
        """process.completed carries every documented field."""
        h = Harness().run()
        sink = h.subscribe()
        h.process.childDataReceived(1, b"hello\n")
        h.process.childDataReceived(2, b"oops")
        h.finish(0)
        [completion] = sink.params("process.completed")
        self.assertEqual(set(completion), COMPLETION_FIELDS)
        duration = completion.pop("duration")
        self.assertIsInstance(duration, float)
        self.assertGreaterEqual(duration, 0)
        # When it exited, by the service's clock.
        self.assertEqual(completion.pop("ended_at"), h.clock.seconds())
        self.assertIs(completion.pop("durable"), False)
        self.assertEqual(
            completion,
            {
                "process_id": "p1",
                "status": "completed",
                "pid": PID,
                "pgid": PID,
                "exit_code": 0,
                "signal": None,
                "stdout_bytes": 6,
                "stderr_bytes": 4,
                "dropped_bytes": 0,
                "error": None,
            },
        )

    def test_completed_last(self) -> None:
        """process.completed comes once, after all the output."""
        h = Harness().run()
        sink = h.subscribe()
        h.process.childDataReceived(1, b"a")
        h.exit(0)
        h.process.childDataReceived(1, b"b")
        h.process.childDataReceived(2, b"c")
        h.close_pipes()
        self.assertNotIn("process.completed", sink.methods())
        h.end()
        self.assertEqual(sink.methods()[-1], "process.completed")
        self.assertEqual(sink.methods().count("process.completed"), 1)
        self.assertEqual(
            [(p["type"], p["data"]) for p in sink.params("process.output")],
            [("stdout", "a"), ("stdout", "b"), ("stderr", "c")],
        )

    def test_ended(self) -> None:
        """ended fires with the process once it is finished."""
        h = Harness().run()
        h.exit(0)
        self.assertEqual(h.process.state, "exited")
        self.assertFalse(h.process.finished)
        self.assertNoResult(h.process.ended)
        h.close_pipes()
        h.end()
        self.assertTrue(h.process.finished)
        self.assertIs(self.successResultOf(h.process.ended), h.process)

    def test_describe_exited(self) -> None:
        """list shows an exited process with its exit code and byte counts."""
        h = Harness().run()
        h.process.childDataReceived(1, b"12345")
        h.exit(3)
        description = process_entry(h.process)
        self.assertEqual(description["state"], "exited")
        self.assertEqual(description["exit_code"], 3)
        self.assertEqual(description["stdout_bytes"], 5)

    def test_failed_exit_code(self) -> None:
        """A non-zero exit is failed, with that exit code and no signal."""
        h = Harness().run()
        h.finish(3)
        completion = h.process.output.completion
        self.assertEqual(completion.status, "failed")
        self.assertEqual(completion.exit_code, 3)
        self.assertIsNone(completion.signal)

    def test_failed_by_signal(self) -> None:
        """Death by a signal nobody sent through CANCEL is failed, -N."""
        h = Harness().run()
        h.finish(None, signal.SIGKILL)
        completion = h.process.output.completion
        self.assertEqual(completion.status, "failed")
        self.assertEqual(completion.exit_code, -9)
        self.assertEqual(completion.signal, "SIGKILL")

    def test_failed_by_sent_signal(self) -> None:
        """Death by a signal sent with signal is failed."""
        h = Harness().run()
        h.process.send_signal(signal.SIGINT)
        h.finish(None, signal.SIGINT)
        completion = h.process.output.completion
        self.assertEqual(completion.status, "failed")
        self.assertEqual(completion.exit_code, -2)
        self.assertEqual(completion.signal, "SIGINT")

    def test_exit_before_status_pipe(self) -> None:
        """A program that exits before its status pipe closes still starts."""
        h = Harness(timeout=5.0)
        h.exit(0)
        h.run()
        self.assertIs(self.successResultOf(h.started), h.process)
        self.assertEqual(h.process.state, "exited")
        h.close_pipes()
        h.end()
        h.clock.advance(100)
        self.assertEqual(h.group.signals, [])
        self.assertEqual(h.process.output.completion.status, "completed")


class GroupTests(SynchronousTestCase):
    """
    What the group leader leaves behind is ended before process.completed.
    """

    def test_empty_group(self) -> None:
        """With nothing left, no signal is sent and completion is immediate."""
        h = Harness().run()
        h.finish(0)
        self.assertEqual(h.group.signals, [])
        self.assertTrue(h.process.finished)
        self.assertEqual(h.clock.getDelayedCalls(), [])

    def test_leftovers_terminated(self) -> None:
        """Members left after the leader exits get SIGTERM and SIGCONT."""
        h = Harness(kill_grace=1.0).run()
        h.exit(0, leftovers=[PID + 1, PID + 2])
        self.assertEqual(h.signal_names(), ["SIGTERM", "SIGCONT"])

    def test_completion_waits_for_empty_group(self) -> None:
        """process.completed waits until the group is empty."""
        h = Harness(kill_grace=1.0).run()
        sink = h.subscribe()
        h.exit(0, leftovers=[PID + 1])
        h.close_pipes()
        h.end()
        h.clock.pump([_GROUP_POLL] * 10)
        self.assertFalse(h.process.finished)
        self.assertNotIn("process.completed", sink.methods())
        h.group.pids = []
        h.clock.advance(_GROUP_POLL)
        self.assertTrue(h.process.finished)
        self.assertEqual(sink.methods(), ["process.completed"])
        self.assertEqual(h.process.output.completion.status, "completed")
        self.assertIsNone(h.process.output.completion.error)
        self.assertEqual(h.clock.getDelayedCalls(), [])
        self.assertEqual(h.signal_names(), ["SIGTERM", "SIGCONT"])

    def test_leftovers_killed(self) -> None:
        """Members still alive after kill_grace get SIGKILL."""
        h = Harness(kill_grace=1.0).run()
        h.exit(0, leftovers=[PID + 1])
        h.close_pipes()
        h.end()
        h.clock.pump([_GROUP_POLL] * 49)
        self.assertEqual(h.signal_names(), ["SIGTERM", "SIGCONT"])
        h.clock.pump([_GROUP_POLL] * 2)
        self.assertEqual(h.signal_names(), ["SIGTERM", "SIGCONT", "SIGKILL"])
        self.assertFalse(h.process.finished)
        h.group.pids = []
        h.clock.advance(_GROUP_POLL)
        self.assertTrue(h.process.finished)
        self.assertIsNone(h.process.output.completion.error)

    def test_leftovers_never_leave(self) -> None:
        """A group that outlives SIGKILL is reported in error after a deadline."""
        h = Harness(kill_grace=1.0).run()
        h.exit(0, leftovers=[PID + 1])
        h.close_pipes()
        h.end()
        h.clock.pump([_GROUP_POLL] * 95)
        self.assertFalse(h.process.finished)
        h.clock.pump([_GROUP_POLL] * 10)
        self.assertTrue(h.process.finished)
        self.assertEqual(
            h.process.output.completion.error,
            f"process group {PID} still has members after SIGKILL: {PID + 1}",
        )
        self.assertEqual(h.clock.getDelayedCalls(), [])


class DrainTests(SynchronousTestCase):
    """
    After the leader exits, the pipes are read for at most kill_grace
    seconds of reading time.
    """

    def test_pipes_closed_after_grace(self) -> None:
        """Pipes still open kill_grace seconds after exit are closed."""
        h = Harness(kill_grace=3.0).run()
        h.exit(0)
        h.clock.advance(2.999)
        self.assertEqual(h.transport.lost, 0)
        h.clock.advance(0.001)
        self.assertEqual(h.transport.lost, 1)

    def test_no_close_after_end(self) -> None:
        """Pipes that reach end of file in time are not closed by force."""
        h = Harness(kill_grace=3.0).run()
        h.exit(0)
        h.clock.advance(1)
        h.close_pipes()
        h.end()
        h.clock.advance(10)
        self.assertEqual(h.transport.lost, 0)

    def test_no_drain_before_exit(self) -> None:
        """While the leader runs, open pipes are never closed."""
        h = Harness(kill_grace=3.0).run()
        h.clock.advance(100)
        self.assertEqual(h.transport.lost, 0)

    def test_paused_at_exit(self) -> None:
        """Time with reading paused by a stalled blocking subscriber does not count."""
        h = Harness(kill_grace=3.0, buffer_bytes=8).run()
        sink = FakeSink(writable=False)
        subscription = h.process.output.subscribe(sink, blocking=True)
        subscription.activate()
        h.process.childDataReceived(1, b"12345678")
        self.assertEqual(h.transport.pauses, 1)
        h.exit(0)
        h.clock.advance(100)
        self.assertEqual(h.transport.lost, 0)
        sink.writable = True
        h.process.output.pump(subscription)
        self.assertEqual(h.transport.resumes, 1)
        h.clock.advance(2.999)
        self.assertEqual(h.transport.lost, 0)
        h.clock.advance(0.001)
        self.assertEqual(h.transport.lost, 1)

    def test_exit_releases_output_nobody_reads(self) -> None:
        """At exit, a buffer held full for no subscriber is released: reading resumes."""
        h = Harness(kill_grace=3.0, buffer_bytes=8).run()
        h.process.childDataReceived(1, b"12345678")
        self.assertEqual(h.transport.pauses, 1)
        h.exit(0)
        self.assertEqual(h.transport.resumes, 1)
        h.clock.advance(3)
        self.assertEqual(h.transport.lost, 1)

    def test_paused_while_draining(self) -> None:
        """A back-pressure pause during the drain stops its clock."""
        h = Harness(kill_grace=5.0, buffer_bytes=8).run()
        sink = FakeSink(writable=False)
        subscription = h.process.output.subscribe(sink, blocking=True)
        subscription.activate()
        h.exit(0)
        h.clock.advance(2)
        h.process.childDataReceived(1, b"12345678")
        self.assertEqual(h.transport.pauses, 1)
        h.clock.advance(100)
        self.assertEqual(h.transport.lost, 0)
        sink.writable = True
        h.process.output.pump(subscription)
        self.assertEqual(h.transport.resumes, 1)
        h.clock.advance(2.999)
        self.assertEqual(h.transport.lost, 0)
        h.clock.advance(0.001)
        self.assertEqual(h.transport.lost, 1)

    def test_back_pressure_reaches_transport(self) -> None:
        """Back-pressure from the output pauses and resumes the transport."""
        h = Harness(buffer_bytes=8).run()
        sink = FakeSink(writable=False)
        subscription = h.process.output.subscribe(sink, blocking=True)
        subscription.activate()
        h.process.childDataReceived(1, b"1234")
        self.assertEqual(h.transport.pauses, 0)
        h.process.childDataReceived(1, b"5678")
        self.assertEqual((h.transport.pauses, h.transport.resumes), (1, 0))
        sink.writable = True
        h.process.output.pump(subscription)
        self.assertEqual((h.transport.pauses, h.transport.resumes), (1, 1))


class WriteTests(SynchronousTestCase):
    """
    write: the program's standard input.
    """

    def test_without_stdin(self) -> None:
        """Writing to a program started without stdin is -32004."""
        h = Harness().run()
        error = rpc_error(self.assertRaises(ProcessError, h.process.write, b"data"))
        self.assertEqual(error.code, INVALID_STATE)
        self.assertIn("stdin: true", error.message)
        self.assertEqual(h.transport.written, [])

    def test_write(self) -> None:
        """Data goes to the transport; stdin stays open."""
        h = Harness(stdin=True).run()
        h.process.write(b"abc")
        h.process.write(b"def")
        self.assertEqual(h.transport.written, [b"abc", b"def"])
        self.assertEqual(h.transport.stdin_closes, 0)

    def test_eof(self) -> None:
        """eof closes stdin after the data; a later write is -32004."""
        h = Harness(stdin=True).run()
        h.process.write(b"abc", eof=True)
        self.assertEqual(h.transport.written, [b"abc"])
        self.assertEqual(h.transport.stdin_closes, 1)
        error = rpc_error(self.assertRaises(ProcessError, h.process.write, b"more"))
        self.assertEqual(error.code, INVALID_STATE)
        self.assertIn("already closed", error.message)
        self.assertEqual(h.transport.written, [b"abc"])

    def test_empty_eof(self) -> None:
        """An empty write with eof only closes stdin."""
        h = Harness(stdin=True).run()
        h.process.write(b"", eof=True)
        self.assertEqual(h.transport.written, [])
        self.assertEqual(h.transport.stdin_closes, 1)

    def test_stdin_pipe_gone(self) -> None:
        """Once the stdin pipe is gone, writing is -32004."""
        h = Harness(stdin=True).run()
        h.process.childConnectionLost(0)
        error = rpc_error(self.assertRaises(ProcessError, h.process.write, b"x"))
        self.assertEqual(error.code, INVALID_STATE)

    def test_while_starting(self) -> None:
        """Writing before the program runs is -32004."""
        h = Harness(stdin=True)
        error = rpc_error(self.assertRaises(ProcessError, h.process.write, b"x"))
        self.assertEqual(error.code, INVALID_STATE)
        self.assertEqual(h.transport.written, [])
