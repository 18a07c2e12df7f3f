"""Secret scrubbing for every text that leaves the process: logs, error files, diagnostics.

Two layers: exact values registered at runtime (the unlocked private key, the keystore
password, webhook URLs, the API token) and patterns that catch what was never registered
(a pasted key, a bearer header, `password=...`). Redaction is applied at the last moment
(log handler, file writer, zip writer) so no caller has to remember it.
"""

from __future__ import annotations

import itertools
import re
import threading
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

MASK = "[REDACTED]"
MIN_SECRET_LEN = 6
"""Shorter values are not registered: masking every "abc" in a log would hide real facts."""

_SENSITIVE_WORDS = frozenset(
    {
        "password",
        "passwd",
        "passphrase",
        "pwd",
        "secret",
        "token",
        "apikey",
        "privkey",
        "privatekey",
        "mnemonic",
        "webhook",
        "authorization",
        "cookie",
        "bearer",
        "credentials",
    }
)
_SENSITIVE_PAIRS = frozenset({("private", "key"), ("api", "key"), ("secret", "key")})
"""Setting/dict keys whose values are always masked, whatever they hold."""

# Public data stays readable: transaction and block hashes, addresses and CIDs are what a
# support log is for. A 32-byte hex value is the one shape a private key shares with a tx
# hash, so shape alone decides nothing: the unlocked key is registered (exact match), and an
# unregistered 64-hex value is masked only where the text calls it a key, secret or seed
# (`key 0x...`, `private_key: "..."`, `secret=...`).
_KEYED_HEX64 = re.compile(
    r"(?P<ctx>\b\w*(?:key|secret|seed|mnemonic)[\"']?\s*(?:[:=]|\bis\b|\bwas\b)?\s*[\"']?)"
    r"(?<![0-9a-fA-F])(?:0x)?[0-9a-fA-F]{64}(?![0-9a-fA-F])",
    re.IGNORECASE,
)
_HEX64 = re.compile(r"(?:0x)?[0-9a-fA-F]{64}")
_KEY_WORDS = frozenset({"key", "privkey", "privatekey", "secret", "seed", "mnemonic"})
_PUBLIC_VALUE = re.compile(r"0x[0-9a-fA-F]{40}|Qm[1-9A-HJ-NP-Za-km-z]{44}|b[a-z2-7]{58,}")
"""A 20-byte address or a CID: public, and never the shape of a token or a password."""
_WEBHOOK_URL = re.compile(
    r"https?://[^\s\"'<>]*(?:hooks\.slack\.com|discord(?:app)?\.com/api/webhooks|webhook"
    r"|office\.com/webhook|hooks\.)[^\s\"'<>]*",
    re.IGNORECASE,
)
_URL_USERINFO = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^\s:/@]+):[^\s@/]+@", re.I)
_BEARER = re.compile(r"\b(?P<kind>bearer|token|basic)\s+(?P<val>[A-Za-z0-9._~+/=-]{8,})", re.I)
_JSON_PAIR = re.compile(
    r"(?P<key>\"(?P<name>[A-Za-z0-9_.-]+)\"\s*:\s*)\"(?P<val>(?:[^\"\\]|\\.)*)\""
)
_KV_KEY = re.compile(r"\b(?P<name>[A-Za-z][A-Za-z0-9_.-]*)['\"]?\s*[:=]\s*")
_KV_VALUE = re.compile(r"(?P<q>['\"])(?:(?!(?P=q)).)*(?P=q)|[^\s'\",;&}\]]+")


class SecretRegistry:
    """Exact secret values known to this process; thread-safe, values never leave it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: set[str] = set()
        self._pattern: re.Pattern[str] | None = None

    def register(self, value: str | bytes | None) -> None:
        """Remember `value` (and its 0x/no-0x hex twin) so it is masked everywhere."""
        if value is None:
            return
        text = value.hex() if isinstance(value, bytes) else str(value)
        variants = {text}
        if re.fullmatch(r"(0x)?[0-9a-fA-F]+", text):
            bare = text[2:] if text.lower().startswith("0x") else text
            for form in (bare, bare.lower(), bare.upper()):
                variants |= {form, "0x" + form}
        with self._lock:
            for v in variants:
                if len(v) >= MIN_SECRET_LEN:
                    self._values.add(v)
            self._pattern = None

    def forget_all(self) -> None:
        with self._lock:
            self._values.clear()
            self._pattern = None

    def __len__(self) -> int:
        return len(self._values)

    def scrub(self, text: str) -> str:
        with self._lock:
            if not self._values:
                return text
            if self._pattern is None:
                ordered = sorted(self._values, key=len, reverse=True)
                self._pattern = re.compile("|".join(re.escape(v) for v in ordered))
            pattern = self._pattern
        return pattern.sub(MASK, text)


SECRETS = SecretRegistry()
"""The process-wide registry: the keystore, settings and API token register here."""


def register_secret(value: str | bytes | None) -> None:
    SECRETS.register(value)


def _json_sub(match: re.Match[str]) -> str:
    if not is_sensitive_key(match.group("name")) or _PUBLIC_VALUE.fullmatch(match.group("val")):
        return match.group(0)
    return f'{match.group("key")}"{MASK}"'


def _bearer_sub(match: re.Match[str]) -> str:
    """`token 0x5FbDB...` names an ERC-20 token's address, not a credential."""
    if match.group("kind").lower() != "bearer" and _PUBLIC_VALUE.fullmatch(match.group("val")):
        return match.group(0)
    return f"{match.group('kind')} {MASK}"


def _is_prose(key: str, value: re.Match[str]) -> bool:
    """`password: must not be empty` is a message, not a secret: after a colon, a short
    plain word is prose. (`=` pairs and quoted values are always masked; registered
    secrets are masked by the registry whatever they look like.)"""
    if "=" in key or value.group("q"):
        return False
    word = value.group(0)
    return word.isalpha() and len(word) < 16


def _mask_pairs(text: str) -> str:
    """`name=value` / `name: value` with a sensitive name: the value is masked.

    Only the key is matched by the regex, so a harmless `"msg": "..."` does not swallow
    a `token=...` inside its value.
    """
    out: list[str] = []
    pos = 0
    for m in _KV_KEY.finditer(text):
        if m.start() < pos or not is_sensitive_key(m.group("name")):
            continue
        value = _KV_VALUE.match(text, m.end())
        if value is None or value.group(0).startswith(MASK[:-1]):
            continue
        if _is_prose(m.group(0), value) or _PUBLIC_VALUE.fullmatch(value.group(0).strip("'\"")):
            continue
        quote = value.group("q") or ""
        out.append(text[pos : m.end()] + quote + MASK + quote)
        pos = value.end()
    out.append(text[pos:])
    return "".join(out)


def redact(text: str, registry: SecretRegistry | None = None) -> str:
    """Mask registered secrets and anything shaped like a key, token, password or webhook."""
    if not text:
        return text
    text = (registry or SECRETS).scrub(text)
    text = _WEBHOOK_URL.sub(MASK, text)
    text = _URL_USERINFO.sub(lambda m: f"{m.group('scheme')}{m.group('user')}:{MASK}@", text)
    text = _JSON_PAIR.sub(_json_sub, text)
    text = _BEARER.sub(_bearer_sub, text)
    text = _mask_pairs(text)
    return _KEYED_HEX64.sub(lambda m: m.group("ctx") + MASK, text)


def is_sensitive_key(key: str) -> bool:
    """Whether a setting/field name holds a secret: `api_token`, `privateKey`,
    `slack_webhook_url` do; `tokens_per_s`, `key_count` do not."""
    snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", key).lower()
    words = [w for w in re.split(r"[^a-z0-9]+", snake) if w]
    if any(w in _SENSITIVE_WORDS for w in words):
        return True
    return any(pair in _SENSITIVE_PAIRS for pair in itertools.pairwise(words))


def _names_key(key: str) -> bool:
    """`key`, `signing_key`, `seed`: a 32-byte hex value under such a name is a secret."""
    snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", key).lower()
    return any(w in _KEY_WORDS for w in re.split(r"[^a-z0-9]+", snake))


def redact_obj(value: Any, registry: SecretRegistry | None = None) -> Any:
    """Deep-copy a JSON-like value: sensitive keys masked, every string redacted."""
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            key = str(k)
            if isinstance(v, str) and _PUBLIC_VALUE.fullmatch(v):
                out[key] = v
            elif (is_sensitive_key(key) and v not in (None, "", [], {})) or (
                isinstance(v, str) and _names_key(key) and _HEX64.fullmatch(v)
            ):
                out[key] = MASK
            else:
                out[key] = redact_obj(v, registry)
        return out
    if isinstance(value, str):
        return redact(value, registry)
    if isinstance(value, bytes):
        return redact(value.hex(), registry)
    if isinstance(value, Sequence):
        return [redact_obj(v, registry) for v in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    return redact(repr(value), registry)


def redact_url(url: str) -> str:
    """scheme://host:port plus a path with token-like segments masked (API keys live there).

    For endpoint names in errors and the status bar: an RPC URL or gateway often carries
    its API key in the path, while the host is public and what the user needs to see."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    port = f":{parts.port}" if parts.port else ""
    path = re.sub(r"[A-Za-z0-9_-]{16,}", "***", parts.path)
    return f"{parts.scheme}://{host}{port}{path}"
