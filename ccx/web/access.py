"""
Who may talk to the service: the origin and bearer-token rules of
docs/protocol.md section 2, shared by the WebSocket handshake and the MCP HTTP
endpoint so that both refuse the same requests with the same codes.
"""

import hmac
from typing import Optional, Sequence

from twisted.logger import Logger

from ccx.config import Config

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


def check_access(
    config: Config,
    origin: Optional[str],
    authorization: Optional[str],
    query_tokens: Sequence[str] = (),
) -> None:
    """
    Refuse a request from an origin that is not allowed (403), then one
    without the configured token (401).

    @param origin: the C{Origin} header, or L{None} when absent.
    @param authorization: the C{Authorization} header, or L{None}.
    @param query_tokens: the values of the C{token} query parameter.
    @raise AccessDenied: when the request must be refused.
    """
    if origin is not None and origin not in config.allow_origin:
        log.warn("refused a connection from origin {origin}", origin=origin)
        raise AccessDenied(
            403, f"origin {origin} is not allowed (start ccx with --allow-origin)"
        )
    if config.token is not None:
        given = bearer_token(authorization, query_tokens)
        if given is None or not hmac.compare_digest(
            given.encode("utf-8"), config.token.encode("utf-8")
        ):
            log.warn("refused a connection with a missing or wrong token")
            raise AccessDenied(401, "a valid bearer token is required")
