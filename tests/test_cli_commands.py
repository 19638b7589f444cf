"""
The C{ccx} commands for programs that outlive a terminal: C{run -d},
C{--keep} and Ctrl-C, C{logs}, C{wait}, C{status}, C{write}, C{rm}, C{ls}
with its short ids, filters, C{--json} and C{-q}, C{-v} on state changes,
the service going away, C{--version}, completion and the man page.
"""

import json
import os
import signal
import subprocess
import sys

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import SynchronousTestCase, TestCase

from ccx.cli.console import MemoryConsole
from ccx.cli.listing import format_status, format_table, human_bytes, human_duration, short_ids
from ccx.cli.main import Options, run_cli
from ccx.cli.manpage import manpage
from ccx.process.group import ProcessGroup
from ccx.testing.service import ServiceProcess
from tests.support import program, until
from tests.test_cli import ROOT, CLIProcess, CLITestCase, until_listed


class CommandTests(CLITestCase):
    def settings(self):
        return {"keep_finished": 30.0}

    def console_cli(self, *argv, stdin=b""):
        """
        Run C{ccx ARGV...} in-process; return (console, Deferred of status).
        """
        console = MemoryConsole(reactor, stdin=stdin)
        return console, run_cli(reactor, list(argv), console, {"CCX_URL": self.ccx.url()})

    @inlineCallbacks
    def detached(self, *argv):
        status, out, err = yield self.cli("run", "-d", *argv)
        self.assertEqual((status, err), (0, b""))
        process_id = out.decode().strip()
        self.assertRegex(process_id, "^[0-9a-f]{32}$")
        process = yield self.listed(process_id)
        self.ccx.groups.append(process["pgid"])
        return process_id

    @inlineCallbacks
    def test_detach_write_wait_logs_attach_rm(self):
        """
        run -d prints the id and leaves the program running; write feeds its
        stdin to the end; wait exits with its status; logs and attach replay
        it; rm forgets it.
        """
        process_id = yield self.detached("--stdin", "--", "sh", "-c", "cat; echo bye >&2; exit 3")
        process = yield self.listed(process_id)
        self.assertEqual(process["state"], "running")
        status, out, err = yield self.cli("write", process_id[:8], stdin=b"hello\n")
        self.assertEqual((status, out, err), (0, b"", b""))
        status, out, err = yield self.cli("wait", process_id)
        self.assertEqual((status, out, err), (3, b"", b""))
        status, out, err = yield self.cli("logs", process_id)
        self.assertEqual((status, out, err), (0, b"hello\n", b"bye\n"))
        status, out, err = yield self.cli("attach", "--from-start", process_id)
        self.assertEqual((status, out, err), (3, b"hello\n", b"bye\n"))
        status, out, err = yield self.cli("rm", process_id)
        self.assertEqual((status, out, err), (0, f"removed {process_id}\n".encode(), b""))
        self.assertIsNone(self.ccx.service.node.registry.find(process_id))
        status, out, err = yield self.cli("status", process_id)
        self.assertEqual((status, err), (1, f"ccx: no process {process_id!r} (see `ccx ls`)\n".encode()))

    @inlineCallbacks
    def test_rm_live_refused(self):
        """rm of a running program: one line, exit 1, and it runs on; rm of an unknown id: exit 1."""
        process_id = yield self.detached("--", "sleep", "1000")
        status, out, err = yield self.cli("rm", process_id)
        self.assertEqual((status, out), (1, b""))
        self.assertEqual(err.count(b"\n"), 1, err)
        self.assertIn(b"still running", err)
        process = yield self.listed(process_id)
        self.assertEqual(process["state"], "running")
        status, _, err = yield self.cli("rm", "0000nosuch")
        self.assertEqual((status, err), (1, b"ccx: no process '0000nosuch' (see `ccx ls`)\n"))
        status, _, _ = yield self.cli("cancel", process_id)
        self.assertEqual(status, 0)

    @inlineCallbacks
    def test_write_without_stdin(self):
        """write to a program started without stdin: one line, exit 1."""
        process_id = yield self.detached("--", "sleep", "1000")
        status, _, err = yield self.cli("write", process_id, stdin=b"x")
        self.assertEqual(status, 1)
        self.assertEqual(err.count(b"\n"), 1, err)
        self.assertIn(b"standard input closed", err)
        yield self.cli("cancel", process_id)

    @inlineCallbacks
    def test_ambiguous_prefix(self):
        """A prefix that begins two ids: one line naming them, exit 1."""
        first = yield self.detached("--", "true")
        second = yield self.detached("--", "true")
        # The empty prefix begins every id; the common prefix of two uuids
        # is usually empty too.
        common = os.path.commonprefix([first, second])
        status, _, err = yield self.cli("wait", common)
        self.assertEqual(status, 1)
        self.assertIn(b"is ambiguous", err)
        self.assertEqual(err.count(b"\n"), 1)
        # One more character is enough.
        status, _, err = yield self.cli("wait", first[: len(common) + 1])
        self.assertEqual(status, 0, err)

    @inlineCallbacks
    def test_logs_streams_and_since(self):
        """logs --stdout/--stderr choose a stream; --since starts at a byte offset; past the end: nothing."""
        client, result = yield self.started({"command": ["sh", "-c", "echo out; echo err >&2"]})
        process_id = result["process_id"]
        yield client.notification("process.completed", process_id)
        status, out, err = yield self.cli("logs", "--stdout", process_id)
        self.assertEqual((status, out, err), (0, b"out\n", b""))
        status, out, err = yield self.cli("logs", "--stderr", process_id)
        self.assertEqual((status, out, err), (0, b"", b"err\n"))
        status, out, err = yield self.cli("logs", "--since", "2", process_id)
        self.assertEqual((status, out, err), (0, b"t\n", b"r\n"))
        status, out, err = yield self.cli("logs", "--since", "4", process_id)
        self.assertEqual((status, out, err), (0, b"", b""))
        status, out, err = yield self.cli("logs", "--since", "3", process_id)
        self.assertEqual((status, out, err), (0, b"\n", b"\n"))
        status, _, err = yield self.cli("logs", "--since", "-1", process_id)
        self.assertEqual(status, 2, err)

    @inlineCallbacks
    def test_logs_follow(self):
        """
        logs without -f prints what is there and leaves a live program;
        logs -f prints it and follows until the program ends.
        """
        client, result = yield self.started({"command": ["cat"], "stdin": True})
        process_id = result["process_id"]
        yield client.call("write", {"process_id": process_id, "data": "before\n"})
        yield until_listed(self, process_id, lambda p: p["stdout_bytes"] == 7)
        status, out, err = yield self.cli("logs", process_id)
        self.assertEqual((status, out, err), (0, b"before\n", b""))
        followed = self.cli("logs", "-f", process_id)
        yield until_listed(self, process_id, lambda p: p["subscribers"] == 2)
        yield client.call("write", {"process_id": process_id, "data": "after\n", "eof": True})
        status, out, err = yield followed
        self.assertEqual((status, out, err), (0, b"before\nafter\n", b""))

    @inlineCallbacks
    def test_wait_live_and_cancelled(self):
        """wait follows a live program to its end; a cancelled one gives 143."""
        client, result = yield self.started({"command": ["sh", "-c", "read x; exit 5"], "stdin": True})
        process_id = result["process_id"]
        waited = self.cli("wait", process_id)
        yield until_listed(self, process_id, lambda p: p["subscribers"] == 2)
        yield client.call("write", {"process_id": process_id, "data": "", "eof": True})
        status, out, err = yield waited
        self.assertEqual((status, out, err), (5, b"", b""))
        process_id = yield self.detached("--", "sleep", "1000")
        waited = self.cli("wait", process_id)
        yield until_listed(self, process_id, lambda p: p["subscribers"] == 1)
        yield self.cli("cancel", process_id)
        status, _, err = yield waited
        self.assertEqual(status, 143, err)

    @inlineCallbacks
    def test_status(self):
        """status: a field a line for a person; --json: the list entry."""
        process_id = yield self.detached("--", "sleep", "1000")
        status, out, err = yield self.cli("status", process_id[:12])
        self.assertEqual(status, 0, err)
        fields = dict(line.split(None, 1) for line in out.decode().splitlines())
        self.assertEqual(fields["id:"], process_id)
        self.assertEqual(fields["state:"], "running")
        self.assertEqual(fields["command:"], "sleep 1000")
        self.assertEqual(fields["stdout:"], "0 B")
        status, out, err = yield self.cli("status", "--json", process_id)
        entry = json.loads(out)
        self.assertEqual((entry["process_id"], entry["state"], entry["ended_at"]), (process_id, "running", None))
        yield self.cli("cancel", process_id)

    @inlineCallbacks
    def test_ls_filters_json_quiet(self):
        """ls: short ids; --running/--finished/--state filter; -q ids only; --json full entries."""
        running = yield self.detached("--", "sleep", "1000")
        client, result = yield self.started({"command": ["true"]})
        finished = result["process_id"]
        yield client.notification("process.completed", finished)
        status, out, err = yield self.cli("ls")
        self.assertEqual(status, 0, err)
        lines = out.decode().splitlines()
        self.assertEqual(
            lines[0].split(),
            ["ID", "PID", "STATE", "STARTED", "DURATION", "EXIT", "STDOUT", "STDERR", "COMMAND"],
        )
        rows = {line.split()[0]: line.split() for line in lines[1:]}
        self.assertEqual(set(rows), {running[:12], finished[:12]})
        self.assertEqual(rows[finished[:12]][2:3] + rows[finished[:12]][5:], ["exited", "0", "0B", "0B", "true"])
        status, out, _ = yield self.cli("ls", "-q")
        self.assertEqual(out.decode().split(), [running, finished])
        status, out, _ = yield self.cli("ls", "-q", "--running")
        self.assertEqual(out.decode().split(), [running])
        status, out, _ = yield self.cli("ls", "-q", "--finished")
        self.assertEqual(out.decode().split(), [finished])
        status, out, _ = yield self.cli("ls", "-q", "--state", "paused")
        self.assertEqual((status, out), (0, b""))
        status, out, _ = yield self.cli("ls", "--json", "--state", "exited")
        [entry] = json.loads(out)
        self.assertEqual((entry["process_id"], entry["exit_code"]), (finished, 0))
        self.assertIsInstance(entry["ended_at"], float)
        for argv in (("--state", "stopped"), ("--running", "--finished"), ("--json", "-q")):
            status, _, err = yield self.cli("ls", *argv)
            self.assertEqual(status, 2, argv)
            self.assertTrue(err.startswith(b"ccx: "), err)
        yield self.cli("cancel", running)

    @inlineCallbacks
    def test_verbose_tells_state_changes(self):
        """run -v says when another client paused, resumed or cancelled the program; exit 143."""
        console, done = self.console_cli("run", "-v", "--", "sleep", "1000")
        yield until(lambda: b"started " in console.err.getvalue())
        process_id = console.err.getvalue().split(b"started ")[1].split()[0].decode()
        process = yield self.listed(process_id)
        self.ccx.groups.append(process["pgid"])
        for command, said in (("pause", b"paused"), ("resume", b"resumed")):
            yield self.cli(command, process_id)
            yield until(lambda: b"the program was " + said in console.err.getvalue())
        yield self.cli("cancel", process_id)
        status = yield done
        self.assertEqual(status, 143)
        self.assertIn(b"ccx: the program was cancelled\n", console.err.getvalue())

    @inlineCallbacks
    def test_service_stops(self):
        """When the service stops, run and attach say so in a line and exit 143."""
        console, ran = self.console_cli("run", "--keep", "--", "sleep", "1000")
        yield until(lambda: b"started " in console.err.getvalue())
        process_id = console.err.getvalue().split(b"started ")[1].split()[0].decode()
        process = yield self.listed(process_id)
        self.ccx.groups.append(process["pgid"])
        attached, attaching = self.console_cli("attach", process_id)
        yield until_listed(self, process_id, lambda p: p["subscribers"] == 2)
        yield self.ccx.service.stopService()
        for console, done in ((console, ran), (attached, attaching)):
            status = yield done
            self.assertEqual(status, 143, console.err.getvalue())
            self.assertNotIn(b"1006", console.err.getvalue())


class ChildCommandTests(CLITestCase):
    @inlineCallbacks
    def test_ctrl_c_with_keep_detaches(self):
        """With --keep, Ctrl-C leaves the program running and says how to reattach; exit 130."""
        child = self.spawn("run", "--keep", "--", "sleep", "1000")
        process_id = yield child.started_id()
        process = yield self.listed(process_id)
        self.ccx.groups.append(process["pgid"])
        child.transport.signalProcess("INT")
        yield child.ended
        self.assertEqual(child.status, 130, child.err)
        self.assertIn(f"ccx attach {process_id}".encode(), child.err)
        self.assertNotIn(b"cancelling", child.err)
        process = yield self.listed(process_id)
        self.assertEqual(process["state"], "running")
        self.assertTrue(ProcessGroup(process["pgid"]).members())
        status, _, _ = yield self.cli("cancel", process_id)
        self.assertEqual(status, 0)

    @inlineCallbacks
    def test_detach_then_attach(self):
        """run -d as a real command, then attach as one: the program's output and status."""
        child = self.spawn("run", "-d", "--stdin", "--", "sh", "-c", "cat; exit 4")
        yield child.ended
        self.assertEqual((child.status, child.err), (0, b""))
        process_id = child.out.decode().strip()
        process = yield self.listed(process_id)
        self.ccx.groups.append(process["pgid"])
        attach = self.spawn("attach", "--from-start", process_id)
        yield until_listed(self, process_id, lambda p: p["subscribers"] == 1)
        writer = self.spawn("write", process_id)
        writer.transport.write(b"piped\n")
        writer.transport.closeStdin()
        yield writer.ended
        self.assertEqual((writer.status, writer.err), (0, b""))
        yield attach.ended
        self.assertEqual((attach.status, attach.out, attach.err), (4, b"piped\n", b""))


class ServiceGoneTests(TestCase):
    timeout = 60

    @inlineCallbacks
    def test_service_killed(self):
        """
        A service that dies under a running ccx run: one line, no "code
        1006", exit 143.
        """
        service = yield ServiceProcess(
            [program("sleep")], settings={"containment": "process-group"}
        ).started(reactor)
        self.addCleanup(service.stop)
        child = CLIProcess()
        env = dict(os.environ, PYTHONPATH=ROOT, CCX_URL=service.url)
        reactor.spawnProcess(child, sys.executable, [sys.executable, "-m", "ccx", "run", "-k", "--", "sleep", "1000"], env=env)
        said = yield child.said(b"started ")
        pid = int(said.split(b"(pid ")[1].split(b")")[0])
        self.addCleanup(lambda: ProcessGroup(pid).signal(signal.SIGKILL))
        service.process.send_signal(signal.SIGKILL)
        yield child.ended
        self.assertEqual(child.status, 143, child.err)
        lines = child.err.decode().splitlines()
        self.assertEqual(len(lines), 2, child.err)  # "started", then why it left
        self.assertIn("closed before the program ended", lines[1])
        self.assertIn("ccx attach", lines[1])
        self.assertNotIn("1006", lines[1])


class ToolTests(SynchronousTestCase):
    def test_version(self):
        """ccx --version prints the version."""
        from ccx import __version__

        out = subprocess.run(
            [sys.executable, "-m", "ccx", "--version"], capture_output=True, cwd=ROOT, check=True
        ).stdout
        self.assertEqual(out, f"ccx {__version__}\n".encode())

    def test_manpage_covers_every_command_and_option(self):
        """The man page names every subcommand and each of its options."""
        page = manpage(Options())
        self.assertTrue(page.startswith(".TH CCX 1"))
        for name, _short, options_class, _doc in Options.subCommands:
            self.assertIn(f".SS ccx {name}".replace("-", "\\-"), page)
            for option in options_class().longOpt:
                option = option.rstrip("=")
                self.assertIn("\\-\\-" + option.replace("-", "\\-"), page, (name, option))

    def test_manpage_module(self):
        """python -m ccx.cli.manpage writes it."""
        out = subprocess.run(
            [sys.executable, "-m", "ccx.cli.manpage"], capture_output=True, cwd=ROOT, check=True
        ).stdout
        self.assertEqual(out.decode(), manpage(Options()))

    def test_bash_completion(self):
        """The bash script completes commands, their options, and the option after --url."""
        script = subprocess.run(
            [sys.executable, "-m", "ccx", "completion", "bash"], capture_output=True, cwd=ROOT, check=True
        ).stdout.decode()

        def complete(*words):
            probe = script + (
                f"COMP_WORDS=(ccx {' '.join(words)}); COMP_CWORD={len(words)}; _ccx; "
                'printf "%s\\n" "${COMPREPLY[@]}"\n'
            )
            return subprocess.run(["bash", "-c", probe], capture_output=True, check=True).stdout.split()

        self.assertEqual(complete("lo"), [b"logs"])
        self.assertIn(b"--follow", complete("logs", "--f"))
        self.assertEqual(complete("--url", "ws://x", "ls", "--r"), [b"--running"])
        self.assertNotIn(b"--follow", complete("ls", "--f"))

    def test_zsh_completion(self):
        """The zsh stub asks ccx, which answers with a zsh completion function."""
        script = subprocess.run(
            [sys.executable, "-m", "ccx", "completion", "zsh"], capture_output=True, cwd=ROOT, check=True
        ).stdout.decode()
        self.assertTrue(script.startswith("#compdef ccx\n"))
        self.assertIn("--_shell-completion zsh:$CURRENT", script)
        answer = subprocess.run(
            [sys.executable, "-m", "ccx", "logs", "--_shell-completion", "zsh:3"],
            capture_output=True, cwd=ROOT, check=True,
        ).stdout
        self.assertTrue(answer.startswith(b"#compdef "), answer)
        self.assertIn(b"--follow", answer)

    def test_completion_unknown_shell(self):
        status = []
        console = MemoryConsole(reactor)
        run_cli(reactor, ["completion", "fish"], console, {}).addCallback(status.append)
        self.assertEqual(status, [2])
        self.assertTrue(console.err.getvalue().startswith(b"ccx: no completion for 'fish'"))


class ListingTests(SynchronousTestCase):
    def test_short_ids(self):
        """Twelve characters, or one more than any other id shares."""
        a = "0123456789ab" + "c" * 20
        b = "0123456789ab" + "d" * 20
        c = "ffffffffffff" + "0" * 20
        self.assertEqual(short_ids([a, b, c]), {a: a[:13], b: b[:13], c: c[:12]})
        near = "0123456789a" + "x" * 21  # shares 11 characters: 12 are enough
        self.assertEqual(short_ids([a, near])[a], a[:12])

    def test_human_bytes(self):
        self.assertEqual(
            [human_bytes(n) for n in (0, 1023, 1024, 1536, 1024 * 1024 - 1, 1024 * 1024, None)],
            ["0 B", "1023 B", "1.0 KiB", "1.5 KiB", "1024.0 KiB", "1.0 MiB", "-"],
        )

    def test_human_duration(self):
        self.assertEqual(
            [human_duration(s) for s in (0.25, 9.94, 10, 59.9, 60, 3599, 3600, 86399, 86400, None, -1)],
            ["0.2s", "9.9s", "10s", "59s", "1m00s", "59m59s", "1h00m", "23h59m", "1d00h", "-", "-"],
        )

    def test_table(self):
        """The ls table: short ids, human sizes, duration, the signal's name."""
        table = format_table(
            [
                {"process_id": "b" * 32, "pid": 12, "state": "exited", "exit_code": -15,
                 "stdout_bytes": 3, "stderr_bytes": 2048, "command": ["sh", "-c", "a b"],
                 "started_at": 100.0, "ended_at": 175.0},
                {"process_id": "a" * 32, "pid": 1234, "state": "running", "exit_code": None,
                 "stdout_bytes": 0, "stderr_bytes": 10, "command": ["sleep", "9"],
                 "started_at": 90.0, "ended_at": None},
            ],
            now=95.0,
        )
        rows = [line.split() for line in table.splitlines()]
        self.assertEqual(rows[0][:5], ["ID", "PID", "STATE", "STARTED", "DURATION"])
        del rows[1][3], rows[2][3]  # the local start time
        self.assertEqual(rows[1], ["a" * 12, "1234", "running", "5.0s", "-", "0B", "10B", "sleep", "9"])
        self.assertEqual(rows[2], ["b" * 12, "12", "exited", "1m15s", "SIGTERM", "3B", "2.0KiB", "sh", "-c", "'a", "b'"])

    def test_status_text(self):
        text = format_status(
            {"process_id": "p", "command": ["seq", "3"], "state": "exited", "pid": 5,
             "started_at": 10.0, "ended_at": 12.5, "exit_code": 0, "stdout_bytes": 6,
             "stderr_bytes": 0, "dropped_bytes": 0, "subscribers": 0, "cpu_seconds": None,
             "memory_bytes": None},
            now=20.0,
        )
        fields = dict(line.split(None, 1) for line in text.splitlines())
        self.assertEqual(
            (fields["duration:"], fields["exit:"], fields["stdout:"], fields["cpu:"]),
            ("2.5s", "0", "6 B", "-"),
        )
