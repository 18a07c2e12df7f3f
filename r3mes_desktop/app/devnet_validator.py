"""The devnet's own validator: the same `Validator` a network runs, in the app's process.

On the embedded devnet nobody else validates, so the app runs one (with the devnet's second
genesis key, a public test key, appointed by the devnet operator) and the miner sees verdicts
and credits out of the box. Verification runs in its own worker process; chain and store
calls go through this validator's own ServiceCallers, over the devnet's EVM and store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from eth_account import Account

from r3mes_desktop.adapters.chain.nonces import NonceStore
from r3mes_desktop.adapters.devnet.devnet import Devnet, connect_chain
from r3mes_desktop.adapters.mining.verifier import ProcessVerifier
from r3mes_desktop.app.validator import Validator
from r3mes_desktop.core.clock import SYSTEM_CLOCK, Clock
from r3mes_desktop.core.resilience import ServiceCaller
from r3mes_desktop.core.verdicts import VerdictJournal

log = logging.getLogger(__name__)
WINDOW_S = 120.0  # chain seconds a devnet miner has to answer its challenge


class DevnetValidator:
    def __init__(
        self,
        validator: Validator,
        verifier: ProcessVerifier,
        journal: VerdictJournal,
        nonces: NonceStore,
    ) -> None:
        self.validator = validator
        self._verifier = verifier
        self._journal = journal
        self._nonces = nonces
        self._task: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, devnet: Devnet, *, clock: Clock = SYSTEM_CLOCK) -> DevnetValidator:
        account = Account.from_key(devnet.evm.funded_keys[1])
        await devnet.operator.add_validator(str(account.address))
        nonces = await asyncio.to_thread(NonceStore, devnet.root / "validator-nonces.sqlite")
        journal = await asyncio.to_thread(VerdictJournal, devnet.root / "validator.sqlite")
        connecting = ServiceCaller(service="chain", clock=clock)
        chain = await connect_chain(
            connecting, devnet.evm, account, devnet.contract_address, nonces, clock
        )
        verifier = ProcessVerifier()
        validator = Validator(
            chain=chain,
            store=devnet.store,
            journal=journal,
            verifier=verifier,
            chain_calls=ServiceCaller(service="chain", clock=clock),
            store_calls=ServiceCaller(service="ipfs", clock=clock),
            window_s=WINDOW_S,
            clock=clock,
        )
        log.info("devnet: validator %s running", account.address)
        return cls(validator, verifier, journal, nonces)

    def start(self, interval_s: float) -> None:
        self._task = asyncio.create_task(self._loop(interval_s), name="devnet-validator")

    async def _loop(self, interval_s: float) -> None:
        while True:
            try:
                await self.validator.pass_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("devnet validator pass failed")
            await asyncio.sleep(interval_s)

    async def close(self) -> None:
        """Stop the loop and the worker; the chain client shares the devnet's EVM, which the
        devnet closes."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._verifier.close()
        await asyncio.to_thread(self._journal.close)
        await asyncio.to_thread(self._nonces.close)
