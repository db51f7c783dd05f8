"""URLs as they may be stored or shown: without credentials. A base URL can carry a key
(``https://user:key@host/v1``, ``?api-key=...``); wherever skillmix writes or prints a URL
(run records, reports, error lines, cache keys) it writes this form instead."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

REDACTED = "REDACTED"
# query parameters whose value is a secret (matched case-insensitively, - and _ alike)
_SECRET_PARAM = re.compile(
    r"^(api[-_]?key|key|token|access[-_]?token|auth|authorization|secret|password|passwd|"
    r"sig|signature|x[-_]amz[-_]signature|x[-_]amz[-_]credential|code)$",
    re.IGNORECASE,
)


def redact_url(url: str) -> str:
    """``url`` with its user and password, and the values of secret-looking query parameters,
    replaced by REDACTED; anything that is not a URL is returned as it is."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if not parts.scheme or not parts.netloc:
        return url
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{REDACTED}@{netloc.rsplit('@', 1)[1]}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode(
            [(k, REDACTED if _SECRET_PARAM.match(k) else v) for k, v in pairs], safe="/:"
        )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def has_credentials(url: str) -> bool:
    """Whether ``url`` carries a user, a password or a secret-looking query parameter."""
    return redact_url(url) != url


def redact_text(text: str) -> str:
    """Every URL in ``text`` (an error message, a log line) redacted."""
    return re.sub(
        r"[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>;,)]+", lambda m: redact_url(m.group(0)), text
    )
