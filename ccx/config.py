"""
The service's configuration: command-line options, optionally read from a
TOML file with the same names.
"""

import errno
import ipaddress
import os
import re
import sys
from dataclasses import dataclass, field, fields
from fnmatch import fnmatchcase
from typing import Any, Dict, Optional, Tuple

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.endpoints import (
    AdoptedStreamServerEndpoint,
    SSL4ServerEndpoint,
    TCP4ServerEndpoint,
    TCP6ServerEndpoint,
    UNIXServerEndpoint,
)
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IAddress, IStreamServerEndpoint
from twisted.python import usage

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from ccx import __version__
from ccx.journal.statedir import default_state_dir
from ccx.tokenfile import TokenFileError, read_token_file

DEFAULT_PORT = "tcp:8003:interface=127.0.0.1"
LOG_FORMATS = ("text", "json")
# Environment variables a client may not set even when --allow-env allows
# them, because they change what code an allowed program runs, or where it
# reads settings that can (shell-style patterns).
DEFAULT_DENY_ENV = (
    # the dynamic loader and the C library
    "LD_*",
    "DYLD_*",
    "GCONV_PATH",
    "GLIBC_TUNABLES",
    # shells: startup files, functions exported into bash, traced prompts
    "BASH_ENV",
    "ENV",
    "BASH_FUNC_*",
    "SHELLOPTS",
    "BASHOPTS",
    "PS4",
    "PROMPT_COMMAND",
    "ZDOTDIR",
    # where programs and configuration are found
    "PATH",
    "HOME",
    "XDG_CONFIG_HOME",
    "XDG_CONFIG_DIRS",
    "OPENSSL_CONF",
    "OPENSSL_ENGINES",
    # commands other programs run
    "SHELL",
    "EDITOR",
    "VISUAL",
    "PAGER",
    "MANPAGER",
    "BROWSER",
    "LESSOPEN",
    "LESSCLOSE",
    "SSH_ASKPASS",
    # git: configuration (core.fsmonitor runs a command), helpers, hooks
    "GIT_CONFIG*",
    "GIT_DIR",
    "GIT_EXEC_PATH",
    "GIT_TEMPLATE_DIR",
    "GIT_SSH",
    "GIT_SSH_COMMAND",
    "GIT_ASKPASS",
    "GIT_EDITOR",
    "GIT_SEQUENCE_EDITOR",
    "GIT_PAGER",
    "GIT_EXTERNAL_DIFF",
    "GIT_PROXY_COMMAND",
    # interpreters: module paths, start-up code, options
    "PYTHONPATH",
    "PYTHONHOME",
    "PYTHONSTARTUP",
    "PYTHONBREAKPOINT",
    "PYTHONUSERBASE",
    "PERL5LIB",
    "PERLLIB",
    "PERL5OPT",
    "PERL5DB",
    "RUBYLIB",
    "RUBYOPT",
    "GEM_HOME",
    "GEM_PATH",
    "NODE_OPTIONS",
    "NODE_PATH",
    "JAVA_TOOL_OPTIONS",
    "_JAVA_OPTIONS",
    "JDK_JAVA_OPTIONS",
    "CLASSPATH",
    "PHPRC",
    "PHP_INI_SCAN_DIR",
    "LUA_PATH*",
    "LUA_CPATH*",
    "LUA_INIT*",
    "TCLLIBPATH",
)
LOG_LEVELS = ("debug", "info", "warn", "error")
# How a program's processes are held together (--containment).
CONTAINMENTS = ("auto", "cgroup", "process-group")


class ConfigError(usage.UsageError):
    """
    The configuration cannot be used; the message says what to change.
    """


@dataclass(frozen=True)
class Config:
    """
    Everything that can be configured, with docs/protocol.md's defaults.
    """

    port: str = DEFAULT_PORT
    allow: Tuple[str, ...] = ()
    token: Optional[str] = field(default=None, repr=False)
    allow_origin: Tuple[str, ...] = ()
    allow_env: Tuple[str, ...] = ()
    allow_host: Tuple[str, ...] = ()
    deny_env: Tuple[str, ...] = DEFAULT_DENY_ENV
    pass_env: Tuple[str, ...] = ()
    max_requests: float = 200.0
    kill_grace: float = 5.0
    buffer_bytes: int = 1024 * 1024
    buffer_lines: int = 10000
    max_processes: int = 64
    max_connections: int = 1024
    keep_finished: float = 300.0
    max_finished: int = 64
    held_output_bytes: int = 256 * 1024 * 1024
    log_format: str = "text"
    log_level: str = "info"
    log_format_given: bool = False
    max_message_size: int = 1024 * 1024
    max_batch: int = 100
    ping_interval: float = 30.0
    handshake_timeout: float = 10.0
    max_http_sessions: int = 64
    http_session_idle: float = 120.0
    cwd: str = field(default_factory=os.getcwd)
    state_dir: str = field(default_factory=default_state_dir)
    journal: bool = True
    durable: bool = False
    journal_bytes: int = 64 * 1024 * 1024
    journal_total_bytes: int = 1024 * 1024 * 1024
    containment: str = "auto"
    # allow_host parsed once, as check_host compares them: (name, port or None).
    host_names: Tuple[Tuple[str, Optional[int]], ...] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "host_names", tuple(_host_name(h) for h in self.allow_host))


def endpoint_description(port: str) -> str:
    """
    A bare port number means that port on the loopback interface; anything
    else is a Twisted server endpoint string.
    """
    port = str(port).strip()
    if port.isdigit():
        return f"tcp:{port}:interface=127.0.0.1"
    return port


def is_local(address: IAddress) -> bool:
    """
    Whether a listening address is reachable from this machine only: a
    loopback IP address or a UNIX socket.  Any other address, including one
    of a kind whose reach cannot be known, is not.
    """
    if isinstance(address, UNIXAddress):
        return True
    if isinstance(address, (IPv4Address, IPv6Address)):
        try:
            return ipaddress.ip_address(address.host).is_loopback
        except ValueError:
            return False
    return False


# Endpoints whose connections come straight from their peers (tcp, tcp6,
# ssl, unix, systemd): the address their port binds says who can reach it.
# Any other kind may wrap one of these (haproxy: takes the peer's address
# from a PROXY line the peer itself may have written), so it is trusted with
# no more than a token.
_DIRECT_ENDPOINTS = (
    TCP4ServerEndpoint,
    TCP6ServerEndpoint,
    SSL4ServerEndpoint,
    UNIXServerEndpoint,
    AdoptedStreamServerEndpoint,
)


def accepts_directly(endpoint: IStreamServerEndpoint) -> bool:
    """
    Whether connections to C{endpoint} come straight from their peers,
    rather than through a proxy or a wrapper whose reach cannot be known.
    """
    # The exact type: a subclass may do anything with its connections.
    return type(endpoint) in _DIRECT_ENDPOINTS


def check_listening(config: Config, address: IAddress, direct: bool) -> None:
    """
    Refuse to serve on C{address}, the one actually bound, when anyone who
    can reach it could run the allowed programs.

    @param direct: whether peers connect to C{address} themselves (see
        L{accepts_directly}); when they come through a proxy, the proxy's
        reach is unknown and a token is always needed.
    @raise ConfigError: when no token is set and C{address} is not local or
        connections are proxied.
    """
    if config.token is not None:
        return
    if not direct:
        raise ConfigError(
            f"refusing to listen on {config.port!r} without a token: connections "
            "come through a proxy, so anyone who reaches the proxy could run the "
            "allowed programs. Give --token-file FILE."
        )
    if not is_local(address):
        raise ConfigError(
            f"refusing to listen on {config.port!r} without a token: anyone who can "
            "reach it could run the allowed programs. Give --token-file FILE, or "
            "listen on a loopback interface (interface=127.0.0.1)."
        )


def listen_refusal(error: Exception) -> Exception:
    """
    What to tell the user when the port cannot be opened: a L{ConfigError}
    saying what to do for a L{CannotListenError} (port in use, a port only
    root may open, an address this machine does not have), else C{error}.
    """
    if not isinstance(error, CannotListenError):
        return error
    cause = error.socketError
    number = getattr(cause, "errno", None)
    where = error.port if not error.interface else f"{error.interface}:{error.port}"
    if number == errno.EADDRINUSE:
        return ConfigError(f"port {error.port} is in use; choose another with --port")
    if number == errno.EACCES and isinstance(error.port, int):
        return ConfigError(
            f"cannot listen on port {error.port}: permission denied (ports below 1024 "
            "need root or CAP_NET_BIND_SERVICE); choose another with --port"
        )
    if number == errno.EADDRNOTAVAIL:
        return ConfigError(
            f"cannot listen on {where}: this machine has no such address; "
            "choose another interface in --port"
        )
    why = getattr(cause, "strerror", None) or str(cause)
    return ConfigError(f"cannot listen on {where}: {why}")


_NUMBERS: Dict[str, type] = {
    "kill_grace": float,
    "buffer_bytes": int,
    "buffer_lines": int,
    "max_processes": int,
    "max_connections": int,
    "keep_finished": float,
    "max_finished": int,
    "held_output_bytes": int,
    "max_message_size": int,
    "max_batch": int,
    "ping_interval": float,
    "max_requests": float,
    "handshake_timeout": float,
    "max_http_sessions": int,
    "http_session_idle": float,
    "journal_bytes": int,
    "journal_total_bytes": int,
}
_LISTS = ("allow", "allow_origin", "allow_host", "allow_env", "deny_env", "pass_env")
_FLAGS = ("journal",)
_NAMES = {f.name for f in fields(Config)} - {"token", "log_format_given"} | {"token_file"}


# The smallest --max-message-size: room for any notification's envelope
# (every reply and notification must fit, output cut to size included).
MIN_MESSAGE_SIZE = 512
# The least value of the numbers that need not be positive or must be more;
# every other number must be positive.
_MINIMUMS: Dict[str, int] = {"kill_grace": 0, "max_message_size": MIN_MESSAGE_SIZE}


def _number(name: str, value: Any) -> Any:
    option = "--" + name.replace("_", "-")
    kind = _NUMBERS[name]
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{option} must be a number, not {value!r}")
    least = _MINIMUMS.get(name)
    if least is None:
        in_range, wanted = number > 0, "a positive number"
    else:
        in_range, wanted = number >= least, f"at least {least}"
    if isinstance(value, bool) or not in_range:
        raise ConfigError(f"{option} must be {wanted}")
    return number


def read_toml(path: str) -> Dict[str, Any]:
    """
    Read a configuration file: option names as keys (C{kill-grace} or
    C{kill_grace}), lists for repeatable options.
    """
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"--config {path}: {e.strerror}")
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"--config {toml_error_place(path, str(e))}") from None
    values = {}
    for key, value in raw.items():
        name = key.replace("-", "_")
        if name not in _NAMES:
            raise ConfigError(f"--config {path}: unknown setting {key!r}")
        if name in _LISTS and isinstance(value, str):
            value = [value]
        values[name] = value
    return values


def toml_error_place(path: str, message: str) -> str:
    """
    Where a TOML file is wrong and why, as an editor shows it: C{FILE:LINE:
    not valid TOML: WHY} (tomllib says "at line N, column M", or "at end of
    document", the file's last line).
    """
    why, _, where = message.rpartition(" (at ")
    if not why:
        return f"{path}: not valid TOML: {message}"
    found = re.fullmatch(r"line (\d+), column (\d+)\)", where)
    if found is not None:
        place = f"{path}:{found.group(1)}:{found.group(2)}"
    else:
        try:
            with open(path, "rb") as f:
                lines = f.read().count(b"\n") or 1
        except OSError:
            lines = 1
        place = f"{path}:{lines}"
    return f"{place}: not valid TOML: {why[:1].lower()}{why[1:]}"


def build_config(values: Dict[str, Any]) -> Config:
    """
    Check and combine settings into a L{Config}.

    @raise ConfigError: when a setting is wrong, saying what to change.
    """
    settings: Dict[str, Any] = {}
    for name, value in values.items():
        if value is None:
            continue
        if name in _NUMBERS:
            settings[name] = _number(name, value)
        elif name in _LISTS:
            if not isinstance(value, (list, tuple)) or not all(
                isinstance(v, str) for v in value
            ):
                raise ConfigError(f"{name.replace('_', '-')} must be a list of strings")
            settings[name] = tuple(value)
        elif name == "token_file":
            settings["token"] = _read_token(value)
        elif name in _FLAGS or name == "durable":
            if not isinstance(value, bool):
                raise ConfigError(f"{name.replace('_', '-')} must be true or false")
            settings[name] = value
        else:
            settings[name] = str(value)
    if "port" in settings:
        settings["port"] = endpoint_description(settings["port"])
    if "state_dir" in settings:
        if not settings["state_dir"]:
            raise ConfigError("--state-dir must name a directory")
        settings["state_dir"] = os.path.abspath(settings["state_dir"])
    _check_env_settings(settings)
    _check_origins(settings.get("allow_origin", ()))
    if "allow_host" in settings:
        # Config checks and parses them (Config.host_names).
        settings["allow_host"] = tuple(h.strip().lower() for h in settings["allow_host"])
    if settings.get("log_format", "text") not in LOG_FORMATS:
        raise ConfigError("--log-format must be text or json")
    level = settings.get("log_level", "info").lower()
    if level == "warning":
        level = "warn"
    if level not in LOG_LEVELS:
        raise ConfigError("--log-level must be one of " + ", ".join(LOG_LEVELS))
    settings["log_level"] = level
    if settings.get("containment", "auto") not in CONTAINMENTS:
        raise ConfigError("--containment must be one of " + ", ".join(CONTAINMENTS))
    settings["log_format_given"] = "log_format" in values or "log_level" in values
    # Whether the port may listen without a token is judged from the address
    # it binds, when the service starts (check_listening).
    return Config(**settings)


def _check_env_settings(settings: Dict[str, Any]) -> None:
    """
    Refuse environment settings that name no variable, or that allow a name
    the deny list refuses anyway (it would never take effect).
    """
    for name in ("allow_env", "deny_env", "pass_env"):
        for entry in settings.get(name, ()):
            if not entry or "=" in entry or "\0" in entry:
                option = "--" + name.replace("_", "-")
                raise ConfigError(f"{option} {entry!r}: give a variable name (no '=')")
    for entry in settings.get("pass_env", ()):
        if any(c in entry for c in "*?["):
            raise ConfigError(f"--pass-env {entry!r}: give a variable name, not a pattern")
    deny = settings.get("deny_env", DEFAULT_DENY_ENV)
    for entry in settings.get("allow_env", ()):
        for pattern in deny:
            if fnmatchcase(entry, pattern):
                raise ConfigError(
                    f"--allow-env {entry}: denied by --deny-env {pattern} (it changes "
                    "what code a program runs); see docs/running.md"
                )


def _check_origins(origins: Tuple[str, ...]) -> None:
    # Sandboxed frames, file: pages and redirects all send "Origin: null":
    # allowing it would allow any web page.
    if any(origin.strip().lower() == "null" for origin in origins):
        raise ConfigError(
            "--allow-origin null would let any web page in (sandboxed frames and file: "
            "pages send it); give the page's real origin"
        )


def split_host(value: str) -> Tuple[str, Optional[int]]:
    """
    A C{Host} header's name (lowercased, an IPv6 address kept in brackets)
    and port, or L{None} for the port when it has none.

    @raise ValueError: when the port is not a number.
    """
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        if end == -1:
            raise ValueError(value)
        name, rest = value[: end + 1], value[end + 1 :]
        if not rest:
            return name, None
        if rest[:1] != ":" or not rest[1:].isdigit():
            raise ValueError(value)
        return name, int(rest[1:])
    name, colon, port = value.partition(":")
    if not colon:
        return name, None
    if not port.isdigit():
        raise ValueError(value)
    return name, int(port)


def _host_name(host: str) -> Tuple[str, Optional[int]]:
    """
    One C{--allow-host}: C{NAME} or C{NAME:PORT} (an IPv6 address in
    brackets), as a C{Host} header would carry it.

    @raise ConfigError: when it is anything else.
    """
    refusal = ConfigError(
        f"--allow-host {host!r} must be a host name, optionally with :PORT "
        "(as a Host header carries it), not a URL"
    )
    if any(c in host for c in "/@?# \t"):
        raise refusal
    try:
        name, port = split_host(host)
    except ValueError:
        raise refusal
    if not name:
        raise refusal
    return name, port


def _read_token(path: str) -> str:
    try:
        return read_token_file(path)
    except TokenFileError as e:
        raise ConfigError(str(e)) from None


class Options(usage.Options):
    """
    C{twistd ccx} options (docs/protocol.md section 7).
    """

    synopsis = "[options]"
    longdesc = (
        "Run and steer programs over one WebSocket speaking JSON-RPC 2.0 "
        "(ws://HOST:PORT/ws/mcp), with /health on the same port."
    )

    optParameters = [
        ["config", "c", None, "Read settings from this TOML file (the same names)."],
        ["port", "p", None, f"Port number or Twisted endpoint [default: {DEFAULT_PORT}]."],
        ["token-file", None, None, "Require the bearer token held in this file."],
        ["kill-grace", None, None, "Seconds between SIGTERM and SIGKILL [default: 5]."],
        ["buffer-bytes", None, None, "Output bytes held per stream [default: 1048576]."],
        ["buffer-lines", None, None, "Output lines held per stream [default: 10000]."],
        ["max-processes", None, None, "Live processes at once [default: 64]."],
        [
            "max-connections",
            None,
            None,
            "Open WebSockets and HTTP requests still arriving, at once [default: 1024].",
        ],
        ["keep-finished", None, None, "Seconds finished processes are kept [default: 300]."],
        ["max-finished", None, None, "Finished processes kept at most; oldest go first [default: 64]."],
        [
            "held-output-bytes",
            None,
            None,
            "Output held for subscribers by all processes together; past it finished "
            "processes' oldest output is released [default: 268435456].",
        ],
        ["log-format", None, None, "text or json [default: text]."],
        ["log-level", None, None, "debug, info, warn or error [default: info]."],
        [
            "max-message-size",
            None,
            None,
            "Largest message in either direction, and most reply bytes a connection may "
            "leave unread; at least 512 [default: 1048576].",
        ],
        ["max-batch", None, None, "Most calls in one batch [default: 100]."],
        ["ping-interval", None, None, "Seconds between WebSocket pings [default: 30]."],
        ["cwd", None, None, "Default working directory of programs [default: current]."],
        ["max-requests", None, None, "Requests per second per connection [default: 200]."],
        ["handshake-timeout", None, None, "Seconds a client has to send a whole HTTP request [default: 10]."],
        ["max-http-sessions", None, None, "MCP sessions over HTTP at once [default: 64]."],
        ["http-session-idle", None, None, "Seconds an MCP HTTP session without an open stream lives idle [default: 120]."],
        [
            "state-dir",
            None,
            None,
            "Where programs' records and output journals are kept [default: "
            "$STATE_DIRECTORY, else $XDG_STATE_HOME/ccx, else ~/.local/state/ccx].",
        ],
        [
            "journal-bytes",
            None,
            None,
            "Output journaled per program; past it the oldest goes [default: 67108864].",
        ],
        [
            "journal-total-bytes",
            None,
            None,
            "Output journaled by all programs together [default: 1073741824].",
        ],
        [
            "containment",
            None,
            None,
            "How each program's processes are held: cgroup (a cgroup v2 of its own; "
            "fails at start where none can be written), process-group, or auto (a "
            "cgroup where one can be written) [default: auto].",
        ],
    ]

    optFlags = [
        ["durable", None, "Start programs durable unless a client says otherwise."],
        [
            "no-journal",
            None,
            "Keep no journal and no records: output lives in memory only, and "
            "nothing is written to the state dir.",
        ],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["allow"] = []
        self["allow_origin"] = []
        self["allow_env"] = []
        self["allow_host"] = []
        self["deny_env"] = []
        self["pass_env"] = []

    def opt_version(self) -> None:
        """
        Display ccx's version and exit.
        """
        sys.stdout.write(f"ccx {__version__}\n")
        sys.stdout.flush()
        raise SystemExit(0)

    def opt_allow(self, program: str) -> None:
        """
        Allow a program: a name looked up on PATH, or an absolute path (repeatable).
        """
        self["allow"].append(program)

    def opt_allow_env(self, pattern: str) -> None:
        """
        Let clients set this environment variable in execute's env: a name or
        a shell-style pattern (repeatable; none by default).
        """
        self["allow_env"].append(pattern)

    def opt_pass_env(self, name: str) -> None:
        """
        Hand this variable of the service's own environment on to every
        program (repeatable).
        """
        self["pass_env"].append(name)

    def opt_deny_env(self, pattern: str) -> None:
        """
        Refuse this environment variable (a shell-style pattern) in execute's
        env even when --allow-env allows it (repeatable; replaces the default
        list, see docs/running.md).
        """
        self["deny_env"].append(pattern)

    def opt_allow_origin(self, origin: str) -> None:
        """
        Allow browser connections from this origin (repeatable).
        """
        self["allow_origin"].append(origin)

    def opt_allow_host(self, host: str) -> None:
        """
        Answer /mcp requests whose Host header names this host, as well as
        the listening address (repeatable; NAME or NAME:PORT).
        """
        self["allow_host"].append(host)

    _config: Optional[Config] = None

    @property
    def config(self) -> Config:
        """
        The settings given, checked (once, when first asked for).

        Checked here rather than in C{postOptions}: twistd answers a
        L{usage.UsageError} from parsing with the whole usage text, where a
        wrong setting needs one line (C{makeService} asks for it, and a
        L{ConfigError} there is shown as its line).

        @raise ConfigError: when a setting is wrong, saying what to change.
        """
        if self._config is None:
            self._config = self._build()
        return self._config

    def _build(self) -> Config:
        values: Dict[str, Any] = {}
        if self["config"]:
            values.update(read_toml(self["config"]))
        for name in _NAMES:
            option = self.get(name.replace("_", "-"), self.get(name))
            if name in _LISTS:
                if option:
                    values[name] = list(values.get(name, [])) + list(option)
            elif name == "durable":
                if option:
                    values[name] = True
            elif name in _FLAGS:
                if self["no-" + name.replace("_", "-")]:
                    values[name] = False
            elif option is not None:
                values[name] = option
        return build_config(values)
