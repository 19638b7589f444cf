"""
C{python -m ccx.stress [options] [SCENARIO ...]}: run the stress scenarios
against a ccx service and print a report.

By default it starts its own service (twistd, on a free port of 127.0.0.1,
ready once C{/health} says so) and stops it, with everything it started, at
the end, on an error or on Ctrl-C (SIGKILL if it has not exited
L{STOP_TIMEOUT} seconds after SIGTERM); at the end it checks in C{/proc}
that no process of the groups it started is left.
Exit status: 0 when every scenario passed, 1 when one failed, 2 for a usage
error or a service that would not start, 130 when interrupted.
"""

import json
import random
import shutil
import signal
import sys
import traceback
from dataclasses import replace
from typing import Any, Dict, List, Optional, Sequence

from twisted.internet.defer import Deferred, TimeoutError
from twisted.internet.error import ConnectError
from twisted.internet.task import react
from twisted.python import usage

from ccx.stress.profiles import PROFILES, Profile
from ccx.stress.report import Result, format_result, record
from ccx.stress.scenarios import SCENARIOS
from ccx.stress.target import Target
from ccx.testing.child import ChildFailed
from ccx.testing.polling import Stuck
from ccx.testing.proc import leftovers
from ccx.testing.service import ServiceProcess

# The programs the scenarios run.
PROGRAMS = ("sh", "seq", "head", "cat", "yes", "sleep")

# The service the tool starts: JSON logs (the errors it logs count as
# problems), limits above what the scenarios need, a short grace period
# (cancels of TERM-ignoring programs wait for it), and finished processes
# kept briefly (each keeps its held output until forgotten).
SERVICE_SETTINGS = {
    "log_format": "json",
    "log_level": "info",
    "kill_grace": 1.0,
    "max_processes": 256,
    "max_connections": 2048,
    "keep_finished": 3.0,
    "max_requests": 2000,
}

# How long the service has to exit after SIGTERM before it and the process
# groups of its programs are killed.
STOP_TIMEOUT = 20.0


class Options(usage.Options):
    synopsis = "python -m ccx.stress [options] [SCENARIO ...]"
    longdesc = (
        "Run the named stress scenarios (default: all, in this order: "
        + ", ".join(SCENARIOS)
        + ") and print one line per scenario, then one JSON line. "
        "Without --url a ccx service is started for the run and stopped after it."
    )
    optParameters = [
        ["profile", "p", "full", "short (CI, about 16 s) or full (about 6 min)."],
        ["only", None, None, "Run only this scenario (the same as naming it)."],
        ["url", "u", None, "Test the ccx service at this ws:// URL on 127.0.0.1 instead."],
        ["token-file", None, None, "With --url: the bearer token, read from this file."],
        ["service-pid", None, None, "With --url: the service's pid, for its RSS and fds.", int],
        ["kill-grace", None, None, "With --url: the service's --kill-grace [default: 5].", float],
        ["buffer-bytes", None, None, "With --url: the service's --buffer-bytes.", int],
        ["seed", None, None, "Seed of the random choices [default: random].", int],
        ["soak-seconds", None, None, "Run the soak this long (warm-up: a fifth of it).", float],
    ]

    def parseArgs(self, *names: str) -> None:
        self.names = list(names)

    def postOptions(self) -> None:
        if self["profile"] not in PROFILES:
            raise usage.UsageError(f"--profile must be one of {', '.join(PROFILES)}")
        if self["only"]:
            self.names.append(self["only"])
        for name in self.names:
            if name not in SCENARIOS:
                raise usage.UsageError(
                    f"no scenario {name!r}; the scenarios are {', '.join(SCENARIOS)}"
                )
        if not self.names:
            self.names = list(SCENARIOS)
        if self["seed"] is None:
            self["seed"] = random.randrange(1 << 32)


def say(line: str) -> None:
    print(line, flush=True)


class Run:
    """
    One run of the suite: the service (started here, or given), the
    scenarios, and the final checks.
    """

    def __init__(self, reactor: Any, options: Options) -> None:
        self.reactor = reactor
        self.options = options
        self.profile: Profile = PROFILES[options["profile"]]
        if options["soak-seconds"]:
            self.profile = replace(
                self.profile,
                soak_seconds=options["soak-seconds"],
                soak_warmup=options["soak-seconds"] / 5,
            )
        self.service: Optional[ServiceProcess] = None
        self.target: Optional[Target] = None
        self.results: List[Result] = []
        self.finished = False
        self.interrupted = False

    async def start_service(self) -> None:
        options = self.options
        if options["url"]:
            token = None
            if options["token-file"]:
                with open(options["token-file"]) as f:
                    token = f.read().strip()
            self.target = Target(
                self.reactor,
                options["url"],
                token=token,
                pid=options["service-pid"],
                buffer_bytes=options["buffer-bytes"] or 1024 * 1024,
                kill_grace=options["kill-grace"] if options["kill-grace"] is not None else 5.0,
            )
            return
        self.service = ServiceProcess(
            [shutil.which(name) or name for name in PROGRAMS],
            SERVICE_SETTINGS,
            # The scenarios judge back-pressure and drops against the memory
            # buffer (--buffer-bytes): no journal behind it.
            options=["--no-journal"],
        )
        await self.service.started(self.reactor)
        self.target = Target(
            self.reactor,
            self.service.url,
            pid=self.service.pid,
            kill_grace=SERVICE_SETTINGS["kill_grace"],
        )

    async def run_scenario(self, name: str, rng: random.Random) -> Result:
        """
        Run one scenario within the profile's time limit; whatever happens,
        close its connections and wait for the service to settle, and count
        what the service logged as errors meanwhile as problems.
        """
        target = self.target
        errors_before = len(self.service.errors()) if self.service else 0
        target.baseline = (await target.health())["processes"]
        began = self.reactor.seconds()
        scenario = SCENARIOS[name](target, self.profile, rng)
        limit = self.profile.timeout + (self.profile.soak_seconds if name == "soak" else 0)
        try:
            result = await Deferred.fromCoroutine(scenario).addTimeout(limit, self.reactor)
        except TimeoutError:
            result = Result(name, problems=[f"did not finish in {limit:g} s"])
        except Exception as e:
            if not self.interrupted:
                traceback.print_exc(file=sys.stderr)
            result = Result(name, problems=[f"{type(e).__name__}: {e}"])
        result.seconds = self.reactor.seconds() - began
        await target.close_all()
        health = await target.settle(timeout=4 * target.kill_grace + 20)
        unsettled = await target.unsettled(health)
        result.check(unsettled is None, f"after the scenario: {unsettled}")
        if self.service is not None:
            for error in self.service.errors()[errors_before:]:
                result.problems.append(f"the service logged an error: {error.get('message')}")
        return result

    async def final_check(self) -> Result:
        """
        Stop the service (when started here) and check that nothing of any
        process group the run started is left.
        """
        result = Result("leftovers")
        target = self.target
        pgids = set(target.pgids) if target else set()
        status = None
        if self.service is not None:
            status = await self.service.stopped(self.reactor, timeout=STOP_TIMEOUT, strays=pgids)
            # twistd ends itself with the signal that stopped it: -15.
            result.check(status in (0, -15), f"the service exited with status {status}")
            pgids.add(self.service.pid)
        left = leftovers(pgids)
        result.check(not left, f"process groups with members left: {sorted(left.items())[:10]}")
        result.figures = {"process_groups": len(pgids), "left": len(left), "service_exit": status}
        result.summary = f"{len(left)} of {len(pgids)} process groups have members left" + (
            f"; the service stopped with status {status}" if self.service is not None else ""
        )
        return result

    async def main(self) -> int:
        options = self.options
        rng = random.Random(options["seed"])
        try:
            await self.start_service()
            await self.target.health()
        except (ChildFailed, Stuck, ValueError, OSError, ConnectError) as e:
            sys.stderr.write(f"ccx.stress: {e}\n")
            if self.service is not None:
                await self.service.stopped(self.reactor, timeout=STOP_TIMEOUT)
            return 2
        target = self.target
        say(
            f"ccx stress: profile {self.profile.name}, seed {options['seed']}, "
            f"service {target.url}" + (f" (pid {target.pid})" if target.pid else "")
        )
        try:
            for name in options.names:
                result = await self.run_scenario(name, rng)
                self.results.append(result)
                say(format_result(result))
        finally:
            final = await self.final_check()
        self.results.append(final)
        say(format_result(final))
        summary: Dict[str, Any] = record(
            self.profile.name,
            options["seed"],
            self.results,
            rate_limited_calls=target.rate_limited,
            service_settings=SERVICE_SETTINGS if self.service else None,
        )
        say(json.dumps(summary, sort_keys=True))
        return 0 if summary["passed"] else 1

    def before_shutdown(self) -> Optional[Deferred]:
        """
        The reactor is stopping before the run finished (Ctrl-C, SIGTERM):
        stop the service and what it started.
        """
        if self.finished:
            return None
        self.interrupted = True
        sys.stderr.write("ccx.stress: interrupted; stopping the service\n")
        if self.service is None:
            return None
        pgids = self.target.pgids if self.target else ()
        return Deferred.fromCoroutine(
            self.service.stopped(self.reactor, timeout=STOP_TIMEOUT, strays=pgids)
        )


async def _main(reactor: Any, run: Run) -> None:
    reactor.addSystemEventTrigger("before", "shutdown", run.before_shutdown)
    try:
        code = await run.main()
    finally:
        run.finished = True
    raise SystemExit(code)


def main(argv: Optional[Sequence[str]] = None) -> None:
    options = Options()
    try:
        options.parseOptions(sys.argv[1:] if argv is None else argv)
    except usage.UsageError as e:
        sys.stderr.write(f"{options}\nccx.stress: {e}\n")
        sys.exit(2)
    # Ctrl-C stops the run (and the service) even where SIGINT was inherited
    # ignored, as by a background job: the reactor handles it only if it is
    # Python's default handler.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    from twisted.internet import reactor

    run = Run(reactor, options)
    try:
        react(_main, (run,))
    except SystemExit:
        if run.interrupted:
            sys.exit(130)
        raise


if __name__ == "__main__":
    main()
