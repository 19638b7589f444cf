"""
Who may talk to the service: the origin and bearer-token rules of
docs/protocol.md section 2, shared by the WebSocket handshake, the MCP HTTP
endpoint and C{/metrics} so that all refuse the same requests with the same
codes.
"""

import hmac
from typing import List, Mapping, Optional, Sequence, Tuple

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.interfaces import IAddress
from twisted.logger import Logger
from twisted.web.iweb import IRequest

from ccx.config import Config, is_local, split_host

log = Logger()


class AccessDenied(Exception):
    """
    A request the service refuses before reading it.

    @ivar code: the HTTP status to answer with (401 or 403).
    @ivar reason: a sentence a person can act on (never holding the token).
    """

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason

    @property
    def headers(self) -> Tuple[Tuple[str, str], ...]:
        """
        The response headers of the refusal: a challenge when the token is
        what is missing (401).
        """
        return (("WWW-Authenticate", 'Bearer realm="ccx"'),) if self.code == 401 else ()


def bearer_token(authorization: Optional[str], query_tokens: Sequence[str]) -> Optional[str]:
    """
    The token a request carries: C{Authorization: Bearer TOKEN}, or else the
    first C{?token=} query parameter (for browsers, which cannot set headers
    on a WebSocket).
    """
    header = authorization or ""
    if header[:7].lower() == "bearer ":
        return header[7:].strip()
    return query_tokens[0] if query_tokens else None


def carries_token(
    config: Config, authorization: Optional[str], query_tokens: Sequence[str] = ()
) -> bool:
    """
    Whether a request carries the configured token (always, when none is
    configured): exactly that token, compared in constant time, so that an
    empty token or a prefix of it is no token.
    """
    if config.token is None:
        return True
    given = bearer_token(authorization, query_tokens)
    return given is not None and hmac.compare_digest(
        given.encode("utf-8"), config.token.encode("utf-8")
    )


def header_text(request: IRequest, name: bytes) -> Optional[str]:
    """
    A C{twisted.web} request's header as text, or L{None} when absent.
    """
    value = request.getHeader(name)
    return None if value is None else value.decode("latin-1")


def token_parameters(args: Mapping[bytes, Sequence[bytes]]) -> List[str]:
    """
    The values of the C{token} query parameter, from a request's C{args}
    (as C{parse_qs} gives them).
    """
    return [t.decode("utf-8", "replace") for t in args.get(b"token", [])]


def check_origin(
    config: Config,
    origin: Optional[str],
    local: Optional[IAddress] = None,
    secure: bool = False,
) -> None:
    """
    Refuse (403) a request from an origin that is not allowed: one given
    with C{--allow-origin}, or one naming the service itself (L{is_own_origin})
    when C{local} is known.

    @param origin: the C{Origin} header, or L{None} when absent.
    @param local: the address of this end of the connection.
    @param secure: whether the request came over TLS.
    @raise AccessDenied: when the request must be refused.
    """
    if origin is None or origin in config.allow_origin:
        return
    if local is not None and is_own_origin(config, origin, local, secure):
        return
    log.warn("refused a connection from origin {origin}", origin=origin)
    raise AccessDenied(
        403, f"origin {origin} is not allowed (start ccx with --allow-origin)"
    )


def is_own_origin(config: Config, origin: str, local: IAddress, secure: bool) -> bool:
    """
    Whether an C{Origin} names this service: its scheme is the one the
    request came with (C{https} over TLS, else C{http}) and its host and
    port name the address the client reached, or a C{--allow-host} name
    (as L{check_host} judges a C{Host}).  A page this service served
    itself (the dashboard) has such an origin; a page of another site does
    not, whatever C{Host} it makes its request carry: the request's own
    C{Host} is never what decides.
    """
    scheme, sep, authority = origin.partition("://")
    if not sep or scheme.lower() != ("https" if secure else "http"):
        return False
    if not authority or any(c in authority for c in "/?#@\\ "):
        return False
    try:
        name, port = split_host(authority)
    except ValueError:
        return False
    return names_service(config, name, port, local, secure)


def check_access(
    config: Config,
    origin: Optional[str],
    authorization: Optional[str],
    query_tokens: Sequence[str] = (),
    local: Optional[IAddress] = None,
    secure: bool = False,
) -> None:
    """
    Refuse a request from an origin that is not allowed (403), then one
    without the configured token (401).

    @param origin: the C{Origin} header, or L{None} when absent.
    @param authorization: the C{Authorization} header, or L{None}.
    @param query_tokens: the values of the C{token} query parameter.
    @param local: the address of this end of the connection, when known:
        an origin naming it is the service's own (L{check_origin}).
    @param secure: whether the request came over TLS.
    @raise AccessDenied: when the request must be refused.
    """
    check_origin(config, origin, local, secure)
    if not carries_token(config, authorization, query_tokens):
        log.warn("refused a connection with a missing or wrong token")
        raise AccessDenied(401, "a valid bearer token is required")


def check_request_host(config: Config, request: IRequest) -> None:
    """
    L{check_host} for a C{twisted.web} request.
    """
    check_host(config, header_text(request, b"host"), request.getHost(), request.isSecure())


def check_web_request(
    config: Config,
    request: IRequest,
    host: bool = False,
    args: Optional[Mapping[bytes, Sequence[bytes]]] = None,
) -> None:
    """
    Judge a C{twisted.web} request by its head: its C{Host} (when C{host}),
    its origin, its token.

    @param args: the parameters of its query, when the request has not
        parsed them yet (the channel judges a request before its body);
        by default C{request.args}.
    @raise AccessDenied: when the request must be refused.
    """
    if host:
        check_request_host(config, request)
    check_access(
        config,
        header_text(request, b"origin"),
        header_text(request, b"authorization"),
        token_parameters(request.args if args is None else args),
        local=request.getHost(),
        secure=request.isSecure(),
    )


_LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")


def check_host(
    config: Config, host: Optional[str], local: IAddress, secure: bool
) -> None:
    """
    Refuse (403) a request whose C{Host} header names neither the address
    the client reached (C{local}: its host and port; C{localhost},
    C{127.0.0.1} and C{[::1]} too when that is a loopback address) nor a
    name given with C{--allow-host}.  This is what keeps a web page whose
    own name its attacker pointed at 127.0.0.1 (DNS rebinding) out.  A UNIX
    socket, which no browser reaches, takes any C{Host}.

    @param local: the address of this end of the connection.
    @param secure: whether the request came over TLS (the default port is
        then 443, not 80).
    @raise AccessDenied: when the request must be refused.
    """
    if isinstance(local, UNIXAddress):
        return
    refusal = AccessDenied(
        403,
        f"the Host header {host!r} does not name this service (start ccx with "
        "--allow-host NAME to answer another name)",
    )
    if host is None:
        raise refusal
    try:
        name, port = split_host(host)
    except ValueError:
        raise refusal
    if not names_service(config, name, port, local, secure):
        log.warn("refused a request for host {host}", host=host)
        raise refusal


def names_service(
    config: Config, name: str, port: Optional[int], local: IAddress, secure: bool
) -> bool:
    """
    Whether a host name and port (as L{split_host} gives them; no port for
    the scheme's default) name this service: a C{--allow-host} name, or
    the address the client reached (its loopback names too when that is a
    loopback address) with its port.
    """
    for allowed_name, allowed_port in config.host_names:
        if name == allowed_name and allowed_port in (None, port):
            return True
    if not isinstance(local, (IPv4Address, IPv6Address)):
        return False
    names = {local.host if isinstance(local, IPv4Address) else f"[{local.host}]"}
    if is_local(local):
        names.update(_LOOPBACK_NAMES)
    if port is None:
        port = 443 if secure else 80
    return name in names and port == local.port
