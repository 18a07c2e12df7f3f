"""`verify` against the devnet: the on-chain record, the content by its CID, the PoW; every
check reported as passed / failed / skipped, and a skipped check never counted as a pass.

The submission is made once per session by a real coordinator over a real devnet (chain in
its EVM process, content in its store; a fake trainer), then each test gets a copy of the
data directory and runs `r3mes-miner verify` in-process, which opens that devnet again.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import pytest

from r3mes_desktop.adapters.ipfs.local_store import LocalContentStore
from r3mes_desktop.cli.exit_codes import ExitCode
from r3mes_desktop.support.config import paths
from tests.helpers.coordinator_rig import build_coordinator, make_rig
from tests.helpers.service_fakes import open_devnet
from tests.unit.cli.conftest import RunCli, SolvingPow

pytestmark = pytest.mark.timeout(120)


async def _commit_one(root: Path) -> tuple[str, str]:
    """One committed submission on a devnet under `root/data`; (transaction id, CID)."""
    data_dir = root / "data"
    data_dir.mkdir(parents=True)
    devnet = await open_devnet(data_dir)
    try:
        rig = make_rig(root)
        rig.pow = SolvingPow()  # type: ignore[assignment]
        rig.store, rig.chain, rig.task_api = devnet.store, devnet.chain, devnet.task_api  # type: ignore[assignment]
        rig.tmp = data_dir
        coordinator = build_coordinator(rig)
        coordinator.journal.path = data_dir / "journal.sqlite"
        await coordinator.start(background=False)
        try:
            spec = (await devnet.chain.open_rounds())[0]
            status = await coordinator.run_transaction(spec)
            record = await coordinator.journal.get(status.transaction_id)
        finally:
            await coordinator.close()
    finally:
        await devnet.close()
    assert status.state == "committed", status
    assert record is not None and record.cid is not None
    return status.transaction_id, record.cid


@pytest.fixture(scope="session")
def devnet_template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    root = tmp_path_factory.mktemp("verify-devnet")
    tx_id, cid = asyncio.run(_commit_one(root))
    return root / "data", tx_id, cid


@pytest.fixture
def submission(devnet_template: tuple[Path, str, str]) -> tuple[str, str]:
    """A copy of the template data dir in this test's data dir: (transaction id, CID)."""
    source, tx_id, cid = devnet_template
    target = paths().data_dir
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target)
    for lock in target.glob("*.lock"):
        os.remove(lock)
    return tx_id, cid


def _store() -> LocalContentStore:
    return LocalContentStore(paths().data_dir / "devnet" / "store")


def test_a_good_submission_passes_every_check_it_ran(
    submission: tuple[str, str], cli: RunCli
) -> None:
    tx_id, cid = submission
    code, out, err = cli("verify", tx_id, "--no-recompute", "--json")
    assert code == ExitCode.OK, (out, err)
    checks = out["checks"]
    assert set(checks) == {
        "chain_record",
        "content_fetch",
        "content_cid",
        "content_sha256",
        "content_pinned",
        "proof_of_work",
        "recompute",
        "journal_integrity",
    }
    for name in ("chain_record", "content_fetch", "content_cid", "content_sha256"):
        assert checks[name]["status"] == "passed", (name, checks[name])
    assert checks["content_pinned"]["status"] == "passed"
    assert checks["proof_of_work"]["status"] == "passed"
    assert checks["recompute"] == {"status": "skipped", "detail": "not asked (--no-recompute)"}
    assert checks["journal_integrity"]["status"] == "skipped"
    assert out["verdict"] == "passed" and out["ok"] is True
    assert cid in checks["chain_record"]["detail"]  # public data is shown, not redacted


def test_human_output_says_recompute_was_skipped(submission: tuple[str, str], cli: RunCli) -> None:
    tx_id, _ = submission
    code, text, _ = cli("verify", tx_id, "--no-recompute", "--journal")
    assert code == ExitCode.OK
    lines = {line.split()[0]: line.split()[1] for line in text.splitlines()[1:-1]}
    assert lines["recompute"] == "skipped" and lines["journal_integrity"] == "passed"
    assert lines["content_fetch"] == "passed"
    assert text.splitlines()[-1] == "verdict: passed (7 passed, 0 failed, 1 skipped)"
    assert "matches" not in text  # the old summary that printed a pass for nothing checked


def test_content_gone_from_the_store_fails(submission: tuple[str, str], cli: RunCli) -> None:
    tx_id, cid = submission
    store = _store()
    asyncio.run(store.unpin(cid))
    assert store.gc() == 1  # the blob is deleted, as an IPFS garbage collection would
    code, out, _ = cli("verify", tx_id, "--no-recompute", "--json")
    assert code == ExitCode.CHECK_FAILED
    checks = out["checks"]
    assert checks["chain_record"]["status"] == "passed"
    assert checks["content_fetch"]["status"] == "failed"
    assert "not in the devnet store" in checks["content_fetch"]["detail"]
    assert checks["content_cid"] == {"status": "skipped", "detail": "no content fetched"}
    assert checks["content_sha256"]["status"] == "skipped"
    assert checks["content_pinned"]["status"] == "failed"
    assert out["verdict"] == "failed" and out["ok"] is False
    code, text, _ = cli("verify", tx_id, "--no-recompute")
    assert code == ExitCode.CHECK_FAILED
    (fetch_line,) = [line for line in text.splitlines() if line.startswith("content_fetch ")]
    assert fetch_line.split()[1] == "FAILED" and "not in the devnet store" in fetch_line
    assert text.splitlines()[-1].startswith("verdict: FAILED")


def test_unpinned_content_fails_even_while_still_fetchable(
    submission: tuple[str, str], cli: RunCli
) -> None:
    tx_id, cid = submission
    asyncio.run(_store().unpin(cid))
    code, out, _ = cli("verify", tx_id, "--no-recompute", "--json")
    assert code == ExitCode.CHECK_FAILED
    assert out["checks"]["content_fetch"]["status"] == "passed"
    assert out["checks"]["content_pinned"]["status"] == "failed"


def test_content_that_does_not_match_the_gradient_hash_fails(
    submission: tuple[str, str], cli: RunCli
) -> None:
    """The journal is not trusted: its gradient hash is replaced, the chain's is used, and
    the journal/chain disagreement is itself a failed check."""
    import sqlite3

    tx_id, _ = submission
    conn = sqlite3.connect(paths().data_dir / "journal.sqlite")
    with conn:
        conn.execute("UPDATE transactions SET gradient_hash = ? WHERE id = ?", ("00" * 32, tx_id))
    conn.close()
    code, out, _ = cli("verify", tx_id, "--no-recompute", "--json")
    assert code == ExitCode.CHECK_FAILED
    assert out["checks"]["chain_record"]["status"] == "failed"
    assert "journal: 0x" + "00" * 32 in out["checks"]["chain_record"]["detail"]
    assert out["checks"]["content_sha256"]["status"] == "passed"  # against the chain's hash


def test_a_journal_nonce_the_chain_does_not_store_fails(
    submission: tuple[str, str], cli: RunCli
) -> None:
    import sqlite3

    tx_id, _ = submission
    conn = sqlite3.connect(paths().data_dir / "journal.sqlite")
    with conn:
        conn.execute("UPDATE transactions SET pow_nonce = pow_nonce + 1 WHERE id = ?", (tx_id,))
    conn.close()
    code, out, _ = cli("verify", tx_id, "--no-recompute", "--json")
    assert code == ExitCode.CHECK_FAILED
    assert out["checks"]["chain_record"]["status"] == "failed"
    assert "nonce" in out["checks"]["chain_record"]["detail"]
    assert out["checks"]["proof_of_work"]["status"] == "passed"  # the chain's nonce is valid


def test_unknown_transaction_and_bad_timeout(submission: tuple[str, str], cli: RunCli) -> None:
    code, _, err = cli("verify", "nope", "--no-recompute")
    assert code == ExitCode.NOT_FOUND
    code, _, err = cli("verify", "x", "--fetch-timeout", "0")
    assert code == ExitCode.USAGE and "--fetch-timeout" in err and "must be > 0" in err
