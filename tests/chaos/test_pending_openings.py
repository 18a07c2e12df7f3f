"""The single-miner pin check accepts openings whose completion is still in the outbox only
when they really open a committed transaction's states (the crash part's stops land between
the pin and `completeTask`)."""

from __future__ import annotations

from pathlib import Path

from bench.chaos.invariants import pending_openings
from r3mes_desktop.adapters.ipfs.local_store import LocalContentStore
from r3mes_desktop.adapters.mining import trace
from r3mes_desktop.adapters.mining.commitments import TraceDir, build_openings, read_package
from r3mes_desktop.adapters.mining.presets import make_plan
from r3mes_desktop.core import workproof

MINER = "0x" + "55" * 20


def _run(root: Path, name: str, seed: int) -> tuple[bytes, bytes]:
    digest = workproof.assignment(seed, MINER, 1)
    plan = make_plan(round_id=1, seed=workproof.training_seed(digest), base_model_id="m",
                     steps=4, hyperparams={"preset": "tiny"})  # fmt: skip
    package = trace.train_bound(plan, miner=MINER, assignment=digest, trace=TraceDir(root / name))
    _, manifest = read_package(package)
    assert manifest is not None
    picks = workproof.picks(b"\x07" * 32, 1, MINER, manifest.segments)
    return package, build_openings(TraceDir(root / name), manifest, picks)


async def test_only_openings_of_committed_work_are_accepted(tmp_path) -> None:
    store = LocalContentStore(tmp_path / "data" / "devnet" / "store")
    package, openings = _run(tmp_path, "ours", 1)
    _, foreign_openings = _run(tmp_path, "foreign", 2)
    cid = await store.add_and_pin(package)
    ours = await store.add_and_pin(openings)
    foreign = await store.add_and_pin(foreign_openings)
    stray = await store.add_and_pin(b"not openings at all" * 10)
    committed = [{"cid": cid, "state": "committed"}]
    found = await pending_openings(tmp_path / "data", committed, {ours, foreign, stray})
    assert found == {ours}
    assert await pending_openings(tmp_path / "data", [], {ours}) == set()
