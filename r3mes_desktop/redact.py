"""Secret scrubbing for every text that leaves the process: logs, error files, diagnostics.

Two layers: exact values registered at runtime (the unlocked private key, the keystore
password, webhook URLs, the API token) and patterns that catch what was never registered
(a pasted key, a bearer header, `password=...`). Redaction is applied at the last moment
(log handler, file writer, zip writer) so no caller has to remember it.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping, Sequence
from typing import Any

MASK = "[REDACTED]"
MIN_SECRET_LEN = 6
"""Shorter values are not registered: masking every "abc" in a log would hide real facts."""

_SENSITIVE_KEY = re.compile(
    r"(password|passwd|passphrase|pwd|secret|token|api_?key|private_?key|privkey|mnemonic"
    r"|webhook|authorization|cookie|keystore_pass)",
    re.IGNORECASE,
)
"""Setting/dict keys whose values are always masked, whatever they hold."""

# Hashes labelled as such (tx hash, gradient hash, block hash) stay readable: they are
# public and diagnostics need them. Any other bare 32-byte hex value may be a private key.
_HASH_LABEL = r"(?:tx_?hash|transaction[ _]hash|gradient_?hash|block_?hash|hash)"
_HEX64 = re.compile(
    rf"(?P<label>{_HASH_LABEL}[\"']?\s*[:=]?\s*[\"']?)?"
    r"(?<![0-9a-fA-Fx])(?P<hex>(?:0x)?[0-9a-fA-F]{64})(?![0-9a-fA-F])",
    re.IGNORECASE,
)
_WEBHOOK_URL = re.compile(
    r"https?://[^\s\"'<>]*(?:hooks\.slack\.com|discord(?:app)?\.com/api/webhooks|webhook"
    r"|office\.com/webhook|hooks\.)[^\s\"'<>]*",
    re.IGNORECASE,
)
_URL_USERINFO = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^\s:/@]+):[^\s@/]+@", re.I)
_BEARER = re.compile(r"\b(?P<kind>bearer|token|basic)\s+(?P<val>[A-Za-z0-9._~+/=-]{8,})", re.I)
_JSON_PAIR = re.compile(
    r"(?P<key>\"[A-Za-z0-9_.-]*"
    + _SENSITIVE_KEY.pattern
    + r"[A-Za-z0-9_.-]*\"\s*:\s*)\"(?:[^\"\\]|\\.)*\"",
    re.IGNORECASE,
)
_KV_PAIR = re.compile(
    r"(?P<key>\b[A-Za-z0-9_.-]*"
    + _SENSITIVE_KEY.pattern
    + r"\b['\"]?\s*[:=]\s*)(?:(?P<q>['\"])(?P<qval>.*?)(?P=q)|(?P<val>[^\s'\",;&}\]]+))",
    re.IGNORECASE,
)


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
            variants |= {bare, "0x" + bare, bare.lower(), "0x" + bare.lower()}
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


def _hex_sub(match: re.Match[str]) -> str:
    if match.group("label"):
        return match.group(0)
    return MASK


def _kv_sub(match: re.Match[str]) -> str:
    if (match.group("val") or "").startswith(MASK[:-1]):  # already masked (stops at "]")
        return match.group(0)
    quote = match.group("q") or ""
    return f"{match.group('key')}{quote}{MASK}{quote}"


def redact(text: str, registry: SecretRegistry | None = None) -> str:
    """Mask registered secrets and anything shaped like a key, token, password or webhook."""
    if not text:
        return text
    text = (registry or SECRETS).scrub(text)
    text = _WEBHOOK_URL.sub(MASK, text)
    text = _URL_USERINFO.sub(lambda m: f"{m.group('scheme')}{m.group('user')}:{MASK}@", text)
    text = _JSON_PAIR.sub(lambda m: f'{m.group("key")}"{MASK}"', text)
    text = _BEARER.sub(lambda m: f"{m.group('kind')} {MASK}", text)
    text = _KV_PAIR.sub(_kv_sub, text)
    return _HEX64.sub(_hex_sub, text)


def is_sensitive_key(key: str) -> bool:
    return bool(_SENSITIVE_KEY.search(key))


def redact_obj(value: Any, registry: SecretRegistry | None = None) -> Any:
    """Deep-copy a JSON-like value: sensitive keys masked, every string redacted."""
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            key = str(k)
            if is_sensitive_key(key) and v not in (None, "", [], {}):
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
