"""Multi-miner part: several headless miners (`r3mes-miner run`, each a process with its
own data dir and key) share one anvil chain node and one js-ipfs daemon, while the harness

- plays the round operator (rounds opened so that every miner always has a few to mine;
  a round is closed once every miner has submitted to it),
- funds a miner whose key started unfunded, part-way through,
- sends plain transfers from the miners' keys with the account's current nonce (a second
  wallet on the same key: nonces the miner may have signed are taken under it),
- closes the gate in front of the daemon for a few seconds, several times (every miner's
  ipfs breaker opens, then meets a crowd of waiting calls at half-open),
- optionally SIGKILLs one miner and starts it again,
- restarts the chain node (SIGTERM, then started again from the state it wrote: the chain
  is kept, its transaction pool is not; every miner's chain calls fail while it is down),
- runs a validator (`r3mes-validator run`, appointed by the operator) that it SIGKILLs right
  after it journals a verdict and starts again, and a free-rider that copies a miner's CID
  and gradient hash into its own submission for each round (`roles_run`),
- runs an aggregator (`r3mes-operator aggregate --follow`, appointed by the operator) that
  turns closed, judged rounds into model versions, SIGKILLs it right after it journals a
  version and starts it again; the operator opens each round on the current version, so
  the network keeps learning during the run.

Then it stops opening rounds, lets the miners drain what is open, stops them with SIGTERM
(graceful), lets the validator judge every submission past its window, stops it, and checks
the chain, the daemon (after `repo gc`) and each journal (`invariants.check_multi`), then
the verdicts and credits (`invariants.check_verdicts`); then it closes what is left open,
lets the aggregator look at every round, stops it, and checks every model version against
its round's accepted updates (`invariants.check_versions`). Each miner's work is bound to its
account, so miners of one round upload different bytes; a CID another transaction of the
same journal needs (a retry of the round) is the shared pin an undo must not break.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import rlp
from eth_account import Account
from eth_utils import keccak, to_checksum_address

from bench.chaos.peers import (
    ANVIL_KEY0,
    CHAIN_ID,
    Gate,
    Peer,
    restart_anvil,
    start_anvil,
    start_jsipfs,
)
from bench.chaos.roles_run import (
    AggregatorProcess,
    AggregatorResult,
    FreeRider,
    RiderResult,
    ValidatorProcess,
    ValidatorResult,
    VerdictBacklog,
    drain_verdicts,
    drain_versions,
    kill_aggregator,
    kill_validator,
)
from r3mes_desktop.core.errors import NetworkError

log = logging.getLogger(__name__)

PASSWORD = "multi-miner chaos password"  # a throwaway keystore's password, never logged
MAX_OPEN = 60  # the contract holds 64 open rounds
MINER_SETTINGS: dict[str, str] = {
    "MODEL_PRESET": "tiny",
    "POW_DIFFICULTY": "16",
    "MAX_RETRIES": "4",
    "RETRY_INITIAL_DELAY": "0.05",
    "RETRY_MAX_DELAY": "0.5",
    "BREAKER_OPEN_TIMEOUT": "1",
    "CALL_TIMEOUT": "10",
    "TRANSACTION_TIMEOUT": "300",
    "MAX_ACTIVE_TRANSACTIONS": "4",
    "NOTIFY_TRAY": "false",
}
"""Short retry waits and a 1 s breaker: an outage of a few seconds opens each miner's ipfs
breaker, and its half-open trial meets the calls queued behind it."""
ROUND_STEPS = 8
CONNECT_GRACE_S = 10.0
"""How long a (re)started miner has to connect before the node may be restarted under it:
a miner that cannot reach the chain at start exits (5), which would end the run."""


@dataclass(frozen=True)
class MultiPlan:
    """The size of one multi-miner run."""

    funded: int = 2
    unfunded: int = 1
    mine_s: float = 40.0  # how long the operator keeps opening rounds
    keep_open: int = 3  # rounds open for the miner that has the fewest
    outages: int = 3  # times the daemon's gate is closed
    outage_s: float = 3.0
    hand_sends: int = 6  # plain transfers from miners' keys
    fund_at: float = 0.3  # share of mine_s when the unfunded key gets its funds
    kill: bool = True  # SIGKILL one funded miner mid-run and start it again
    node_restarts: int = 1  # the chain node stopped and started again (state kept)
    node_down_s: float = 3.0  # how long it stays down each time
    drain_s: float = 60.0  # at most this long for the miners to mine what is open
    letters_after_s: float = 5.0  # after the funding: the owner retries the dead letters
    graceful_s: float = 30.0
    window_s: float = 5.0  # the validator's verification window (chain seconds)
    validator_kills: int = 1  # SIGKILLs of the validator, each right after a verdict
    verdicts_s: float = 90.0  # at most this long for every submission to get its verdict
    max_unjudged: int = 24  # no new round while this many submissions await their verdict
    aggregator_kills: int = 1  # SIGKILLs of the aggregator, each right after a version
    versions_s: float = 120.0  # at most this long for the aggregator to look at every round


def sized_plan(miners: int, seconds: float) -> MultiPlan:
    """`miners` in all, one of them unfunded at first; an outage every ~13 s and a
    hand-sent transfer every ~7 s of mining time (at least 3 and 5)."""
    return MultiPlan(
        funded=miners - 1,
        unfunded=1,
        mine_s=seconds,
        outages=max(3, int(seconds / 13)),
        hand_sends=max(5, int(seconds / 7)),
        node_restarts=max(1, int(seconds / 120)),
        drain_s=max(150.0, seconds),
        validator_kills=max(1, int(seconds / 30)),
        max_unjudged=6 * (miners + 1),  # six rounds of verdicts (the free-rider's included)
        aggregator_kills=max(1, int(seconds / 60)),
    )


@dataclass
class MinerResult:
    address: str
    funded_from_start: bool
    states: dict[str, int] = field(default_factory=dict)
    resigned: int = 0  # "signed again with account nonce"
    superseded: int = 0  # dead letters closed as superseded
    kept_pins: int = 0  # undo that kept a pin another transaction needs
    dead_letters_open: int = 0
    exit_code: int | None = None
    starts: int = 1


@dataclass
class MultiResult:
    miners: dict[str, MinerResult] = field(default_factory=dict)
    rounds_opened: int = 0
    rounds_closed: int = 0
    hand_sent: int = 0
    hand_sent_failed: int = 0
    ipfs_outages: int = 0
    kills: int = 0
    funded_after_s: float | None = None
    unfunded_refused: bool = False  # every unfunded key left a dead letter before its funds
    letters_retried: int = 0
    letters_retried_committed: int = 0
    letters_retry_refused: int = 0  # another letter of the same round holds its signature
    drained: bool = False
    repo_gc: str = "not run"
    pool: dict[str, Any] = field(default_factory=dict)  # the node's tx pool if not drained
    node_restarts: int = 0  # the chain node restarted with its state (`_restart_node`)
    opening_held: int = 0  # operator passes that opened nothing: verdicts to catch up on
    validator: ValidatorResult = field(default_factory=ValidatorResult)
    rider: RiderResult = field(default_factory=RiderResult)
    verdicts: dict[str, Any] = field(default_factory=dict)  # `invariants.check_verdicts`
    aggregator: AggregatorResult = field(default_factory=AggregatorResult)
    rounds_closed_at_end: int = 0  # left open at the end (the free-rider's last copies)
    versions: dict[str, Any] = field(default_factory=dict)  # `invariants.check_versions`
    seconds: float = 0.0
    mined_s: float = 0.0  # rounds opened this long: mine_s, more until one trained on a version

    def to_dict(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["miners"] = {name: dict(m.__dict__) for name, m in self.miners.items()}
        data["validator"] = dict(self.validator.__dict__)
        data["rider"] = dict(self.rider.__dict__)
        data["aggregator"] = dict(self.aggregator.__dict__)
        return data


@dataclass
class Miner:
    name: str
    root: Path
    key: bytes
    address: str
    funded: bool
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    held: bool = False  # stopped on purpose by the harness (killed, or letters retried)
    hold: asyncio.Lock = field(default_factory=asyncio.Lock)  # one such stop at a time

    def exited_by_itself(self) -> bool:
        return not self.held and self.proc is not None and self.proc.poll() is not None

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def password_file(self) -> Path:
        return self.root / "password.txt"


def make_miner(root: Path, name: str, *, funded: bool, rng: random.Random) -> Miner:
    """A fresh key in the miner's own keystore (cheap scrypt: a throwaway key)."""
    from r3mes_desktop.adapters.chain.keystore import Keystore

    key = rng.randbytes(32)
    home = root / name
    keystore = Keystore(home / "data" / "keys", scrypt_n=2**4)
    address = keystore.import_hex(key.hex(), PASSWORD)
    password_file = home / "password.txt"
    password_file.write_text(PASSWORD + "\n", encoding="utf-8")
    password_file.chmod(0o600)
    return Miner(name, home, key, address, funded)


def miner_env(miner: Miner, *, rpc_url: str, contract: str, ipfs: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        R3MES_DATA_DIR=str(miner.root / "data"),
        R3MES_CONFIG_DIR=str(miner.root / "config"),
        R3MES_LOG_DIR=str(miner.root / "logs"),
        R3MES_CACHE_DIR=str(miner.root / "cache"),
        R3MES_CHAIN_RPC_URLS=rpc_url,
        R3MES_CHAIN_ID=str(CHAIN_ID),
        R3MES_CONTRACT_ADDRESS=contract,
        R3MES_IPFS_API_ADDRESS=ipfs,
        PYTHON_KEYRING_BACKEND="keyring.backends.null.Keyring",
        PYTHONUNBUFFERED="1",
    )
    env.update({f"R3MES_{k}": v for k, v in MINER_SETTINGS.items()})
    env.pop("R3MES_FAULT_PLAN", None)
    return env


def start_miner(miner: Miner, env: dict[str, str], graceful_s: float) -> None:
    out = (miner.root / "miner-output.log").open("ab")
    miner.proc = subprocess.Popen(
        [sys.executable, "-m", "r3mes_desktop.cli", "-q", "run", "--fast",
         "--round-steps", str(ROUND_STEPS), "--graceful", str(graceful_s),
         "--password-file", str(miner.password_file)],
        env=env, stdout=out, stderr=subprocess.STDOUT,
        start_new_session=True,  # its own group: we stop exactly what we started
    )  # fmt: skip
    out.close()
    miner.starts += 1


def _kill_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)


class Chain:
    """The harness's view of the chain node: contract views, the operator, hand-sent
    transfers. `node_lock` is held while the node restarts and by whatever must not meet a
    node that is down: a miner's start (it exits if it cannot connect), the funding, the
    owner's retry of dead letters."""

    def __init__(self, url: str) -> None:
        from r3mes_desktop.adapters.chain.transport import RpcTransport
        from r3mes_desktop.adapters.devnet.operator import DevnetOperator, RoundTemplate

        self.transport = RpcTransport(url)
        self.node_lock = asyncio.Lock()
        template = RoundTemplate(difficulty=16, steps=ROUND_STEPS, hyperparams={"preset": "tiny"})
        self.operator = DevnetOperator(
            self.transport, key=bytes.fromhex(ANVIL_KEY0[2:]), template=template
        )

    async def deploy(self) -> str:
        from r3mes_desktop.adapters.chain import artifact

        op = self.operator
        nonce = await self.transport.nonce(op.address)
        op.contract_address = str(
            to_checksum_address(keccak(rlp.encode([bytes.fromhex(op.address[2:]), nonce]))[12:])
        )
        await op._send(artifact.load().bytecode, to=None, gas=3_000_000)
        return op.contract_address

    async def view(self, fn_name: str, *args: Any) -> Any:
        from r3mes_desktop.adapters.chain.abi import decode_output, encode_call

        tx = {"to": self.operator.contract_address, "data": encode_call(fn_name, *args)}
        return decode_output(fn_name, await self.transport.call(tx))

    async def hand_send(self, key: bytes) -> str:
        """A plain 0-value transfer to itself from `key`, with the account's current
        (pending) nonce, as another wallet on the same key would send it."""
        account = Account.from_key(key)
        nonce = await self.transport.nonce(account.address)
        max_fee, tip = await self.transport.fee_params()
        tx = {
            "type": 2,
            "chainId": CHAIN_ID,
            "nonce": nonce,
            "to": account.address,
            "value": 0,
            "gas": 21_000,
            "maxFeePerGas": max_fee,
            "maxPriorityFeePerGas": tip,
        }
        signed = account.sign_transaction(tx)
        return await self.transport.send_raw(bytes(signed.raw_transaction))

    async def pool_summary(self, addresses: list[str]) -> dict[str, Any]:
        """Per miner: confirmed and pending nonce, and the nonces the node holds in its
        pool (pending / queued): why a drain did not finish."""
        from r3mes_desktop.adapters.chain.transport import RpcTransport

        assert isinstance(self.transport, RpcTransport)
        try:
            content = await self.transport._checked("txpool_content", [])
        except Exception as exc:
            content = {"error": str(exc)}
        out: dict[str, Any] = {}
        for address in addresses:
            entry: dict[str, Any] = {
                "confirmed": await self.transport.confirmed_nonce(address),
                "pending": await self.transport.nonce(address),
            }
            for kind in ("pending", "queued"):
                held = (content.get(kind) or {}) if isinstance(content, dict) else {}
                for who, txs in held.items():
                    if who.lower() == address.lower():
                        entry[f"pool_{kind}"] = sorted(int(n) for n in txs)
            out[address] = entry
        if "error" in content:
            out["txpool_content"] = content["error"]
        return out

    async def close(self) -> None:
        await self.transport.close()


async def _operate(
    chain: Chain,
    miners: list[Miner],
    plan: MultiPlan,
    result: MultiResult,
    opening: Any,
    rider: str,
    backlog: VerdictBacklog,
) -> None:
    """Keep `keep_open` rounds open for the miner with the fewest (every round is open for
    every miner until it submits), close rounds every miner and the free-rider `rider` have
    submitted to (it copies a round once a miner submitted); stop opening once `opening` is
    cleared.

    New rounds wait while `plan.max_unjudged` or more submissions have no verdict yet: the
    validator posts its verdicts one at a time, slower than the miners submit here, and an
    unbounded backlog would make the run's end wait for it."""
    while True:
        try:
            open_ids = set(await chain.view("openRounds"))
            todo = [set(await chain.view("openRoundsFor", m.address)) for m in miners]
            copying = set(await chain.view("openRoundsFor", rider))
            for round_id in sorted(open_ids - set().union(copying, *todo)):
                await chain.operator.close_round(round_id)
                result.rounds_closed += 1
                open_ids.discard(round_id)
            wanted = plan.keep_open - min(len(t) for t in todo)
            if opening.is_set() and wanted > 0:
                if await backlog.size(open_ids) >= plan.max_unjudged:
                    result.opening_held += 1
                    wanted = 0
                for _ in range(max(0, min(wanted, MAX_OPEN - len(open_ids)))):
                    await chain.operator.open_round()
                    result.rounds_opened += 1
                    open_ids.add(-1)
        except asyncio.CancelledError:
            raise
        except NetworkError as exc:  # the node restarting (`_restart_node`): next pass
            log.info("multi-miner: operator pass could not reach the node: %s", exc)
        except Exception:
            log.exception("multi-miner operator pass failed")
        await asyncio.sleep(0.5)


async def _storms_at(
    gate: Gate, plan: MultiPlan, result: MultiResult, rng: random.Random, t0: float
) -> None:
    if not plan.outages:
        return
    slot = plan.mine_s / plan.outages
    for i in range(plan.outages):
        at = t0 + slot * (i + rng.uniform(0.2, 0.5))
        await asyncio.sleep(max(0.0, at - time.monotonic()))
        await gate.close()
        result.ipfs_outages += 1
        log.info("multi-miner: ipfs gate closed (%d of %d)", i + 1, plan.outages)
        await asyncio.sleep(plan.outage_s)
        await gate.open()


async def _hand_send(chain: Chain, miner: Miner, result: MultiResult) -> None:
    try:
        tx_hash = await chain.hand_send(miner.key)
        result.hand_sent += 1
        log.info("multi-miner: hand-sent %s from %s (%s)", tx_hash, miner.address, miner.name)
    except Exception as exc:  # e.g. the node still holds the miner's transaction
        result.hand_sent_failed += 1
        log.info("multi-miner: hand-send from %s refused: %s", miner.address, exc)


async def _hand_sender(
    chain: Chain,
    miners: list[Miner],
    plan: MultiPlan,
    result: MultiResult,
    rng: random.Random,
    t0: float,
) -> None:
    """From time to time, a plain transfer from a running miner's key, as a second wallet
    on the same key sends it, while the miner keeps running: a nonce it signed with and has
    not broadcast yet is taken, or both reach the node at once and it keeps one. Not while
    the harness itself stops that miner (`hold`)."""
    if not plan.hand_sends:
        return
    gap = plan.mine_s / (plan.hand_sends + 1)
    for i in range(plan.hand_sends):
        at = t0 + gap * (i + rng.uniform(0.7, 1.3))
        await asyncio.sleep(max(0.0, at - time.monotonic()))
        running = [m for m in miners if m.funded and not m.hold.locked() and m.proc is not None]
        if not running:
            continue
        target = rng.choice(running)
        async with target.hold:
            await _hand_send(chain, target, result)


async def _fund_later(
    chain: Chain,
    miners: list[Miner],
    plan: MultiPlan,
    result: MultiResult,
    env: Any,
    t0: float,
) -> None:
    """Fund the keys that started unfunded; a moment later their owner does what the app
    tells them: stop the miner, retry the dead letters its refused submissions left (a
    transfer from the key takes the account's next nonce first), start it again."""
    await asyncio.sleep(plan.mine_s * plan.fund_at)
    late = [m for m in miners if not m.funded]
    latest = t0 + plan.mine_s  # a miner slow to start is refused later, not never
    while time.monotonic() < latest:  # until each unfunded key was refused at least once
        refused = await asyncio.gather(
            *(asyncio.to_thread(_refused_once, m.data_dir) for m in late)
        )
        if all(refused):
            result.unfunded_refused = True
            break
        await asyncio.sleep(0.5)
    async with chain.node_lock:
        for m in late:
            await chain.operator.fund(m.address)
            m.funded = True
            log.info("multi-miner: funded %s", m.address)
    result.funded_after_s = round(time.monotonic() - t0, 1)
    await asyncio.sleep(plan.letters_after_s)
    for m in late:
        async with m.hold:  # not while a transfer is hand-sent from its key
            proc = m.proc
            assert proc is not None
            m.held = True
            proc.send_signal(signal.SIGTERM)
            await asyncio.to_thread(proc.wait, plan.graceful_s + 30)
            _kill_group(proc, signal.SIGKILL)  # any worker left in its group
            async with chain.node_lock:  # the owner's retry meets a running node
                await _hand_send(chain, m, result)  # a refused signature's nonce is taken now
                retried = await retry_letters(m, env(m))
                result.letters_retried += len(retried)
                result.letters_retried_committed += retried.count("committed")
                result.letters_retry_refused += retried.count("refused")
                await _start_connected(m, env(m), plan.graceful_s)
            m.held = False


async def retry_letters(miner: Miner, env: dict[str, str]) -> list[str]:
    """`r3mes-miner dead-letters --retry` for each open letter of a stopped miner, in one
    runtime (as the CLI opens it); returns the final state of each retried transaction."""
    from r3mes_desktop.app.runtime import Runtime, RuntimeOptions
    from r3mes_desktop.core.errors import ValidationError
    from r3mes_desktop.support.config import load_settings, updated

    settings = updated(
        load_settings(miner.root / "config" / "settings.toml", use_env=False),
        chain_rpc_urls=[env["R3MES_CHAIN_RPC_URLS"]],
        chain_id=CHAIN_ID,
        contract_address=env["R3MES_CONTRACT_ADDRESS"],
        ipfs_api_address=env["R3MES_IPFS_API_ADDRESS"],
        **{k.lower(): v for k, v in MINER_SETTINGS.items()},
    )

    async def prompt(_address: str) -> str:
        return PASSWORD

    runtime = Runtime(
        settings, options=RuntimeOptions(data_dir=miner.data_dir, password_prompt=prompt)
    )
    await runtime.open()
    states: list[str] = []
    try:
        coordinator = runtime.coordinator
        for letter in await coordinator.journal.dead_letters(status="open"):
            open_now = {d.id for d in await coordinator.journal.dead_letters(status="open")}
            if letter.id not in open_now:
                continue  # closed as superseded by a retry before it
            try:
                status = await coordinator.retry_dead_letter(letter.id)
            except ValidationError as exc:
                # "retry that one instead": another letter of its round holds the round's
                # signature (and is retried too); the app refuses this one, as it should
                log.info("multi-miner: %s dead letter %s refused: %s", miner.name, letter.id, exc)
                states.append("refused")
                continue
            log.info(
                "multi-miner: %s retried dead letter %s: %s", miner.name, letter.id, status.state
            )
            states.append(str(status.state))
    finally:
        await runtime.close()
    return states


async def _kill_one(
    chain: Chain, miners: list[Miner], plan: MultiPlan, result: MultiResult, env: Any, t0: float
) -> None:
    if not plan.kill:
        return
    await asyncio.sleep(plan.mine_s * 0.55)
    victim = miners[0]
    assert victim.proc is not None
    async with victim.hold:  # not while a transfer is hand-sent from its key
        victim.held = True
        _kill_group(victim.proc, signal.SIGKILL)
        await asyncio.to_thread(victim.proc.wait, 30)
        result.kills += 1
        log.info("multi-miner: SIGKILLed %s at %.0f s", victim.name, time.monotonic() - t0)
        async with chain.node_lock:
            await _hand_send(chain, victim, result)  # a signature it left unsent is void now
            await _start_connected(victim, env(victim), plan.graceful_s)
        victim.held = False


async def _start_connected(miner: Miner, env: dict[str, str], graceful_s: float) -> None:
    """Start a miner again and give it time to connect; the caller holds `node_lock`."""
    start_miner(miner, env, graceful_s)
    await asyncio.sleep(CONNECT_GRACE_S)


async def _restart_node(
    chain: Chain, plan: MultiPlan, peers: list[Peer], root: Path, result: MultiResult, t0: float
) -> None:
    """Stop the chain node with SIGTERM, leave it down `node_down_s`, and start it again on
    the same port from the state it wrote (`peers.restart_anvil`), late in the mining time:
    blocks, receipts and balances are kept, the pool is lost, and every miner's chain calls
    fail until it answers again (it re-sends what it signed, if the node no longer has it)."""
    for i in range(plan.node_restarts):
        at = t0 + plan.mine_s * (0.7 + 0.25 * i / plan.node_restarts)
        await asyncio.sleep(max(0.0, at - time.monotonic()))
        async with chain.node_lock:
            started = time.monotonic()
            restart = asyncio.ensure_future(
                asyncio.to_thread(restart_anvil, peers[0], root / "anvil", down_s=plan.node_down_s)
            )
            try:
                peers[0] = await asyncio.shield(restart)
            except asyncio.CancelledError:  # run ends: the new node is stopped with the rest
                peers[0] = await restart
                raise
        result.node_restarts += 1
        log.info(
            "multi-miner: chain node restarted (%d of %d, down %.1f s)",
            i + 1, plan.node_restarts, time.monotonic() - started,
        )  # fmt: skip


def _journal_count(data_dir: Path, sql: str, *, missing: int, busy: int) -> int:
    """One `count(*)` read from a miner's journal, read-only; `missing` when it has no
    journal yet, `busy` when sqlite cannot read it now."""
    journal = data_dir / "journal.sqlite"
    if not journal.exists():
        return missing
    try:
        conn = sqlite3.connect(f"file:{journal}?mode=ro", uri=True, timeout=2)
        try:
            return int(conn.execute(sql).fetchone()[0])
        finally:
            conn.close()
    except sqlite3.OperationalError:
        return busy


def _unfinished(data_dir: Path) -> int:
    """Transactions of a miner's journal not yet terminal (busy = unknown = 1)."""
    sql = (
        "SELECT count(*) FROM transactions "
        "WHERE state NOT IN ('committed', 'failed', 'rolled_back')"
    )
    return _journal_count(data_dir, sql, missing=0, busy=1)


async def _trained_on_a_version(miners: list[Miner]) -> bool:
    """Whether some miner has a round on a published model version past training: the
    FETCH invariant has something to check. The first version comes only once round 1 is
    closed and judged, and under load that can fall near the end of the mining time, so
    mining goes on (up to twice as long) until it does."""
    found = await asyncio.gather(
        *(asyncio.to_thread(_past_training_on_a_version, m.data_dir) for m in miners)
    )
    return any(found)


def _past_training_on_a_version(data_dir: Path) -> bool:
    sql = (
        "SELECT count(*) FROM transactions WHERE fetched IS NOT NULL "
        "AND json_extract(spec, '$.model_version') >= 1 AND gradient_hash IS NOT NULL"
    )
    return bool(_journal_count(data_dir, sql, missing=0, busy=0))


def _refused_once(data_dir: Path) -> bool:
    """Whether the miner's journal holds a dead letter (a refused submission)."""
    sql = "SELECT count(*) FROM dead_letters"
    return bool(_journal_count(data_dir, sql, missing=0, busy=0))


def _exited_by_itself(
    miners: list[Miner],
    validator: ValidatorProcess | None,
    aggregator: AggregatorProcess | None = None,
) -> None:
    """Raise if a miner, the validator or the aggregator exited without the harness
    stopping it."""
    for m in miners:
        if m.exited_by_itself():
            assert m.proc is not None
            raise RuntimeError(f"{m.name} exited by itself with {m.proc.returncode}")
    if validator is not None and validator.exited_by_itself():
        assert validator.proc is not None
        tail = (validator.root / "validator-output.log").read_text(errors="replace")[-600:]
        raise RuntimeError(f"the validator exited by itself with {validator.proc.returncode}: "
                           f"{tail}")  # fmt: skip
    if aggregator is not None and aggregator.exited_by_itself():
        assert aggregator.proc is not None
        raise RuntimeError(f"the aggregator exited by itself with {aggregator.proc.returncode}: "
                           f"{aggregator.output_tail()}")  # fmt: skip


async def _drain(
    chain: Chain,
    miners: list[Miner],
    validator: ValidatorProcess,
    aggregator: AggregatorProcess,
    limit_s: float,
) -> bool:
    """Until no open round is left for any miner and no journal holds an unfinished
    transaction (or `limit_s`)."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        try:
            left = [len(await chain.view("openRoundsFor", m.address)) for m in miners]
        except NetworkError as exc:  # the node restarting (`_restart_node`): look again
            log.info("multi-miner: drain could not list open rounds: %s", exc)
            left = [-1]
        busy = [await asyncio.to_thread(_unfinished, m.data_dir) for m in miners]
        if not any(left) and not any(busy):
            return True
        _exited_by_itself(miners, validator, aggregator)
        await asyncio.sleep(1.0)
    return False


async def _close_open(chain: Chain) -> int:
    """Close every round still open (once the miners and the free-rider are done): the
    aggregator takes only closed rounds, in order, so one left open would hold up the rest."""
    closed = 0
    for round_id in sorted(int(r) for r in await chain.view("openRounds")):
        await chain.operator.close_round(round_id)
        closed += 1
    return closed


async def _stop_all(miners: list[Miner], limit_s: float) -> None:
    for m in miners:
        if m.proc is not None and m.proc.poll() is None:
            m.proc.send_signal(signal.SIGTERM)
    for m in miners:
        if m.proc is None:
            continue
        try:
            await asyncio.to_thread(m.proc.wait, limit_s)
        except subprocess.TimeoutExpired:
            log.error("%s did not stop within %.0f s of SIGTERM: killed", m.name, limit_s)
            _kill_group(m.proc, signal.SIGKILL)
            await asyncio.to_thread(m.proc.wait, 30)
        _kill_group(m.proc, signal.SIGKILL)  # any worker left in its group


async def run_multi(root: Path, plan: MultiPlan, *, seed: int = 0) -> dict[str, Any]:
    """One multi-miner run on fresh peers under `root`; the report section."""
    from bench.chaos.invariants import (
        check_multi,
        check_verdicts,
        check_versions,
        learning_view,
        store_cat,
        verdict_view,
    )

    rng = random.Random(seed)
    result = MultiResult()
    t_start = time.perf_counter()
    await asyncio.to_thread(root.mkdir, parents=True, exist_ok=True)
    peers: list[Peer] = []
    miners: list[Miner] = []
    gate: Gate | None = None
    chain: Chain | None = None
    validator: ValidatorProcess | None = None
    aggregator: AggregatorProcess | None = None
    aggregator_kill: asyncio.Task[None] | None = None
    give_up = asyncio.Event()  # an armed aggregator kill stops waiting for a version
    tasks: list[asyncio.Task[None]] = []
    riding: asyncio.Task[None] | None = None
    try:
        peers.append(await asyncio.to_thread(start_anvil, root / "anvil"))
        peers.append(await asyncio.to_thread(start_jsipfs, root / "jsipfs"))
        node, daemon = peers
        gate = Gate(int(daemon.address.rsplit("/", 1)[1]))
        await gate.open()
        chain = Chain(node.address)
        contract = await chain.deploy()
        for i in range(plan.funded + plan.unfunded):
            funded = i < plan.funded
            miners.append(make_miner(root, f"miner-{i + 1}", funded=funded, rng=rng))
            if funded:
                await chain.operator.fund(miners[-1].address)
        for m in miners:
            result.miners[m.name] = MinerResult(m.address, m.funded)
        ipfs_gate = f"/ip4/127.0.0.1/tcp/{gate.port}"
        validator = ValidatorProcess(root / "validator", rng.randbytes(32), window_s=plan.window_s)
        validator.write_network(
            rpc_url=node.address, chain_id=CHAIN_ID, contract=contract, ipfs=ipfs_gate
        )
        await chain.operator.fund(validator.address)
        await chain.operator.add_validator(validator.address)
        result.validator.address, result.validator.window_s = validator.address, plan.window_s
        rider_key = rng.randbytes(32)
        rider = FreeRider(chain, rider_key, [m.address for m in miners], rng, result.rider)
        await chain.operator.fund(rider.address)
        aggregator = AggregatorProcess(
            root / "aggregator", rng.randbytes(32), network_file=validator.network_file
        )
        await chain.operator.fund(aggregator.address)
        await chain.operator.add_aggregator(aggregator.address)
        result.aggregator.address = aggregator.address

        def env(m: Miner) -> dict[str, str]:
            return miner_env(
                m,
                rpc_url=node.address,  # the same after a restart: same port
                contract=contract,
                ipfs=ipfs_gate,
            )

        opening = asyncio.Event()
        opening.set()
        operating = asyncio.create_task(
            _operate(chain, miners, plan, result, opening, rider.address, VerdictBacklog(chain))
        )
        tasks.append(operating)
        for m in miners:
            start_miner(m, env(m), plan.graceful_s)
        validator.start()
        result.validator.starts += 1
        aggregator.start()
        result.aggregator.starts += 1
        riding_stop = asyncio.Event()
        riding = asyncio.create_task(rider.run(riding_stop))
        t0 = time.monotonic()
        tasks += [
            asyncio.create_task(_storms_at(gate, plan, result, rng, t0)),
            asyncio.create_task(_hand_sender(chain, miners, plan, result, rng, t0)),
            asyncio.create_task(_fund_later(chain, miners, plan, result, env, t0)),
            asyncio.create_task(_kill_one(chain, miners, plan, result, env, t0)),
            asyncio.create_task(_restart_node(chain, plan, peers, root, result, t0)),
            asyncio.create_task(
                kill_validator(
                    chain,
                    validator,
                    kills=plan.validator_kills,
                    mine_s=plan.mine_s,
                    grace_s=CONNECT_GRACE_S,
                    result=result.validator,
                    rng=rng,
                    t0=t0,
                )
            ),
        ]
        aggregator_kill = asyncio.create_task(
            kill_aggregator(
                chain,
                aggregator,
                kills=plan.aggregator_kills,
                mine_s=plan.mine_s,
                grace_s=CONNECT_GRACE_S,
                result=result.aggregator,
                rng=rng,
                t0=t0,
                give_up=give_up,
            )
        )
        while time.monotonic() - t0 < plan.mine_s or (
            time.monotonic() - t0 < 2 * plan.mine_s and not await _trained_on_a_version(miners)
        ):
            _exited_by_itself(miners, validator, aggregator)
            if aggregator_kill.done():  # it raised, or every kill is done
                await aggregator_kill
            if riding.done():  # the free-rider stops only when told: it raised
                await riding
            await asyncio.sleep(1.0)
        result.mined_s = time.monotonic() - t0
        for task in tasks[1:]:
            await task  # outages, hand-sends, funding, the kills and the restarts are done
        await gate.open()
        opening.clear()
        log.info("multi-miner: mining time over, draining the open rounds")
        result.drained = await _drain(chain, miners, validator, aggregator, plan.drain_s)
        if not result.drained:
            result.pool = await chain.pool_summary([m.address for m in miners])
        await _stop_all(miners, plan.graceful_s + 30)
        for m in miners:
            assert m.proc is not None
            result.miners[m.name].exit_code = m.proc.returncode
            result.miners[m.name].starts = m.starts
        riding_stop.set()
        await riding
        await rider.pass_once()  # copies of the last rounds, answers the miners gave last
        operating.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await operating
        result.rounds_closed_at_end = await _close_open(chain)
        log.info("multi-miner: miners stopped, the validator judges what is left")
        await drain_verdicts(chain, validator, limit_s=plan.verdicts_s, result=result.validator)
        log.info("multi-miner: the aggregator looks at every round")
        await drain_versions(chain, aggregator, limit_s=plan.versions_s, result=result.aggregator)
        give_up.set()
        await aggregator_kill
        aggregator.held = True
        result.aggregator.exit_code = await asyncio.to_thread(aggregator.stop, 60.0)
        validator.held = True
        result.validator.exit_code = await asyncio.to_thread(validator.stop, 60.0)
        findings = await check_multi(
            miners=[(m.name, m.address, m.data_dir, m.key, PASSWORD) for m in miners],
            chain=chain,
            ipfs_api=f"http://127.0.0.1:{daemon.address.rsplit('/', 1)[1]}",
            result=result,
        )
        view = await verdict_view(
            chain,
            addresses=[*(m.address for m in miners), rider.address],
            validator=validator.address,
            journal=validator.journal,
        )
        result.verdicts = check_verdicts(
            view,
            miners={m.address: m.name for m in miners},
            rider=rider.address,
            validator=validator.address,
            window_s=plan.window_s,
            findings=findings,
        )
        api = f"http://127.0.0.1:{daemon.address.rsplit('/', 1)[1]}"  # not through the gate
        learned = await learning_view(
            chain,
            aggregator=aggregator.address,
            journal=aggregator.journal_rows(),
            cat=functools.partial(store_cat, api),
        )
        result.versions = await asyncio.to_thread(
            check_versions, learned, aggregator=aggregator.address, findings=findings
        )
        result.versions["accepted_on_later_versions"] = sum(
            s.verdict == 1 and learned.rounds[s.round_id].model_version >= 1
            for s in view.submissions
        )
    finally:
        if riding is not None:
            tasks.append(riding)
        if aggregator_kill is not None:
            tasks.append(aggregator_kill)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)  # a node restart completes
        for m in miners:
            if m.proc is not None and m.proc.poll() is None:
                _kill_group(m.proc, signal.SIGKILL)
                m.proc.wait(timeout=30)
        if validator is not None and validator.proc is not None:
            validator.kill()
        if aggregator is not None and aggregator.proc is not None:
            aggregator.kill()
        if gate is not None:
            await gate.close()
        if chain is not None:
            await chain.close()
        for peer in peers:
            await asyncio.to_thread(peer.stop)
    result.seconds = round(time.perf_counter() - t_start, 1)
    return {"result": result.to_dict(), "invariants": findings.to_dict()}
