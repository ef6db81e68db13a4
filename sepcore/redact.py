"""Credentials out of everything that is logged, printed, tagged or stored (sep, sweeps, services).

``redact(text)`` masks the secrets a URI or a line of text can carry: the ``user:password@`` of a
URL, query-string values whose names say they are secrets (``token=``, ``password=``,
``X-Amz-Signature=``, ``X-Amz-Credential=``, ``sig=``, ``key=`` …) and ``NAME=value`` pairs whose
name does (``MLFLOW_TRACKING_PASSWORD=…``). ``redact_data(obj)`` does the same through nested
mappings and lists, and also masks the whole value of any key named like a secret (``password``,
``secret``, ``token``, ``api_key`` …). ``split_credentials(uri)`` takes the ``user:password@``
out of a URI so that a client can send it as a header instead.

Names are matched by their words (``auth_token`` is a secret, ``num_tokens`` is not), so model
configs keep their values.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

MASK = "***"

# words that make a name secret (matched against the name's words, lower case)
_SECRET_WORDS = {"password", "passwd", "pwd", "secret", "token", "credential", "credentials",
                 "apikey", "signature", "sig", "sas", "passphrase"}
# two consecutive words that do (api_key, access-key, PrivateKey, X-Amz-Security-Token …)
_SECRET_PAIRS = {("api", "key"), ("access", "key"), ("private", "key"), ("secret", "key"),
                 ("client", "secret"), ("session", "token"), ("auth", "token")}
_WORD = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")

# scheme://userinfo@ (userinfo without '/', '@' or whitespace)
_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<userinfo>[^/@\s]+)@")
# a name=value pair after the start, whitespace, a quote, '?', '&', ';' or ','
_PAIR = re.compile(r"(?P<lead>^|[\s'\"?&;,(])(?P<name>[A-Za-z_][\w.-]*)=(?P<value>[^\s&#'\";,)]+)")


def _words(name: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(name)]


def is_secret_name(name: str, query: bool = False) -> bool:
    """True when ``name`` (a config key, an environment variable, a query parameter) names a
    secret. ``query=True`` also counts a bare ``key`` (``?key=…`` API keys)."""
    words = _words(str(name).rsplit(".", 1)[-1])
    if query and words == ["key"]:
        return True
    if any(w in _SECRET_WORDS for w in words):
        return True
    return any(pair in _SECRET_PAIRS for pair in zip(words, words[1:], strict=False))


def redact(text: Any) -> str:
    """``text`` with URL credentials and secret-named ``name=value`` values masked."""
    text = str(text)
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{MASK}@", text)

    def pair(m: re.Match) -> str:
        if not is_secret_name(m["name"], query=m["lead"] in "?&;") or m["value"] == MASK:
            return m[0]
        return f"{m['lead']}{m['name']}={MASK}"

    return _PAIR.sub(pair, text)


def redact_data(obj: Any) -> Any:
    """A copy of ``obj`` (mappings, lists, strings) with secrets masked; other values as they
    are. A secret-named key keeps the key and loses its (non-empty) value."""
    if isinstance(obj, dict):
        return {k: (MASK if is_secret_name(k) and v not in (None, "") else redact_data(v))
                for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(redact_data(v) for v in obj)
    if isinstance(obj, str):
        return redact(obj)
    return obj


def split_credentials(uri: str) -> tuple[str, tuple[str, str] | None]:
    """``http://user:pass@host/x`` → (``http://host/x``, (user, pass)); other URIs unchanged."""
    if "://" not in uri or "@" not in uri.split("://", 1)[1].split("/", 1)[0]:
        return uri, None
    parts = urlsplit(uri)
    host = parts.hostname or ""
    if ":" in host:  # IPv6
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    clean = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    return clean, (unquote(parts.username or ""), unquote(parts.password or ""))
