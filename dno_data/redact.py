"""Secrets never leave the process: the one redaction of URLs and texts, for lineage, logs, errors and caches.

A URL's `user:password@` and the values of query parameters whose names look like secrets
(`?api_key=...`, `token`, `sig`, `X-Amz-Signature`, ...) become `***`. Every place that records
or prints a URL (the lineage's config, error lines, failure rows, the call cache's endpoint,
storage errors) passes it through `redact_text`, so a secret in a --base-url's query string is
never written anywhere.
"""

from __future__ import annotations

import re
from typing import Any

# query parameter names whose values are secrets (matched whole, case-insensitive; `x-amz-signature` too)
SECRET_PARAM = re.compile(
    r"^(?:x-[a-z]+-)?(?:api[_-]?key|apikey|key|access[_-]?key|secret(?:[_-]?key)?|client[_-]?secret|token|"
    r"access[_-]?token|auth(?:orization)?|password|passwd|pwd|sig|signature|credential|session[_-]?token|"
    r"security[_-]?token|code)$", re.I)
# mapping keys whose values are secrets (lineage configs, headers)
SECRET_KEY = re.compile(
    r"(?:^|[_.-])(?:api[_-]?key|token|secret(?:[_-]?key)?|password|authorization|auth[_-]?header|headers?)$", re.I
)

_USERINFO = re.compile(r"(?<=://)[^/@\s?#]*@")
_QUERY_PAIR = re.compile(r"([?&;])([^=&;#\s'\"]+)=([^&;#\s'\"]*)")
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")


def redact_url(url: str) -> str:
    """A URL without its credentials and secret query values.

    >>> redact_url("http://alice:pw@host:8000/v1?api_key=sk-1&model=m&X-Amz-Signature=ab")
    'http://***@host:8000/v1?api_key=***&model=m&X-Amz-Signature=***'
    """
    url = _USERINFO.sub("***@", url)
    return _QUERY_PAIR.sub(lambda m: f"{m[1]}{m[2]}=***" if SECRET_PARAM.match(m[2]) else m[0], url)


def redact_text(text: str) -> str:
    """`text` with every URL in it redacted (redact_url).

    >>> redact_text("GET http://a:b@h/v1?token=t failed: 401")
    'GET http://***@h/v1?token=*** failed: 401'
    """
    if "://" not in text:
        return text
    return _URL.sub(lambda m: redact_url(m[0]), text)


def redact(obj: Any) -> Any:
    """Drop every mapping key that looks like a secret, and redact every URL in a string, recursively.

    >>> redact({"model": "m", "api_key": "sk-1", "base_url": "http://h/v1?key=k", "n": [{"auth_header": "x"}]})
    {'model': 'm', 'base_url': 'http://h/v1?key=***', 'n': [{}]}
    """
    if isinstance(obj, dict):
        return {str(k): redact(v) for k, v in obj.items() if not SECRET_KEY.search(str(k))}
    if isinstance(obj, (list, tuple)):
        return [redact(v) for v in obj]
    if isinstance(obj, str):
        return redact_text(obj)
    return obj
