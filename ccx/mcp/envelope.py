"""
The stateless era of MCP (revision 2026-07-28): there is no handshake;
every request carries its protocol version and the client's capabilities in
C{params._meta} (its I{envelope}), over HTTP the C{MCP-Protocol-Version},
C{Mcp-Method} and C{Mcp-Name} headers repeat them, and every result says
its C{resultType}.  A request without the envelope belongs to the
handshake era (C{initialize}, 2025-11-25 and older).
"""

import base64
import binascii
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Mapping, Optional

from ccx.mcp.session import LOG_LEVELS, SUPPORTED_VERSIONS
from ccx.rpc.errors import RPCError, invalid_params

# The revisions served without a handshake, newest first.
STATELESS_VERSIONS = ("2026-07-28",)
# Every revision ccx speaks, newest first: what a refusal lists.
ALL_VERSIONS = STATELESS_VERSIONS + SUPPORTED_VERSIONS

PROTOCOL_VERSION_KEY = "io.modelcontextprotocol/protocolVersion"
CAPABILITIES_KEY = "io.modelcontextprotocol/clientCapabilities"
CLIENT_INFO_KEY = "io.modelcontextprotocol/clientInfo"
LOG_LEVEL_KEY = "io.modelcontextprotocol/logLevel"
SERVER_INFO_KEY = "io.modelcontextprotocol/serverInfo"

# The errors the stateless era adds (HTTP answers them with 400).
HEADER_MISMATCH = -32020
MISSING_CAPABILITY = -32021
UNSUPPORTED_VERSION = -32022

# Which parameter the Mcp-Name header repeats, by method.
NAMED_BY = {"tools/call": "name", "tasks/get": "taskId", "tasks/update": "taskId", "tasks/cancel": "taskId"}


@dataclass(frozen=True)
class Envelope:
    """
    What one stateless-era request says about itself.
    """

    version: str
    capabilities: Dict[str, Any]
    client_info: Optional[Dict[str, Any]] = None
    log_level: Optional[str] = None
    extensions: Dict[str, Any] = field(default_factory=dict)

    def has_extension(self, name: str) -> bool:
        return name in self.extensions


def requested_version(params: Any) -> Optional[Any]:
    """
    The protocol version a request's envelope names, or L{None} when it has
    no envelope (a handshake-era request).
    """
    if not isinstance(params, dict):
        return None
    meta = params.get("_meta")
    if not isinstance(meta, dict) or PROTOCOL_VERSION_KEY not in meta:
        return None
    return meta[PROTOCOL_VERSION_KEY]


def unsupported(requested: Any) -> RPCError:
    """
    The refusal of a version ccx does not speak, with the list it does.
    """
    return RPCError(
        UNSUPPORTED_VERSION,
        f"unsupported protocol version {requested!r}: ccx speaks "
        + ", ".join(ALL_VERSIONS)
        + " (2026-07-28 without a handshake, the others after initialize)",
        {"supported": list(ALL_VERSIONS), "requested": requested},
    )


def envelope_of(params: Any, method: str) -> Envelope:
    """
    The envelope of a stateless-era request.

    @raise RPCError: -32602 when it lacks the version or the capabilities,
        -32022 when its version is not one ccx speaks without a handshake.
    """
    meta = params.get("_meta") if isinstance(params, dict) else None
    if not isinstance(meta, dict):
        raise invalid_params(
            f"invalid params: {method} needs params._meta with {PROTOCOL_VERSION_KEY!r} "
            f"and {CAPABILITIES_KEY!r} (or an initialize handshake first)"
        )
    missing = [k for k in (PROTOCOL_VERSION_KEY, CAPABILITIES_KEY) if k not in meta]
    if missing:
        raise invalid_params(
            "invalid params: params._meta lacks " + " and ".join(repr(k) for k in missing)
        )
    version = meta[PROTOCOL_VERSION_KEY]
    if not isinstance(version, str):
        raise invalid_params(f"invalid params: {PROTOCOL_VERSION_KEY!r} must be a string")
    if version not in STATELESS_VERSIONS:
        raise unsupported(version)
    capabilities = meta[CAPABILITIES_KEY]
    if not isinstance(capabilities, dict):
        raise invalid_params(f"invalid params: {CAPABILITIES_KEY!r} must be an object")
    level = meta.get(LOG_LEVEL_KEY)
    if level is not None and level not in LOG_LEVELS:
        raise invalid_params(
            f"invalid params: {LOG_LEVEL_KEY!r} must be one of " + ", ".join(LOG_LEVELS)
        )
    info = meta.get(CLIENT_INFO_KEY)
    extensions = capabilities.get("extensions")
    return Envelope(
        version,
        capabilities,
        info if isinstance(info, dict) else None,
        level,
        extensions if isinstance(extensions, dict) else {},
    )


def check_headers(message: Mapping[str, Any], header: Callable[[str], Optional[str]]) -> None:
    """
    Over HTTP, the routing headers must repeat the body: the version, the
    method, and the name of what a named method acts on.

    @param header: the value of a request header (L{None} when absent).
    @raise RPCError: -32020 naming the header that does not match.
    """
    params = message.get("params")
    version = requested_version(params)
    if header("mcp-protocol-version") != version:
        raise RPCError(
            HEADER_MISMATCH,
            "header mismatch: MCP-Protocol-Version must repeat params._meta's "
            f"{PROTOCOL_VERSION_KEY!r} ({version!r})",
        )
    method = message.get("method")
    if header("mcp-method") != method:
        raise RPCError(
            HEADER_MISMATCH, f"header mismatch: Mcp-Method must repeat the method ({method!r})"
        )
    key = NAMED_BY.get(method)
    if key is not None and isinstance(params, dict) and params.get(key) is not None:
        if _decoded(header("mcp-name")) != params[key]:
            raise RPCError(
                HEADER_MISMATCH,
                f"header mismatch: Mcp-Name must repeat params.{key} ({params[key]!r})",
            )


def _decoded(value: Optional[str]) -> Optional[str]:
    """
    A header value, unwrapped from the C{=?base64?...?=} form clients use
    for what HTTP cannot carry as it is.
    """
    if value is not None and value.startswith("=?base64?") and value.endswith("?="):
        try:
            return base64.b64decode(value[9:-2], validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
    return value


# How the stateless era's HTTP answers a JSON-RPC error: 400 for what the
# request got wrong, 404 for a method ccx does not have.
HTTP_STATUS = {
    -32700: 400,
    -32600: 400,
    -32602: 400,
    HEADER_MISMATCH: 400,
    MISSING_CAPABILITY: 400,
    UNSUPPORTED_VERSION: 400,
    -32601: 404,
}
