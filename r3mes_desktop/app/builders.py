"""Builders: each of the runtime's parts, constructed from settings.

`Runtime` decides what is opened in which order and closes it again; these functions only
build one part each from what they are given, so every part's recipe reads in one place
and can be called on its own. They import their adapters when called, not with this module:
the GUI imports the runtime before its first paint, and the chain, torch-worker and IPFS
stacks would cost seconds there.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from r3mes_desktop.core.events import EventBus
from r3mes_desktop.core.steps import ContentStore, ProofOfWork, Trainer

if TYPE_CHECKING:
    from r3mes_desktop.adapters.chain.client import ChainClient
    from r3mes_desktop.adapters.chain.keystore import Keystore
    from r3mes_desktop.adapters.chain.transport import ChainTransport
    from r3mes_desktop.adapters.devnet import Devnet
    from r3mes_desktop.adapters.faults import FaultInjector
    from r3mes_desktop.adapters.ipfs.client import IpfsClient
    from r3mes_desktop.adapters.mining.pool import TrainerPool
    from r3mes_desktop.adapters.mining.pow import ProcessPow
    from r3mes_desktop.adapters.mining.settings import MiningConfig
    from r3mes_desktop.adapters.mining.worker import ProcessTrainer
    from r3mes_desktop.core.clock import Clock
    from r3mes_desktop.core.coordinator import Coordinator
    from r3mes_desktop.core.journal import Journal
    from r3mes_desktop.core.miner import Miner
    from r3mes_desktop.core.resilience import ServiceCaller
    from r3mes_desktop.core.resilience.breaker import BreakerRegistry
    from r3mes_desktop.support.config.settings import Settings
    from r3mes_desktop.support.notify import ErrorNotifier, NotifierConfig

JOURNAL_FILE = "journal.sqlite"

# Something the runtime closes after its parts: called, and awaited when it returns an awaitable.
Closer = Callable[[], object]
PasswordPrompt = Callable[[str], Awaitable[str | None]]


class PinnedStore(ContentStore, Protocol):
    """The saga's content store plus the pin listing the status bar shows."""

    async def pins(self) -> list[str]: ...


@dataclass(frozen=True)
class Endpoints:
    """The real network's parts: the chain client, the IPFS client and the transport the
    chain client owns (the status bar reads balances through it)."""

    chain: ChainClient
    store: IpfsClient
    transport: ChainTransport


def build_breakers(*, settings: Settings, bus: EventBus) -> BreakerRegistry:
    """One breaker per service, shared by the coordinator and the runtime's own callers, so
    a service the saga found down is also shown down on the status bar."""
    from r3mes_desktop.core.resilience.breaker import BreakerRegistry

    return BreakerRegistry.from_settings(settings, bus=bus)


def build_callers(
    *, settings: Settings, breakers: BreakerRegistry, bus: EventBus
) -> dict[str, ServiceCaller]:
    """The one retry/breaker/timeout layer for the runtime's own chain and IPFS calls
    (connecting, the status bar's pin count), over the shared breakers."""
    from r3mes_desktop.core.resilience import ServiceCaller
    from r3mes_desktop.core.resilience.retry import RetryPolicy

    return {
        name: ServiceCaller(
            service=name,
            breaker=breakers.get(name),
            policy=RetryPolicy.from_settings(settings),
            timeout_s=settings.call_timeout,
            bus=bus,
        )
        for name in ("chain", "ipfs")
    }


def build_keystore(*, data_dir: Path) -> Keystore:
    """The miner's keystore under the data dir: the real network unlocks it, the settings
    dialog manages it (constructing one reads nothing)."""
    from r3mes_desktop.adapters.chain.keystore import Keystore

    return Keystore(data_dir / "keys")


def mining_config(
    *, settings: Settings, device: str, devices: Sequence[str] | None = None
) -> MiningConfig:
    """The training worker's config for one device, from the settings: its torch threads
    (`training_threads`), CPU priority (`process_priority`), memory budget and VRAM cap,
    and the proof-of-work processes (`pow_threads`; 0 = the cores left by the training on
    `devices`, every device that mines, default just this one)."""
    from r3mes_desktop.adapters.mining.settings import MiningConfig, pow_processes

    return MiningConfig(
        device=device if device != "mps" else "auto",
        max_gradient_size_mb=float(settings.max_gradient_size_mb),
        checkpoint_interval=settings.checkpoint_interval,
        preset=settings.model_preset,
        num_threads=settings.training_threads,
        memory_budget_mb=float(settings.memory_budget_mb),
        vram_cap_mb=float(settings.gpu_vram_cap_mb),
        priority=settings.process_priority,
        pow_processes=pow_processes(
            settings.pow_threads,
            devices=list(devices) if devices is not None else [device],
            training_threads_setting=settings.training_threads,
        ),
    )


def build_trainer(
    *,
    settings: Settings,
    data_dir: Path,
    bus: EventBus,
    device: str = "auto",
    mining: Sequence[str] | None = None,
) -> ProcessTrainer:
    """The training worker process for one device (`mps` is left to the worker's own
    device choice); every device's worker shares one checkpoint root. `mining`: every
    device that mines (proof of work takes the cores their training leaves)."""
    from r3mes_desktop.adapters.mining.worker import ProcessTrainer

    config = mining_config(settings=settings, device=device, devices=mining)
    return ProcessTrainer(config, checkpoint_root=data_dir / "checkpoints", bus=bus)


def build_trainers(
    *,
    settings: Settings,
    data_dir: Path,
    bus: EventBus,
    devices: list[str],
    mining: Sequence[str],
) -> TrainerPool:
    """A training worker per device in `devices` (`adapters.mining.pool`); those in
    `mining` take rounds."""
    from r3mes_desktop.adapters.mining.pool import pool_of

    return pool_of(
        devices,
        lambda device: build_trainer(
            settings=settings, data_dir=data_dir, bus=bus, device=device, mining=mining
        ),
        enabled=mining,
    )


def build_pow(*, trainer: ProcessTrainer | TrainerPool) -> ProcessPow:
    """Proof-of-work processes, as many as the mining config gives the trainer (settings
    `pow_threads`), at its CPU priority (`process_priority`); paused and resumed with the
    governor (`ProcessPow.pause`)."""
    from r3mes_desktop.adapters.mining.pow import ProcessPow

    return ProcessPow(processes=trainer.config.pow_processes, priority=trainer.config.priority)


def build_journal(*, data_dir: Path, inline_gradient_max: int | None) -> Journal:
    """The coordinator's journal; `inline_gradient_max=None` keeps the journal's default."""
    from r3mes_desktop.core.journal import Journal

    if inline_gradient_max is None:
        return Journal(data_dir / JOURNAL_FILE)
    return Journal(data_dir / JOURNAL_FILE, inline_gradient_max=inline_gradient_max)


async def load_faults(*, settings: Settings, bus: EventBus) -> FaultInjector:
    """The fault plan settings name (demos and the chaos harness), read in a thread."""
    from r3mes_desktop.adapters.faults import FaultInjector

    faults = await asyncio.to_thread(FaultInjector.from_settings, settings)
    if faults is None:
        raise RuntimeError("load_faults: settings.fault_plan is not set")
    faults.bus = bus
    return faults


async def open_devnet(
    *,
    settings: Settings,
    data_dir: Path,
    bus: EventBus,
    caller: ServiceCaller,
    round_steps: int | None,
    round_difficulty: int | None,
    round_preset: str | None,
    operator_interval_s: float | None,
) -> Devnet:
    """The embedded devnet with rounds shaped by the options (else by settings)."""
    from r3mes_desktop.adapters.devnet.evm import DevnetEvm, evm_log

    # The EVM process imports eth-tester and restores the chain while this process
    # imports the chain client's web3/eth-account stack (seconds each, one after the
    # other before): a restart reaches mining that much sooner on two cores.
    (data_dir / "devnet").mkdir(parents=True, exist_ok=True)
    opening = asyncio.ensure_future(DevnetEvm.open(evm_log(data_dir)))
    try:
        await asyncio.to_thread(importlib.import_module, "r3mes_desktop.adapters.devnet.devnet")
        evm = await asyncio.shield(opening)
    except BaseException:
        opening.cancel()  # a no-op once opened; a cancelled open closes its process
        with contextlib.suppress(BaseException):
            await (await opening).close()
        raise
    from r3mes_desktop.adapters.devnet import Devnet
    from r3mes_desktop.adapters.devnet.operator import RoundTemplate

    template_args: dict[str, Any] = {}
    if round_steps is not None:
        template_args["steps"] = round_steps
    if round_difficulty is not None:
        template_args["difficulty"] = round_difficulty
    else:
        template_args["difficulty"] = settings.pow_difficulty
    template_args["hyperparams"] = {"preset": round_preset or settings.model_preset}
    return await Devnet.open(
        data_dir,
        caller=caller,
        bus=bus,
        template=RoundTemplate(**template_args),
        max_gradient_size_mb=settings.max_gradient_size_mb,
        operator_interval_s=operator_interval_s,
        evm=evm,
    )


async def open_endpoints(
    *,
    settings: Settings,
    data_dir: Path,
    bus: EventBus,
    caller: ServiceCaller,
    keystore: Keystore,
    password_prompt: PasswordPrompt | None,
    closers: list[Closer],
) -> Endpoints:
    """Real network: chain RPC URL(s) with fallback, the IPFS API, the miner's keystore.

    Each client is added to `closers` as soon as it exists, so a failure halfway (a wrong
    chain id, no contract) still closes what was opened before it."""
    from r3mes_desktop.adapters.chain.client import ChainClient
    from r3mes_desktop.adapters.chain.keystore import PasswordVault
    from r3mes_desktop.adapters.chain.nonces import NonceStore
    from r3mes_desktop.adapters.chain.transport import FallbackTransport, RpcTransport
    from r3mes_desktop.adapters.ipfs.client import IpfsClient
    from r3mes_desktop.core.errors import AuthenticationError, ValidationError

    for name in ("contract_address", "ipfs_api_address"):
        if not getattr(settings, name):
            raise ValidationError(
                f"{name}: required when chain_rpc_urls is set (Settings → Network), "
                "or clear chain_rpc_urls to use the embedded devnet"
            )
    address = await asyncio.to_thread(keystore.address)  # "create or import one" if none
    password = PasswordVault(opted_in=True, address=address).get()  # only if stored
    if password is None and password_prompt is not None:
        password = await password_prompt(address)
    if not password:
        raise AuthenticationError(
            f"keystore password needed to unlock {address} (none given)", service="keys"
        )
    account = await asyncio.to_thread(keystore.unlock, password)
    transports = [
        RpcTransport(url, timeout_s=settings.call_timeout) for url in settings.chain_rpc_urls
    ]
    transport: ChainTransport = (
        transports[0] if len(transports) == 1 else FallbackTransport(transports, bus=bus)
    )
    nonces = await asyncio.to_thread(NonceStore, data_dir / "nonces.sqlite")
    closers.append(lambda: asyncio.to_thread(nonces.close))
    try:
        chain: ChainClient = await caller.call(
            "chain.connect",
            ChainClient.connect,
            transport=transport,
            account=account,
            contract_address=settings.contract_address,
            nonces=nonces,
            expected_chain_id=settings.chain_id,
        )
    except BaseException:
        await transport.close()  # no client owns it yet: its HTTP session would leak
        raise
    closers.append(chain.close)  # closes the transport too
    store = IpfsClient(
        settings.ipfs_api_address,
        max_gradient_size_mb=settings.max_gradient_size_mb,
    )
    closers.append(store.close)
    return Endpoints(chain=chain, store=store, transport=transport)


def build_coordinator(
    *,
    settings: Settings,
    journal: Journal,
    trainer: Trainer,
    pow: ProofOfWork,
    store: PinnedStore,
    chain: ChainClient,
    breakers: BreakerRegistry,
    bus: EventBus,
    data_dir: Path,
    maintenance_interval_s: float,
    clock: Clock,
    trace_root: Path,
    lanes: int = 1,
) -> Coordinator:
    """The saga's coordinator over the parts. Round completion answers the validators'
    challenge (`ProvingTaskApi`) through the chain client the saga submits with, so with
    faults injected completion calls see the same faults as submissions; the same client
    reads the validators' verdicts and credits (`verdicts`) and the network model's
    versions (`versions`)."""
    from r3mes_desktop.app.model_cache import ModelCache
    from r3mes_desktop.app.proving import ProvingTaskApi
    from r3mes_desktop.core.coordinator import Coordinator

    return Coordinator(
        journal=journal,
        trainer=trainer,
        pow=pow,
        store=store,
        chain=chain,
        task_api=ProvingTaskApi(chain=chain, store=store, trace_root=trace_root),
        settings=settings,
        breakers=breakers,
        bus=bus,
        artifacts_dir=data_dir / "artifacts",
        maintenance_interval_s=maintenance_interval_s,
        clock=clock,
        verdicts=chain,
        versions=chain,
        models=ModelCache(store, data_dir / "models", cap_bytes=settings.model_cache_mb * 2**20),
        lanes=lanes,
    )


def build_miner(
    *,
    coordinator: Coordinator,
    chain: ChainClient,
    bus: EventBus,
    poll_interval_s: float,
    clock: Clock,
    network: str = "",
    lanes: Callable[[], int] | None = None,
) -> Miner:
    """The mining loop, polling for open rounds while idle; `network` names where it is
    connected (`network_label`)."""
    from r3mes_desktop.core.miner import Miner

    return Miner(
        coordinator,
        chain,
        bus,
        poll_interval_s=poll_interval_s,
        clock=clock,
        network=network,
        lanes=lanes,
    )


def network_label(*, settings: Settings, chain: object) -> str:
    """How the miner names its network: "<name> (chain N), contract 0x12ab…cdef".

    The name is the joined network file's (`network_name`); the chain id and the contract
    are the connected client's, so the line says what the node answered, not only what the
    settings hoped for."""
    devnet = settings.uses_devnet
    parts = ["the embedded devnet" if devnet else (settings.network_name or "the network")]
    chain_id = getattr(chain, "chain_id", None)
    if isinstance(chain_id, int):
        parts.append(f" (chain {chain_id})")
    contract = getattr(chain, "contract_address", None)
    if isinstance(contract, str) and contract:
        parts.append(f", contract {contract[:6]}…{contract[-4:]}")
    return "".join(parts)


def build_notifier(*, settings: Settings, bus: EventBus) -> ErrorNotifier:
    """The Slack/e-mail notifier, listening on the bus (its secrets come from the store)."""
    from r3mes_desktop.support.notify import ErrorNotifier

    notifier = ErrorNotifier(notifier_config(settings))
    notifier.attach(bus)
    return notifier


def notifier_config(settings: Settings) -> NotifierConfig:
    """The notifier's configuration for `settings` (also used when settings change live)."""
    from r3mes_desktop.support.notify import NotifierConfig
    from r3mes_desktop.support.secrets import SecretsStore

    return NotifierConfig.from_settings(settings, SecretsStore())
