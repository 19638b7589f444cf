"""
Tests for L{ccx.config}.
"""

import os
import socket
from fnmatch import fnmatchcase

from twisted.internet import reactor
from twisted.internet.address import UNIXAddress
from twisted.internet.defer import inlineCallbacks
from twisted.internet.endpoints import (
    AdoptedStreamServerEndpoint,
    TCP4ServerEndpoint,
    serverFromString,
)
from twisted.internet.testing import MemoryReactor, MemoryReactorClock
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase

from ccx.config import (
    DEFAULT_DENY_ENV,
    DEFAULT_PORT,
    Config,
    ConfigError,
    Options,
    accepts_directly,
    endpoint_description,
    default_state_dir,
    is_local,
)
from ccx.node import Node
from ccx.service import CCXService
from tests.fakes import BindingReactor
from tests.test_tls import make_certificate


class ConfigTestsMixin:
    def parse(self, *argv):
        options = Options()
        options.parseOptions(list(argv))
        return options.config

    def assertRefused(self, *argv):
        """
        Parsing C{argv} fails with a L{ConfigError}; return its message.
        """
        error = self.assertRaises(ConfigError, self.parse, *argv)
        return str(error)

    def assertRefusedAtStart(self, *argv):
        """
        C{argv} parses, but the service refuses, with a L{ConfigError}, the
        address its port binds, and stops listening there; return its message.
        """
        binding = BindingReactor()
        service = CCXService(self.parse(*argv), binding)
        error = self.assertRaises(ConfigError, service.privilegedStartService)
        self.assertFalse(binding.ports[-1].listening)
        return str(error)

    def assertServes(self, *argv):
        """
        The service started with C{argv} listens.
        """
        binding = BindingReactor()
        service = CCXService(self.parse(*argv), binding)
        service.privilegedStartService()
        # Never stopped: let go of the cgroups it opened.
        self.addCleanup(service.node.close_containment)
        self.assertTrue(binding.ports[-1].listening)
        self.assertIs(self.successResultOf(service.when_listening()), binding.ports[-1])

    def write(self, text):
        path = self.mktemp()
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path

    def token_file(self, token="s3cret\n"):
        return self.write(token)


class DefaultsTests(ConfigTestsMixin, SynchronousTestCase):
    """
    Without options, the defaults are those of docs/protocol.md section 7.
    """

    def test_defaults(self):
        """Every documented default holds."""
        config = self.parse()
        self.assertEqual(config.port, "tcp:8003:interface=127.0.0.1")
        self.assertEqual(config.allow, ())
        self.assertIsNone(config.token)
        self.assertEqual(config.allow_origin, ())
        self.assertEqual(config.kill_grace, 5)
        self.assertEqual(config.buffer_bytes, 1024 * 1024)
        self.assertEqual(config.buffer_lines, 10000)
        self.assertEqual(config.max_processes, 64)
        self.assertEqual(config.max_connections, 1024)
        self.assertEqual(config.keep_finished, 300)
        self.assertEqual(config.log_format, "text")
        self.assertEqual(config.log_level, "info")

    def test_transport_defaults(self):
        """Messages up to 1 MiB and pings every 30 s (section 1)."""
        config = self.parse()
        self.assertEqual(config.max_message_size, 1024 * 1024)
        self.assertEqual(config.ping_interval, 30)

    def test_cwd_default(self):
        """Programs run in the current directory by default."""
        self.assertEqual(self.parse().cwd, os.getcwd())

    def test_same_as_config_defaults(self):
        """Parsing no options gives the dataclass's defaults."""
        self.assertEqual(self.parse(), Config())

    def test_token_not_in_repr(self):
        """The token never appears in the config's repr."""
        config = self.parse("--token-file", self.token_file("hunter2"))
        self.assertNotIn("hunter2", repr(config))

    def test_error_is_usage_error(self):
        """Configuration errors are usage errors, which twistd reports."""
        self.assertTrue(issubclass(ConfigError, usage.UsageError))


class PortTests(ConfigTestsMixin, SynchronousTestCase):
    """
    Tests for C{--port}.
    """

    def test_number(self):
        """A port number means that port on the loopback interface."""
        self.assertEqual(self.parse("--port", "8003").port, DEFAULT_PORT)
        self.assertEqual(self.parse("-p", "9000").port, "tcp:9000:interface=127.0.0.1")

    def test_endpoint_kept(self):
        """An endpoint string is kept as given."""
        for port in (
            "tcp:8080:interface=127.0.0.1",
            "unix:/tmp/ccx.sock",
            "systemd:domain=INET:index=0",
        ):
            self.assertEqual(self.parse("--port", port).port, port)

    def test_endpoint_description(self):
        """Whitespace around a bare number is ignored."""
        self.assertEqual(endpoint_description(" 8004 "), "tcp:8004:interface=127.0.0.1")
        self.assertEqual(endpoint_description(8005), "tcp:8005:interface=127.0.0.1")

    def test_all_interfaces_refused(self):
        """Listening on every interface without a token is refused."""
        for port in ("tcp:8003", "tcp:8003:interface=0.0.0.0", "tcp6:8003"):
            message = self.assertRefusedAtStart("--port", port)
            self.assertIn("without a token", message)
            self.assertIn("--token-file", message)

    def test_non_loopback_refused(self):
        """Listening on a non-loopback address without a token is refused."""
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        key, cert = make_certificate(directory)
        self.assertRefusedAtStart("--port", "tcp:8003:interface=192.168.1.10")
        self.assertRefusedAtStart(
            "--port", f"ssl:8443:privateKey={key}:certKey={cert}:interface=10.0.0.1"
        )
        self.assertRefusedAtStart("--port", "tcp:8003:interface=example.org")

    def test_non_loopback_with_token(self):
        """With a token, any interface is accepted."""
        config = self.parse(
            "--port", "tcp:8003:interface=0.0.0.0", "--token-file", self.token_file()
        )
        self.assertEqual(config.port, "tcp:8003:interface=0.0.0.0")
        self.assertEqual(config.token, "s3cret")
        self.assertServes(
            "--port", "tcp:8003:interface=0.0.0.0", "--token-file", self.token_file()
        )

    def test_loopback_addresses(self):
        """Any loopback address, and local sockets, count as loopback.

        (A name such as localhost is judged by the address it binds:
        L{BoundAddressTests}; a systemd socket likewise: test_twistd.)
        """
        self.assertServes("--port", "tcp:1:interface=127.0.0.2")
        self.assertServes("--port", "unix:/run/ccx.sock")
        self.assertTrue(is_local(UNIXAddress(None)))
        self.assertRefusedAtStart("--port", "tcp:1:interface=")

    def test_duplicate_interface(self):
        """The interface Twisted would use (the last given) is the one judged."""
        self.assertRefusedAtStart(
            "--port", "tcp:8003:interface=127.0.0.1:interface=0.0.0.0"
        )

    def test_ipv6_loopback(self):
        """IPv6 loopback, escaped as endpoint strings need, is loopback."""
        self.assertServes("--port", r"tcp6:8003:interface=\:\:1")

    def test_positional_interface(self):
        """An interface given positionally (tcp:PORT:INTERFACE) is judged."""
        self.assertServes("--port", "tcp:8003:127.0.0.1")

    def test_proxied_needs_a_token(self):
        """
        Behind haproxy: a peer's address comes from a PROXY line, so even a
        loopback or UNIX socket needs a token; the same address unproxied does not.
        """
        for port in (
            "haproxy:tcp:8003:interface=127.0.0.1",
            r"haproxy:tcp6:8003:interface=\:\:1",
            "haproxy:unix:/run/ccx.sock",
        ):
            message = self.assertRefusedAtStart("--port", port)
            self.assertIn("without a token", message)
            self.assertIn("through a proxy", message)
            self.assertIn("--token-file", message)
            self.assertEqual(len(message.splitlines()), 1)
            self.assertServes("--port", port.split(":", 1)[1])
            self.assertServes("--port", port, "--token-file", self.token_file())

    def test_proxied_on_every_interface(self):
        """haproxy on every interface without a token is refused too."""
        self.assertIn("without a token", self.assertRefusedAtStart("--port", "haproxy:tcp:8003"))

    def test_only_known_endpoints_are_direct(self):
        """Only Twisted's own direct endpoints, by exact type, count as direct."""
        class Wrapped(TCP4ServerEndpoint):
            pass

        memory = MemoryReactor()
        for port in ("tcp:1", "tcp6:1", "unix:/x"):
            self.assertTrue(accepts_directly(serverFromString(memory, port)), port)
        # What systemd:domain=INET:index=0 makes (test_twistd hands a real one over).
        self.assertTrue(accepts_directly(AdoptedStreamServerEndpoint(memory, 3, socket.AF_INET)))
        self.assertFalse(accepts_directly(serverFromString(memory, "haproxy:tcp:1")))
        self.assertFalse(accepts_directly(Wrapped(memory, 1)))


class BoundAddressTests(ConfigTestsMixin, TestCase):
    """
    Whether a token is needed is judged from the address the port really
    binds.
    """

    @inlineCallbacks
    def test_localhost(self):
        """A name that resolves to loopback binds a loopback address."""
        service = CCXService(self.parse("--port", "tcp:0:interface=localhost"), reactor)
        service.startService()
        self.addCleanup(service.stopService)
        port = yield service.when_listening()
        self.assertTrue(is_local(port.getHost()))

    def test_refused_port_closed(self):
        """A refused port is closed, and the service fails to listen."""
        message = self.assertRefusedAtStart("--port", "tcp:0")
        self.assertIn("'tcp:0' without a token", message)


class ListTests(ConfigTestsMixin, SynchronousTestCase):
    """
    Tests for the repeatable options.
    """

    def test_allow(self):
        """--allow may be repeated, in order."""
        config = self.parse("--allow", "ls", "--allow", "/bin/echo")
        self.assertEqual(config.allow, ("ls", "/bin/echo"))

    def test_allow_origin(self):
        """--allow-origin may be repeated, in order."""
        config = self.parse(
            "--allow-origin", "http://a.test", "--allow-origin", "https://b.test"
        )
        self.assertEqual(config.allow_origin, ("http://a.test", "https://b.test"))

    def test_fresh_lists(self):
        """Repeatable options do not leak from one Options to the next."""
        self.parse("--allow", "ls")
        self.assertEqual(self.parse().allow, ())


class NumberTests(ConfigTestsMixin, SynchronousTestCase):
    """
    Tests for numeric options.
    """

    def test_values(self):
        """Numbers are converted to the option's type."""
        config = self.parse(
            "--kill-grace", "0.5",
            "--buffer-bytes", "4096",
            "--buffer-lines", "10",
            "--max-processes", "2",
            "--max-connections", "3",
            "--keep-finished", "60",
            "--max-message-size", "1000",
            "--max-batch", "5",
            "--ping-interval", "2.5",
        )
        self.assertEqual(
            (
                config.kill_grace, config.buffer_bytes, config.buffer_lines,
                config.max_processes, config.max_connections, config.keep_finished,
                config.max_message_size, config.max_batch, config.ping_interval,
            ),
            (0.5, 4096, 10, 2, 3, 60.0, 1000, 5, 2.5),
        )
        self.assertIsInstance(config.max_processes, int)
        self.assertIsInstance(config.kill_grace, float)

    def test_not_a_number(self):
        """A word is refused, naming the option and the value."""
        message = self.assertRefused("--max-processes", "many")
        self.assertIn("--max-processes must be a number, not 'many'", message)

    def test_fraction_for_count(self):
        """A fraction is refused where a count is needed."""
        self.assertRefused("--buffer-bytes", "1.5")

    def test_not_positive(self):
        """Zero and negative counts are refused."""
        for value in ("0", "-1"):
            message = self.assertRefused("--max-connections", value)
            self.assertIn("--max-connections must be a positive number", message)

    def test_nan(self):
        """NaN is refused."""
        self.assertRefused("--keep-finished", "nan")

    def test_http_limits(self):
        """--handshake-timeout, --max-http-sessions and --http-session-idle: defaults, values, and 0 refused."""
        config = self.parse()
        self.assertEqual(
            (config.handshake_timeout, config.max_http_sessions, config.http_session_idle),
            (10.0, 64, 120.0),
        )
        config = self.parse(
            "--handshake-timeout", "2.5", "--max-http-sessions", "3", "--http-session-idle", "30"
        )
        self.assertEqual(
            (config.handshake_timeout, config.max_http_sessions, config.http_session_idle),
            (2.5, 3, 30.0),
        )
        for option in ("--handshake-timeout", "--max-http-sessions", "--http-session-idle"):
            self.assertIn("must be a positive number", self.assertRefused(option, "0"))

    def test_allow_host(self):
        """--allow-host is repeatable, and a TOML list too."""
        config = self.parse("--allow-host", "a.example", "--allow-host", "B.example:8443")
        self.assertEqual(config.allow_host, ("a.example", "b.example:8443"))
        path = self.mktemp()
        with open(path, "w") as f:
            f.write('allow-host = ["c.example"]\n')
        self.assertEqual(self.parse("--config", path).allow_host, ("c.example",))
        self.assertIn("not a URL", self.assertRefused("--allow-host", "https://a.example"))

    def test_kill_grace_zero(self):
        """A kill grace of zero is accepted; a negative one is not."""
        self.assertEqual(self.parse("--kill-grace", "0").kill_grace, 0.0)
        self.assertRefused("--kill-grace", "-1")


class HeldOutputTests(ConfigTestsMixin, SynchronousTestCase):
    """
    Tests for C{--held-output-bytes}, the service-wide budget of output held
    for subscribers.
    """

    def test_default(self):
        """256 MiB unless set."""
        self.assertEqual(self.parse().held_output_bytes, 256 * 1024 * 1024)

    def test_option_and_file(self):
        """Set on the command line or in the TOML file; one byte is a budget, zero is not."""
        self.assertEqual(self.parse("--held-output-bytes", "1").held_output_bytes, 1)
        path = self.write("held-output-bytes = 1048576\n")
        self.assertEqual(self.parse("--config", path).held_output_bytes, 1024 * 1024)
        message = self.assertRefused("--held-output-bytes", "0")
        self.assertIn("--held-output-bytes must be a positive number", message)
        self.assertRefused("--held-output-bytes", "1.5")

    def test_reaches_the_registry(self):
        """The service's registry holds its processes' output within it."""
        node = Node(self.parse("--held-output-bytes", "4096"), MemoryReactorClock())
        self.assertEqual(node.registry.held_output.max_bytes, 4096)


class LogOptionTests(ConfigTestsMixin, SynchronousTestCase):
    """
    Tests for C{--log-format} and C{--log-level}.
    """

    def test_formats(self):
        """text and json are accepted."""
        self.assertEqual(self.parse("--log-format", "json").log_format, "json")
        self.assertEqual(self.parse("--log-format", "text").log_format, "text")

    def test_bad_format(self):
        """Other formats are refused."""
        message = self.assertRefused("--log-format", "xml")
        self.assertIn("--log-format must be text or json", message)

    def test_levels(self):
        """Each level is accepted, in any case; warning means warn."""
        for given, level in (
            ("debug", "debug"), ("INFO", "info"), ("warn", "warn"),
            ("warning", "warn"), ("Error", "error"),
        ):
            self.assertEqual(self.parse("--log-level", given).log_level, level)

    def test_bad_level(self):
        """Other levels are refused, listing the valid ones."""
        message = self.assertRefused("--log-level", "verbose")
        self.assertIn("debug, info, warn, error", message)


class TokenTests(ConfigTestsMixin, SynchronousTestCase):
    """
    Tests for C{--token-file}.
    """

    def test_read(self):
        """The token is the file's content without surrounding whitespace."""
        self.assertEqual(
            self.parse("--token-file", self.token_file("  abc123 \n")).token, "abc123"
        )

    def test_empty(self):
        """An empty (or blank) token file is refused."""
        for text in ("", " \n\n"):
            path = self.token_file(text)
            message = self.assertRefused("--token-file", path)
            self.assertIn("empty", message)
            self.assertIn(path, message)

    def test_missing(self):
        """A missing token file is refused."""
        path = self.mktemp()
        message = self.assertRefused("--token-file", path)
        self.assertIn(path, message)


class FileTests(ConfigTestsMixin, SynchronousTestCase):
    """
    Tests for C{--config FILE}.
    """

    def test_settings(self):
        """Settings are read with dashed or underscored names."""
        path = self.write(
            'port = 9001\n'
            'kill-grace = 2\n'
            'max_processes = 8\n'
            'allow = ["ls", "cat"]\n'
            'allow-origin = "http://x.test"\n'
            'log-format = "json"\n'
        )
        config = self.parse("--config", path)
        self.assertEqual(config.port, "tcp:9001:interface=127.0.0.1")
        self.assertEqual(config.kill_grace, 2.0)
        self.assertEqual(config.max_processes, 8)
        self.assertEqual(config.allow, ("ls", "cat"))
        self.assertEqual(config.allow_origin, ("http://x.test",))
        self.assertEqual(config.log_format, "json")

    def test_token_file(self):
        """A token file can be named in the file."""
        path = self.write(
            f'port = "tcp:8003:interface=0.0.0.0"\ntoken-file = "{self.token_file()}"\n'
        )
        self.assertEqual(self.parse("-c", path).token, "s3cret")

    def test_command_line_overrides(self):
        """Options on the command line override the file's."""
        path = self.write('port = 9001\nmax-processes = 8\nlog-level = "debug"\n')
        config = self.parse("--config", path, "--port", "9002", "--log-level", "error")
        self.assertEqual(config.port, "tcp:9002:interface=127.0.0.1")
        self.assertEqual(config.log_level, "error")
        self.assertEqual(config.max_processes, 8)

    def test_lists_combined(self):
        """Repeatable options add to the file's lists."""
        path = self.write('allow = ["ls"]\n')
        config = self.parse("--config", path, "--allow", "cat")
        self.assertEqual(config.allow, ("ls", "cat"))

    def test_unknown_key(self):
        """An unknown setting is refused, naming it."""
        message = self.assertRefused("--config", self.write("max-procs = 3\n"))
        self.assertIn("unknown setting 'max-procs'", message)

    def test_token_key_refused(self):
        """The token itself cannot be written in the file."""
        self.assertRefused("--config", self.write('token = "abc"\n'))

    def test_bad_number(self):
        """A bad number in the file is refused."""
        self.assertRefused("--config", self.write('buffer-lines = "lots"\n'))
        self.assertRefused("--config", self.write("buffer-lines = -3\n"))

    def test_bool_is_not_a_number(self):
        """A boolean is refused where a number is needed."""
        message = self.assertRefused("--config", self.write("max-batch = true\n"))
        self.assertIn("--max-batch", message)

    def test_bad_list(self):
        """A repeatable setting must be a list of strings."""
        self.assertRefused("--config", self.write("allow = [1, 2]\n"))

    def test_not_toml(self):
        """A file that is not TOML is refused, saying so."""
        message = self.assertRefused("--config", self.write("port = \n"))
        self.assertIn("not valid TOML", message)

    def test_missing_file(self):
        """A missing file is refused, naming it."""
        path = self.mktemp()
        self.assertIn(path, self.assertRefused("--config", path))

    def test_non_loopback_in_file(self):
        """The loopback rule applies to a port from the file too."""
        self.assertRefusedAtStart("--config", self.write('port = "tcp:8003"\n'))


class EnvironmentOptionsTests(ConfigTestsMixin, SynchronousTestCase):
    """
    Tests for C{--allow-env}, C{--pass-env} and the default C{--deny-env}.
    """

    def test_defaults(self):
        """Clients may set nothing and the service hands nothing on, by default."""
        config = self.parse()
        self.assertEqual((config.allow_env, config.pass_env), ((), ()))

    def test_repeatable(self):
        """--allow-env and --pass-env may be repeated, in order, and come from a file too."""
        path = self.write('allow-env = ["APP_*"]\npass_env = "HOME"\n')
        config = self.parse(
            "-c", path, "--allow-env", "GREETING", "--pass-env", "API_KEY"
        )
        self.assertEqual(config.allow_env, ("APP_*", "GREETING"))
        self.assertEqual(config.pass_env, ("HOME", "API_KEY"))

    def test_not_a_name(self):
        """An empty entry, or one holding '=', is refused naming the option."""
        for option in ("--allow-env", "--pass-env", "--deny-env"):
            for entry in ("", "A=B"):
                message = self.assertRefused(option, entry)
                self.assertIn(f"{option} {entry!r}", message)

    def test_pass_env_pattern(self):
        """--pass-env takes names, not patterns."""
        self.assertIn("not a pattern", self.assertRefused("--pass-env", "LC_*"))

    def test_allowing_a_denied_name(self):
        """Allowing a name the deny list refuses anyway is refused at start, naming both."""
        message = self.assertRefused("--allow-env", "LD_PRELOAD")
        self.assertIn("--allow-env LD_PRELOAD: denied by --deny-env LD_*", message)
        self.assertRefused("--allow-env", "PATH")
        self.assertRefused("--allow-env", "BASH_FUNC_*")
        # The deny list replaced: allowed.
        config = self.parse("--allow-env", "PATH", "--deny-env", "LD_*")
        self.assertEqual((config.allow_env, config.deny_env), (("PATH",), ("LD_*",)))
        # Beside a denied name: allowed.
        self.assertEqual(self.parse("--allow-env", "PATHS").allow_env, ("PATHS",))

    def test_deny_list_names_the_issue(self):
        """The default deny list covers what reached code through a deny list with gaps."""
        for name in (
            "BASH_FUNC_x%%", "GIT_CONFIG_COUNT", "GIT_CONFIG_KEY_0", "GIT_CONFIG_VALUE_0",
            "PATH", "PERLLIB", "NODE_PATH", "_JAVA_OPTIONS", "LD_PRELOAD",
        ):
            self.assertTrue(any(fnmatchcase(name, p) for p in DEFAULT_DENY_ENV), name)


class DurableTests(ConfigTestsMixin, SynchronousTestCase):
    """
    C{--durable} and C{--state-dir}.
    """

    def test_not_durable_by_default(self):
        self.assertIs(self.parse().durable, False)

    def test_durable_flag(self):
        """--durable makes programs durable by default."""
        self.assertIs(self.parse("--durable").durable, True)

    def test_durable_in_toml(self):
        """durable = true in the file; anything but a boolean is refused (1 too)."""
        self.assertIs(self.parse("--config", self.write("durable = true\n")).durable, True)
        self.assertIs(self.parse("--config", self.write("durable = false\n")).durable, False)
        for wrong in ('"yes"', "1"):
            with self.assertRaises(ConfigError) as caught:
                self.parse("--config", self.write(f"durable = {wrong}\n"))
            self.assertIn("durable must be true or false", str(caught.exception))

    def test_state_dir_absolute(self):
        """--state-dir is made absolute: the keeper runs elsewhere."""
        self.assertEqual(self.parse("--state-dir", "rel").state_dir, os.path.abspath("rel"))

    def test_state_dir_empty(self):
        self.assertRaises(ConfigError, self.parse, "--state-dir", "")

    def test_state_dir_defaults(self):
        """
        $STATE_DIRECTORY (systemd; its first entry), else an absolute
        $XDG_STATE_HOME/ccx (a relative one is ignored, as the spec says),
        else ~/.local/state/ccx.
        """
        self.patch(os, "environ", {"HOME": "/home/u"})
        self.assertEqual(default_state_dir(), "/home/u/.local/state/ccx")
        os.environ["XDG_STATE_HOME"] = "relative"
        self.assertEqual(default_state_dir(), "/home/u/.local/state/ccx")
        os.environ["XDG_STATE_HOME"] = "/x/state"
        self.assertEqual(default_state_dir(), "/x/state/ccx")
        os.environ["STATE_DIRECTORY"] = "/var/lib/ccx:/var/lib/other"
        self.assertEqual(default_state_dir(), "/var/lib/ccx")
