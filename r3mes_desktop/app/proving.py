"""The miner's answer to the validators' challenge, as the saga's TASK_COMPLETE step.

Once a submission is mined, the hash of its block picks the training segments a validator
will recompute (`core.workproof`). Completing the task publishes the *openings* (the
committed states at those segments' starts, and the final state) on IPFS and names their CID
in `completeTask`. Everything here is safe to run again after a crash or a retry: the
openings are the same bytes (same CID, re-pinning is idempotent), and `complete_task`
returns at once when the contract already marks the task complete. One service call from
the saga's view: its caller owns retry, breaker and timeout.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from pathlib import Path

from r3mes_desktop.adapters.chain.client import ChainClient
from r3mes_desktop.adapters.mining import commitments
from r3mes_desktop.core import workproof
from r3mes_desktop.core.errors import NetworkError
from r3mes_desktop.core.steps import ContentStore
from r3mes_desktop.core.workproof import Manifest

log = logging.getLogger(__name__)


class ProvingTaskApi:
    """`TaskApi` that answers the challenge before completing the task."""

    def __init__(self, *, chain: ChainClient, store: ContentStore, trace_root: Path) -> None:
        self.chain = chain
        self.store = store
        self.trace_root = trace_root

    async def complete_task(self, *, round_id: int) -> None:
        miner = self.chain.miner_address
        sub = await self.chain.submission_info(round_id, miner)
        if sub is None or sub.completed:
            await self.chain.complete_task(round_id=round_id)  # its own checks and errors
            return
        trace = await asyncio.to_thread(commitments.find_trace, self.trace_root, sub.gradient_hash)
        if trace is None:
            log.warning(
                "round %s: no committed trace for update %s on this machine; completing "
                "without openings (validators will reject it)",
                round_id,
                sub.gradient_hash.hex()[:12],
            )
            await self.chain.complete_task(round_id=round_id)
            return
        block_hash = await self.chain.block_hash(sub.block_number)
        if block_hash is None:
            raise NetworkError(
                f"block {sub.block_number} of the round {round_id} submission is not readable yet",
                service="chain",
            )
        openings = await asyncio.to_thread(_openings, trace, block_hash, round_id, miner)
        cid = await self.store.add_and_pin(openings)
        await self.chain.complete_task(round_id=round_id, openings_cid=cid)
        log.info("round %s: challenge answered, openings %s", round_id, cid)
        await asyncio.to_thread(shutil.rmtree, trace.path, True)


def _openings(trace: commitments.TraceDir, block_hash: bytes, round_id: int, miner: str) -> bytes:
    manifest = Manifest.from_bytes((trace.path / commitments.MANIFEST_FILE).read_bytes())
    picked = workproof.picks(block_hash, round_id, miner, manifest.segments)
    return commitments.build_openings(trace, manifest, picked)
