"""
What a client may run, on every entrance (WebSocket, /mcp, the stdio
bridge): only an allowed program (by real path, not by name), only under a
name it was allowed under, with only the environment variables the service
allows, from the base environment.
"""

import os
import sys
from typing import Any, Dict, List

from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from tests.support import PROGRAMS, ServiceFixture, program
from tests.test_mcp import HttpTestCase, tool_call
from tests.test_mcp_stdio import BridgeTestCase, call_tool

# Prints the argv[0] the program was started with.
SHOW_ARGV0 = "import sys; print(sys.orig_argv[0])"


class Programs:
    """
    A directory of look-alikes: C{pgrep}, a multi-call stand-in (a link to
    Python, which can print its argv[0]), C{pkill}, a link to it, and
    C{true}, an executable named like an allowed program but another file.
    """

    def __init__(self, testcase: TestCase) -> None:
        self.directory = os.path.realpath(testcase.mktemp())
        os.makedirs(self.directory)
        self.pgrep = os.path.join(self.directory, "pgrep")
        os.symlink(os.path.realpath(sys.executable), self.pgrep)
        self.pkill = os.path.join(self.directory, "pkill")
        os.symlink("pgrep", self.pkill)
        self.true = os.path.join(self.directory, "true")
        with open(self.true, "w") as f:
            f.write("#!/bin/sh\necho impostor\n")
        os.chmod(self.true, 0o755)

    def settings(self, **settings: Any) -> Dict[str, Any]:
        """
        Service settings allowing the test programs and C{pgrep}.
        """
        allow: List[str] = [program(name) for name in PROGRAMS] + [self.pgrep]
        return dict(settings, allow=allow)


class WebSocketTests(TestCase):
    """
    The checks on the native WebSocket.
    """

    timeout = 30

    @inlineCallbacks
    def setUp(self):
        self.programs = Programs(self)
        os.environ["CCX_LEAK"] = "leaked"
        os.environ["CCX_PASSED"] = "handed on"
        self.addCleanup(os.environ.pop, "CCX_LEAK")
        self.addCleanup(os.environ.pop, "CCX_PASSED")
        settings = self.programs.settings(allow_env=["GREETING"], pass_env=["CCX_PASSED"])
        # The service's PATH finds the look-alike 'true' first.
        path = os.environ["PATH"]
        os.environ["PATH"] = self.programs.directory + os.pathsep + path
        try:
            self.ccx = ServiceFixture(self, **settings)
        finally:
            os.environ["PATH"] = path
        yield self.ccx.start()
        self.client = yield self.ccx.connect()

    @inlineCallbacks
    def output_of(self, params: dict) -> Any:
        result = yield self.ccx.execute(self.client, params)
        yield self.client.notification("process.completed", result["process_id"])
        return self.client.output(result["process_id"])

    @inlineCallbacks
    def refused(self, params: dict) -> Any:
        """
        C{execute} with C{params} is refused with -32002 and starts nothing;
        return the message.
        """
        response = yield self.client.request("execute", params)
        self.assertEqual(response.get("error", {}).get("code"), -32002, response)
        listed = yield self.client.call("list")
        self.assertEqual(listed["processes"], [])
        return response["error"]["message"]

    @inlineCallbacks
    def test_runs_under_the_allowed_name(self):
        """pgrep runs, and sees the argv[0] it was given."""
        out = yield self.output_of({"command": [self.programs.pgrep, "-c", SHOW_ARGV0]})
        self.assertEqual(out, f"{self.programs.pgrep}\n".encode())

    @inlineCallbacks
    def test_pkill_link_refused(self):
        """With pgrep allowed, pkill (a link to it) is refused: it would run as pkill."""
        message = yield self.refused({"command": [self.programs.pkill, "-c", SHOW_ARGV0]})
        self.assertIn("allowed only under the name 'pgrep'", message)
        self.assertIn(f"--allow {self.programs.pkill}", message)

    @inlineCallbacks
    def test_same_name_given_as_a_path(self):
        """An executable named like an allowed one, in another directory, given as a path."""
        message = yield self.refused({"command": [self.programs.true]})
        self.assertIn("is not on the allow-list", message)

    @inlineCallbacks
    def test_same_name_first_on_path(self):
        """An executable named like an allowed one, found first on the service's PATH."""
        message = yield self.refused({"command": ["true"]})
        self.assertIn(f"'true' ({self.programs.true}) is not on the allow-list", message)

    @inlineCallbacks
    def test_env_not_allowed(self):
        """A variable the service does not allow gets -32002 naming --allow-env NAME."""
        message = yield self.refused({"command": "printf x", "env": {"GREETINGS": "hi"}})
        self.assertIn("start ccx with --allow-env GREETINGS to allow it", message)

    @inlineCallbacks
    def test_base_environment(self):
        """
        Programs start from the base environment: the service's PATH, LANG,
        TERM, what --pass-env names, an allowed variable; nothing else of
        the service's environment.
        """
        out = yield self.output_of({
            "command": [
                "sh", "-c",
                'echo "$PATH|$LANG|$TERM|${CCX_LEAK-unset}|${HOME-unset}|$CCX_PASSED|$GREETING"',
            ],
            "env": {"GREETING": "hi"},
        })
        search_path = self.ccx.service.node.allow_list.search_path
        self.assertEqual(
            out, f"{search_path}|C.UTF-8|dumb|unset|unset|handed on|hi\n".encode()
        )


class DenyOnTopTests(TestCase):
    """
    With every name allowed, the deny list still refuses what changes the
    code a program runs.
    """

    timeout = 30

    @inlineCallbacks
    def setUp(self):
        settings = Programs(self).settings(allow_env=["*"])
        settings["allow"].append(program("bash"))
        self.ccx = yield ServiceFixture(self, **settings).start()
        self.client = yield self.ccx.connect()

    @inlineCallbacks
    def test_bash_function_refused(self):
        """A BASH_FUNC_ variable (code bash would run for an allowed script) is refused."""
        response = yield self.client.request("execute", {
            "command": ["bash", "-c", "greet"],
            "env": {"BASH_FUNC_greet%%": "() { echo injected; }"},
        })
        self.assertEqual(response.get("error", {}).get("code"), -32002, response)
        self.assertIn("'BASH_FUNC_greet%%'", response["error"]["message"])
        self.assertIn("(see --deny-env)", response["error"]["message"])
        self.assertEqual((yield self.client.call("list"))["processes"], [])

    @inlineCallbacks
    def test_git_config_refused(self):
        """GIT_CONFIG_COUNT/KEY/VALUE (core.fsmonitor runs a command) are refused."""
        for name in ("GIT_CONFIG_COUNT", "GIT_CONFIG_KEY_0", "GIT_CONFIG_VALUE_0"):
            response = yield self.client.request(
                "execute", {"command": "true", "env": {name: "1"}}
            )
            self.assertEqual(response.get("error", {}).get("code"), -32002, response)

    @inlineCallbacks
    def test_neighbour_allowed(self):
        """A name beside a denied one is set."""
        result = yield self.ccx.execute(self.client, {
            "command": ["sh", "-c", "echo $GIT_AUTHOR_NAME"], "env": {"GIT_AUTHOR_NAME": "a"},
        })
        yield self.client.notification("process.completed", result["process_id"])
        self.assertEqual(self.client.output(result["process_id"]), b"a\n")


class McpHttpTests(HttpTestCase):
    """
    The checks on MCP's Streamable HTTP: a refusal is a tool error saying
    what to change.
    """

    @inlineCallbacks
    def setUp(self):
        self.programs = Programs(self)
        yield self.start(**self.programs.settings(allow_env=["GREETING"]))
        self.session_id, _ = yield self.initialize()

    @inlineCallbacks
    def refused(self, arguments: dict) -> Any:
        _, messages = yield self.call(self.session_id, tool_call(2, "execute", arguments))
        result = messages[-1]["result"]
        self.assertTrue(result["isError"], result)
        text = result["content"][0]["text"]
        self.assertIn("command not allowed", text)
        return text

    @inlineCallbacks
    def test_same_name_given_as_a_path(self):
        """An executable named like an allowed one, in another directory."""
        text = yield self.refused({"command": [self.programs.true]})
        self.assertIn("is not on the allow-list", text)

    @inlineCallbacks
    def test_pkill_link_refused(self):
        """A link to an allowed program under another name."""
        text = yield self.refused({"command": [self.programs.pkill, "-c", SHOW_ARGV0]})
        self.assertIn("allowed only under the name 'pgrep'", text)

    @inlineCallbacks
    def test_env(self):
        """An allowed variable reaches the program; one beside it is refused naming --allow-env."""
        out = yield self.tool(
            self.session_id, "execute",
            {"command": ["sh", "-c", "echo $GREETING"], "env": {"GREETING": "hi"}},
        )
        self.assertEqual(out["stdout"], "hi\n")
        text = yield self.refused({"command": "true", "env": {"GREETINGS": "hi"}})
        self.assertIn("--allow-env GREETINGS", text)


class StdioBridgeTests(BridgeTestCase):
    """
    The checks through C{ccx mcp-stdio}.
    """

    def settings(self) -> dict:
        self.programs = Programs(self)
        return self.programs.settings(allow_env=["GREETING"])

    @inlineCallbacks
    def test_refusals(self):
        """Look-alikes, other names and variables not allowed are tool errors naming the fix."""
        bridge = yield self.initialized()
        cases = [
            ({"command": [self.programs.true]}, "is not on the allow-list"),
            ({"command": [self.programs.pkill]}, "allowed only under the name 'pgrep'"),
            ({"command": "true", "env": {"GREETINGS": "hi"}}, "--allow-env GREETINGS"),
        ]
        for number, (arguments, words) in enumerate(cases, 2):
            bridge.send(call_tool(number, "execute", arguments))
            response = yield bridge.response(number)
            result = response["result"]
            self.assertTrue(result["isError"], result)
            self.assertIn(words, result["content"][0]["text"])
        arguments = {"command": [self.programs.pgrep, "-c", SHOW_ARGV0]}
        bridge.send(call_tool(9, "execute", arguments))
        response = yield bridge.response(9)
        stdout = response["result"]["structuredContent"]["stdout"]
        self.assertEqual(stdout, self.programs.pgrep + "\n")
