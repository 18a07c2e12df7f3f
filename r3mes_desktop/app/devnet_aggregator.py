"""The devnet's own aggregator: the same `Aggregator` a network runs, in the app's process.

With it the embedded devnet learns out of the box: each round the devnet closes, once its
submissions have verdicts, becomes the next model version, and the rounds opened after it
train on that version. It signs with the devnet's third genesis key (a public test key),
appointed by the devnet operator; aggregation and evaluation run in a worker process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from eth_account import Account

from r3mes_desktop.adapters.chain.nonces import NonceStore
from r3mes_desktop.adapters.devnet.devnet import Devnet, connect_chain
from r3mes_desktop.adapters.mining.verifier import ProcessVerifier
from r3mes_desktop.app.aggregator import Aggregator
from r3mes_desktop.core.clock import SYSTEM_CLOCK, Clock
from r3mes_desktop.core.resilience import ServiceCaller
from r3mes_desktop.core.versions import VersionJournal

log = logging.getLogger(__name__)


class DevnetAggregator:
    def __init__(
        self,
        aggregator: Aggregator,
        worker: ProcessVerifier,
        journal: VersionJournal,
        nonces: NonceStore,
    ) -> None:
        self.aggregator = aggregator
        self._worker = worker
        self._journal = journal
        self._nonces = nonces
        self._task: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, devnet: Devnet, *, clock: Clock = SYSTEM_CLOCK) -> DevnetAggregator:
        account = Account.from_key(devnet.evm.funded_keys[2])
        await devnet.operator.add_aggregator(str(account.address))
        nonces = await asyncio.to_thread(NonceStore, devnet.root / "aggregator-nonces.sqlite")
        journal = await asyncio.to_thread(VersionJournal, devnet.root / "aggregator.sqlite")
        chain = await connect_chain(
            ServiceCaller(service="chain", clock=clock),
            devnet.evm,
            account,
            devnet.contract_address,
            nonces,
            clock,
        )
        worker = ProcessVerifier()
        aggregator = Aggregator(
            chain=chain,
            store=devnet.store,
            journal=journal,
            worker=worker,
            chain_calls=ServiceCaller(service="chain", clock=clock),
            store_calls=ServiceCaller(service="ipfs", clock=clock),
            blobs=devnet.root / "versions",
            clock=clock,
        )
        log.info("devnet: aggregator %s running", account.address)
        return cls(aggregator, worker, journal, nonces)

    def start(self, interval_s: float) -> None:
        self._task = asyncio.create_task(self._loop(interval_s), name="devnet-aggregator")

    async def _loop(self, interval_s: float) -> None:
        while True:
            try:
                await self.aggregator.pass_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("devnet aggregator pass failed")
            await asyncio.sleep(interval_s)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._worker.close()
        await asyncio.to_thread(self._journal.close)
        await asyncio.to_thread(self._nonces.close)
