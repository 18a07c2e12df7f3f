"""FETCH: the files a round names fetched through the store's caller, verified, journaled,
and what training and recovery make of them (fakes, a ManualClock, a real journal)."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from r3mes_desktop.core.errors import IntegrityError, NetworkError
from r3mes_desktop.core.events import RetryScheduled, TransactionStateChanged
from r3mes_desktop.core.steps import RoundSpec, TrainingResult
from r3mes_desktop.core.txstate import TxState
from tests.helpers.coordinator_rig import Rig, make_rig
from tests.helpers.fakes import FakeTrainer, Faults, make_spec

ADAPTER = b"network adapter, version 3"
DATASET = b"the quick brown fox " * 8
ADAPTER_CID, DATASET_CID = "bafkadapter3", "bafkdataset1"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def hashed(files: dict[str, str]) -> dict[str, tuple[str, str]]:
    return {k: (p, sha(Path(p).read_bytes())) for k, p in files.items()}


def damage(path: str, how: str) -> None:
    if how == "evicted":
        Path(path).unlink()
    else:
        Path(path).write_bytes(b"bit rot")


def store(root: Path, name: str, data: bytes) -> str:
    root.mkdir(parents=True, exist_ok=True)
    (root / name).write_bytes(data)
    return str(root / name)


class FakeModels:
    """A ModelStore writing what its content holds under `root` by sha256. `served` may lie
    (bytes that are not the named version), as a broken cache or store would; `verify`
    makes it refuse them itself, as the app's ModelCache does."""

    def __init__(self, root: Path, faults: Faults, *, verify: bool = False) -> None:
        self.root = root
        self.faults = faults
        self.verify = verify
        self.served = {ADAPTER_CID: ADAPTER, DATASET_CID: DATASET}

    async def fetch(self, cid: str, sha256: str) -> str:
        self.faults.hit("fetch", cid=cid)
        data = self.served[cid]
        if self.verify and sha(data) != sha256:
            raise IntegrityError(f"{cid}: bytes hash to {sha(data)}, not {sha256}")
        return store(self.root, f"{sha256}.bin", data)


class FileTrainer(FakeTrainer):
    """Records the files it was given and what their bytes hashed to when it read them."""

    def __init__(self, faults: Faults, **kwargs: Any) -> None:
        super().__init__(faults, **kwargs)
        self.given: list[dict[str, tuple[str, str]]] = []

    async def train(  # type: ignore[override]
        self, *, transaction_id: str, spec: RoundSpec, progress: Any, **files: str
    ) -> TrainingResult:
        self.given.append(hashed(files))
        return await super().train(transaction_id=transaction_id, spec=spec, progress=progress)


def fetching_spec(round_id: int) -> RoundSpec:
    base = make_spec(round_id)
    return dataclasses.replace(
        base,
        model_version=3,
        model_cid=ADAPTER_CID,
        model_sha256=sha(ADAPTER),
        hyperparams={
            **base.hyperparams,
            "dataset_cid": DATASET_CID,
            "dataset_sha256": sha(DATASET),
        },
    )


@pytest.fixture(params=["inline", "file"])
async def frig(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Rig]:
    rig = make_rig(tmp_path, inline_gradient_max=0 if request.param == "file" else 1 << 20)
    rig.trainer = FileTrainer(rig.faults, clock=rig.clock)
    rig.models = FakeModels(tmp_path / "models", rig.faults)
    await rig.reopen()
    await rig.coordinator.start(background=False)
    yield rig
    await rig.coordinator.close()


def transitions(rig: Rig, tx: str) -> list[tuple[str | None, str]]:
    return [
        (e.old_state, e.new_state)
        for e in rig.of_kind(TransactionStateChanged)
        if e.transaction_id == tx
    ]


def expected_files(rig: Rig) -> dict[str, dict[str, str]]:
    root = rig.tmp / "models"
    return {
        "adapter": {
            "cid": ADAPTER_CID,
            "sha256": sha(ADAPTER),
            "path": str(root / f"{sha(ADAPTER)}.bin"),
        },
        "dataset": {
            "cid": DATASET_CID,
            "sha256": sha(DATASET),
            "path": str(root / f"{sha(DATASET)}.bin"),
        },
    }


async def test_a_round_on_a_version_fetches_verifies_journals_then_trains(frig: Rig) -> None:
    status = await frig.coordinator.run_transaction(fetching_spec(1))

    assert status.state == "committed"
    assert status.progress["fetch"] and status.progress["training"]
    rec = await frig.coordinator.journal.get(status.transaction_id)
    assert rec is not None and rec.fetched == expected_files(frig)
    steps = [
        (h.old_state, h.new_state)
        for h in await frig.coordinator.journal.history(rec.id)
        if h.kind == "transition"
    ]
    assert steps[:4] == [
        (None, "pending"),
        ("pending", "fetch"),
        ("fetch", "training"),
        ("training", "ipfs_upload"),
    ]
    assert transitions(frig, rec.id)[:3] == steps[:3]  # what the GUI and /metrics hear
    files = expected_files(frig)
    trainer = frig.trainer
    assert isinstance(trainer, FileTrainer)
    assert trainer.given == [
        {
            "adapter_path": (files["adapter"]["path"], sha(ADAPTER)),
            "dataset_path": (files["dataset"]["path"], sha(DATASET)),
        }
    ]
    assert frig.faults.count("fetch") == 2  # once each: TRAINING re-hashed, fetched nothing


async def test_a_round_on_the_base_model_starts_in_training_as_before(frig: Rig) -> None:
    status = await frig.coordinator.run_transaction(make_spec(1))
    assert status.state == "committed"
    assert transitions(frig, status.transaction_id)[:2] == [
        (None, "pending"),
        ("pending", "training"),
    ]
    rec = await frig.coordinator.journal.get(status.transaction_id)
    assert rec is not None and rec.fetched is None
    assert frig.faults.count("fetch") == 0


async def test_a_retryable_store_error_is_retried_then_the_fetch_succeeds(frig: Rig) -> None:
    frig.faults.fail("fetch", NetworkError("connection refused", service="ipfs"), times=2)
    status = await frig.coordinator.run_transaction(fetching_spec(1))

    assert status.state == "committed"
    retries = [e for e in frig.of_kind(RetryScheduled) if e.transaction_id == status.transaction_id]
    assert [(e.operation, e.service) for e in retries] == [("fetch_model", "ipfs")] * 2
    assert frig.faults.count("fetch") == 4  # two refused, then the adapter, then the dataset


@pytest.mark.parametrize("store_verifies", [False, True], ids=["lying-store", "verifying-store"])
async def test_a_hash_mismatch_fails_in_fetch_and_is_never_trained_on(
    frig: Rig, store_verifies: bool
) -> None:
    models = frig.models
    assert isinstance(models, FakeModels)
    models.verify = store_verifies
    models.served[ADAPTER_CID] = b"not the published adapter"

    status = await frig.coordinator.run_transaction(fetching_spec(1))

    assert status.state == "failed"
    assert status.failed_step == "fetch"
    assert status.error_category == "validation"
    assert ADAPTER_CID in (status.error_message or "")
    assert sha(ADAPTER) in (status.error_message or "")  # expected
    assert sha(b"not the published adapter") in (status.error_message or "")  # actual
    assert frig.faults.count("train") == 0  # never trained on
    assert frig.faults.count("fetch") == 1  # not retried; the dataset (next) never asked
    rec = await frig.coordinator.journal.get(status.transaction_id)
    assert rec is not None and rec.fetched is None and rec.gradient_hash is None
    assert await frig.coordinator.journal.compensations(tx_id=rec.id) == []  # nothing to undo
    assert (await frig.coordinator.dead_letters()) == []


async def restart(rig: Rig) -> list[dict[str, object]]:
    coordinator = await rig.reopen()
    rig.faults.calls.clear()
    report = await coordinator.start(background=False)
    await coordinator.wait_idle()
    assert report.integrity_problems == []
    return report.reconciled


async def _killed_in(rig: Rig, state: TxState) -> str:
    """Journal a transaction as a process killed in `state` leaves it: in FETCH before its
    commit, or in TRAINING right after FETCH committed (the engine's own step and commit)."""
    journal = rig.coordinator.journal
    now = rig.clock.time()
    rec = await journal.create(
        tx_id="tx-1",
        spec=fetching_spec(1),
        miner=rig.chain.miner_address,
        now=now,
        deadline=now + 300,
        start=TxState.FETCH,
    )
    if state is TxState.TRAINING:
        change = await rig.coordinator.saga.fetching.fetch(rec)
        rec = await journal.apply(change)
    assert rec.state is state
    return rec.id


async def test_a_crash_inside_fetch_resumes_fetch(frig: Rig) -> None:
    tx = await _killed_in(frig, TxState.FETCH)
    reconciled = await restart(frig)

    assert reconciled[0]["state"] == "fetch"
    assert str(reconciled[0]["action"]).startswith("fetch the model version and dataset again")
    assert (await frig.coordinator.status(tx)).state == "committed"
    assert frig.faults.count("fetch") == 2
    rec = await frig.coordinator.journal.get(tx)
    assert rec is not None and rec.fetched == expected_files(frig)


async def test_a_crash_after_fetch_resumes_training_on_the_journaled_paths(frig: Rig) -> None:
    tx = await _killed_in(frig, TxState.TRAINING)
    reconciled = await restart(frig)

    assert "files FETCH journaled" in str(reconciled[0]["action"])
    assert (await frig.coordinator.status(tx)).state == "committed"
    assert frig.faults.count("fetch") == 0  # the journaled files, hashed again: not fetched
    files = expected_files(frig)
    trainer = frig.trainer
    assert isinstance(trainer, FileTrainer)
    assert trainer.given == [
        {
            "adapter_path": (files["adapter"]["path"], sha(ADAPTER)),
            "dataset_path": (files["dataset"]["path"], sha(DATASET)),
        }
    ]


@pytest.mark.parametrize("how", ["evicted", "corrupted"])
async def test_a_journaled_file_gone_or_changed_is_fetched_again_verified(
    frig: Rig, how: str
) -> None:
    tx = await _killed_in(frig, TxState.TRAINING)
    adapter = expected_files(frig)["adapter"]["path"]
    damage(adapter, how)
    await restart(frig)

    assert (await frig.coordinator.status(tx)).state == "committed"
    assert [d["cid"] for op, d in frig.faults.calls if op == "fetch"] == [ADAPTER_CID]
    trainer = frig.trainer
    assert isinstance(trainer, FileTrainer)
    assert trainer.given[0]["adapter_path"] == (adapter, sha(ADAPTER))


async def test_an_evicted_file_that_comes_back_wrong_is_never_trained_on(frig: Rig) -> None:
    tx = await _killed_in(frig, TxState.TRAINING)
    damage(expected_files(frig)["adapter"]["path"], "evicted")
    models = frig.models
    assert isinstance(models, FakeModels)
    models.served[ADAPTER_CID] = b"tampered"
    await restart(frig)

    status = await frig.coordinator.status(tx)
    assert status.state == "failed"
    assert sha(b"tampered") in (status.error_message or "")
    assert frig.faults.count("train") == 0


async def test_a_round_closed_on_chain_stops_a_transaction_still_fetching(frig: Rig) -> None:
    tx = await _killed_in(frig, TxState.FETCH)
    assert await frig.coordinator.stop_closed_round(1) == [tx]
    status = await frig.coordinator.status(tx)
    assert status.state == "failed"
    assert status.error_message == "round 1 was closed on chain before its training finished"
    assert frig.faults.count("fetch") == 0 and frig.faults.count("train") == 0
