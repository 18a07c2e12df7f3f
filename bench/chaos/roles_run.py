"""The multi-miner part's other roles: a validator process the harness kills with -9 and
starts again, and a free-rider that copies the miners' updates.

- The validator is `r3mes-validator run` (python -m r3mes_desktop.cli.validator), appointed
  by the operator, with its own key, network file and data dir and a short verification
  window. A kill is armed at a random moment and fires as soon as the validator journals
  its next verdict (intent before effect: the verdict may be journaled, signed or sent but
  not yet posted); the harness starts it again at once. At the end it drains: the chain is
  moved past the window and the validator runs until every submission has its verdict.
- The free-rider is a task of the harness with its own funded key: for each open round a
  miner has submitted to, it copies that miner's CID and gradient hash into its own
  `submitGradient` (its own proof of work: the contract only checks the PoW against the
  sender), then answers the challenge with the copied miner's openings CID once published.
  The contract takes one submission per (round, sender), so it copies one miner per round.

- The aggregator is `r3mes-operator aggregate --follow` (python -m r3mes_desktop.cli.operator),
  appointed by the operator, with its own key and state dir: it turns each closed round on
  the current model version whose submissions all have verdicts into the next version. A
  kill is armed like the validator's and fires as soon as its journal (`versions` table)
  holds one more version than when armed: the version is decided, its bytes maybe pinned,
  its `publishVersion` maybe signed or sent, not necessarily mined. At the end it drains:
  it runs until every round is either a version or passed over, and nothing it journaled
  is left unpublished.

All go through `chain.node_lock` where a node restart must not cut in: a validator's or the
aggregator's start (each exits if it cannot reach the chain when it connects) and a
free-rider's send (a transaction sent and its receipt read against the same node).
"""

from __future__ import annotations

import asyncio
import contextlib
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

from eth_account import Account
from eth_utils.address import to_checksum_address

from r3mes_desktop.core.errors import NetworkError

log = logging.getLogger(__name__)

JOURNAL = "validator.sqlite"
NEXT_ROW_S = 10.0
"""How long an armed kill waits for the validator's next verdict row before it fires."""


@dataclass
class ValidatorResult:
    """What the harness did to the validator and how it ended."""

    address: str = ""
    window_s: float = 0.0
    starts: int = 0
    kills: int = 0
    killed_with: list[dict[str, int]] = field(default_factory=list)  # journal states then
    drained: bool = False  # every submission had its verdict before the stop
    drain_s: float | None = None
    exit_code: int | None = None  # of the last run, stopped with SIGTERM (0 expected)


@dataclass
class RiderResult:
    """The free-rider's copies: submissions and completions sent, and those the chain
    reverted (a round closed in between)."""

    address: str = ""
    copies: int = 0
    copy_reverted: int = 0
    completions: int = 0
    completion_reverted: int = 0
    unreachable: int = 0  # passes cut short by the node restarting


class RoleProcess:
    """A network role's home (its key file) and its current process, run in a process group
    of its own so that a kill reaches its worker too. Subclasses name the role and start it."""

    role = "role"

    def __init__(self, root: Path, key: bytes) -> None:
        self.root = root
        self.key = key
        self.address = str(Account.from_key(key).address)
        self.proc: subprocess.Popen[bytes] | None = None
        self.held = False  # stopped on purpose by the harness
        root.mkdir(parents=True, exist_ok=True)
        self.key_file = root / f"{self.role}.key"
        self.key_file.write_text("0x" + key.hex() + "\n", encoding="utf-8")
        self.key_file.chmod(0o600)

    def exited_by_itself(self) -> bool:
        return not self.held and self.proc is not None and self.proc.poll() is not None

    def kill(self) -> None:
        """SIGKILL the role's process group (its worker too) and reap it."""
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self, limit_s: float) -> int | None:
        """SIGTERM (it stops between submissions or passes), SIGKILL after `limit_s`."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=limit_s)
            except subprocess.TimeoutExpired:
                log.error("%s did not stop within %.0f s of SIGTERM: killed", self.role, limit_s)
        code = self.proc.poll()
        self.kill()  # any worker left in its group
        return code


class ValidatorProcess(RoleProcess):
    """One validator's home (key file, network file, data dir) and its current process."""

    role = "validator"

    def __init__(self, root: Path, key: bytes, *, window_s: float, poll_s: float = 0.5) -> None:
        super().__init__(root, key)
        self.window_s = window_s
        self.poll_s = poll_s
        self.network_file = root / "network.json"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def journal(self) -> Path:
        return self.data_dir / JOURNAL

    def write_network(self, *, rpc_url: str, chain_id: int, contract: str, ipfs: str) -> None:
        from r3mes_desktop.support.network_file import NetworkFile

        NetworkFile(
            name="chaos-multi",
            chain_id=chain_id,
            rpc_urls=(rpc_url,),
            contract_address=contract,
            contract_version="r3mes-rounds/2",
            ipfs_api=ipfs,
        ).save(self.network_file)

    def start(self) -> None:
        env = dict(os.environ)
        env.pop("R3MES_FAULT_PLAN", None)
        env["PYTHONUNBUFFERED"] = "1"
        out = (self.root / "validator-output.log").open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "r3mes_desktop.cli.validator", "-v", "run",
             "--network", str(self.network_file), "--key-file", str(self.key_file),
             "--data-dir", str(self.data_dir), "--window-s", f"{self.window_s:g}",
             "--poll-s", f"{self.poll_s:g}"],
            env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group: its verifier worker dies with it
        )  # fmt: skip
        out.close()

    def journal_states(self) -> dict[str, int]:
        """Rows of the validator's journal by state (read-only; empty if not there yet)."""
        if not self.journal.exists():
            return {}
        try:
            conn = sqlite3.connect(f"file:{self.journal}?mode=ro", uri=True, timeout=2)
            try:
                rows = conn.execute("SELECT state, count(*) FROM verdicts GROUP BY state")
                return {str(s): int(n) for s, n in rows}
            finally:
                conn.close()
        except sqlite3.OperationalError:  # tables not created yet
            return {}


async def _rows_above(
    validator: ValidatorProcess, count: int, *, limit_s: float | None, poll_s: float
) -> None:
    """Until the validator's journal holds more than `count` rows (or `limit_s`)."""
    deadline = None if limit_s is None else time.monotonic() + limit_s
    while deadline is None or time.monotonic() < deadline:
        if sum(validator.journal_states().values()) > count:
            return
        await asyncio.sleep(poll_s)


async def kill_validator(
    chain: Any,
    validator: ValidatorProcess,
    *,
    kills: int,
    mine_s: float,
    grace_s: float,
    result: ValidatorResult,
    rng: random.Random,
    t0: float,
) -> None:
    """`kills` times: arm at a random moment of its slot of the mining time, once the
    validator has journaled a verdict since its last start (its first verification spawns
    the verifier worker: tens of seconds on a loaded machine), SIGKILL as soon as the journal
    holds one more verdict row than when armed (or `NEXT_ROW_S` later), then start the
    validator again (holding `node_lock`: it must reach the node to start)."""
    slot = mine_s / max(kills, 1)
    started_with = 0
    for i in range(kills):
        armed_at = t0 + slot * (i + rng.uniform(0.15, 0.55))
        await asyncio.sleep(max(0.0, armed_at - time.monotonic()))
        await _rows_above(validator, started_with, limit_s=None, poll_s=0.1)
        before = sum(validator.journal_states().values())
        await _rows_above(validator, before, limit_s=NEXT_ROW_S, poll_s=0.01)
        validator.held = True
        await asyncio.to_thread(validator.kill)
        states = validator.journal_states()
        result.kills += 1
        result.killed_with.append(states)
        started_with = sum(states.values())
        log.info(
            "multi-miner: validator SIGKILLed at %.0f s, journal %s", time.monotonic() - t0, states
        )
        async with chain.node_lock:
            validator.start()
            result.starts += 1
            await asyncio.sleep(grace_s)
        validator.held = False


class VerdictBacklog:
    """Submissions on chain still without a verdict, from the contract's counters; a round
    closed with every submission judged is not read again."""

    def __init__(self, chain: Any) -> None:
        self.chain = chain
        self.settled: set[int] = set()

    async def size(self, open_ids: set[int]) -> int:
        last = int(await self.chain.view("lastRoundId"))
        waiting = 0
        for round_id in range(1, last + 1):
            if round_id in self.settled:
                continue
            submitted = int(await self.chain.view("submissionCount", round_id))
            judged = int(await self.chain.view("verdictCount", round_id))
            waiting += submitted - judged
            if submitted == judged and round_id not in open_ids:
                self.settled.add(round_id)
        return waiting


async def all_judged(chain: Any) -> tuple[int, int]:
    """(submissions, verdicts) over every round, from the contract's counters."""
    last = int(await chain.view("lastRoundId"))
    submissions = verdicts = 0
    for round_id in range(1, last + 1):
        submissions += int(await chain.view("submissionCount", round_id))
        verdicts += int(await chain.view("verdictCount", round_id))
    return submissions, verdicts


async def drain_verdicts(
    chain: Any, validator: ValidatorProcess, *, limit_s: float, result: ValidatorResult
) -> None:
    """Move chain time past the verification window (a block mined after it: the window is
    read from block timestamps) and wait until every submission has its verdict."""
    started = time.monotonic()
    await asyncio.sleep(validator.window_s + 1.0)
    deadline = started + limit_s
    seen = (0, 0)
    while time.monotonic() < deadline:
        if validator.exited_by_itself():
            assert validator.proc is not None
            raise RuntimeError(f"the validator exited by itself ({validator.proc.returncode})")
        try:
            await chain.transport._checked("evm_mine", [])
            seen = await all_judged(chain)
        except NetworkError as exc:
            log.info("multi-miner: verdict drain could not read the chain: %s", exc)
        else:
            if seen[0] == seen[1]:
                result.drained = True
                break
        await asyncio.sleep(1.0)
    result.drain_s = round(time.monotonic() - started, 1)
    log.info("multi-miner: verdicts %d of %d submissions after %.0f s", seen[1], seen[0],
             result.drain_s)  # fmt: skip


def solve_pow(gradient_hash: bytes, miner: str, round_id: int, difficulty: int) -> int:
    """The first nonce whose digest is below the round's target, for `miner`."""
    from r3mes_desktop.core.pow import pow_digest, pow_target

    target = pow_target(difficulty)
    nonce = 0
    while int.from_bytes(pow_digest(gradient_hash, miner, round_id, nonce), "big") >= target:
        nonce += 1
    return nonce


class FreeRider:
    """Copies one miner's update per round into its own submission, then completes the task
    with the copied openings (all it can get: they open another miner's training)."""

    def __init__(
        self, chain: Any, key: bytes, miners: list[str], rng: random.Random, result: RiderResult
    ) -> None:
        self.chain = chain
        self.account = Account.from_key(key)
        self.address = str(self.account.address)
        self.miners = {m.lower() for m in miners}
        self.rng = rng
        self.result = result
        result.address = self.address
        self.copied: dict[int, str] = {}  # round -> the miner copied
        self.completed: set[int] = set()

    async def run(self, stop: asyncio.Event, *, poll_s: float = 0.5) -> None:
        while not stop.is_set():
            await self.pass_once()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), poll_s)

    async def pass_once(self) -> None:
        try:
            await self._copy_new()
            await self._complete()
        except NetworkError as exc:  # the node restarting: next pass
            self.result.unreachable += 1
            log.info("multi-miner: free-rider pass could not reach the node: %s", exc)

    async def _copy_new(self) -> None:
        view = self.chain.view
        for round_id in [int(r) for r in await view("openRoundsFor", self.address)]:
            count = int(await view("submissionCount", round_id))
            honest = [
                str(to_checksum_address(who))
                for who in [await view("submitterAt", round_id, i) for i in range(count)]
                if str(who).lower() in self.miners
            ]
            if not honest:
                continue
            victim = self.rng.choice(honest)
            sub = await view("submissionOf", round_id, victim)
            difficulty = int((await view("getRound", round_id))[1])
            cid, gradient_hash = str(sub[0]), bytes(sub[1])
            nonce = await asyncio.to_thread(
                solve_pow, gradient_hash, self.address, round_id, difficulty
            )
            from r3mes_desktop.adapters.chain.abi import encode_call

            data = encode_call("submitGradient", round_id, cid, gradient_hash, nonce)
            if await self._send(data):
                self.copied[round_id] = victim
                self.result.copies += 1
                log.info("multi-miner: free-rider copied %s's round %d", victim, round_id)
            else:
                self.result.copy_reverted += 1

    async def _complete(self) -> None:
        from r3mes_desktop.adapters.chain.abi import encode_call

        for round_id, victim in sorted(self.copied.items()):
            if round_id in self.completed:
                continue
            openings = str((await self.chain.view("submissionOf", round_id, victim))[5])
            if not openings:
                continue  # the copied miner has not answered its challenge yet
            if await self._send(encode_call("completeTask", round_id, openings)):
                self.result.completions += 1
            else:
                self.result.completion_reverted += 1
            self.completed.add(round_id)

    async def _send(self, data: bytes) -> bool:
        """Sign and send to the contract; True if mined with status 1."""
        transport = self.chain.transport
        async with self.chain.node_lock:
            max_fee, tip = await transport.fee_params()
            tx = {
                "type": 2,
                "chainId": await transport.chain_id(),
                "nonce": await transport.nonce(self.address),
                "to": self.chain.operator.contract_address,
                "data": data,
                "value": 0,
                "gas": 500_000,
                "maxFeePerGas": max_fee,
                "maxPriorityFeePerGas": tip,
            }
            signed = await asyncio.to_thread(self.account.sign_transaction, tx)
            tx_hash = await transport.send_raw(bytes(signed.raw_transaction))
            for _ in range(100):
                receipt = await transport.receipt(tx_hash)
                if receipt is not None:
                    return bool(receipt["status"] == 1)
                await asyncio.sleep(0.1)
        raise NetworkError(f"free-rider transaction {tx_hash} not mined in 10 s", service="chain")


AGGREGATOR_JOURNAL = "aggregator/aggregator.sqlite"  # under the aggregator's state dir
AGGREGATOR_PASSES = 10_000  # the CLI's most; at --poll-s 1 hours more than any run


@dataclass
class AggregatorResult:
    """What the harness did to the aggregator and how it ended."""

    address: str = ""
    starts: int = 0
    kills: int = 0
    killed_with: list[dict[str, int]] = field(default_factory=list)  # journal states then
    drained: bool = False  # every round aggregated or passed over, nothing left unpublished
    drain_s: float | None = None
    exit_code: int | None = None  # of the last run, stopped with SIGTERM (0 expected)


class AggregatorProcess(RoleProcess):
    """One aggregator's home (key file, state dir) and its current process; it reads the
    network file the validator's home holds (the same network)."""

    role = "aggregator"

    def __init__(self, root: Path, key: bytes, *, network_file: Path, poll_s: float = 1.0) -> None:
        super().__init__(root, key)
        self.network_file = network_file
        self.poll_s = poll_s

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    @property
    def journal(self) -> Path:
        return self.state_dir / AGGREGATOR_JOURNAL

    def start(self) -> None:
        env = dict(os.environ)
        env.pop("R3MES_FAULT_PLAN", None)
        env["PYTHONUNBUFFERED"] = "1"
        out = (self.root / "aggregator-output.log").open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "r3mes_desktop.cli.operator", "-v", "aggregate",
             "--network", str(self.network_file), "--key-file", str(self.key_file),
             "--state-dir", str(self.state_dir), "--follow", "--poll-s", f"{self.poll_s:g}",
             "--passes", str(AGGREGATOR_PASSES)],
            env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group: its aggregation worker dies with it
        )  # fmt: skip
        out.close()

    def output_tail(self, chars: int = 600) -> str:
        log_file = self.root / "aggregator-output.log"
        return log_file.read_text(errors="replace")[-chars:] if log_file.exists() else ""

    def _read(self, sql: str) -> list[tuple[Any, ...]]:
        if not self.journal.exists():
            return []
        try:
            conn = sqlite3.connect(f"file:{self.journal}?mode=ro", uri=True, timeout=2)
            try:
                return list(conn.execute(sql))
            finally:
                conn.close()
        except sqlite3.OperationalError:  # tables not created yet
            return []

    def journal_states(self) -> dict[str, int]:
        """Versions in its journal by state (read-only; empty if not there yet)."""
        rows = self._read("SELECT state, count(*) FROM versions GROUP BY state")
        return {str(s): int(n) for s, n in rows}

    def journal_rows(self) -> list[dict[str, Any]]:
        rows = self._read("SELECT version_id, round_id, state, cid, sha256 FROM versions")
        keys = ("version_id", "round_id", "state", "cid", "sha256")
        return [dict(zip(keys, row, strict=True)) for row in rows]

    def last_round_seen(self) -> int:
        rows = self._read("SELECT max(round_id) FROM rounds_seen")
        return int(rows[0][0]) if rows and rows[0][0] is not None else 0


async def _versions_above(
    aggregator: AggregatorProcess, count: int, *, until: float, poll_s: float
) -> bool:
    """Until the aggregator's journal holds more than `count` versions (False at `until`)."""
    while time.monotonic() < until:
        if sum(aggregator.journal_states().values()) > count:
            return True
        await asyncio.sleep(poll_s)
    return False


async def kill_aggregator(
    chain: Any,
    aggregator: AggregatorProcess,
    *,
    kills: int,
    mine_s: float,
    grace_s: float,
    result: AggregatorResult,
    rng: random.Random,
    t0: float,
    give_up: asyncio.Event,
) -> None:
    """`kills` times: arm at a random moment of its slot of the mining time, SIGKILL as soon
    as the journal holds one more version than when armed (polled every 10 ms: the kill
    lands between the decision and its publication), then start it again (holding
    `node_lock`). A version may come late (verdicts first, then the round's aggregation),
    so an armed kill waits past the mining time, until `give_up` is set at the end of the
    aggregator's drain."""
    slot = mine_s / max(kills, 1)
    for i in range(kills):
        armed_at = t0 + slot * (i + rng.uniform(0.15, 0.55))
        await asyncio.sleep(max(0.0, armed_at - time.monotonic()))
        before = sum(aggregator.journal_states().values())
        while not give_up.is_set():
            if await _versions_above(aggregator, before, until=time.monotonic() + 1.0, poll_s=0.01):
                break
        else:
            return
        aggregator.held = True
        await asyncio.to_thread(aggregator.kill)
        states = aggregator.journal_states()
        result.kills += 1
        result.killed_with.append(states)
        log.info(
            "multi-miner: aggregator SIGKILLed at %.0f s, journal %s",
            time.monotonic() - t0, states,
        )  # fmt: skip
        async with chain.node_lock:
            aggregator.start()
            result.starts += 1
            await asyncio.sleep(grace_s)
        aggregator.held = False


async def drain_versions(
    chain: Any, aggregator: AggregatorProcess, *, limit_s: float, result: AggregatorResult
) -> None:
    """Wait until the aggregator has looked at every round (each a version or passed over)
    and its journal holds no version still to publish; every round is closed and judged by
    now, so each is ready for it."""
    started = time.monotonic()
    deadline = started + limit_s
    last = 0
    while time.monotonic() < deadline:
        if aggregator.exited_by_itself():
            assert aggregator.proc is not None
            raise RuntimeError(f"the aggregator exited by itself ({aggregator.proc.returncode}): "
                               f"{aggregator.output_tail()}")  # fmt: skip
        try:
            last = int(await chain.view("lastRoundId"))
        except NetworkError as exc:
            log.info("multi-miner: aggregator drain could not read the chain: %s", exc)
        else:
            states = aggregator.journal_states()
            unpublished = states.get("decided", 0) + states.get("signed", 0)
            if aggregator.last_round_seen() >= last and not unpublished:
                result.drained = True
                break
        await asyncio.sleep(1.0)
    result.drain_s = round(time.monotonic() - started, 1)
    log.info("multi-miner: aggregator saw round %d of %d after %.0f s",
             aggregator.last_round_seen(), last, result.drain_s)  # fmt: skip
