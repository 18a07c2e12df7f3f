"""The pre-flight: can this rig mine on that network? One plain-language line per check.

`r3mes-miner check` and `join`, and Settings → Network → "Check connection", all run this
one function. It answers before the miner ever starts: is the RPC reachable, is it the
network's chain, is the contract there and one this app speaks, does the IPFS API answer,
does the account hold gas, and does the local clock agree with the chain's (round deadlines
are unix times).

Every check has its own timeout (one attempt through a `ServiceCaller`: no retries, since a
person is waiting for the answer) and its own error handling, so a failed check never hides
the others: checks that need the RPC are skipped with the reason when it did not answer,
and the IPFS check runs beside them regardless. Balance and clock only warn: a rig can join
before it is funded, and an idle chain's last block is old without any clock being wrong.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

from r3mes_desktop.core.clock import SYSTEM_CLOCK, Clock
from r3mes_desktop.core.errors import TimeoutNetworkError
from r3mes_desktop.core.resilience import ServiceCaller
from r3mes_desktop.core.resilience.retry import RetryPolicy
from r3mes_desktop.support.redact import redact_url

if TYPE_CHECKING:
    from r3mes_desktop.support.config import Settings
    from r3mes_desktop.support.network_file import NetworkFile

Status = Literal["passed", "warning", "failed", "skipped"]
PASSED: Status = "passed"
WARNING: Status = "warning"
FAILED: Status = "failed"
SKIPPED: Status = "skipped"

SUPPORTED_CONTRACT_VERSION = "r3mes-rounds/2"
"""The contract interface this app speaks (`VERSION()` of R3mesRounds)."""
GAS_PER_SUBMISSION = 800_000
"""The chain client's gas cap for one submission: what a balance is measured in."""
MIN_SUBMISSIONS = 10
"""Warn when the account cannot pay for this many submissions at the current fee."""
CLOCK_BEHIND_S = 30.0
"""A latest block more than this far in our future: our clock is behind."""
BLOCK_OLD_S = 300.0
"""A latest block older than this: the chain is idle, or our clock is ahead."""

T = TypeVar("T")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Check:
    """One line of the pre-flight: `required` checks decide whether joining may go on."""

    name: str  # rpc, chain_id, contract, ipfs, balance, clock
    status: Status
    line: str
    required: bool = True

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Target:
    """What to check: endpoints and contract, the version the network file names ("" for
    none), and whose balance (None: no key yet)."""

    rpc_urls: tuple[str, ...]
    chain_id: int | None
    contract_address: str
    ipfs_api: str
    contract_version: str = ""
    account: str | None = None
    name: str = ""

    @classmethod
    def from_settings(cls, settings: Settings, *, account: str | None) -> Target:
        return cls(
            rpc_urls=tuple(settings.chain_rpc_urls),
            chain_id=settings.chain_id,
            contract_address=settings.contract_address,
            ipfs_api=settings.ipfs_api_address,
            account=account,
            name=settings.network_name,
        )

    @classmethod
    def from_network(cls, network: NetworkFile, *, account: str | None) -> Target:
        return cls(
            rpc_urls=network.rpc_urls,
            chain_id=network.chain_id,
            contract_address=network.contract_address,
            ipfs_api=network.ipfs_api,
            contract_version=network.contract_version,
            account=account,
            name=network.name,
        )


class Node(Protocol):
    """The chain node reads the pre-flight makes (`adapters.chain.transport.RpcTransport`)."""

    async def chain_id(self) -> int: ...
    async def get_code(self, address: str) -> bytes: ...
    async def call(self, tx: dict[str, Any]) -> bytes: ...
    async def balance(self, address: str) -> int: ...
    async def fee_params(self) -> tuple[int, int]: ...
    async def block(self, number: int | None = None) -> dict[str, Any] | None: ...
    async def close(self) -> None: ...


class IpfsApi(Protocol):
    async def version(self) -> str: ...
    async def close(self) -> None: ...


NodeFactory = Callable[[str, float], Node]
IpfsFactory = Callable[[str], IpfsApi]


def _rpc_node(url: str, timeout_s: float) -> Node:
    from r3mes_desktop.adapters.chain.transport import RpcTransport

    return RpcTransport(url, timeout_s=timeout_s)


def _ipfs_api(address: str) -> IpfsApi:
    from r3mes_desktop.adapters.ipfs.client import IpfsClient

    return IpfsClient(address)


def required_passed(checks: Sequence[Check]) -> bool:
    """Every required check passed (or only warned): the network can be joined."""
    return all(c.status in (PASSED, WARNING) for c in checks if c.required)


def _short(address: str) -> str:
    return f"{address[:6]}…{address[-4:]}" if len(address) > 12 else address


def _ether(wei: int) -> str:
    return f"{wei / 10**18:.4g} ETH"


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 200 else text[:199] + "…"


def _plain(exc: BaseException, timeout_s: float) -> str:
    """Why a service did not answer, in the words a person would use."""
    text = str(exc).lower()
    if isinstance(exc, TimeoutError | TimeoutNetworkError) or "timed out" in text:
        return f"no answer within {timeout_s:g} s"
    if "connect call failed" in text or "connection refused" in text:
        return "connection refused"
    if any(s in text for s in ("name or service not known", "name resolution", "nodename")):
        return "host not found"
    if "unreachable" in text:
        return "unreachable"
    return _reason(exc)


def _age(seconds: float) -> str:
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} days"


class _Run:
    """One pre-flight: the single-attempt callers and the node that answered."""

    def __init__(
        self, target: Target, *, timeout_s: float, clock: Clock, node_factory: NodeFactory
    ) -> None:
        self.target = target
        self.clock = clock
        self.timeout_s = timeout_s
        self.node_factory = node_factory
        once = RetryPolicy(max_retries=0)
        self.chain = ServiceCaller(service="chain", policy=once, timeout_s=timeout_s, clock=clock)
        self.ipfs = ServiceCaller(service="ipfs", policy=once, timeout_s=timeout_s, clock=clock)
        self.node: Node | None = None
        self.chain_id: int | None = None
        self.nodes: list[Node] = []

    async def call(self, operation: str, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        return await self.chain.call(operation, fn, *args)

    # -- the chain side, in order: each needs the node the RPC check found -----------------
    async def rpc(self) -> Check:
        urls = self.target.rpc_urls
        if not urls:
            return Check("rpc", FAILED, "RPC: no chain RPC URL given")
        failures: list[str] = []
        for url in urls:
            node = self.node_factory(url, self.timeout_s)
            self.nodes.append(node)
            try:
                chain_id = await self.call("chain.chain_id", node.chain_id)
            except Exception as exc:
                failures.append(f"{redact_url(url)} ({_plain(exc, self.timeout_s)})")
                continue
            if self.node is None:
                self.node, self.chain_id = node, chain_id
        if self.node is None:
            return Check("rpc", FAILED, "RPC: cannot reach " + "; ".join(failures))
        answered = len(urls) - len(failures)
        if not failures:
            line = f"RPC {redact_url(urls[0])} answers"
            if answered > 1:
                line += f" (and its {answered - 1} backup URL{'s' if answered > 2 else ''})"
            return Check("rpc", PASSED, line)
        return Check(
            "rpc",
            WARNING,
            f"RPC: {answered} of {len(urls)} URLs answer; cannot reach " + "; ".join(failures),
        )

    def _no_node(self, name: str, required: bool = True) -> Check | None:
        if self.node is None:
            return Check(name, SKIPPED, "not checked: the RPC did not answer", required)
        return None

    def chain_id_check(self) -> Check:
        skipped = self._no_node("chain_id")
        if skipped is not None:
            return skipped
        expected, got = self.target.chain_id, self.chain_id
        if expected is None:
            return Check("chain_id", PASSED, f"chain id {got} (none expected: nothing to compare)")
        if got != expected:
            return Check(
                "chain_id",
                FAILED,
                f"chain id: the RPC is on chain {got}, the network is chain {expected}: "
                "wrong RPC URL or wrong network",
            )
        return Check("chain_id", PASSED, f"chain id {got}, as expected")

    async def contract(self) -> Check:
        skipped = self._no_node("contract")
        if skipped is not None:
            return skipped
        assert self.node is not None
        address = self.target.contract_address
        if not address:
            return Check("contract", FAILED, "contract: no contract address given")
        code = await self.call("chain.get_code", self.node.get_code, address)
        if not code:
            return Check(
                "contract",
                FAILED,
                f"no contract at {address} on chain {self.chain_id}: "
                "wrong address or wrong network",
            )
        try:
            version = await self.call("chain.version", self._version, self.node, address)
        except Exception as exc:
            return Check(
                "contract",
                FAILED,
                f"the contract at {_short(address)} is not an R3MES rounds contract "
                f"(VERSION() failed: {_reason(exc)})",
            )
        if version != SUPPORTED_CONTRACT_VERSION:
            return Check(
                "contract",
                FAILED,
                f"the contract at {_short(address)} speaks {version!r}; this app speaks "
                f"{SUPPORTED_CONTRACT_VERSION!r}: update the app or ask the operator",
            )
        wanted = self.target.contract_version
        if wanted and wanted != version:
            return Check(
                "contract",
                FAILED,
                f"the contract at {_short(address)} is {version!r}, the network file says "
                f"{wanted!r}: the file is out of date",
            )
        return Check("contract", PASSED, f"contract {address} is {version}")

    @staticmethod
    async def _version(node: Node, address: str) -> str:
        from r3mes_desktop.adapters.chain.abi import decode_output, encode_call

        data = await node.call({"to": address, "data": encode_call("VERSION")})
        return str(decode_output("VERSION", data))

    async def balance(self) -> Check:
        skipped = self._no_node("balance", required=False)
        if skipped is not None:
            return skipped
        assert self.node is not None
        account = self.target.account
        if not account:
            return Check(
                "balance",
                SKIPPED,
                "no miner key yet: create or import one (Settings → Account, or "
                "r3mes-miner keys create) to check its balance",
                required=False,
            )
        wei = await self.call("chain.balance", self.node.balance, account)
        max_fee, _tip = await self.call("chain.fee_params", self.node.fee_params)
        per_submission = GAS_PER_SUBMISSION * max(max_fee, 1)
        count = wei // per_submission
        if wei == 0:
            line = f"{_short(account)} holds no ETH: submissions fail until it is funded"
            return Check("balance", WARNING, line, required=False)
        if count < MIN_SUBMISSIONS:
            return Check(
                "balance",
                WARNING,
                f"{_short(account)} holds {_ether(wei)}: gas for {count} submission"
                f"{'s' if count != 1 else ''} at the current fee; fund it with at least "
                f"{_ether(per_submission * MIN_SUBMISSIONS)}",
                required=False,
            )
        return Check(
            "balance",
            PASSED,
            f"{_short(account)} holds {_ether(wei)}: gas for at least {count:,} submissions",
            required=False,
        )

    async def clock_check(self) -> Check:
        skipped = self._no_node("clock", required=False)
        if skipped is not None:
            return skipped
        assert self.node is not None
        block = await self.call("chain.block", self.node.block, None)
        if block is None:
            return Check("clock", SKIPPED, "the node returned no latest block", required=False)
        ahead = self.clock.time() - float(block["timestamp"])  # > 0: the block is in our past
        if -ahead > CLOCK_BEHIND_S:
            return Check(
                "clock",
                WARNING,
                f"your clock is {-ahead:.0f} s behind the chain's latest block: round "
                "deadlines will be misjudged; sync it (NTP)",
                required=False,
            )
        if ahead > BLOCK_OLD_S:
            return Check(
                "clock",
                WARNING,
                f"the latest block is {_age(ahead)} old: the chain is idle, or your "
                "clock is ahead by up to that; check it if rounds are being opened",
                required=False,
            )
        return Check(
            "clock", PASSED, f"clock within {abs(ahead):.0f} s of the chain's latest block",
            required=False,
        )  # fmt: skip

    async def chain_side(self) -> list[Check]:
        checks = [await _guarded("rpc", self.rpc)]
        checks.append(self.chain_id_check())
        for name, step, required in (
            ("contract", self.contract, True),
            ("balance", self.balance, False),
            ("clock", self.clock_check, False),
        ):
            checks.append(await _guarded(name, step, required=required))
        return checks

    async def close(self) -> None:
        for node in self.nodes:
            try:
                await node.close()
            except Exception as exc:  # a node that never answered may fail to close too
                log.debug("closing a pre-flight RPC client failed: %s", exc)


async def _guarded(
    name: str, step: Callable[[], Awaitable[Check]], *, required: bool = True
) -> Check:
    """The check's line, or a failed line with what went wrong: never an exception."""
    try:
        return await step()
    except Exception as exc:
        return Check(name, FAILED if required else WARNING, f"{name}: {_reason(exc)}", required)


async def _ipfs(target: Target, caller: ServiceCaller, ipfs_factory: IpfsFactory) -> Check:
    address = target.ipfs_api
    if not address:
        return Check("ipfs", FAILED, "IPFS: no IPFS API address given")
    try:
        api = ipfs_factory(address)
    except Exception as exc:
        return Check("ipfs", FAILED, f"IPFS: {_reason(exc)}")
    where = address if address.startswith("/") else redact_url(address)
    try:
        version = await caller.call("ipfs.version", api.version)
    except Exception as exc:
        return Check("ipfs", FAILED, f"IPFS API {where}: {_plain(exc, caller.timeout_s or 0)}")
    finally:
        await api.close()
    return Check("ipfs", PASSED, f"IPFS API {where} answers (version {version})")


async def preflight(
    target: Target,
    *,
    timeout_s: float = 5.0,
    clock: Clock = SYSTEM_CLOCK,
    node_factory: NodeFactory = _rpc_node,
    ipfs_factory: IpfsFactory = _ipfs_api,
) -> list[Check]:
    """rpc, chain_id, contract, ipfs, balance, clock: one `Check` each, in that order."""
    run = _Run(target, timeout_s=timeout_s, clock=clock, node_factory=node_factory)
    try:
        chain, ipfs = await asyncio.gather(
            run.chain_side(), _guarded("ipfs", lambda: _ipfs(target, run.ipfs, ipfs_factory))
        )
    finally:
        await run.close()
    return [*chain[:3], ipfs, *chain[3:]]


def devnet_checks() -> list[Check]:
    """What the pre-flight says of settings with no chain RPC: nothing to reach."""
    return [
        Check(
            "network",
            SKIPPED,
            "no chain RPC is set: the app mines on its embedded devnet, which needs no "
            "connection (join a network to mine on a real one)",
            required=False,
        )
    ]


def describe(checks: Sequence[Check]) -> str:
    """One line per check ("contract  passed   contract 0x… is r3mes-rounds/2"), then a
    verdict line counting them."""
    width = max(len(c.name) for c in checks)
    lines = [
        f"{c.name.ljust(width)}  {c.status.upper() if c.status == FAILED else c.status:<7}  "
        f"{c.line}"
        for c in checks
    ]
    counts = {s: sum(c.status == s for c in checks) for s in (PASSED, WARNING, FAILED, SKIPPED)}
    verdict = "ready" if required_passed(checks) else "NOT READY"
    warnings = f"{counts[WARNING]} warning{'s' if counts[WARNING] != 1 else ''}"
    lines.append(
        f"{verdict}: {counts[PASSED]} passed, {warnings}, "
        f"{counts[FAILED]} failed, {counts[SKIPPED]} skipped"
    )
    return "\n".join(lines)
