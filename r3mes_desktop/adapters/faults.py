"""Fault injection at the adapter boundary, off unless settings name a fault plan.

Why here and not in fakes: the promise ("no lost work, no double submission, no stuck
transaction") is about the real coordinator, retry, breaker and journal, so the faults must
hit the real adapters from below. The wrappers raise exactly what the real adapters raise for
the same condition (the chain transport's classified errors and `TxRejected` kinds, the IPFS
client's integrity error after a wrong CID, torch's out-of-memory, sqlite's "disk is full"),
so everything above them runs unchanged. Draws are seeded per service: a plan file and its
seed reproduce the same sequence of faults for the same sequence of calls.

A plan is TOML or JSON::

    seed = 7
    slow_s = 0.2            # latency spike of a "slow" fault
    [chain]                 # service -> fault kind -> probability per call
    connection_refused = 0.05
    timeout = 0.05
    [ipfs]
    wrong_cid = 0.02
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import random
import sqlite3
import tomllib
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from r3mes_desktop.core.errors import (
    AuthenticationError,
    IntegrityError,
    NetworkError,
    ResourceError,
    TimeoutNetworkError,
    ValidationError,
)
from r3mes_desktop.core.events import EventBus, Notice

log = logging.getLogger(__name__)
T = TypeVar("T")

NETWORK_KINDS = ("connection_refused", "timeout", "slow", "http_5xx", "malformed", "http_401")
KINDS: dict[str, tuple[str, ...]] = {
    "chain": NETWORK_KINDS,  # per Chain/TaskApi call (open_rounds, broadcast, receipt...)
    "chain_rpc": (*NETWORK_KINDS, "insufficient_funds", "nonce_too_low", "invalid_signature"),
    "ipfs": (*NETWORK_KINDS, "wrong_cid"),
    "trainer": ("cuda_oom", "memory_error", "disk_full"),
    "journal": ("disk_full",),
}
"""Every service a plan may name and the faults each one knows."""
_ONLY_ON = {
    ("chain_rpc", "insufficient_funds"): "send_raw",  # a node only refuses what it is sent
    ("chain_rpc", "nonce_too_low"): "send_raw",
    ("chain_rpc", "invalid_signature"): "send_raw",
    ("ipfs", "wrong_cid"): "add_and_pin",
}
_NOT_ON = {
    # A refused send is modelled under the client (chain_rpc), where its real handling of
    # the refusal (the nonce given back) runs.
    ("chain", "http_401"): "broadcast",
}


class OutOfMemoryError(RuntimeError):
    """Shaped like torch's: `classify` recognises the class name as a resource error."""


@dataclass(frozen=True)
class FaultPlan:
    """Rates per service and kind (probability per call), a seed and the latency spike."""

    rates: Mapping[str, Mapping[str, float]]
    seed: int = 0
    slow_s: float = 0.2
    source: str = ""

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, source: str = "") -> FaultPlan:
        where = f"fault_plan {source}".strip()
        rates: dict[str, dict[str, float]] = {}
        seed, slow_s = 0, 0.2
        for key, value in data.items():
            if key == "seed":
                if isinstance(value, bool) or not isinstance(value, int):
                    raise ValidationError(f"{where}: seed: expected an integer, got {value!r}")
                seed = value
            elif key == "slow_s":
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise ValidationError(f"{where}: slow_s: expected 0–60 seconds, got {value!r}")
                if not 0 <= value <= 60:
                    raise ValidationError(f"{where}: slow_s: expected 0–60 seconds, got {value}")
                slow_s = float(value)
            elif key in KINDS:
                if not isinstance(value, Mapping):
                    raise ValidationError(f"{where}: [{key}]: expected a table of fault rates")
                rates[key] = _rates(where, key, value)
            else:
                raise ValidationError(
                    f"{where}: unknown key {key!r} (accepted: seed, slow_s, {', '.join(KINDS)})"
                )
        return cls(rates=rates, seed=seed, slow_s=slow_s, source=source)

    @classmethod
    def load(cls, path: Path | str) -> FaultPlan:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ValidationError(f"fault_plan: cannot read {path}: {exc.strerror}") from None
        try:
            data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
        except ValueError as exc:
            fmt = "JSON" if path.suffix == ".json" else "TOML"
            raise ValidationError(f"fault_plan {path}: not valid {fmt}: {exc}") from None
        if not isinstance(data, Mapping):
            raise ValidationError(f"fault_plan {path}: expected a table at the top level")
        return cls.from_mapping(data, source=str(path))

    def describe(self) -> str:
        parts = []
        for service, kinds in self.rates.items():
            total = sum(kinds.values())
            if total:
                parts.append(f"{service} {total:.0%}")
        return ", ".join(parts) or "no faults"


def _rates(where: str, service: str, table: Mapping[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for kind, rate in table.items():
        if kind not in KINDS[service]:
            raise ValidationError(
                f"{where}: {service}.{kind}: unknown fault (accepted: {', '.join(KINDS[service])})"
            )
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 <= rate <= 1:
            raise ValidationError(
                f"{where}: {service}.{kind}: expected a probability in 0..1, got {rate!r}"
            )
        out[kind] = float(rate)
    if sum(out.values()) > 1 + 1e-9:
        raise ValidationError(f"{where}: [{service}]: the rates add up to more than 1")
    return out


@dataclass
class FaultInjector:
    """Draws faults for a plan and counts what it injected (`counts[(service, kind)]`)."""

    plan: FaultPlan
    bus: EventBus | None = None
    enabled: bool = True
    counts: Counter[tuple[str, str]] = field(default_factory=Counter)
    _rngs: dict[str, random.Random] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: Any, *, bus: EventBus | None = None) -> FaultInjector | None:
        path = getattr(settings, "fault_plan", None)
        return None if path is None else cls(FaultPlan.load(path), bus=bus)

    def draw(self, service: str, operation: str = "") -> str | None:
        """The fault to inject into this call, or None."""
        rates = self.plan.rates.get(service)
        if not self.enabled or not rates:
            return None
        rng = self._rngs.get(service)
        if rng is None:
            rng = self._rngs[service] = random.Random(f"{self.plan.seed}:{service}")
        x = rng.random()
        for kind, rate in rates.items():
            if x < rate:
                if _ONLY_ON.get((service, kind), operation) != operation:
                    return None
                if _NOT_ON.get((service, kind)) == operation:
                    return None
                self.counts[(service, kind)] += 1
                log.debug("fault injected: %s %s %s", service, operation, kind)
                return kind
            x -= rate
        return None

    def coin(self, service: str) -> bool:
        """A seeded coin flip (e.g. whether a timeout hits before or after the effect)."""
        rng = self._rngs.setdefault(service, random.Random(f"{self.plan.seed}:{service}"))
        return rng.random() < 0.5

    def by_kind(self) -> dict[str, int]:
        return {f"{s}.{k}": n for (s, k), n in sorted(self.counts.items())}

    def announcement(self) -> str:
        return f"Fault plan active ({self.plan.describe()}): failures are injected on purpose."

    def announce(self) -> None:
        text = self.announcement()
        log.warning("%s plan file: %s", text, self.plan.source)
        if self.bus is not None:
            self.bus.publish(Notice(level="warning", message=text, source="faults"))

    # -- wrapping the runtime's parts -------------------------------------------------------
    def wrap_chain(self, client: Any) -> Any:
        """Faults at two depths: `chain` on each Chain/TaskApi call the coordinator makes,
        `chain_rpc` under the chain client at its node transport, so the client's own
        handling of refused transactions (funds, signature, nonce) runs on real answers."""
        transport = getattr(client, "transport", None)
        wanted = "chain_rpc" in self.plan.rates and transport is not None
        if wanted and not isinstance(transport, FaultyTransport):
            client.transport = FaultyTransport(transport, self)
        return FaultyChain(client, self) if "chain" in self.plan.rates else client

    def wrap_store(self, store: Any) -> Any:
        return FaultyStore(store, self)

    def wrap_trainer(self, trainer: Any) -> Any:
        return FaultyTrainer(trainer, self)

    def wrap_journal(self, journal: Any) -> Any:
        """sqlite's "database or disk is full" on journal writes (the write is not applied)."""
        for name in ("apply", "create"):
            original = getattr(journal, name)
            setattr(journal, name, self._journal_write(original))
        return journal

    def _journal_write(self, original: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
        async def write(*args: Any, **kwargs: Any) -> T:
            if self.draw("journal", "write") == "disk_full":
                raise sqlite3.OperationalError("database or disk is full")
            return await original(*args, **kwargs)

        return write


class _Network:
    """The network faults shared by the chain transport and the content store."""

    service = ""

    def __init__(self, inner: Any, injector: FaultInjector) -> None:
        self._inner = inner
        self._faults = injector

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    @property
    def _where(self) -> str:
        return str(getattr(self._inner, "description", self.service))

    def _error(self, kind: str, op: str) -> Exception:
        where, s = self._where, self.service
        if kind == "connection_refused":
            refused = NetworkError(
                f"{where} is unreachable ({op}): ConnectionRefusedError: "
                "[Errno 111] Connection refused",
                service=s,
            )
            refused.__cause__ = ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")
            return refused
        if kind == "http_5xx":
            return NetworkError(f"{where} answered {op} with HTTP 503", service=s)
        if kind == "http_401":
            return AuthenticationError(f"{where} answered {op} with HTTP 401", service=s)
        if kind == "malformed":
            return NetworkError(
                f"{where} returned a malformed response to {op}: not a JSON object", service=s
            )
        return TimeoutNetworkError(f"{where} did not answer {op} in time", service=s)

    async def _call(self, op: str, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        kind = self._faults.draw(self.service, op)
        if kind is None:
            return await fn(*args)
        if kind == "slow":
            await asyncio.sleep(self._faults.plan.slow_s)
            return await fn(*args)
        if kind == "timeout" and self._faults.coin(self.service):
            await fn(*args)  # the request landed; only the answer was lost
        special = self._special(kind, op)
        if special is not None:
            result: T = await special(fn, *args)
            return result
        raise self._error(kind, op)

    def _special(self, kind: str, op: str) -> Any:
        return None


class FaultyChain(_Network):
    """A `Chain` + `TaskApi` whose calls fail as an unreachable or broken node makes the
    chain client fail (a timeout may come after the transaction was sent)."""

    service = "chain"

    @property
    def miner_address(self) -> str:
        return str(self._inner.miner_address)

    async def open_rounds(self) -> Any:
        return await self._call("open_rounds", self._inner.open_rounds)

    async def sign_submission(self, **kwargs: Any) -> Any:
        return await self._call("sign_submission", partial(self._inner.sign_submission, **kwargs))

    async def broadcast(self, signed: Any) -> None:
        await self._call("broadcast", self._inner.broadcast, signed)

    async def receipt(self, tx_hash: str) -> Any:
        return await self._call("receipt", self._inner.receipt, tx_hash)

    async def wait_receipt(self, tx_hash: str, *, timeout_s: float) -> Any:
        wait = partial(self._inner.wait_receipt, tx_hash, timeout_s=timeout_s)
        return await self._call("wait_receipt", wait)

    async def submission_of(self, round_id: int) -> Any:
        return await self._call("submission_of", self._inner.submission_of, round_id)

    async def complete_task(self, *, round_id: int) -> None:
        await self._call("complete_task", partial(self._inner.complete_task, round_id=round_id))


class FaultyTransport(_Network):
    """A `ChainTransport` whose node fails as a real node over HTTP would."""

    service = "chain_rpc"

    def _special(self, kind: str, op: str) -> Any:
        from r3mes_desktop.adapters.chain.transport import TxRejected

        texts = {
            "insufficient_funds": "insufficient funds for gas * price + value",
            "nonce_too_low": "nonce too low",
            "invalid_signature": "invalid sender",
        }
        if kind not in texts:
            return None

        async def reject(fn: Any, *args: Any) -> Any:
            raise TxRejected(kind, texts[kind])

        return reject

    async def chain_id(self) -> int:
        return await self._call("chain_id", self._inner.chain_id)

    async def get_code(self, address: str) -> bytes:
        return await self._call("get_code", self._inner.get_code, address)

    async def nonce(self, address: str) -> int:
        return await self._call("nonce", self._inner.nonce, address)

    async def confirmed_nonce(self, address: str) -> int:
        return await self._call("confirmed_nonce", self._inner.confirmed_nonce, address)

    async def fee_params(self) -> tuple[int, int]:
        return await self._call("fee_params", self._inner.fee_params)

    async def estimate_gas(self, tx: dict[str, Any]) -> int:
        return await self._call("estimate_gas", self._inner.estimate_gas, tx)

    async def call(self, tx: dict[str, Any]) -> bytes:
        return await self._call("call", self._inner.call, tx)

    async def send_raw(self, raw: bytes) -> str:
        return await self._call("send_raw", self._inner.send_raw, raw)

    async def receipt(self, tx_hash: str) -> dict[str, Any] | None:
        return await self._call("receipt", self._inner.receipt, tx_hash)

    async def transaction(self, tx_hash: str) -> dict[str, Any] | None:
        return await self._call("transaction", self._inner.transaction, tx_hash)

    async def block(self, number: int | None = None) -> dict[str, Any] | None:
        return await self._call("block", self._inner.block, number)

    async def balance(self, address: str) -> int:
        wei: int = await self._inner.balance(address)  # the status bar's, not the saga's
        return wei

    async def close(self) -> None:
        await self._inner.close()


class FaultyStore(_Network):
    """A `ContentStore` (IPFS daemon or devnet store) that fails like a daemon would."""

    service = "ipfs"

    @property
    def _where(self) -> str:
        return str(getattr(self._inner, "where", "IPFS daemon"))

    def _special(self, kind: str, op: str) -> Any:
        if kind != "wrong_cid":
            return None

        async def wrong(fn: Any, data: bytes) -> str:
            # What IpfsClient does when the daemon names other bytes: unpin, refuse.
            cid = await fn(data)
            await self._inner.unpin(cid)
            raise IntegrityError(
                f"{self._where} returned CID bafkreiinjectedwrongcid for bytes whose CID is "
                f"{cid}; the upload was unpinned",
                service="ipfs",
            )

        return wrong

    async def add_and_pin(self, data: bytes) -> str:
        return await self._call("add_and_pin", self._inner.add_and_pin, data)

    def cid_of(self, data: bytes) -> str:
        cid: str = self._inner.cid_of(data)  # local arithmetic: nothing to fault
        return cid

    async def is_pinned(self, cid: str) -> bool:
        return await self._call("is_pinned", self._inner.is_pinned, cid)

    async def unpin(self, cid: str) -> None:
        return await self._call("unpin", self._inner.unpin, cid)

    async def cat(self, cid: str) -> bytes:
        return await self._call("cat", self._inner.cat, cid)


class FaultyTrainer:
    """A `Trainer` whose device runs out of memory or whose disk fills while checkpointing."""

    def __init__(self, inner: Any, injector: FaultInjector) -> None:
        self._inner = inner
        self._faults = injector

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def train(self, **kwargs: Any) -> Any:
        kind = self._faults.draw("trainer", "train")
        if kind == "cuda_oom":
            raise OutOfMemoryError(
                "CUDA out of memory. Tried to allocate 64.00 MiB (GPU 0; 0 bytes free)"
            )
        if kind == "memory_error":
            raise MemoryError("cannot allocate the training batch")
        result = await self._inner.train(**kwargs)
        if kind == "disk_full":  # the checkpoints so far are on disk; the last write failed
            raise ResourceError(
                f"no space left writing the checkpoint of {kwargs.get('transaction_id')}; "
                f"mining paused ([Errno {errno.ENOSPC}] No space left on device)"
            )
        return result

    async def discard_checkpoints(self, transaction_id: str) -> None:
        await self._inner.discard_checkpoints(transaction_id)
