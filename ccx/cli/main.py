"""
C{ccx}: the command line (docs/cli.md).

L{run_cli} is the whole program as a function of the reactor, the
arguments, the console and the environment, returning a Deferred of the exit
status; L{main} runs it with L{react} on the real terminal.
"""

import os
import signal
import sys
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.task import react
from twisted.python import usage
from twisted.python.failure import Failure

from ccx import __version__
from ccx.cli import commands, completion, mcp_stdio, rawmode
from ccx.cli.client import DEFAULT_URL, ServiceError, check_url
from ccx.cli.console import Console, TerminalConsole
from ccx.cli.context import Context
from ccx.cli.status import EXIT_USAGE
from ccx.tokenfile import TokenFileError, read_token_file


class HelpRequested(Exception):
    """
    C{--help} (or C{--version}): print C{text} and succeed.
    """

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


class _Options(usage.Options):
    """
    Options every level accepts, so that C{ccx --url U ls} and
    C{ccx ls --url U} mean the same.
    """

    optParameters: List[List[Any]] = [
        ["url", "u", None, f"WebSocket URL of the service [$CCX_URL, default: {DEFAULT_URL}]."],
        ["token-file", None, None, "Read the bearer token from this file [$CCX_TOKEN_FILE]."],
        ["cacert", None, None, "Trust this PEM certificate for wss:// URLs [$CCX_CACERT]."],
    ]

    synopsis = "ccx"

    def getSynopsis(self) -> str:
        return f"Usage: {self.synopsis}"

    def opt_help(self) -> None:
        """
        Display this help and exit.
        """
        raise HelpRequested(str(self))

    opt_h = opt_help

    def opt_version(self) -> None:
        """
        Display the version and exit.
        """
        raise HelpRequested(f"ccx {__version__}\n")


class _OneProcess(_Options):
    def parseArgs(self, process_id: str) -> None:
        self.process_id = process_id


class RunOptions(_Options):
    synopsis = "ccx run [options] [--] PROGRAM [ARGS...]"
    longdesc = (
        "Run PROGRAM on the service and relay it: its stdout to stdout, its stderr to "
        "stderr, as they arrive. Exits with the program's status (128+N when signal N "
        "killed it, 124 on --timeout, 130 when Ctrl-C cancelled it). Ctrl-C cancels the "
        "program and waits for it; a second Ctrl-C leaves at once. With --keep, Ctrl-C "
        "detaches instead: the program runs on (ccx attach ID). With -t the program runs "
        "on a terminal of this terminal's size: every key goes to it (Ctrl-C, Ctrl-Z "
        "included), and Ctrl-P Ctrl-Q detaches (ccx attach -t ID to return)."
    )
    optFlags = [
        ["keep", "k", "Keep the program running if this client goes away (see ccx attach)."],
        [
            "durable",
            None,
            "Keep the program running even when the service stops, restarts or dies "
            "(implies --keep).",
        ],
        ["drop", None, "Drop output rather than slow the program when this client lags."],
        [
            "stdin",
            "i",
            "Pass this command's standard input to the program (with -d: keep the "
            "program's stdin open for ccx write).",
        ],
        ["detach", "d", "Start it in the background: print its id and exit (implies --keep)."],
        [
            "merge-stderr",
            None,
            "Send the program's stderr to its stdout, interleaved as a terminal shows them.",
        ],
        [
            "tty",
            "t",
            "Run it on a terminal and give it this one (raw mode; Ctrl-P Ctrl-Q detaches; "
            "implies --keep).",
        ],
        [
            "verbose",
            "v",
            "Say when the program starts, when it is paused, resumed or cancelled, and "
            "how it ended.",
        ],
    ]
    optParameters = [
        ["cwd", "C", None, "Working directory of the program (on the service's host)."],
    ]

    def __init__(self) -> None:
        super().__init__()
        self.env: Dict[str, str] = {}
        self["timeout"] = None

    def opt_timeout(self, seconds: str) -> None:
        """
        Cancel the program after this many seconds of running.
        """
        try:
            value = float(seconds)
        except ValueError:
            value = 0.0
        if not value > 0 or value == float("inf"):
            raise usage.UsageError(f"--timeout {seconds}: give a positive number of seconds")
        self["timeout"] = value

    def opt_env(self, setting: str) -> None:
        """
        Set an environment variable of the program, NAME=VALUE (repeatable).
        """
        name, equals, value = setting.partition("=")
        if not equals or not name:
            raise usage.UsageError(f"--env {setting!r}: give NAME=VALUE")
        self.env[name] = value

    opt_e = opt_env

    def parseArgs(self, *argv: str) -> None:
        if not argv:
            raise usage.UsageError("give the program to run: ccx run [options] -- PROGRAM ARGS")
        self.argv = list(argv)

    def postOptions(self) -> None:
        if self["detach"] or self["tty"]:
            # With --stdin, its stdin stays open for `ccx write ID`; with
            # --tty, detaching (Ctrl-P Ctrl-Q) leaves it running.
            self["keep"] = True
        if self["tty"] and self["stdin"]:
            raise usage.UsageError("--tty passes the terminal's keys on already: drop --stdin")


LS_STATES = ("running", "paused", "exited")


class LsOptions(_Options):
    synopsis = "ccx ls [--json | -q] [--running | --finished | --state STATE]"
    longdesc = (
        "List the processes the service knows, running and recently finished, oldest "
        "first: short id (a unique prefix of 12 characters or more), pid, state, start "
        "time, duration, exit status, output sizes and command."
    )
    optFlags = [
        ["json", None, "Print the full entries as a JSON array."],
        ["quiet", "q", "Print only the ids, one a line."],
        ["running", None, "Only those still running (or paused)."],
        ["finished", None, "Only those that have ended."],
    ]
    optParameters = [["state", None, None, "Only those in this state: running, paused or exited."]]
    compData = usage.Completions(optActions={"state": usage.CompleteList(list(LS_STATES))})

    def postOptions(self) -> None:
        chosen = [f"--{f}" for f in ("running", "finished") if self[f]]
        if self["state"] is not None:
            if self["state"] not in LS_STATES:
                raise usage.UsageError(
                    f"--state {self['state']}: give one of {', '.join(LS_STATES)}"
                )
            chosen.append("--state")
        if len(chosen) > 1:
            raise usage.UsageError(f"{' and '.join(chosen)} do not go together: give one")
        if self["json"] and self["quiet"]:
            raise usage.UsageError("--json and -q do not go together: give one")


class LogsOptions(_OneProcess):
    synopsis = "ccx logs [-f] [--stdout | --stderr] [--since OFFSET] ID"
    longdesc = (
        "Print the output of process ID that the service still holds (with a journal, "
        "from the program's first byte), stdout to stdout and stderr to stderr; with -f, "
        "then follow it until it ends. Ctrl-C leaves; the program runs on."
    )
    optFlags = [
        ["follow", "f", "Then follow the output as it comes, until the program ends."],
        ["stdout", None, "Only its standard output."],
        ["stderr", None, "Only its standard error."],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["since"] = 0

    def opt_since(self, offset: str) -> None:
        """
        Start at this byte offset of each stream (0: the first byte).
        """
        if not offset.isdigit():
            raise usage.UsageError(f"--since {offset}: give a byte offset, 0 or more")
        self["since"] = int(offset)

    def postOptions(self) -> None:
        chosen = [s for s in ("stdout", "stderr") if self[s]]
        self.streams = chosen or ["stdout", "stderr"]


class WaitOptions(_OneProcess):
    synopsis = "ccx wait ID"
    longdesc = (
        "Wait until process ID ends and exit with its status, as ccx run does "
        "(at once for one that has ended)."
    )


class StatusOptions(_OneProcess):
    synopsis = "ccx status [--json] ID"
    longdesc = "Show one process: state, pid, times, exit status, output sizes, CPU and memory."
    optFlags = [["json", None, "Print its full entry as JSON."]]


class WriteOptions(_OneProcess):
    synopsis = "ccx write ID < INPUT"
    longdesc = (
        "Pass this command's standard input (a pipe, a file or the terminal: end it "
        "with Ctrl-D) to the standard input of process ID, then close it. The program "
        "must have been started with its stdin open: ccx run -d --stdin -- PROGRAM."
    )


class RmOptions(_Options):
    synopsis = "ccx rm ID [ID...]"
    longdesc = (
        "Forget finished processes: their record, the output the service holds and "
        "their journal. A process still running is refused (cancel it first)."
    )

    def parseArgs(self, *process_ids: str) -> None:
        if not process_ids:
            raise usage.UsageError("give the id of a finished process: ccx rm ID")
        self.process_ids = list(process_ids)


class CompletionOptions(_Options):
    synopsis = "ccx completion bash|zsh"
    longdesc = (
        "Print a shell completion script: eval \"$(ccx completion bash)\" in ~/.bashrc, or "
        "ccx completion zsh > ~/.zfunc/_ccx with ~/.zfunc on $fpath."
    )
    compData = usage.Completions(extraActions=[usage.CompleteList(list(completion.SHELLS))])

    def parseArgs(self, shell: str) -> None:
        if shell not in completion.SHELLS:
            raise usage.UsageError(
                f"no completion for {shell!r}: give one of {', '.join(completion.SHELLS)}"
            )
        self.shell = shell


class AttachOptions(_OneProcess):
    synopsis = "ccx attach [--from-start] [-t] ID"
    longdesc = (
        "Relay the output of process ID (or an unambiguous prefix of it) from now on, "
        "or from the oldest output the service still holds with --from-start, and exit "
        "with its status. Ctrl-C leaves; the program runs on. With -t (a program started "
        "on a terminal), this terminal is given to it again, as ccx run -t does, and it "
        "is told to redraw; Ctrl-P Ctrl-Q leaves."
    )
    optFlags = [
        ["from-start", "s", "Replay the output still held from the start."],
        ["tty", "t", "Give this terminal to a program started on one (raw mode; redraw)."],
        ["verbose", "v", "Say when the program is paused, resumed or cancelled."],
    ]


class PauseOptions(_OneProcess):
    synopsis = "ccx pause ID"
    longdesc = "Stop process ID and its group (SIGSTOP)."


class ResumeOptions(_OneProcess):
    synopsis = "ccx resume ID"
    longdesc = "Continue process ID and its group (SIGCONT)."


class CancelOptions(_OneProcess):
    synopsis = "ccx cancel ID"
    longdesc = "Cancel process ID: SIGTERM to its group, SIGKILL after the service's grace period."


class SignalOptions(_Options):
    synopsis = "ccx signal ID NAME"
    longdesc = (
        "Send a signal to the group of process ID: INT, HUP, TERM, KILL, USR1, USR2, "
        "WINCH or QUIT (with or without SIG)."
    )

    def parseArgs(self, process_id: str, name: str) -> None:
        self.process_id = process_id
        self.signal = name


class McpStdioOptions(_Options):
    synopsis = "ccx mcp-stdio [--url URL] [--token-file FILE]"
    longdesc = (
        "Be an MCP server on standard input and output (one JSON-RPC message per line) "
        "for MCP clients that only launch local servers, bridged to the service's "
        "WebSocket with the subprotocol mcp. Standard output carries only MCP messages."
    )


COMMANDS: Dict[str, Callable[[Context, Any], Deferred]] = {
    "run": commands.run,
    "ls": commands.ls,
    "attach": commands.attach,
    "logs": commands.logs,
    "wait": commands.wait,
    "status": commands.status,
    "write": commands.write,
    "rm": commands.rm,
    "pause": commands.control("PAUSE"),
    "resume": commands.control("RESUME"),
    "cancel": commands.control("CANCEL"),
    "signal": commands.send_signal,
    "mcp-stdio": mcp_stdio.mcp_stdio,
    "completion": completion.completion,
}


class Options(_Options):
    synopsis = "ccx [--url URL] [--token-file FILE] COMMAND [options] [args]"
    longdesc = (
        "The command-line client of a ccx service. Give COMMAND --help for its options. "
        "The token may also be given in $CCX_TOKEN."
    )
    subCommands = [
        ["run", None, RunOptions, "Run a program and relay its output and status."],
        ["ls", None, LsOptions, "List processes."],
        ["attach", None, AttachOptions, "Relay a process's output until it ends."],
        ["logs", None, LogsOptions, "Print (and follow) the output the service holds."],
        ["wait", None, WaitOptions, "Wait for a process to end; exit with its status."],
        ["status", None, StatusOptions, "Show one process."],
        ["write", None, WriteOptions, "Pass standard input to a process's stdin."],
        ["rm", None, RmOptions, "Forget finished processes and their output."],
        ["pause", None, PauseOptions, "Pause a process."],
        ["resume", None, ResumeOptions, "Resume a process."],
        ["cancel", None, CancelOptions, "Cancel a process."],
        ["signal", None, SignalOptions, "Send a signal to a process."],
        ["mcp-stdio", None, McpStdioOptions, "Serve MCP on stdin/stdout, bridged to the service."],
        ["completion", None, CompletionOptions, "Print a bash or zsh completion script."],
    ]

    def postOptions(self) -> None:
        if self.subCommand is None:
            raise usage.UsageError("give a command: " + ", ".join(COMMANDS))


def parse(argv: Sequence[str], options: Optional[Options] = None) -> Options:
    """
    @param options: the L{Options} to fill in (a new one by default).
    @raise usage.UsageError: for wrong arguments.
    @raise HelpRequested: for C{--help} and C{--version}.
    """
    options = Options() if options is None else options
    options.parseOptions(list(argv))
    return options


def _usage_hint(options: Options) -> str:
    sub = getattr(options, "subOptions", None)
    if getattr(options, "subCommand", None) is None or sub is None:
        return "see `ccx --help`"
    return f"usage: {sub.synopsis} (see `ccx {options.subCommand} --help`)"


def _setting(options: Options, name: str) -> Optional[str]:
    sub = options.subOptions
    value = sub.get(name) if sub is not None else None
    return value if value is not None else options.get(name)


def _read_token(path: str) -> str:
    try:
        return read_token_file(path)
    except TokenFileError as e:
        raise ServiceError(str(e))


def make_context(
    reactor: Any, console: Console, options: Options, environ: Mapping[str, str]
) -> Context:
    """
    Where to reach the service: options first, then the environment
    (C{CCX_URL}; C{CCX_TOKEN}, then C{CCX_TOKEN_FILE}; C{CCX_CACERT}).
    """
    url = _setting(options, "url") or environ.get("CCX_URL") or DEFAULT_URL
    check_url(url)
    token_file = _setting(options, "token-file")
    if token_file is not None:
        token: Optional[str] = _read_token(token_file)
    elif environ.get("CCX_TOKEN"):
        token = environ["CCX_TOKEN"].strip()
    elif environ.get("CCX_TOKEN_FILE"):
        token = _read_token(environ["CCX_TOKEN_FILE"])
    else:
        token = None
    cacert = _setting(options, "cacert") or environ.get("CCX_CACERT") or None
    return Context(reactor, console, url, token=token, cacert=cacert)


def run_cli(
    reactor: Any,
    argv: Sequence[str],
    console: Console,
    environ: Optional[Mapping[str, str]] = None,
    install_signals: bool = False,
) -> Deferred:
    """
    Run one C{ccx} command.

    @param argv: the arguments after the program name.
    @param install_signals: handle SIGINT (Ctrl-C) and SIGTERM, as the real
        command does.
    @return: a Deferred that fires with the exit status, once the console
        was flushed and the connection closed. It does not fail: expected
        errors are told as C{ccx: ...} on standard error.
    """
    environ = os.environ if environ is None else environ
    options = Options()
    try:
        parse(argv, options)
        context = make_context(reactor, console, options, environ)
    except HelpRequested as e:
        console.stdout.write(e.text.encode("utf-8"))
        return _closed(console, 0)
    except usage.UsageError as e:
        console.say(f"{e}\nccx: {_usage_hint(options)}")
        return _closed(console, EXIT_USAGE)
    except ServiceError as e:
        console.say(e.message)
        return _closed(console, e.status)

    restore = _install_signals(reactor, context) if install_signals else (lambda: None)
    done = maybeDeferred(COMMANDS[options.subCommand], context, options.subOptions)

    def report(result: Any) -> None:
        if context.finished.called:
            return  # ended early (Ctrl-C); what the command says now is moot
        if isinstance(result, Failure):
            if result.check(ServiceError):
                console.say(result.value.message)
                context.finish(result.value.status)
            else:
                console.stderr.write(
                    ("ccx: internal error\n" + result.getTraceback()).encode("utf-8", "replace")
                )
                context.finish(1)
        else:
            context.finish(result)

    done.addBoth(report)

    def close(status: int) -> Deferred:
        restore()
        # However the command ended, the person's terminal is theirs again.
        rawmode.restore_all()
        d = context.close()
        d.addBoth(lambda _: _closed(console, status))
        return d

    return context.finished.addCallback(close)


def _closed(console: Console, status: int) -> Deferred:
    d = console.close()
    d.addBoth(lambda _: status)
    return d


def _install_signals(reactor: Any, context: Context) -> Callable[[], None]:
    previous = {}

    def handler(handle: Callable[[], None]) -> Callable[[int, Any], None]:
        return lambda signum, frame: reactor.callFromThread(handle)

    def install() -> None:
        for signum, handle in (
            (signal.SIGINT, context.interrupt),
            (signal.SIGTERM, context.terminate),
        ):
            previous[signum] = signal.signal(signum, handler(handle))

    # The reactor installs its own SIGTERM handler as it starts running:
    # ours must come after it.
    reactor.callWhenRunning(install)

    def restore() -> None:
        for signum, old in previous.items():
            signal.signal(signum, old)

    return restore


def _react_main(reactor: Any, argv: Sequence[str]) -> Deferred:
    d = run_cli(reactor, argv, TerminalConsole(reactor), os.environ, install_signals=True)

    def leave(status: int) -> None:
        raise SystemExit(status)

    return d.addCallback(leave)


def main(argv: Optional[Sequence[str]] = None) -> None:
    """
    The C{ccx} console script.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    if len(argv) > 1 and argv[-2] == "--_shell-completion":
        # zsh asks what to complete (`ccx completion zsh`): Twisted answers
        # on stdout and exits, before any reactor runs.
        Options().parseOptions(argv)
    try:
        react(_react_main, [argv])
    finally:
        rawmode.restore_all()
