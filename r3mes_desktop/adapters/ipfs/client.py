"""The IPFS RPC client (aioipfs), implementing `core.steps.ContentStore`.

aioipfs rather than ipfshttpclient: the latter's `connect()` refuses every daemon newer than
0.8 (VersionMismatch), blocks the event loop and is unmaintained.

An adapter with plain calls: retry, breaker and the per-call timeout belong to whoever calls
these methods (the saga's `ServiceCaller`); the only timeout here is aiohttp's read timeout,
so a hung daemon ends. Library failures become classified errors naming the daemon.

The daemon's CID for an upload is checked against the CID computed here from the same bytes
(compared as decoded multihashes: js-ipfs answers `zb2…` where Kubo answers `bafk…`); a
mismatch unpins what the daemon stored and raises IntegrityError. Reads are verified the
same way. The size limit is enforced before anything is sent.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aiohttp
import aioipfs

from r3mes_desktop.adapters.ipfs.limits import check_size
from r3mes_desktop.core.cid import compute_cid, parse_cid, same_cid
from r3mes_desktop.core.errors import (
    IntegrityError,
    NetworkError,
    PermanentError,
    R3mesError,
    TimeoutNetworkError,
    ValidationError,
)
from r3mes_desktop.support.redact import redact_url

log = logging.getLogger(__name__)
T = TypeVar("T")
SERVICE = "ipfs"


def _connect_args(address: str) -> tuple[dict[str, Any], str]:
    """aioipfs constructor arguments and a printable form for a multiaddr or http(s) URL."""
    if address.startswith("/"):
        return {"maddr": address}, address
    parts = urlsplit(address)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationError(
            f"ipfs_api_address: expected a multiaddr (/ip4/127.0.0.1/tcp/5001) or an "
            f"http(s):// URL, got {address!r}"
        )
    port = parts.port or (443 if parts.scheme == "https" else 5001)
    return {"host": parts.hostname, "port": port, "scheme": parts.scheme}, redact_url(address)


class IpfsClient:
    """ContentStore over an IPFS daemon's RPC API (Kubo or js-ipfs)."""

    service = SERVICE

    def __init__(
        self,
        api_address: str,
        *,
        max_gradient_size_mb: int = 100,
        read_timeout_s: int = 60,
    ) -> None:
        kwargs, self.where = _connect_args(api_address)
        self._client = aioipfs.AsyncIPFS(read_timeout=read_timeout_s, **kwargs)
        self.max_gradient_size_mb = max_gradient_size_mb

    async def _call(self, operation: str, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run one RPC, turning library failures into errors that name the daemon."""
        try:
            return await fn(*args)
        except R3mesError:
            raise
        except TimeoutError:
            raise TimeoutNetworkError(
                f"IPFS daemon at {self.where} did not answer {operation} in time", service=SERVICE
            ) from None
        except aioipfs.APIError as exc:
            message = f"{type(exc).__name__}: {getattr(exc, 'message', '') or exc}"[:200]
            status = getattr(exc, "http_status", -1)
            if isinstance(status, int) and (status >= 502 or status in (408, 429)):
                raise NetworkError(
                    f"IPFS daemon at {self.where} failed {operation} (HTTP {status}): {message}",
                    service=SERVICE,
                ) from None
            raise _ApiRefusal(message) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise NetworkError(
                f"IPFS daemon at {self.where} is unreachable ({operation}): "
                f"{type(exc).__name__}: {exc}",
                service=SERVICE,
            ) from None
        except ValueError as exc:
            raise NetworkError(
                f"IPFS daemon at {self.where} sent a malformed answer to {operation}: {exc}",
                service=SERVICE,
            ) from None

    async def add_and_pin(self, data: bytes) -> str:
        check_size(data, self.max_gradient_size_mb)
        local = compute_cid(bytes(data))
        try:
            answer = await self._call("ipfs.add", self._add, bytes(data))
        except _ApiRefusal as exc:
            raise ValidationError(
                f"IPFS daemon at {self.where} refused the upload: {exc}"
            ) from None
        returned = answer.get("Hash") if isinstance(answer, dict) else None
        if not isinstance(returned, str):
            raise NetworkError(
                f"IPFS daemon at {self.where} answered add without a CID: {str(answer)[:120]!r}",
                service=SERVICE,
            )
        try:
            matches = same_cid(returned, local)
        except ValidationError:
            matches = False
        if not matches:
            await self._unpin_quietly(returned)
            raise IntegrityError(
                f"IPFS daemon at {self.where} returned CID {returned[:80]} but the data's CID is "
                f"{local}; the upload was unpinned",
                service=SERVICE,
            )
        return local

    async def _add(self, data: bytes) -> Any:
        return await self._client.core.add_bytes(
            data, cid_version=1, raw_leaves=True, hash="sha2-256", pin=True
        )

    async def _unpin_quietly(self, cid: str) -> None:
        try:
            await self._call("ipfs.pin_rm", self._client.pin.rm, cid)
        except Exception as exc:  # the integrity error is what the caller must see
            log.warning("could not unpin mismatched upload %s: %s", cid[:80], type(exc).__name__)

    def cid_of(self, data: bytes) -> str:
        return compute_cid(bytes(data))

    async def is_pinned(self, cid: str) -> bool:
        parse_cid(cid)
        try:
            answer = await self._call("ipfs.pin_ls", self._client.pin.ls, cid, "recursive")
        except _ApiRefusal:  # "not pinned" is an answer, not a failure
            return False
        keys = answer.get("Keys", {}) if isinstance(answer, dict) else {}
        return any(same_cid(key, cid) for key in keys)

    async def unpin(self, cid: str) -> None:
        """Idempotent: unpinning content that is not pinned succeeds."""
        parse_cid(cid)
        try:
            await self._call("ipfs.pin_rm", self._client.pin.rm, cid)
        except _ApiRefusal as exc:
            text = str(exc).lower()
            if any(n in text for n in ("not pinned", "notpinned", "not found")):
                return
            raise ValidationError(
                f"IPFS daemon at {self.where} refused to unpin {cid}: {exc}"
            ) from None

    async def cat(self, cid: str) -> bytes:
        parse_cid(cid)
        try:
            data = await self._call("ipfs.cat", self._client.core.cat, cid)
        except _ApiRefusal as exc:
            raise PermanentError(f"IPFS daemon at {self.where} cannot serve {cid}: {exc}") from None
        if not isinstance(data, bytes) or not same_cid(compute_cid(data), cid):
            raise IntegrityError(
                f"IPFS daemon at {self.where} served content that does not match {cid}",
                service=SERVICE,
            )
        return data

    async def stat(self, cid: str) -> dict[str, Any]:
        parse_cid(cid)
        try:
            answer = await self._call("ipfs.stat", self._client.files.stat, f"/ipfs/{cid}")
        except _ApiRefusal as exc:
            raise PermanentError(f"IPFS daemon at {self.where} cannot stat {cid}: {exc}") from None
        if not isinstance(answer, dict) or not isinstance(answer.get("Size"), int):
            raise NetworkError(
                f"IPFS daemon at {self.where} sent a malformed stat", service=SERVICE
            )
        return {"cid": cid, "size": answer["Size"]}

    async def pins(self) -> list[str]:
        answer = await self._call("ipfs.pin_ls", self._client.pin.ls, None, "recursive")
        keys = answer.get("Keys", {}) if isinstance(answer, dict) else {}
        return sorted(str(parse_cid(key)) for key in keys)

    async def version(self) -> str:
        """The daemon's version ("0.66.1"): the cheapest call that proves its RPC API
        answers (a connection pre-flight), without listing or moving any content."""
        answer = await self._call("ipfs.version", self._client.version)
        if answer is None:  # aioipfs answers None where the connection failed
            raise NetworkError(
                f"IPFS daemon at {self.where} is unreachable (ipfs.version): no answer",
                service=SERVICE,
            )
        version = answer.get("Version") if isinstance(answer, dict) else None
        if not isinstance(version, str):
            raise NetworkError(
                f"IPFS daemon at {self.where} sent a malformed version answer", service=SERVICE
            )
        return version

    async def close(self) -> None:
        await self._client.close()


class _ApiRefusal(ValidationError):
    """The daemon answered with a command error (not pinned, invalid path...)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, service=SERVICE)
