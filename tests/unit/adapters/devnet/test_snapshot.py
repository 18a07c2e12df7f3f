"""Devnet snapshots: a start restores the state and replays only the log's tail; a damaged,
foreign or half-written snapshot is never used (full replay instead), and a SIGKILL in the
middle of writing one loses nothing."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from eth_account import Account

from r3mes_desktop.adapters.devnet import snapshot
from r3mes_desktop.adapters.devnet.evm_core import EvmCore, snapshot_path

RECEIVER = "0x2B5AD5c4795c026514f8317c7a215E218DcCD6cF"


@pytest.fixture(autouse=True)
def _release_every_log(monkeypatch: pytest.MonkeyPatch) -> object:
    """Cores a test leaves open on purpose (a crash: no clean close, no snapshot) still
    give their log file back at the end, without the snapshot a clean close writes."""
    made: list[EvmCore] = []
    real_init = EvmCore.__init__

    def init(self: EvmCore, *args: object, **kwargs: object) -> None:
        real_init(self, *args, **kwargs)  # type: ignore[arg-type]
        made.append(self)

    monkeypatch.setattr(EvmCore, "__init__", init)
    yield
    for core in made:
        core._log.close()  # genesis account of test key 0x…02


def _transfer(core: EvmCore, nonce: int) -> str:
    key = bytes.fromhex(core.funded_keys()[0])
    tip = 10**9
    signed = Account.from_key(key).sign_transaction(
        {
            "type": 2,
            "chainId": core.chain_id(),
            "nonce": nonce,
            "to": RECEIVER,
            "value": 1,
            "gas": 21_000,
            "maxFeePerGas": 2 * core.base_fee() + tip,
            "maxPriorityFeePerGas": tip,
        }
    )
    return core.send_raw(bytes(signed.raw_transaction).hex())


def _sender(core: EvmCore) -> str:
    return str(Account.from_key(bytes.fromhex(core.funded_keys()[0])).address)


def _state(core: EvmCore, hashes: list[str]) -> tuple[object, ...]:
    """What a client can observe: head, nonces, balances, every receipt."""
    receipts = [core.receipt(h) for h in hashes]
    sender = _sender(core)
    return (core.block_number(), core.nonce(sender), core.balance(RECEIVER), receipts)


def _chain(path: Path, count: int, *, every: int | None) -> tuple[EvmCore, list[str]]:
    core = EvmCore(path, snapshot_every=every)
    hashes = [_transfer(core, n) for n in range(count)]
    return core, hashes


def test_a_restart_restores_the_snapshot_and_replays_only_the_tail(tmp_path: Path) -> None:
    log = tmp_path / "chain.log"
    core, hashes = _chain(log, 5, every=3)  # a snapshot after the third transaction
    expected = _state(core, hashes)
    # no close(): the process "dies" with two records past the snapshot
    again = EvmCore(log, snapshot_every=3)
    assert (again.restored, again.replayed) == (3, 2)
    assert _state(again, hashes) == expected
    hashes.append(_transfer(again, 5))  # the restored chain goes on accepting transactions
    expected = _state(again, hashes)
    again.close()  # a clean close snapshots everything
    third = EvmCore(log, snapshot_every=3)
    assert (third.restored, third.replayed) == (6, 0)
    assert _state(third, hashes) == expected
    third.close()


def test_the_restored_state_equals_a_full_replay(tmp_path: Path) -> None:
    log = tmp_path / "chain.log"
    core, hashes = _chain(log, 4, every=2)
    core.close()
    restored = EvmCore(log, snapshot_every=2)
    replayed = EvmCore(log, snapshot_every=None)  # snapshots off: the whole log again
    assert (restored.restored, replayed.replayed) == (4, 4)
    assert _state(restored, hashes) == _state(replayed, hashes)


@pytest.mark.parametrize("damage", ["flip", "truncate", "garbage"])
def test_a_damaged_snapshot_is_ignored_and_the_log_replayed(tmp_path: Path, damage: str) -> None:
    log = tmp_path / "chain.log"
    core, hashes = _chain(log, 3, every=1)
    expected = _state(core, hashes)
    core.close()
    path = snapshot_path(log)
    data = bytearray(path.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0xFF
    elif damage == "truncate":
        data = data[: len(data) // 2]
    else:
        data = bytearray(b"not a snapshot at all")
    path.write_bytes(bytes(data))
    again = EvmCore(log, snapshot_every=None)  # no new snapshot replaces the damaged one
    assert (again.restored, again.replayed) == (0, 3)
    assert _state(again, hashes) == expected


def test_a_snapshot_of_another_log_is_ignored(tmp_path: Path) -> None:
    log = tmp_path / "chain.log"
    core, _ = _chain(log, 2, every=1)
    core.close()
    foreign = snapshot_path(log).read_bytes()
    log.unlink()
    snapshot_path(log).unlink()
    other, hashes = _chain(log, 1, every=None)  # a new chain whose log differs from byte 0
    expected = _state(other, hashes)
    other.close()
    snapshot_path(log).write_bytes(foreign)
    again = EvmCore(log, snapshot_every=None)
    assert (again.restored, again.replayed) == (0, 1)
    assert _state(again, hashes) == expected


def test_a_state_the_log_failed_to_record_is_never_snapshotted(tmp_path: Path) -> None:
    log = tmp_path / "chain.log"
    core, _ = _chain(log, 1, every=1)

    def full_disk(raw: bytes) -> None:
        raise OSError(28, "No space left on device")

    core._log.append = full_disk  # type: ignore[method-assign]
    with pytest.raises(OSError):
        _transfer(core, 1)  # executed in memory, not logged
    assert core.snapshot() is False
    core.close()
    again = EvmCore(log, snapshot_every=1)
    assert (again.restored, again.replayed) == (1, 0)
    assert again.nonce(_sender(again)) == 1  # the unlogged transaction is gone, as on replay


WRITER = textwrap.dedent(
    """
    import importlib.util, sys
    from pathlib import Path

    # the module alone (the devnet package imports the chain stack: seconds per start)
    spec = importlib.util.spec_from_file_location("snapshot", sys.argv[3])
    snapshot = sys.modules["snapshot"] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(snapshot)
    path, log = Path(sys.argv[1]), Path(sys.argv[2])
    snap = snapshot.read(path, log)
    entries = dict(snap.entries)
    for i in range(200):  # a bigger file: a kill lands in the middle of a write more often
        entries[b"pad-%d" % i] = bytes(4096)
    print("writing", flush=True)
    while True:
        snapshot.write(path, entries, records=snap.records, log_path=log,
                       log_offset=snap.log_offset, head=snap.head)
    """
)


def test_a_sigkill_while_writing_a_snapshot_leaves_an_intact_one(tmp_path: Path) -> None:
    """A real crash: a process rewriting the snapshot in a loop is SIGKILLed at random
    moments until three kills landed mid-write (a temporary file left); every time, the file
    on disk is a whole snapshot (old or new) and the chain opens with the whole log's state."""
    log = tmp_path / "chain.log"
    core, hashes = _chain(log, 3, every=1)
    expected = _state(core, hashes)
    core.close()
    script = tmp_path / "writer.py"
    script.write_text(WRITER, encoding="utf-8")
    rng = random.Random(8)
    args = [sys.executable, str(script), str(snapshot_path(log)), str(log), snapshot.__file__]
    torn = kills = 0  # kills that landed in the middle of a write (a temporary file left)
    while torn < 3 and kills < 30:
        kills += 1
        proc = subprocess.Popen(args, stdout=subprocess.PIPE)
        assert proc.stdout is not None and proc.stdout.readline() == b"writing\n"
        time.sleep(rng.uniform(0.0, 0.05))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        proc.stdout.close()
        torn += snapshot_path(log).with_name("chain.log.snapshot.tmp").exists()
        assert snapshot.read(snapshot_path(log), log) is not None
    assert torn == 3, f"only {torn} of {kills} kills landed in the middle of a write"
    again = EvmCore(log, snapshot_every=1)
    assert (again.restored, again.replayed) == (3, 0)
    assert _state(again, hashes) == expected
    assert not snapshot_path(log).with_name("chain.log.snapshot.tmp").exists()


async def test_the_evm_process_restores_unless_told_to_replay_everything(tmp_path: Path) -> None:
    """The app's devnet restores; an audit (bench.chaos invariants) replays the whole log."""
    from r3mes_desktop.adapters.devnet.evm import DevnetEvm

    log = tmp_path / "chain.log"
    core, hashes = _chain(log, 2, every=1)
    core.close()
    audit = await DevnetEvm.open(log, snapshots=False)
    try:
        assert (audit.restored, audit.replayed) == (0, 2)
        assert await audit.receipt(hashes[1]) == core.receipt(hashes[1])
    finally:
        await audit.close()
    app = await DevnetEvm.open(log)
    try:
        assert (app.restored, app.replayed) == (2, 0)
        assert await app.receipt(hashes[1]) == core.receipt(hashes[1])
    finally:
        await app.close()
