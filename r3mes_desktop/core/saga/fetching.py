"""FETCH: the files a round names (the network adapter of its model version, its text
dataset), fetched or found cached, verified, and journaled before training starts.

Each file goes through the content store's caller (`store_calls`: retry, breaker, timeout)
into the `ModelStore` port (the app's verified LRU cache: CID checked by the store, sha256
by the cache, its size cap), and then the bytes at the returned path are hashed here again:
whatever the port did, a file whose sha256 is not the one the round names is refused with an
`IntegrityError` naming the CID and both hashes, and never trained on. The step commits
FETCH → TRAINING with `fetched` = {"adapter": {"cid", "sha256", "path"}, "dataset": {...}}.

TRAINING uses the journaled paths after hashing them once more; a file evicted (or damaged)
since is fetched again through the same verified path. A round on the base model with no
dataset to fetch names nothing: its transaction starts in TRAINING.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
from typing import TYPE_CHECKING

from r3mes_desktop.core.errors import IntegrityError, ValidationError
from r3mes_desktop.core.journal import Change
from r3mes_desktop.core.records import TransactionRecord
from r3mes_desktop.core.saga.context import SagaContext
from r3mes_desktop.core.steps import RoundSpec
from r3mes_desktop.core.txstate import TxState

if TYPE_CHECKING:
    from r3mes_desktop.core.saga.engine import Saga

log = logging.getLogger(__name__)

ADAPTER, DATASET = "adapter", "dataset"
_OPERATION = {ADAPTER: "fetch_model", DATASET: "fetch_dataset"}
_TRAINER_ARG = {ADAPTER: "adapter_path", DATASET: "dataset_path"}
_WHAT = {ADAPTER: "model version adapter", DATASET: "dataset"}


def wanted(spec: RoundSpec) -> dict[str, tuple[str, str]]:
    """What the round names to fetch: kind → (CID, sha256 hex); empty for none.

    Raises `ValidationError` for a round that names a file without both its CID and hash."""
    files: dict[str, tuple[str, str]] = {}
    cid, sha = spec.hyperparams.get("dataset_cid"), spec.hyperparams.get("dataset_sha256")
    if cid or sha:
        if not isinstance(cid, str) or not isinstance(sha, str) or not cid or not sha:
            raise ValidationError(
                f"round {spec.round_id} names a dataset without both its CID and sha256; "
                "this miner cannot fetch it"
            )
        files[DATASET] = (cid, sha)
    if spec.model_version != 0:
        if not spec.model_cid or not spec.model_sha256:
            raise ValidationError(
                f"round {spec.round_id} trains on model version {spec.model_version}, which "
                "names no adapter this miner can fetch"
            )
        files[ADAPTER] = (spec.model_cid, spec.model_sha256)
    return files


def needs_fetch(spec: RoundSpec) -> bool:
    """Whether a transaction of this round starts in FETCH (else in TRAINING, as on the base
    model). A round naming a file badly counts: FETCH then fails it with the reason."""
    try:
        return bool(wanted(spec))
    except ValidationError:
        return True


def first_step(spec: RoundSpec) -> TxState:
    return TxState.FETCH if needs_fetch(spec) else TxState.TRAINING


def sha256_of(path: str) -> str | None:
    """The file's sha256 (hex), streamed; None when it is gone."""
    try:
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except FileNotFoundError:
        return None


class Fetching:
    def __init__(self, saga: Saga) -> None:
        self.saga = saga
        self.ctx: SagaContext = saga.ctx

    async def fetch(self, rec: TransactionRecord) -> Change:
        """The FETCH step: every named file fetched and verified, then journaled."""
        files = wanted(rec.spec)
        progress = self.saga.progress(rec.id, "fetch")
        fetched: dict[str, dict[str, str]] = {}
        for done, (kind, (cid, sha)) in enumerate(sorted(files.items())):
            progress(done / len(files), {"file": kind, "cid": cid})
            path = await self.fetch_verified(rec, kind, cid, sha)
            fetched[kind] = {"cid": cid, "sha256": sha, "path": path}
        progress(1.0, {"files": len(fetched)})
        return Change(
            rec.id,
            self.ctx.clock.time(),
            state=TxState.TRAINING,
            expect=frozenset({TxState.FETCH}),
            fields={"fetched": fetched},
        )

    async def for_training(self, rec: TransactionRecord) -> dict[str, str]:
        """The trainer's file arguments (`adapter_path=`, `dataset_path=`): the journaled
        paths, hashed again; a file gone or changed since FETCH is fetched again (verified)."""
        journaled = rec.fetched or {}
        paths: dict[str, str] = {}
        for kind, (cid, sha) in sorted(wanted(rec.spec).items()):
            entry = journaled.get(kind)
            path: str | None = None
            if entry is not None and entry.get("cid") == cid and entry.get("sha256") == sha:
                path = entry.get("path")
                if path is not None and await asyncio.to_thread(sha256_of, path) != sha:
                    log.info(
                        "transaction %s: the fetched %s %s is gone or changed since FETCH; "
                        "fetching it again",
                        rec.id,
                        _WHAT[kind],
                        cid,
                    )
                    path = None
            if path is None:
                path = await self.fetch_verified(rec, kind, cid, sha)
            paths[_TRAINER_ARG[kind]] = path
        return paths

    async def fetch_verified(self, rec: TransactionRecord, kind: str, cid: str, sha: str) -> str:
        """One file through the store's caller and the ModelStore port, then its bytes hashed
        here: only a path whose content is the named sha256 is returned."""
        models = self.ctx.models
        if models is None:
            raise ValidationError(
                f"round {rec.round_id} names a {_WHAT[kind]} ({cid}) but this miner has no "
                "model store to fetch it with"
            )
        path = await self.ctx.store_calls.call(
            _OPERATION[kind], functools.partial(models.fetch, cid, sha), transaction_id=rec.id
        )
        actual = await asyncio.to_thread(sha256_of, path)
        if actual != sha:
            raise IntegrityError(
                f"{_WHAT[kind]} {cid}: expected sha256 {sha}, the fetched bytes hash to "
                f"{actual or '(file missing)'}; refused, never trained on",
                service="ipfs",
            )
        return path
