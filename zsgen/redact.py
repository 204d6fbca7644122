"""Keeping credentials out of what zsgen writes and prints.

A base URL may carry a password (``http://user:PASS@host/v1``, basic auth for a proxy) or a key in its query
(``?api_key=...``). zsgen records and prints base URLs in many places: the resolved ``config.toml`` of an evaluation,
error messages, ``-v`` logs (its own and the HTTP client's). Every one of them goes through :func:`redact_url` (a
URL known to be one) or :func:`redact` (any text that may hold URLs), so the secret part becomes ``***`` while the
host, port and path stay readable for debugging. The API key itself never reaches a URL or a message: the SDK sends
it in a header.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

__all__ = ["MASK", "RedactingFilter", "redact", "redact_url"]

MASK = "***"

#: Query parameters whose value is a secret (matched case-insensitively, as whole names or name parts).
_SECRET_PARAM = re.compile(r"(key|token|secret|password|passwd|pwd|sig|signature|auth|credential)", re.IGNORECASE)
# ``scheme://user:password@`` anywhere in a text; the user name is kept, the password masked.
_USERINFO = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^\s/@:]*):(?P<secret>[^\s/@]*)@")
# ``name=value`` of a secret-looking query parameter anywhere in a text.
_QUERY_SECRET = re.compile(
    r"(?P<head>[?&;](?P<name>[A-Za-z0-9_.-]*(?:key|token|secret|password|passwd|pwd|sig|signature|auth|credential)"
    r"[A-Za-z0-9_.-]*)=)(?P<secret>[^&#\s\"']*)",
    re.IGNORECASE,
)


def redact_url(url: str | None) -> str | None:
    """``url`` with its password and any secret-looking query value replaced by ``***`` (None stays None).

    Text that does not parse as a URL is passed through :func:`redact` instead, so nothing is ever returned that
    still holds a recognisable secret.
    """
    if url is None:
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user, colon, _password = userinfo.partition(":")
        netloc = f"{user}:{MASK}@{hostport}" if colon else f"{userinfo}@{hostport}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(_SECRET_PARAM.search(name) for name, _ in pairs):
            query = urlencode([(name, MASK if _SECRET_PARAM.search(name) else value) for name, value in pairs])
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact(text: str) -> str:
    """``text`` with the password of every ``scheme://user:password@`` URL and every secret query value masked."""
    text = _USERINFO.sub(lambda m: f"{m.group('head')}:{MASK}@", text)
    return _QUERY_SECRET.sub(lambda m: f"{m.group('head')}{MASK}", text)


class RedactingFilter(logging.Filter):
    """A handler filter that passes each record's message and traceback through :func:`redact`.

    The HTTP client logs each request's full URL at INFO, credentials included; filtering every record at the handler
    catches that and anything else without each call site having to remember, and keeps the handler's own format.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: logging reports it itself when formatting
            return True
        record.msg, record.args = redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True
