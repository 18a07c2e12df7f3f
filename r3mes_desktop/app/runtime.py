"""`Runtime`: the miner's parts, assembled in one place for the GUI and the headless CLI.

settings → devnet (or real endpoints) → breakers → trainer / proof of work (worker
processes) → journal → coordinator → miner, plus the Slack/e-mail notifier. Constructing a
Runtime is cheap (only the event bus), so the GUI can paint its window first and `open()`
the rest afterwards on the same loop. No Qt here. How each part is built lives in
`app.builders`; this module decides the order of opening and closing.

Blocking work never runs on the loop: settings and keystores load in threads, torch and PoW
live in worker processes, and those processes are reaped in executor threads on `close()`
(shutting a process pool down on the loop thread stalled it 700 ms).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from r3mes_desktop.app import builders
from r3mes_desktop.app.builders import JOURNAL_FILE, Closer, PinnedStore
from r3mes_desktop.app.options import RuntimeOptions
from r3mes_desktop.core.events import EventBus

if TYPE_CHECKING:
    from r3mes_desktop.adapters.chain.client import ChainClient
    from r3mes_desktop.adapters.chain.keystore import Keystore
    from r3mes_desktop.adapters.chain.transport import ChainTransport
    from r3mes_desktop.adapters.devnet import Devnet
    from r3mes_desktop.adapters.devnet.evm import DevnetEvm
    from r3mes_desktop.adapters.faults import FaultInjector
    from r3mes_desktop.adapters.governor.devices import Detected
    from r3mes_desktop.adapters.mining.pool import TrainerPool
    from r3mes_desktop.adapters.mining.pow import ProcessPow
    from r3mes_desktop.app.devnet_aggregator import DevnetAggregator
    from r3mes_desktop.app.devnet_validator import DevnetValidator
    from r3mes_desktop.app.governing import GovernorLoop
    from r3mes_desktop.app.instance_lock import InstanceLock
    from r3mes_desktop.app.throttling import PowerThrottle
    from r3mes_desktop.core.coordinator import Coordinator
    from r3mes_desktop.core.governor import Decision
    from r3mes_desktop.core.miner import Miner
    from r3mes_desktop.core.resilience import ServiceCaller
    from r3mes_desktop.core.resilience.breaker import BreakerRegistry
    from r3mes_desktop.core.steps import ProofOfWork, Trainer
    from r3mes_desktop.support.config.settings import Settings
    from r3mes_desktop.support.notify import ErrorNotifier

__all__ = ["JOURNAL_FILE", "Runtime", "RuntimeOptions"]

log = logging.getLogger(__name__)

_Part = TypeVar("_Part")


def _log_warm_up_failure(warming: asyncio.Future[Any]) -> None:
    """A failed warm-up is only logged: the first round spawns the worker again and
    reports a real failure there."""
    if not warming.cancelled() and warming.exception() is not None:
        log.warning("training worker warm-up failed: %s", warming.exception())


class Runtime:
    """Owns every long-lived part; `await open()` once, `await close()` once.

    The parts the window and the CLI drive (`coordinator`, `miner`, `breakers`) are read
    through properties that raise a clear "not open" error outside open()..close(); the
    others are `None` until `open()` builds them.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        options: RuntimeOptions | None = None,
        bus: EventBus | None = None,
    ) -> None:
        self.options = options or RuntimeOptions()
        self.bus = bus if bus is not None else EventBus()
        self.settings: Settings | None = settings
        self.ready = False
        self.data_dir: Path = Path()
        self.callers: dict[str, ServiceCaller] = {}  # the one retry/breaker/timeout layer
        self.trainer: TrainerPool | None = None  # one training worker per mining device
        self.pow: ProcessPow | None = None
        self.devnet: Devnet | None = None
        self.devnet_validator: DevnetValidator | None = None
        self.devnet_aggregator: DevnetAggregator | None = None
        self.chain: ChainClient | None = None
        self.store: PinnedStore | None = None
        self.keystore: Keystore | None = None
        self.notifier: ErrorNotifier | None = None
        self.faults: FaultInjector | None = None  # while settings name a fault plan
        self.governor: GovernorLoop | None = None  # while a governor_* policy is on
        self.throttle: PowerThrottle | None = None  # while gpu_power_target_w is set
        self._breakers: BreakerRegistry | None = None
        self._coordinator: Coordinator | None = None
        self._miner: Miner | None = None
        self._transport: ChainTransport | DevnetEvm | None = None  # balances, block height
        self._lock: InstanceLock | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._warming: asyncio.Future[None] | None = None
        self._closers: list[Closer] = []
        self._auto_devices: list[str] = []  # what "auto" mines on, found at open()
        self._detected: asyncio.Future[Detected] | None = None

    # -- the parts that exist only while open -------------------------------------------------
    @property
    def coordinator(self) -> Coordinator:
        return _opened(self._coordinator, "coordinator")

    @property
    def miner(self) -> Miner:
        return _opened(self._miner, "miner")

    @property
    def breakers(self) -> BreakerRegistry:
        return _opened(self._breakers, "breakers")

    # -- opening ------------------------------------------------------------------------------
    async def open(self) -> None:
        try:
            await self._open()
        except BaseException:
            await self.close()
            raise
        self.ready = True

    async def _open(self) -> None:
        """Settings, then the data dir's lock (two runtimes on one journal would resume
        the same transactions and double-submit), the breakers (connecting runs through them),
        the network, the fault wrappers around it, mining, and the notifier last."""
        from r3mes_desktop.support.config import load_settings, paths, updated

        if self.settings is None:
            self.settings = await asyncio.to_thread(load_settings)
        if self.options.settings_overrides:
            self.settings = updated(self.settings, **dict(self.options.settings_overrides))
        settings = self.settings
        self.data_dir = Path(self.options.data_dir or paths().data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._take_lock()
        if self.options.warm_trainer:
            # The worker's torch import (seconds) overlaps the devnet replay and recovery
            # setup instead of delaying the first (or the first recovered) round after them.
            self.trainer = await self._build_trainers(settings)
            self._warming = asyncio.ensure_future(self.trainer.start())

        self._breakers = builders.build_breakers(settings=settings, bus=self.bus)
        self.callers = builders.build_callers(
            settings=settings, breakers=self._breakers, bus=self.bus
        )
        # One keystore for the whole run: the real network unlocks it, the GUI manages it.
        self.keystore = builders.build_keystore(data_dir=self.data_dir)
        chain, store = await self._open_network(settings, self.keystore)
        if self.options.wrap_store is not None:
            store = self.options.wrap_store(store)
        if settings.fault_plan is not None:  # demos and the chaos harness: off by default
            self.faults = await builders.load_faults(settings=settings, bus=self.bus)
            chain = self.faults.wrap_chain(chain)
            store = self.faults.wrap_store(store)
        self.chain, self.store = chain, store
        await self._open_mining()
        self._open_notifier()

    async def _build_trainers(self, settings: Settings) -> TrainerPool:
        """A worker per device "auto" finds, plus the CPU and any device the settings
        tick; only the chosen ones (or, with none chosen, the found ones) take rounds, so
        switching one on or off later is live and costs nothing until it trains."""
        from r3mes_desktop.adapters.governor.devices import auto_devices

        # CUDA numbers GPUs fastest first, NVML by PCI bus: the workers (spawned with this
        # environment) number them like NVML, so "GPU 1 is hot" holds the worker on GPU 1.
        os.environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
        self._auto_devices = await asyncio.to_thread(auto_devices)
        devices = list(dict.fromkeys([*self._auto_devices, *settings.mining_devices, "cpu"]))
        return builders.build_trainers(
            settings=settings,
            data_dir=self.data_dir,
            bus=self.bus,
            devices=devices,
            mining=self._chosen_devices(settings),
        )

    def _chosen_devices(self, settings: Settings) -> list[str]:
        return list(settings.mining_devices) or self._auto_devices

    async def detect_devices(self) -> Detected:
        """Every device torch and NVML find (for the Resources tab; torch is asked in a
        child process, once per runtime)."""
        from r3mes_desktop.adapters.governor.devices import detect

        if self._detected is None:
            self._detected = asyncio.ensure_future(asyncio.to_thread(detect))
        return await asyncio.shield(self._detected)

    @property
    def governor_decision(self) -> Decision | None:
        """The governor's last decision; None when no policy is on (mining always)."""
        return self.governor.decision if self.governor is not None else None

    def _take_lock(self) -> None:
        try:
            from r3mes_desktop.app.instance_lock import InstanceLock
        except ImportError:  # older checkouts: the GUI's single-instance guard still applies
            return
        lock = InstanceLock(self.data_dir)
        lock.acquire()
        self._lock = lock

    async def _open_network(
        self, settings: Settings, keystore: Keystore
    ) -> tuple[ChainClient, PinnedStore]:
        """The embedded devnet, or the real chain and IPFS endpoints settings name."""
        opts = self.options
        if settings.uses_devnet:
            self.devnet = await builders.open_devnet(
                settings=settings,
                data_dir=self.data_dir,
                bus=self.bus,
                caller=self.callers["chain"],
                round_steps=opts.round_steps,
                round_difficulty=opts.round_difficulty,
                round_preset=opts.round_preset,
                operator_interval_s=opts.operator_interval_s,
            )
            self._transport = self.devnet.evm
            return self.devnet.chain, self.devnet.store
        endpoints = await builders.open_endpoints(
            settings=settings,
            data_dir=self.data_dir,
            bus=self.bus,
            caller=self.callers["chain"],
            keystore=keystore,
            password_prompt=opts.password_prompt,
            closers=self._closers,
        )
        self._transport = endpoints.transport  # closed by the chain client
        return endpoints.chain, endpoints.store

    async def _warmed(self) -> None:
        """Wait for the warm-up (a worker being spawned is then reaped by the trainer's
        shutdown, never left behind); its failure was logged by `_log_warm_up_failure`."""
        warming, self._warming = self._warming, None
        if warming is not None:
            with contextlib.suppress(Exception):
                await warming

    async def _open_mining(self) -> None:
        """Workers, journal, then the coordinator (whose start recovers unfinished
        transactions) and last the miner, which only mines once recovery is done.
        A hook: `verify` opens the services without it."""
        from r3mes_desktop.core.clock import SYSTEM_CLOCK

        opts = self.options
        settings = _opened(self.settings, "settings")
        chain = _opened(self.chain, "chain client")
        store = _opened(self.store, "content store")
        if self.trainer is None:
            self.trainer = await self._build_trainers(settings)
        pool = self.trainer
        pool.miner = chain.miner_address  # its runs are bound to this account
        if self._warming is not None:
            # Recovery and mining start now; a round waits for the same worker (the trainer
            # spawns one, never two); close() still awaits the warm-up.
            self._warming.add_done_callback(_log_warm_up_failure)
        self.pow = builders.build_pow(trainer=self.trainer)
        trainer: Trainer = self.trainer
        pow_: ProofOfWork = self.pow
        if opts.wrap_trainer is not None:
            trainer = opts.wrap_trainer(trainer)
        if opts.wrap_pow is not None:
            pow_ = opts.wrap_pow(pow_)
        journal = builders.build_journal(
            data_dir=self.data_dir, inline_gradient_max=opts.inline_gradient_max
        )
        if self.faults is not None:
            trainer = self.faults.wrap_trainer(trainer)
            journal = self.faults.wrap_journal(journal)
        clock = opts.clock if opts.clock is not None else SYSTEM_CLOCK
        self._coordinator = builders.build_coordinator(
            settings=settings,
            journal=journal,
            trainer=trainer,
            pow=pow_,
            store=store,
            chain=chain,
            breakers=self.breakers,
            bus=self.bus,
            data_dir=self.data_dir,
            maintenance_interval_s=opts.maintenance_interval_s,
            clock=clock,
            trace_root=self.trainer.trace_root,
            lanes=len(self.trainer.members),
        )
        report = await self._coordinator.start()
        if self.faults is not None:
            self.faults.announce()  # a Notice: the GUI and the logs say failures are on purpose
        if report.count:
            log.info("recovery reconciled %d unfinished transactions", report.count)
        miner = builders.build_miner(
            coordinator=self._coordinator,
            chain=chain,
            bus=self.bus,
            poll_interval_s=opts.miner_poll_s,
            clock=clock,
            network=builders.network_label(settings=settings, chain=chain),
            lanes=lambda: pool.capacity,
        )
        self._miner = miner
        pool.on_capacity = miner.wake
        from r3mes_desktop.app.governing import start_governor

        self.governor = start_governor(
            settings, miner=miner, bus=self.bus, trainer=pool, pow=self.pow
        )
        self._start_throttle(settings)
        if self.devnet is not None:
            self.devnet.operator.on_opened = lambda _ids: miner.wake()
            if opts.devnet_validator_s is not None:
                from r3mes_desktop.app.devnet_validator import DevnetValidator

                self.devnet_validator = await DevnetValidator.open(self.devnet, clock=clock)
                self.devnet_validator.start(opts.devnet_validator_s)
                from r3mes_desktop.app.devnet_aggregator import DevnetAggregator

                self.devnet_aggregator = await DevnetAggregator.open(self.devnet, clock=clock)
                self.devnet_aggregator.start(opts.devnet_validator_s)

    def _open_notifier(self) -> None:
        """A hook like `_open_mining`: `verify` sends no notifications."""
        settings = _opened(self.settings, "settings")
        self.notifier = builders.build_notifier(settings=settings, bus=self.bus)
        self._spawn(self._flush_notifications(self.notifier))

    async def _flush_notifications(self, notifier: ErrorNotifier) -> None:
        while True:
            await asyncio.sleep(5.0)
            notifier.flush()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- live settings ----------------------------------------------------------------------
    def apply_settings(self, settings: Settings) -> list[str]:
        """Take a validated new Settings; apply what can change live, return the rest."""
        old, self.settings = self.settings, settings
        if self.notifier is not None:
            self.notifier.reconfigure(builders.notifier_config(settings))
        if self._coordinator is not None:
            self._coordinator.settings = settings
            bulkhead = getattr(self._coordinator, "bulkhead", None)
            if bulkhead is not None:
                bulkhead.set_limit(settings.max_active_transactions)
        if self.trainer is not None and (
            old is None or old.mining_devices != settings.mining_devices
        ):
            self._switch_devices(settings)
        if old is not None and self._miner is not None and _governor_changed(old, settings):
            self._spawn(self._restart_governor(settings))
        if old is not None and self.trainer is not None and _changed(old, settings, CAPS):
            self._apply_caps(settings)
        if (
            old is not None
            and self.trainer is not None
            and _changed(old, settings, ("gpu_power_target_w",))
        ):
            self._start_throttle(settings)
        restart = ("chain_rpc_urls", "chain_id", "ipfs_api_address", "contract_address")
        return [
            name for name in restart if old is None or getattr(old, name) != getattr(settings, name)
        ]

    def _switch_devices(self, settings: Settings) -> None:
        """Switch mining devices on and off now: a new one gets a worker, a round on one
        switched off pauses (checkpointed) until it is switched on again."""
        pool = _opened(self.trainer, "trainer")
        chosen = self._chosen_devices(settings)
        for device in chosen:
            if device not in pool.members:
                pool.add(
                    device,
                    builders.build_trainer(
                        settings=settings,
                        data_dir=self.data_dir,
                        bus=self.bus,
                        device=device,
                        mining=chosen,
                    ),
                )
        pool.set_enabled(chosen)
        log.info("mining devices: %s", ", ".join(chosen))

    def _start_throttle(self, settings: Settings) -> None:
        """The duty-cycle power throttle over the GPU workers, when a power target is set."""
        from r3mes_desktop.adapters.governor.nvml import NvmlGpus
        from r3mes_desktop.app.throttling import start_power_throttle

        pool = _opened(self.trainer, "trainer")
        if self.throttle is not None:
            self.throttle.set_target(settings.gpu_power_target_w)
            if settings.gpu_power_target_w:
                return
            self._spawn(self.throttle.stop())
            self.throttle = None
            return
        self.throttle = start_power_throttle(settings, pool.members, self.bus, NvmlGpus(self.bus))

    def _apply_caps(self, settings: Settings) -> None:
        """Threads, priority, memory budget and VRAM cap: each worker restarts with them
        between rounds (a round in progress keeps its worker); proof of work takes them
        from its next search."""
        pool = _opened(self.trainer, "trainer")
        chosen = self._chosen_devices(settings)
        for device, member in pool.members.items():
            member.reconfigure(
                builders.mining_config(settings=settings, device=device, devices=chosen)
            )
        if self.pow is not None:
            self.pow.processes = pool.config.pow_processes
            self.pow.priority = pool.config.priority

    async def _restart_governor(self, settings: Settings) -> None:
        """New governor settings apply now: the old loop releases its hold, a new one
        (if any policy is on) decides at once."""
        from r3mes_desktop.app.governing import start_governor

        old, self.governor = self.governor, None
        if old is not None:
            await old.stop()
        if self._miner is None:
            return
        self.governor = start_governor(
            settings, miner=self._miner, bus=self.bus, trainer=self.trainer, pow=self.pow
        )
        if self.governor is None and old is not None:
            from r3mes_desktop.core.events import GovernorStateChanged

            self.bus.publish(
                GovernorStateChanged(may_run=True, summary="mining allowed", ts=time.time())
            )

    # -- facts for the status bar -------------------------------------------------------------
    def endpoints(self) -> dict[str, str | None]:
        if self.settings is None or self.settings.uses_devnet:
            return {"chain": "embedded devnet", "ipfs": "embedded devnet store"}
        urls = self.settings.chain_rpc_urls
        return {"chain": urls[0] if urls else None, "ipfs": self.settings.ipfs_api_address}

    def device_name(self) -> str:
        wanted = self.settings.mining_devices if self.settings is not None else ()
        if not wanted:
            return "auto (every GPU found, else the CPU)"
        return ", ".join("CPU" if device == "cpu" else device for device in wanted)

    async def chain_info(self) -> dict[str, Any]:
        if self.chain is None:
            raise RuntimeError("runtime not open")
        account = self.chain.miner_address
        info: dict[str, Any] = {
            "network": "devnet" if self.devnet is not None else f"chain {self.chain.chain_id}",
            "account": account,
        }
        if self._transport is not None:
            wei = await self._transport.balance(account)
            info["balance"] = wei / 10**18
            info["block"] = await self._block_number()
        return info

    async def _block_number(self) -> int | None:
        """The chain head, where the transport can tell (ChainTransport has no
        block_number(); the devnet's EVM has)."""
        block_number = getattr(self._transport, "block_number", None)
        if block_number is not None:
            return int(await block_number())
        return None

    async def ipfs_info(self) -> str:
        if self.store is None:
            raise RuntimeError("runtime not open")
        pins = await self.callers["ipfs"].call("pins", self.store.pins)
        where = "devnet store" if self.devnet is not None else getattr(self.store, "where", "")
        return f"{where} · {len(pins)} pinned"

    # -- closing ------------------------------------------------------------------------------
    async def close(self) -> None:
        """Stop mining, close the coordinator and the devnet, reap workers off the loop.

        Reverse dependency order: the miner stops asking for rounds before the coordinator
        finishes its transactions, which still need the trainer and the devnet; the real
        network's clients close last, newest first. A failing step is logged and the rest
        still close; the lock is released only once nothing writes to the data dir."""
        self.ready = False
        await self._warmed()  # a worker being spawned is reaped by the trainer's shutdown
        for task in list(self._background):
            task.cancel()
        for task in list(self._background):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        steps: list[tuple[str, object, str]] = [
            ("governor", self.governor, "stop"),  # releases its hold before the miner stops
            ("power throttle", self.throttle, "stop"),  # duty back to full
            ("miner", self._miner, "stop"),
            ("coordinator", self._coordinator, "close"),
            ("trainer", self.trainer, "shutdown"),
            ("notifier", self.notifier, "close"),
            ("devnet validator", self.devnet_validator, "close"),
            ("devnet aggregator", self.devnet_aggregator, "close"),
            ("devnet", self.devnet, "close"),
        ]
        for name, part, method in steps:
            if part is None or not hasattr(part, method):
                continue
            started = time.perf_counter()
            try:
                result = getattr(part, method)()
                if asyncio.iscoroutine(result):
                    await result
            except Exception:
                log.exception("closing the %s failed", name)
            log.debug("closed the %s in %.2f s", name, time.perf_counter() - started)
        for closer in reversed(self._closers):  # real-network clients, newest first
            try:
                result = closer()
                if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
                    await result
            except Exception:
                log.exception("closing a network client failed")
        self._closers.clear()
        self._miner = self._coordinator = None
        self.governor = self.throttle = None
        self.trainer = self.notifier = self.devnet = None
        if self._lock is not None:
            self._lock.release()
            self._lock = None


CAPS = (
    "training_threads",
    "pow_threads",
    "process_priority",
    "memory_budget_mb",
    "gpu_vram_cap_mb",
    "mining_devices",  # proof of work takes the cores the mining devices leave
)


def _changed(old: Settings, new: Settings, names: tuple[str, ...]) -> bool:
    return any(getattr(old, name) != getattr(new, name) for name in names)


def _governor_changed(old: Settings, new: Settings) -> bool:
    return any(
        getattr(old, name) != getattr(new, name)
        for name in type(new).model_fields
        if name.startswith("governor_")
    )


def _opened(part: _Part | None, name: str) -> _Part:
    """`part`, or a clear error when the runtime is not open (before open(), after close())."""
    if part is None:
        raise RuntimeError(f"runtime not open: its {name} exists between open() and close()")
    return part
