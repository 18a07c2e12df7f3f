"""The product's promise as checks against the chain and the store, not the journal alone.

Run on a data dir whose miner is stopped: the devnet chain is rebuilt from its whole tx
log (not from the snapshot the app restores: a wrong snapshot would show here) and every
successful `submitGradient` the miner ever sent is counted from the chain itself; pins are
read from the store's pin list; statistics are recounted from raw rows; secrets are
searched for in every file, binary ones included; every gradient file left on disk must
belong to a transaction that may still read it (unfinished, or with an open dead letter).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from r3mes_desktop.adapters.chain.abi import decode_call, decode_output, encode_call
from r3mes_desktop.adapters.devnet.evm import DevnetEvm
from r3mes_desktop.adapters.devnet.txlog import TxLog
from r3mes_desktop.core.artifacts import GRADIENT_SUFFIX
from r3mes_desktop.core.cid import same_cid
from r3mes_desktop.core.journal import Journal
from r3mes_desktop.core.stats import compute_statistics

TERMINAL = frozenset({"committed", "failed", "rolled_back"})
JOURNAL_FILE = "journal.sqlite"


@dataclass
class Findings:
    """What one check of a data dir saw; `violations` must stay empty."""

    violations: list[str] = field(default_factory=list)
    states: dict[str, int] = field(default_factory=dict)
    on_chain_submissions: int = 0
    pinned: int = 0
    files_scanned: int = 0
    gradients: dict[str, int] = field(default_factory=dict)  # journaled as "file" / "row"
    trained_on_fetched: int = 0  # transactions that trained on a version FETCH journaled
    checked_at: float = field(default_factory=time.time)

    def fail(self, text: str) -> None:
        self.violations.append(text)

    def to_dict(self) -> dict[str, Any]:
        return {
            "violations": self.violations,
            "states": self.states,
            "on_chain_submissions": self.on_chain_submissions,
            "pinned": self.pinned,
            "files_scanned": self.files_scanned,
            "gradients": self.gradients,
            "trained_on_fetched": self.trained_on_fetched,
        }


def journal_rows(data_dir: Path) -> list[dict[str, Any]]:
    conn = sqlite3.connect(f"file:{data_dir / JOURNAL_FILE}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute("SELECT * FROM transactions")]
    finally:
        conn.close()


async def chain_submissions(
    data_dir: Path, miner: str
) -> tuple[dict[int, Any], Counter[int], set[str]]:
    """(round -> what the contract stores for the miner, round -> successful submitGradient
    transactions the miner sent, the CIDs of the published model versions), all from the
    replayed devnet chain."""
    root = data_dir / "devnet"
    info = json.loads((root / "devnet.json").read_text(encoding="utf-8"))
    contract = info["contract_address"]
    evm = await DevnetEvm.open(root / "chain.log", snapshots=False)  # the whole log again
    try:
        sent: Counter[int] = Counter()
        chain_log = TxLog(root / "chain.log")
        try:
            records = chain_log.records()
        finally:
            chain_log.close()
        for raw in records:
            from eth_utils import keccak

            tx_hash = "0x" + keccak(raw).hex()
            tx = await evm.transaction(tx_hash)
            if tx is None or str(tx["from"]).lower() != miner.lower():
                continue
            receipt = await evm.receipt(tx_hash)
            try:
                name, args = decode_call(tx["data"])
            except Exception:
                continue
            if name == "submitGradient" and receipt is not None and receipt["status"] == 1:
                sent[int(args["roundId"])] += 1
        last = decode_output(
            "lastRoundId", await evm.call({"to": contract, "data": encode_call("lastRoundId")})
        )
        stored: dict[int, Any] = {}
        for round_id in range(1, int(last) + 1):
            data = encode_call("submissionOf", round_id, miner)
            raw_sub = decode_output("submissionOf", await evm.call({"to": contract, "data": data}))
            if int(raw_sub[3]) != 0:  # blockNumber: 0 means "no submission"
                stored[round_id] = raw_sub
        current = decode_output(
            "currentVersion",
            await evm.call({"to": contract, "data": encode_call("currentVersion")}),
        )
        versions = set()
        for version_id in range(1, int(current) + 1):
            data = encode_call("versions", version_id)
            versions.add(
                str(decode_output("versions", await evm.call({"to": contract, "data": data}))[0])
            )
        return stored, sent, versions
    finally:
        await evm.close()


async def pending_openings(
    data_dir: Path, committed: list[dict[str, Any]], unreferenced: set[str]
) -> set[str]:
    """Pins that are the openings of a committed transaction whose completion (which names
    them on chain) is still in the outbox: a miner stopped after pinning them and before
    `completeTask` was mined. Each is read back and accepted only if every state it opens
    hashes to a leaf of that transaction's committed manifest."""
    from r3mes_desktop.adapters.ipfs.local_store import LocalContentStore
    from r3mes_desktop.adapters.mining.commitments import read_openings, read_package
    from r3mes_desktop.core import spotcheck

    store = LocalContentStore(data_dir / "devnet" / "store")
    leaves: set[bytes] = set()
    for row in committed:
        try:
            _, manifest = read_package(await store.cat(str(row["cid"])))
        except Exception:
            continue
        if manifest is not None:
            leaves |= {manifest.leaf(i) for i in range(len(manifest.leaves))}
    found = set()
    for cid in unreferenced:
        try:
            opened = read_openings(await store.cat(cid))
        except Exception:
            continue
        if opened and all(spotcheck.leaf_hash(state) in leaves for state in opened.values()):
            found.add(cid)
    return found


def pinned_cids(data_dir: Path) -> set[str]:
    path = data_dir / "devnet" / "store" / "pins.json"
    if not path.exists():
        return set()
    return set(json.loads(path.read_text(encoding="utf-8")).get("pins", []))


def stray_gradients(data_dir: Path, rows: list[dict[str, Any]], findings: Findings) -> None:
    """Gradient files (and temp files) kept for no one: every file in `artifacts/` must
    belong to an unfinished transaction or to one with an open dead letter."""
    folder = data_dir / "artifacts"
    if not folder.exists():
        return
    conn = sqlite3.connect(f"file:{data_dir / JOURNAL_FILE}?mode=ro", uri=True)
    try:
        lettered = {
            str(t)
            for (t,) in conn.execute(
                "SELECT transaction_id FROM dead_letters WHERE status = 'open'"
            )
        }
    finally:
        conn.close()
    holders = lettered | {str(r["id"]) for r in rows if r["state"] not in TERMINAL}
    for path in sorted(folder.iterdir()):
        if path.suffix != GRADIENT_SUFFIX or path.stem not in holders:
            findings.fail(f"artifacts/{path.name}: a file no transaction needs")


def recount_matches(data_dir: Path, findings: Findings) -> None:
    """Statistics (the product's query) against a recount from raw rows."""
    conn = sqlite3.connect(f"file:{data_dir / JOURNAL_FILE}?mode=ro", uri=True)
    try:
        stats = compute_statistics(conn, now=time.time(), window_s=3600)
        states = Counter(s for (s,) in conn.execute("SELECT state FROM transactions"))
        categories = Counter(
            c for (c,) in conn.execute("SELECT category FROM events WHERE category IS NOT NULL")
        )
    finally:
        conn.close()
    total = sum(states.values())
    failed_like = states["failed"] + states["rolled_back"] + states["compensating"]
    expect = {
        "total_transactions": total,
        "committed_transactions": states["committed"],
        "rolled_back_transactions": states["rolled_back"],
        "compensating_transactions": states["compensating"],
        "failed_transactions": failed_like,
        "active_transactions": total - states["committed"] - failed_like,
    }
    for key, value in expect.items():
        if stats[key] != value:
            findings.fail(f"statistics: {key} = {stats[key]}, recount = {value}")
    for key, value in stats["error_breakdown"].items():
        recount = categories.get(key.removesuffix("_errors"), 0)
        if value != recount:
            findings.fail(f"statistics: error_breakdown.{key} = {value}, recount = {recount}")


def scan_secrets(root: Path, secrets: list[bytes], allowed: set[Path]) -> int:
    """Every file under `root` (binary included) except `allowed`; returns files scanned."""
    found: list[str] = []
    scanned = 0
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.resolve() in allowed:
            continue
        try:
            data = path.read_bytes()
        except OSError:
            continue
        scanned += 1
        lowered = data.lower()
        for secret in secrets:
            if secret in data or secret.lower() in lowered:
                found.append(str(path.relative_to(root)))
                break
    if found:
        raise AssertionError(f"secret found in {sorted(set(found))}")
    return scanned


def secret_needles(data_dir: Path) -> tuple[list[bytes], set[Path]]:
    """The dev miner's private key (hex and raw bytes) and keystore password; the two files
    that hold them by design (encrypted keystore, devnet password file) are allowed."""
    from r3mes_desktop.adapters.chain.keystore import Keystore
    from r3mes_desktop.adapters.devnet.devnet import DEV_PASSWORD_FILE

    keys_dir = data_dir / "devnet" / "keys"
    password_file = keys_dir / DEV_PASSWORD_FILE
    password = password_file.read_text(encoding="utf-8").strip()
    keystore = Keystore(keys_dir)
    account = keystore.unlock(password)
    key = bytes(account.key)
    needles = [key.hex().encode(), key, password.encode()]
    allowed = {p.resolve() for p in keys_dir.iterdir() if p.is_file()}
    return needles, allowed


async def check(data_dir: Path, *, extra_dirs: tuple[Path, ...] = ()) -> Findings:
    """All invariants on a stopped miner's data dir (devnet)."""
    findings = Findings()
    rows = journal_rows(data_dir)
    findings.states = dict(Counter(r["state"] for r in rows))
    miner = json.loads((data_dir / "devnet" / "devnet.json").read_text())["miner_address"]
    stored, sent, versions = await chain_submissions(data_dir, miner)
    findings.on_chain_submissions = len(stored)
    agreed = journal_against_chain(rows, stored, findings.fail)
    for round_id, (r, _cid, _hash) in agreed.items():
        if sent[round_id] != 1:
            findings.fail(
                f"{r['id']}: {sent[round_id]} successful submissions for round {round_id}"
            )
    committed = [r for r in rows if r["state"] == "committed"]
    pins = pinned_cids(data_dir)
    findings.pinned = len(pins)
    committed_cids = {r["cid"] for r in committed if r["cid"]}
    committed_cids |= openings_cids(stored)
    committed_cids |= versions  # the devnet aggregator's model versions: pinned for good
    awaiting = await pending_openings(data_dir, committed, pins - committed_cids)
    for cid in pins:
        if cid in awaiting:
            continue
        if not any(same_cid(cid, c) for c in committed_cids):
            findings.fail(f"pin {cid}: no committed submission (orphan)")
    for r in committed:
        if r["cid"] and not any(same_cid(r["cid"], p) for p in pins):
            findings.fail(f"{r['id']}: committed CID {r['cid']} is not pinned")
    findings.gradients = dict(
        Counter("file" if r["gradient_path"] else "row" for r in rows if r["gradient_hash"])
    )
    stray_gradients(data_dir, rows, findings)
    recount_matches(data_dir, findings)
    journal = Journal(data_dir / JOURNAL_FILE)
    await journal.open()
    try:
        for problem in await journal.integrity_check():
            findings.fail(f"journal integrity: {problem}")
    finally:
        await journal.close()
    needles, allowed = secret_needles(data_dir)
    scanned = 0
    for root in (data_dir, *extra_dirs):
        try:
            scanned += scan_secrets(root, needles, allowed)
        except AssertionError as exc:
            findings.fail(f"{root}: {exc}")
    findings.files_scanned = scanned
    return findings


RESIGNED_NOTE = "signed again with account nonce"
KEPT_PIN_NOTES = ("kept pin", "was pinned before this transaction")
"""An undo that left a pin alone: another transaction of the journal needs it, or the CID
was pinned before this transaction's first add (another miner's, on a shared daemon)."""


def _ipfs_post(api: str, path: str, timeout: float = 60) -> bytes:
    import urllib.request

    request = urllib.request.Request(f"{api}/api/v0/{path}", data=b"", method="POST")
    with urllib.request.urlopen(request, timeout=timeout) as answer:
        data: bytes = answer.read()
        return data


def store_pins(api: str) -> set[str]:
    """The daemon's recursive pins, read from the daemon itself."""
    answer = json.loads(_ipfs_post(api, "pin/ls?type=recursive") or b"{}")
    return set(answer.get("Keys", {}))


def store_cat(api: str, cid: str) -> bytes | None:
    """The content under `cid`, or None if the daemon cannot serve it (within 20 s)."""
    import urllib.error

    try:
        return _ipfs_post(api, f"cat?arg={cid}", timeout=20)
    except (urllib.error.URLError, OSError):
        return None


def collect_garbage(api: str) -> str:
    """`repo gc` on the daemon: afterwards only pinned content is retrievable."""
    import urllib.error

    try:
        _ipfs_post(api, "repo/gc", timeout=120)
    except (urllib.error.URLError, OSError) as exc:
        return f"unavailable ({exc}): pins and cat checked without it"
    return "done"


def journal_notes(data_dir: Path) -> dict[str, int]:
    """Counts read from one journal: signatures made again with a fresh nonce, undo steps
    that kept a pin another transaction needs, dead letters by status."""
    conn = sqlite3.connect(f"file:{data_dir / JOURNAL_FILE}?mode=ro", uri=True)
    try:
        resigned = conn.execute(
            "SELECT count(*) FROM events WHERE message LIKE ?", (f"%{RESIGNED_NOTE}%",)
        ).fetchone()[0]
        kept = sum(
            conn.execute(
                "SELECT count(*) FROM events WHERE message LIKE ?", (f"%{note}%",)
            ).fetchone()[0]
            for note in KEPT_PIN_NOTES
        )
        letters = dict(conn.execute("SELECT status, count(*) FROM dead_letters GROUP BY status"))
    finally:
        conn.close()
    return {
        "resigned": int(resigned),
        "kept_pins": int(kept),
        **{f"letters_{k}": v for k, v in letters.items()},
    }


def open_letters(data_dir: Path) -> list[tuple[str, int]]:
    conn = sqlite3.connect(f"file:{data_dir / JOURNAL_FILE}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT id, round_id FROM dead_letters WHERE status = 'open'")
        return [(str(i), int(r)) for i, r in rows]
    finally:
        conn.close()


@dataclass
class MinerView:
    """What the chain says about one miner at the end."""

    stored: dict[int, Any]  # round -> submissionOf(round, miner), rounds with one only
    open_for: set[int]  # openRoundsFor(miner)


def check_miner(
    name: str,
    rows: list[dict[str, Any]],
    letters: list[tuple[str, int]],
    view: MinerView,
    pins: set[str],
    cat: Any,
    findings: Findings,
) -> None:
    """The multi-miner invariants for one miner's journal against the chain and the shared
    store: every committed submission is on chain as journaled, pinned and retrievable with
    the on-chain gradient hash; no round it started is left open and assignable to it with
    nothing of its live or committed; no dead letter open for a round that is settled."""
    import hashlib

    agreed = journal_against_chain(rows, view.stored, lambda m: findings.fail(f"{name}: {m}"))
    for round_id, (_row, cid, gradient_hash) in agreed.items():
        if not any(same_cid(cid, p) for p in pins):
            findings.fail(f"{name}: round {round_id}: committed CID {cid} is not pinned")
        data = cat(cid)
        if data is None:
            findings.fail(f"{name}: round {round_id}: committed CID {cid} is not retrievable")
        elif hashlib.sha256(data).hexdigest() != gradient_hash:
            findings.fail(
                f"{name}: round {round_id}: content of {cid} does not hash to the on-chain "
                "gradient hash"
            )
    live_or_done = {int(r["round_id"]) for r in rows if r["state"] not in ("failed", "rolled_back")}
    started = {int(r["round_id"]) for r in rows}
    for round_id in sorted((started & view.open_for) - live_or_done):
        states = [r["state"] for r in rows if int(r["round_id"]) == round_id]
        findings.fail(
            f"{name}: round {round_id}: started {states}, left un-mined while still open "
            "and assignable to it"
        )
    settled = {int(r["round_id"]) for r in rows if r["state"] == "committed"} | set(view.stored)
    for letter, round_id in letters:
        if round_id in settled:
            findings.fail(f"{name}: dead letter {letter} still open for settled round {round_id}")


def openings_cids(stored: dict[int, Any]) -> set[str]:
    """The openings a miner published for its submissions (`completeTask`'s CID, field 5 of
    `submissionOf`): pinned by the miner after its pivot and meant to stay, like the update."""
    return {str(sub[5]) for sub in stored.values() if len(sub) > 5 and sub[5]}


async def miner_view(chain: Any, address: str) -> MinerView:
    last = int(await chain.view("lastRoundId"))
    stored: dict[int, Any] = {}
    for round_id in range(1, last + 1):
        sub = await chain.view("submissionOf", round_id, address)
        if int(sub[3]) != 0:  # blockNumber: 0 means "no submission"
            stored[round_id] = sub
    open_for = {int(r) for r in await chain.view("openRoundsFor", address)}
    return MinerView(stored, open_for)


async def check_multi(
    *, miners: list[tuple[str, str, Path, bytes, str]], chain: Any, ipfs_api: str, result: Any
) -> Findings:
    """All invariants of the multi-miner part, on stopped miners: per miner `check_miner`,
    journal integrity, statistics recount, stray gradient files and the secret scan; on the
    shared store, no pin that neither a miner's committed submission nor a published model
    version (the aggregator pins each version's bytes) points at."""
    import asyncio

    findings = Findings()
    result.repo_gc = await asyncio.to_thread(collect_garbage, ipfs_api)
    pins = await asyncio.to_thread(store_pins, ipfs_api)
    findings.pinned = len(pins)
    committed_cids: set[str] = set()
    states: Counter[str] = Counter()
    for name, address, data_dir, key, password in miners:
        rows = journal_rows(data_dir)
        states.update(r["state"] for r in rows)
        view = await miner_view(chain, address)
        findings.on_chain_submissions += len(view.stored)
        letters = open_letters(data_dir)

        def cat(cid: str) -> bytes | None:
            return store_cat(ipfs_api, cid)

        check_miner(name, rows, letters, view, pins, cat, findings)
        committed_cids |= {str(r["cid"]) for r in rows if r["state"] == "committed" and r["cid"]}
        committed_cids |= openings_cids(view.stored)
        stray_gradients(data_dir, rows, findings)
        recount_matches(data_dir, findings)
        journal = Journal(data_dir / JOURNAL_FILE)
        await journal.open()
        try:
            for problem in await journal.integrity_check():
                findings.fail(f"{name}: journal integrity: {problem}")
        finally:
            await journal.close()
        notes = journal_notes(data_dir)
        miner = result.miners[name]
        miner.states = dict(Counter(r["state"] for r in rows))
        miner.resigned = notes["resigned"]
        miner.kept_pins = notes["kept_pins"]
        miner.superseded = notes.get("letters_superseded", 0)
        miner.dead_letters_open = notes.get("letters_open", 0)
        keys_dir = data_dir / "keys"
        allowed = {p.resolve() for p in keys_dir.iterdir() if p.is_file()}
        allowed.add((data_dir.parent / "password.txt").resolve())
        try:
            findings.files_scanned += scan_secrets(
                data_dir.parent, [key.hex().encode(), key, password.encode()], allowed
            )
        except AssertionError as exc:
            findings.fail(f"{name}: {exc}")
    findings.states = dict(states)
    published: dict[int, tuple[str, str]] = {}
    for version_id in range(1, int(await chain.view("currentVersion")) + 1):
        version = await chain.view("versions", version_id)
        committed_cids.add(str(version[0]))
        published[version_id] = (str(version[0]), bytes(version[1]).hex())
    for name, _address, data_dir, _key, _password in miners:
        findings.trained_on_fetched += trained_on_verified(
            name, journal_rows(data_dir), published, findings.fail
        )
    for cid in sorted(pins):
        if not any(same_cid(cid, c) for c in committed_cids):
            findings.fail(
                f"pin {cid}: no miner's committed submission or published version points at "
                "it (orphan)"
            )
    return findings


TRAINED = frozenset({"ipfs_upload", "blockchain_submit", "task_complete", "committed"})
"""States a transaction reaches only with a gradient: it trained."""


def trained_on_verified(
    name: str,
    rows: list[dict[str, Any]],
    published: dict[int, tuple[str, str]],
    fail: Callable[[str], None],
) -> int:
    """No round trains on a version that failed verification, as the miner's journal says
    it: every transaction that trained (or holds a gradient) on model version v >= 1 went
    through FETCH, which journaled v's adapter under the CID and sha256 the contract
    publishes for v; one that failed in FETCH holds no gradient. Returns how many
    transactions trained on a fetched version."""
    checked = 0
    for r in rows:
        spec = json.loads(r["spec"]) if r.get("spec") else {}
        version = int(spec.get("model_version", 0))
        trained = r["state"] in TRAINED or r.get("gradient_hash") is not None
        tag = f"{name} {r['id']} (round {r['round_id']}, version {version})"
        if r.get("failed_step") == "fetch" and r.get("gradient_hash") is not None:
            fail(f"{tag}: failed in FETCH yet holds a gradient (trained on unverified bytes)")
        if version < 1 or not trained:
            continue
        fetched = json.loads(r["fetched"]) if r.get("fetched") else {}
        adapter = fetched.get("adapter")
        if version not in published:
            fail(f"{tag}: trained on a version the contract never published")
        elif not adapter:
            fail(f"{tag}: trained without FETCH journaling the adapter")
        elif not same_cid(str(adapter.get("cid")), published[version][0]) or (
            adapter.get("sha256") != published[version][1]
        ):
            fail(f"{tag}: trained on {adapter}, the contract publishes {published[version]}")
        else:
            checked += 1
    return checked


def journal_against_chain(
    rows: list[dict[str, Any]],
    stored: dict[int, Any],
    fail: Callable[[str], None],
) -> dict[int, tuple[dict[str, Any], str, str]]:
    """What every miner's journal must agree on with the chain: every transaction finished,
    at most one committed per round, each committed one's CID and gradient hash the ones
    the contract stores, and no stored submission without a committed transaction.
    Returns, per committed round, the row and the chain's CID and gradient hash (hex)."""
    for r in rows:
        if r["state"] not in TERMINAL:
            fail(f"{r['id']}: not terminal ({r['state']}, round {r['round_id']})")
    by_round: dict[int, list[dict[str, Any]]] = {}
    for r in rows:
        if r["state"] == "committed":
            by_round.setdefault(int(r["round_id"]), []).append(r)
    agreed: dict[int, tuple[dict[str, Any], str, str]] = {}
    for round_id, txs in by_round.items():
        if len(txs) > 1:
            fail(f"round {round_id}: {len(txs)} committed transactions")
        for r in txs:
            on_chain = stored.get(round_id)
            if on_chain is None:
                fail(f"{r['id']}: COMMITTED but round {round_id} holds no submission")
                continue
            cid, gradient_hash = str(on_chain[0]), bytes(on_chain[1]).hex()
            if r["cid"] is None or not same_cid(cid, r["cid"]):
                fail(f"{r['id']}: chain holds CID {cid}, journal {r['cid']}")
            if gradient_hash != r["gradient_hash"]:
                fail(f"{r['id']}: chain gradient hash differs from the journal's")
            agreed[round_id] = (r, cid, gradient_hash)
    for round_id in stored:
        if round_id not in by_round:
            states = [r["state"] for r in rows if int(r["round_id"]) == round_id]
            fail(f"round {round_id}: on-chain submission without a COMMITTED tx {states}")
    return agreed


TASK_COMPLETED_EVENT = "TaskCompleted(uint64,address)"


@dataclass(frozen=True)
class SubmissionView:
    """One submission as the chain holds it at the end, with the chain times that matter:
    its block's timestamp, and that of the block holding its `TaskCompleted` event."""

    round_id: int
    miner: str
    completed: bool
    verdict: int  # 0 none, 1 accepted, 2 rejected
    reason: int
    validator: str
    submitted_at: int
    completed_at: int | None


@dataclass
class VerdictView:
    """What the chain and the validator's journal say about verdicts and credits."""

    submissions: list[SubmissionView]
    verdict_counts: dict[int, int]  # verdictCount(round)
    rewards: dict[int, int]  # the round's reward per accepted submission
    credits: dict[str, int]  # credits(address), for every miner and the free-rider
    validator_nonce: int  # transactions the validator's account sent (mined)
    chain_time: int  # the latest block's timestamp
    journal: list[dict[str, Any]]  # the validator's journal rows


def check_verdicts(
    view: VerdictView,
    *,
    miners: dict[str, str],
    rider: str,
    validator: str,
    window_s: float,
    findings: Findings,
) -> dict[str, Any]:
    """The verdict invariants of the multi-miner part; returns the run's verdict figures.

    - every submission is past its verification window at the end and carries exactly one
      verdict: verdictCount(round) equals the round's submissions past the window and the
      submissions that carry a verdict;
    - no copy is accepted: every free-rider submission is rejected;
    - accepted work is credited exactly once: credits(address) is the sum of the round's
      reward over its accepted submissions, for every miner and the free-rider;
    - the validator posted each verdict in one transaction: its account's nonce is the
      number of verdicts it posted (a second attempt, reverted or not, would count), and
      its journal's rows are all posted or settled and agree with the chain;
    - an honest miner's submission is accepted when the miner answered its challenge
      within the window; one rejected for another reason, or for "no openings" although
      the `TaskCompleted` event came in time, is a violation naming the reason. Answers
      that came after the window (a killed miner, an outage longer than the window) are
      counted, not failed: the validator was right to reject them.

    `miners` maps address -> name (for messages); addresses compare case-blind.
    """
    from r3mes_desktop.core.workproof import Reason, reason_text

    names = {a.lower(): n for a, n in miners.items()}
    rider_l, validator_l = rider.lower(), validator.lower()
    fail = findings.fail
    figures: dict[str, Any] = {
        "submissions": len(view.submissions),
        "accepted": 0,
        "rejected": {},
        "copies": 0,
        "copies_rejected": 0,
        "answered_late": 0,
        "never_answered": 0,
        "posted_by_validator": 0,
        "validator_nonce": view.validator_nonce,
        "credits": {},
        "journal": dict(Counter(str(r["state"]) for r in view.journal)),
    }

    def who(address: str) -> str:
        low = address.lower()
        return "free-rider" if low == rider_l else names.get(low, address)

    due: Counter[int] = Counter()
    judged: Counter[int] = Counter()
    earned: Counter[str] = Counter()
    for s in view.submissions:
        tag = f"round {s.round_id} {who(s.miner)}"
        age = view.chain_time - s.submitted_at
        if age > window_s:
            due[s.round_id] += 1
        else:
            fail(f"{tag}: only {age} s of chain time old at the end (window {window_s:g} s)")
        if s.verdict != 0:
            judged[s.round_id] += 1
        elif age > window_s:
            fail(f"{tag}: no verdict {age} s after the submission (window {window_s:g} s)")
        if s.validator.lower() == validator_l and s.verdict != 0:
            figures["posted_by_validator"] += 1
        if s.verdict == 1:
            figures["accepted"] += 1
            earned[s.miner.lower()] += view.rewards.get(s.round_id, 0)
        elif s.verdict == 2:
            text = reason_text(s.reason)
            figures["rejected"][text] = figures["rejected"].get(text, 0) + 1
        if s.miner.lower() == rider_l:
            figures["copies"] += 1
            if s.verdict == 2:
                figures["copies_rejected"] += 1
            elif s.verdict == 1:
                fail(f"{tag}: a copied update was accepted")
            continue
        if s.miner.lower() not in names or s.verdict != 2:
            continue
        in_time = s.completed_at is not None and s.completed_at - s.submitted_at <= window_s
        if s.completed and s.completed_at is None:
            fail(f"{tag}: completed on chain but no TaskCompleted event")
        if s.reason != Reason.NO_OPENINGS or in_time:
            late = (
                ""
                if s.completed_at is None
                else f", answered after {s.completed_at - s.submitted_at} s"
            )
            fail(f"{tag}: honest submission rejected: {reason_text(s.reason)}{late}")
        elif s.completed:
            figures["answered_late"] += 1
        else:
            figures["never_answered"] += 1
    for round_id in sorted(set(due) | set(judged) | set(view.verdict_counts)):
        count = view.verdict_counts.get(round_id, 0)
        if count != due[round_id]:
            fail(f"round {round_id}: verdictCount {count}, {due[round_id]} submissions past "
                 "their window")  # fmt: skip
        if count != judged[round_id]:
            fail(f"round {round_id}: verdictCount {count}, {judged[round_id]} submissions "
                 "carry a verdict")  # fmt: skip
    for address in [*miners, rider]:
        credited = view.credits.get(address, 0)
        figures["credits"][who(address)] = credited
        if credited != earned[address.lower()]:
            fail(f"{who(address)}: credits {credited}, accepted work earned "
                 f"{earned[address.lower()]}")  # fmt: skip
    posted = figures["posted_by_validator"]
    if view.validator_nonce != posted:
        fail(f"validator: {view.validator_nonce} transactions sent for {posted} verdicts posted")
    on_chain = {(s.round_id, s.miner.lower()): s for s in view.submissions}
    journal_posted = 0
    for row in view.journal:
        tag = f"validator journal round {row['round_id']} {who(str(row['miner']))}"
        if row["state"] not in ("posted", "settled"):
            fail(f"{tag}: left {row['state']}")
            continue
        journal_posted += row["state"] == "posted"
        held = on_chain.get((int(row["round_id"]), str(row["miner"]).lower()))
        if held is None or held.verdict == 0:
            fail(f"{tag}: {row['state']} but the chain holds no verdict")
        elif (held.verdict == 1, held.reason) != (bool(row["accepted"]), int(row["reason"])):
            fail(f"{tag}: journaled {reason_text(int(row['reason']))}, chain holds "
                 f"{reason_text(held.reason)}")  # fmt: skip
    if journal_posted != posted:
        fail(f"validator: journal has {journal_posted} posted verdicts, chain {posted}")
    return figures


def validator_journal(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    try:
        sql = "SELECT round_id, miner, state, accepted, reason, detail FROM verdicts"
        return [dict(r) for r in conn.execute(sql)]
    finally:
        conn.close()


async def verdict_view(
    chain: Any, *, addresses: list[str], validator: str, journal: Path
) -> VerdictView:
    """Read every round's submitters, their submissions and verdicts, the TaskCompleted
    events (eth_getLogs) and the blocks' timestamps from the node."""
    from eth_utils.address import to_checksum_address
    from eth_utils.crypto import keccak

    transport = chain.transport
    stamps: dict[int, int] = {}

    async def stamp(number: int) -> int:
        if number not in stamps:
            block = await transport.block(number)
            stamps[number] = int(block["timestamp"]) if block else 0
        return stamps[number]

    topic = "0x" + keccak(text=TASK_COMPLETED_EVENT).hex()
    logs = await transport._checked(
        "eth_getLogs",
        [{"fromBlock": "0x0", "toBlock": "latest",
          "address": chain.operator.contract_address, "topics": [topic]}],
    )  # fmt: skip
    completed_at: dict[tuple[int, str], int] = {}
    for entry in logs:
        round_id = int(entry["topics"][1], 16)
        miner = str(to_checksum_address("0x" + entry["topics"][2][-40:])).lower()
        completed_at[(round_id, miner)] = await stamp(int(entry["blockNumber"], 16))
    last = int(await chain.view("lastRoundId"))
    submissions: list[SubmissionView] = []
    counts: dict[int, int] = {}
    rewards: dict[int, int] = {}
    for round_id in range(1, last + 1):
        rewards[round_id] = int((await chain.view("getRound", round_id))[8])
        counts[round_id] = int(await chain.view("verdictCount", round_id))
        for i in range(int(await chain.view("submissionCount", round_id))):
            miner = str(to_checksum_address(await chain.view("submitterAt", round_id, i)))
            sub = await chain.view("submissionOf", round_id, miner)
            submissions.append(
                SubmissionView(
                    round_id=round_id,
                    miner=miner,
                    completed=bool(sub[4]),
                    verdict=int(sub[6]),
                    reason=int(sub[7]),
                    validator=str(sub[8]),
                    submitted_at=await stamp(int(sub[3])),
                    completed_at=completed_at.get((round_id, miner.lower())),
                )
            )
    latest = await transport.block(None)
    return VerdictView(
        submissions=submissions,
        verdict_counts=counts,
        rewards=rewards,
        credits={a: int(await chain.view("credits", a)) for a in addresses},
        validator_nonce=await transport.confirmed_nonce(validator),
        chain_time=int(latest["timestamp"]) if latest else 0,
        journal=validator_journal(journal),
    )


@dataclass(frozen=True)
class VersionView:
    """One model version as the chain holds it, with what the daemon serves under its CID."""

    version_id: int
    cid: str
    content_hash: bytes
    eval_loss_micro: int
    parent_id: int
    round_id: int
    updates: int
    aggregator: str
    stored: bytes | None  # the daemon's content under `cid` (None: it cannot serve it)


@dataclass(frozen=True)
class AcceptedUpdate:
    """An accepted submission of a version's round: its CID, on-chain hash and content."""

    miner: str
    cid: str
    gradient_hash: bytes
    stored: bytes | None


@dataclass(frozen=True)
class RoundPlan:
    """What a round names: the model version it trains on and its training plan."""

    model_version: int
    base_model_id: str
    steps: int
    hyperparams: str  # the round's JSON


@dataclass
class LearningView:
    """What the chain, the daemon and the aggregator's journal say about model versions."""

    current: int  # currentVersion()
    versions: list[VersionView]  # 1..current
    rounds: dict[int, RoundPlan]  # every round
    accepted: dict[int, list[AcceptedUpdate]]  # for each version's round
    aggregator_nonce: int  # transactions the aggregator's account sent (mined)
    journal: list[dict[str, Any]]  # the aggregator's journal rows


Reproduce = Callable[[list[bytes], dict[str, Any]], dict[str, Any]]
"""(packages, plan as JSON data) -> `learning.aggregate_job`'s answer ("adapter", "sha256",
"eval_loss", ...)."""


def reproduce_version(packages: list[bytes], plan_json: dict[str, Any]) -> dict[str, Any]:
    from r3mes_desktop.adapters.mining import learning

    return learning.aggregate_job({"packages": packages, "plan": plan_json})


def version_plan(round_id: int, plan: RoundPlan) -> dict[str, Any]:
    """The aggregator's plan for a round (`app.aggregator`), as JSON data."""
    from r3mes_desktop.adapters.mining.presets import make_plan

    params = json.loads(plan.hyperparams) if plan.hyperparams else {}
    params = params if isinstance(params, dict) else {}
    return make_plan(
        round_id=round_id,
        seed=1,
        base_model_id=plan.base_model_id,
        steps=plan.steps,
        hyperparams={k: v for k, v in params.items() if not k.startswith("dataset_")},
    ).to_json()


def check_versions(
    view: LearningView,
    *,
    aggregator: str,
    findings: Findings,
    reproduce: Reproduce = reproduce_version,
    cid_of: Callable[[bytes], str] | None = None,
) -> dict[str, Any]:
    """The model-version invariants of the multi-miner part; returns the run's figures.

    - every version is reproducible: its round's accepted updates (fetched from the daemon,
      each hashing to its on-chain hash, as many as the version's `updates`) aggregated
      again give bytes that hash to its contentHash, under its CID, with its recorded loss
      (within 1e-6, the contract holds micro-nats);
    - no round trains on a version that failed verification: each round's modelVersion is
      0 or a published version whose bytes, served by the daemon under its CID, hash to its
      contentHash; and a version's round trained on its parent;
    - one version per round, a chain of versions: round ids are distinct, each version's
      parent is the one before it, each was published by the aggregator, and the
      aggregator's account nonce equals the versions it published (a second publication,
      reverted or not, would count); its journal's rows are all posted and agree with the
      chain;
    - the run learns: at least one version was published.
    """
    from r3mes_desktop.core.cid import compute_cid

    cid_of = cid_of or (lambda data: str(compute_cid(data)))
    fail = findings.fail
    figures: dict[str, Any] = {
        "versions": view.current,
        "losses": [round(v.eval_loss_micro / 1e6, 6) for v in view.versions],
        "reproduced": 0,
        "rounds_on_versions": dict(
            sorted(Counter(p.model_version for p in view.rounds.values()).items())
        ),
        "aggregator_nonce": view.aggregator_nonce,
        "journal": dict(Counter(str(r["state"]) for r in view.journal)),
    }
    if view.current < 1:
        fail("versions: no model version was published (the run did not learn)")
    sound: set[int] = {0}
    seen_rounds: dict[int, int] = {}
    for v in view.versions:
        tag = f"version {v.version_id}"
        if v.stored is None:
            fail(f"{tag}: the daemon cannot serve {v.cid}")
        elif hashlib.sha256(v.stored).digest() != v.content_hash:
            fail(f"{tag}: the bytes under {v.cid} do not hash to its contentHash")
        else:
            sound.add(v.version_id)
        if v.parent_id != v.version_id - 1:
            fail(f"{tag}: parent {v.parent_id}, expected {v.version_id - 1}")
        if v.round_id in seen_rounds:
            fail(f"{tag}: round {v.round_id} already made version {seen_rounds[v.round_id]}")
        seen_rounds.setdefault(v.round_id, v.version_id)
        if v.aggregator.lower() != aggregator.lower():
            fail(f"{tag}: published by {v.aggregator}, not the aggregator")
        plan = view.rounds.get(v.round_id)
        if plan is None:
            fail(f"{tag}: names round {v.round_id}, which does not exist")
            continue
        if plan.model_version != v.parent_id:
            fail(f"{tag}: round {v.round_id} trained on version {plan.model_version}, "
                 f"not its parent {v.parent_id}")  # fmt: skip
        updates = view.accepted.get(v.round_id, [])
        if len(updates) != v.updates:
            fail(f"{tag}: {v.updates} updates recorded, round {v.round_id} has "
                 f"{len(updates)} accepted")  # fmt: skip
        packages = []
        for u in updates:
            if u.stored is None:
                fail(f"{tag}: the daemon cannot serve {u.miner}'s update {u.cid}")
            elif hashlib.sha256(u.stored).digest() != u.gradient_hash:
                fail(f"{tag}: {u.miner}'s update {u.cid} does not hash to its on-chain hash")
            else:
                packages.append(u.stored)
        if len(packages) != len(updates) or not packages:
            continue
        again = reproduce(packages, version_plan(v.round_id, plan))
        problems = []
        if bytes.fromhex(str(again["sha256"])) != v.content_hash:
            problems.append("sha256")
        if hashlib.sha256(bytes(again["adapter"])).digest() != v.content_hash:
            problems.append("bytes")
        if cid_of(bytes(again["adapter"])) != v.cid:
            problems.append("CID")
        if abs(float(again["eval_loss"]) - v.eval_loss_micro / 1e6) > 1e-6:
            problems.append(
                f"loss ({float(again['eval_loss']):.7f}, recorded {v.eval_loss_micro / 1e6:.6f})"
            )
        if problems:
            fail(f"{tag}: aggregated again from round {v.round_id}'s accepted updates, "
                 f"{' and '.join(problems)} differ")  # fmt: skip
        else:
            figures["reproduced"] += 1
    for round_id, plan in sorted(view.rounds.items()):
        if plan.model_version not in sound:
            why = "unpublished" if plan.model_version > view.current else "failed verification"
            fail(f"round {round_id}: trains on version {plan.model_version} ({why})")
    mine = sum(v.aggregator.lower() == aggregator.lower() for v in view.versions)
    if view.aggregator_nonce != mine:
        fail(f"aggregator: {view.aggregator_nonce} transactions sent for {mine} versions published")
    on_chain = {v.version_id: v for v in view.versions}
    for row in view.journal:
        tag = f"aggregator journal version {row['version_id']}"
        held = on_chain.get(int(row["version_id"]))
        if row["state"] != "posted":
            fail(f"{tag}: left {row['state']}")
        elif held is None:
            fail(f"{tag}: posted but the chain holds no such version")
        elif (held.round_id, held.content_hash.hex(), held.cid) != (
            int(row["round_id"]),
            str(row["sha256"]),
            str(row["cid"]),
        ):
            fail(f"{tag}: journaled round {row['round_id']} {row['cid']}, chain holds round "
                 f"{held.round_id} {held.cid}")  # fmt: skip
    return figures


async def learning_view(
    chain: Any, *, aggregator: str, journal: list[dict[str, Any]], cat: Callable[[str], Any]
) -> LearningView:
    """Read every version, every round's plan and the accepted updates of each version's
    round from the node, and their contents from the daemon (`cat(cid) -> bytes | None`,
    run in a thread)."""
    import asyncio

    from eth_utils.address import to_checksum_address

    current = int(await chain.view("currentVersion"))
    versions = []
    for version_id in range(1, current + 1):
        cid, digest, loss, parent, round_id, updates, _block, who = await chain.view(
            "versions", version_id
        )
        versions.append(
            VersionView(
                version_id=version_id,
                cid=str(cid),
                content_hash=bytes(digest),
                eval_loss_micro=int(loss),
                parent_id=int(parent),
                round_id=int(round_id),
                updates=int(updates),
                aggregator=str(to_checksum_address(who)),
                stored=await asyncio.to_thread(cat, str(cid)),
            )
        )
    rounds: dict[int, RoundPlan] = {}
    for round_id in range(1, int(await chain.view("lastRoundId")) + 1):
        info = await chain.view("getRound", round_id)
        # getRound: (seed, difficulty, steps, hyperparams, baseModelId, ..., modelVersion)
        rounds[round_id] = RoundPlan(
            model_version=int(info[9]),
            base_model_id=str(info[4]),
            steps=int(info[2]),
            hyperparams=str(info[3]),
        )
    accepted: dict[int, list[AcceptedUpdate]] = {}
    for v in versions:
        updates_of = accepted.setdefault(v.round_id, [])
        for i in range(int(await chain.view("submissionCount", v.round_id))):
            miner = str(to_checksum_address(await chain.view("submitterAt", v.round_id, i)))
            sub = await chain.view("submissionOf", v.round_id, miner)
            if int(sub[6]) == 1:
                updates_of.append(
                    AcceptedUpdate(
                        miner=miner,
                        cid=str(sub[0]),
                        gradient_hash=bytes(sub[1]),
                        stored=await asyncio.to_thread(cat, str(sub[0])),
                    )
                )
    return LearningView(
        current=current,
        versions=versions,
        rounds=rounds,
        accepted=accepted,
        aggregator_nonce=await chain.transport.confirmed_nonce(aggregator),
        journal=journal,
    )
