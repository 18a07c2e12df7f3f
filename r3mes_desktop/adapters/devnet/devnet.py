"""`Devnet`: the embedded network the app uses when no endpoints are configured.

`await Devnet.open(data_dir)` gives the same objects a real network gives — a `ChainClient`
(Chain + TaskApi) over the devnet's EVM (a child process, see `evm.py`) and a
`LocalContentStore` (ContentStore) — plus the operator that keeps rounds open. Everything
lives under `<data_dir>/devnet/` and survives a restart: the chain is restored from its
snapshot and transaction log, the store is on disk, the nonce store is sqlite. The dev miner
key is a devnet throwaway: its password is stored next to it (0600) precisely so the devnet needs no
prompt; never fund it on a real network.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from pathlib import Path
from typing import Any

from r3mes_desktop.adapters.chain.client import ChainClient
from r3mes_desktop.adapters.chain.keystore import Keystore, write_private_file
from r3mes_desktop.adapters.chain.nonces import NonceStore
from r3mes_desktop.adapters.devnet.evm import DevnetEvm, evm_log
from r3mes_desktop.adapters.devnet.operator import DevnetOperator, RoundTemplate
from r3mes_desktop.adapters.ipfs.local_store import LocalContentStore
from r3mes_desktop.core.clock import SYSTEM_CLOCK, Clock
from r3mes_desktop.core.events import EventBus
from r3mes_desktop.core.resilience import ServiceCaller

log = logging.getLogger(__name__)

DEV_PASSWORD_FILE = "dev-miner-password.txt"  # noqa: S105 - a file name, not a password
DEV_STALE_NONCE_S = 30.0
DEV_SCRYPT_N = 2**14  # throwaway key: a fast unlock matters more than brute-force cost


def _dev_account(root: Path) -> Any:
    """Create the dev miner keystore on first run (password in a 0600 file next to it)."""
    keystore = Keystore(root / "keys", scrypt_n=DEV_SCRYPT_N)
    password_file = root / "keys" / DEV_PASSWORD_FILE
    if not keystore.exists():
        password = secrets.token_urlsafe(24)
        write_private_file(password_file, password)
        keystore.create(password)
    return keystore.unlock(password_file.read_text(encoding="utf-8").strip())


async def connect_chain(
    connecting: ServiceCaller,
    evm: DevnetEvm,
    account: Any,
    contract: str,
    nonces: NonceStore,
    clock: Clock,
) -> ChainClient:
    """Connect the chain client to the embedded EVM through `connecting`, with the devnet's
    short poll and stale-nonce settings (a local node answers at once)."""
    return await connecting.call(
        "chain.connect",
        ChainClient.connect,
        transport=evm,
        account=account,
        contract_address=contract,
        nonces=nonces,
        clock=clock,
        poll_s=0.05,
        # The embedded node sees every transaction the moment it is sent, so a signed
        # one it has never seen after this long was abandoned (rolled back before its
        # broadcast): its nonce is refilled instead of stalling every later
        # submission behind the gap for 10 minutes.
        stale_nonce_s=DEV_STALE_NONCE_S,
    )


def _record_devnet_info(
    root: Path, evm: DevnetEvm, chain: ChainClient, contract: str, miner_address: str
) -> None:
    """Write `devnet.json` (the addresses and chain id other tools read) and log the open."""
    info = {
        "contract_address": contract,
        "miner_address": miner_address,
        "chain_id": chain.chain_id,
        "replayed_transactions": evm.replayed,
        "restored_transactions": evm.restored,
    }
    (root / "devnet.json").write_text(json.dumps(info, indent=1), encoding="utf-8")
    log.info(
        "devnet open: %s (%d transactions from a snapshot, %d replayed)",
        contract,
        evm.restored,
        evm.replayed,
    )


class Devnet:
    """Chain/TaskApi/ContentStore implementations over the embedded devnet, plus its operator."""

    def __init__(
        self,
        *,
        root: Path,
        evm: DevnetEvm,
        chain: ChainClient,
        store: LocalContentStore,
        operator: DevnetOperator,
        nonces: NonceStore,
    ) -> None:
        self.root = root
        self.evm = evm
        self.chain = chain
        self.task_api = chain
        self.store = store
        self.operator = operator
        self._nonces = nonces
        self._operator_task: asyncio.Task[None] | None = None

    @property
    def miner_address(self) -> str:
        return self.chain.miner_address

    @property
    def contract_address(self) -> str:
        return self.chain.contract_address

    @classmethod
    async def open(
        cls,
        data_dir: Path,
        *,
        caller: ServiceCaller | None = None,
        bus: EventBus | None = None,
        clock: Clock = SYSTEM_CLOCK,
        template: RoundTemplate | None = None,
        keep_open: int = 3,
        max_gradient_size_mb: int = 100,
        operator_interval_s: float | None = 5.0,
        evm: DevnetEvm | None = None,
    ) -> Devnet:
        """Open (or create) the devnet under `data_dir/devnet`; `operator_interval_s=None`
        leaves the operator loop off (call `operator.ensure_rounds` yourself). `evm`: one
        already opened on `evm_log(data_dir)` (its process started before these modules
        were imported, see `Runtime`); it is closed with the devnet. `caller`: the
        ServiceCaller the connect step runs through; the chain client itself makes plain
        calls, and its users call it through their own callers."""
        root = Path(data_dir) / "devnet"
        root.mkdir(parents=True, exist_ok=True)
        if evm is None:
            evm = await DevnetEvm.open(evm_log(data_dir))
        try:
            account = await asyncio.to_thread(_dev_account, root)
            operator = DevnetOperator(
                evm,
                key=evm.funded_keys[0],
                template=template or RoundTemplate(),
                keep_open=keep_open,
                clock=clock,
            )
            contract = await operator.deploy_if_needed()
            await operator.fund(str(account.address))
            nonces = await asyncio.to_thread(NonceStore, root / "nonces.sqlite")
            connecting = caller or ServiceCaller(service="chain", bus=bus, clock=clock)
            chain = await connect_chain(connecting, evm, account, contract, nonces, clock)
        except BaseException:
            await evm.close()
            raise
        store = LocalContentStore(root / "store", max_gradient_size_mb=max_gradient_size_mb)
        _record_devnet_info(root, evm, chain, contract, str(account.address))
        devnet = cls(root=root, evm=evm, chain=chain, store=store, operator=operator, nonces=nonces)
        await operator.ensure_rounds(devnet.miner_address)
        if operator_interval_s is not None:
            devnet._operator_task = asyncio.create_task(
                operator.run(devnet.miner_address, interval_s=operator_interval_s, clock=clock),
                name="devnet-operator",
            )
        return devnet

    async def close(self) -> None:
        if self._operator_task is not None:
            self._operator_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._operator_task
            self._operator_task = None
        await self.chain.close()
        await asyncio.to_thread(self._nonces.close)

    async def __aenter__(self) -> Devnet:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
