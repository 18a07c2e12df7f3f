"""`Runtime`: the miner's parts, assembled in one place for the GUI and the headless CLI.

settings → devnet (or real endpoints) → breakers → trainer / proof of work (worker
processes) → journal → coordinator → miner, plus the Slack/e-mail notifier. Constructing a
Runtime is cheap (only the event bus), so the GUI can paint its window first and `open()`
the rest afterwards on the same loop. No Qt here.

Blocking work never runs on the loop: settings and keystores load in threads, torch and PoW
live in worker processes, and those processes are reaped in executor threads on `close()`
(shutting a process pool down on the loop thread stalled it 700 ms).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from r3mes_desktop.core.events import EventBus

log = logging.getLogger(__name__)

JOURNAL_FILE = "journal.sqlite"


@dataclass(frozen=True)
class RuntimeOptions:
    """Choices that are not user settings: demo speed, test hooks, where to live."""

    data_dir: Path | None = None
    settings_overrides: Mapping[str, Any] = field(default_factory=dict)
    round_steps: int | None = None  # devnet rounds: training steps
    round_difficulty: int | None = None  # devnet rounds: PoW bits (16..32)
    round_preset: str | None = None  # devnet rounds: model preset ("tiny", "default"...)
    operator_interval_s: float | None = 2.0
    maintenance_interval_s: float = 15.0
    miner_poll_s: float = 5.0  # how often an idle miner looks for new open rounds
    wrap_store: Any = None  # callable(store) -> store; fault injection in tests and demos
    wrap_trainer: Any = None  # callable(trainer) -> trainer; instrumentation (bench.gui)
    wrap_pow: Any = None  # callable(pow) -> pow
    clock: Any = None  # the coordinator's and miner's Clock (tests shift wall time)
    password_prompt: Any = None  # async (address) -> password | None, when not in the keyring
    worker_nice: int = 10  # CPU priority of training/PoW worker processes (0 = leave as is)
    warm_trainer: bool = False  # spawn the training worker (torch import) while opening
    inline_gradient_max: int | None = None  # journal rows up to this size (None: default)

    @classmethod
    def fast(cls, **changes: Any) -> RuntimeOptions:
        """Tiny model, difficulty 16, short rounds: a transaction commits in seconds."""
        values: dict[str, Any] = {
            "round_steps": 8,
            "round_difficulty": 16,
            "round_preset": "tiny",
            "operator_interval_s": 0.5,
            "miner_poll_s": 0.5,
            "settings_overrides": {"pow_difficulty": 16},
            "warm_trainer": True,
        }
        values.update(changes)
        return cls(**values)


def _log_warm_up_failure(warming: asyncio.Future[Any]) -> None:
    """A failed warm-up is only logged: the first round spawns the worker again and
    reports a real failure there."""
    if not warming.cancelled() and warming.exception() is not None:
        log.warning("training worker warm-up failed: %s", warming.exception())


class Runtime:
    """Owns every long-lived part; `await open()` once, `await close()` once."""

    def __init__(
        self,
        settings: Any = None,
        *,
        options: RuntimeOptions | None = None,
        bus: EventBus | None = None,
    ) -> None:
        self.options = options or RuntimeOptions()
        self.bus = bus if bus is not None else EventBus()
        self.settings: Any = settings
        self.ready = False
        self.data_dir: Path = Path()
        self.breakers: Any = None
        self.callers: dict[str, Any] = {}  # the one retry/breaker/timeout layer of its calls
        self.coordinator: Any = None
        self.miner: Any = None
        self.trainer: Any = None
        self.pow: Any = None
        self.devnet: Any = None
        self.chain: Any = None
        self.store: Any = None
        self.keystore: Any = None
        self.notifier: Any = None
        self.faults: Any = None  # a FaultInjector while settings name a fault plan
        self._transport: Any = None
        self._lock: Any = None
        self._background: set[asyncio.Task[Any]] = set()
        self._warming: asyncio.Future[Any] | None = None
        self._closers: list[Any] = []

    # -- opening ------------------------------------------------------------------------------
    async def open(self) -> None:
        try:
            await self._open()
        except BaseException:
            await self.close()
            raise
        self.ready = True

    async def _open(self) -> None:
        from r3mes_desktop.support.config import load_settings, paths, updated

        if self.settings is None:
            self.settings = await asyncio.to_thread(load_settings)
        if self.options.settings_overrides:
            self.settings = updated(self.settings, **dict(self.options.settings_overrides))
        settings = self.settings
        app_paths = paths()
        self.data_dir = Path(self.options.data_dir or app_paths.data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._take_lock()
        if self.options.warm_trainer:
            # The worker's torch import (seconds) overlaps the devnet replay and recovery
            # setup instead of delaying the first (or the first recovered) round after them.
            self.trainer = self._make_trainer()
            self._warming = asyncio.ensure_future(self.trainer.start())

        from r3mes_desktop.core.resilience import ServiceCaller
        from r3mes_desktop.core.resilience.breaker import BreakerRegistry
        from r3mes_desktop.core.resilience.retry import RetryPolicy

        self.breakers = BreakerRegistry.from_settings(settings, bus=self.bus)
        self.callers = {
            name: ServiceCaller(
                service=name,
                breaker=self.breakers.get(name),
                policy=RetryPolicy.from_settings(settings),
                timeout_s=settings.call_timeout,
                bus=self.bus,
            )
            for name in ("chain", "ipfs")
        }
        if settings.uses_devnet:
            await self._open_devnet(self.callers["chain"])
        else:
            await self._open_endpoints(self.callers["chain"])
        if self.options.wrap_store is not None:
            self.store = self.options.wrap_store(self.store)
        if settings.fault_plan is not None:  # demos and the chaos harness: off by default
            from r3mes_desktop.adapters.faults import FaultInjector

            self.faults = await asyncio.to_thread(FaultInjector.from_settings, settings)
            assert self.faults is not None
            self.faults.bus = self.bus
            self.chain = self.faults.wrap_chain(self.chain)
            self.store = self.faults.wrap_store(self.store)

        from r3mes_desktop.adapters.chain.keystore import Keystore

        self.keystore = Keystore(self.data_dir / "keys")
        await self._open_mining()
        self._open_notifier()
        if self.options.worker_nice > 0:
            self._spawn(self._renice_workers(self.options.worker_nice))

    def _take_lock(self) -> None:
        try:
            from r3mes_desktop.app.instance_lock import InstanceLock
        except ImportError:  # older checkouts: the GUI's single-instance guard still applies
            return
        lock = InstanceLock(self.data_dir)
        lock.acquire()
        self._lock = lock

    async def _open_devnet(self, chain_caller: Any) -> None:
        from r3mes_desktop.adapters.devnet.evm import DevnetEvm, evm_log

        # The EVM process imports eth-tester and restores the chain while this process
        # imports the chain client's web3/eth-account stack (seconds each, one after the
        # other before): a restart reaches mining that much sooner on two cores.
        (self.data_dir / "devnet").mkdir(parents=True, exist_ok=True)
        opening = asyncio.ensure_future(DevnetEvm.open(evm_log(self.data_dir)))
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

        opts = self.options
        template_args: dict[str, Any] = {}
        if opts.round_steps is not None:
            template_args["steps"] = opts.round_steps
        if opts.round_difficulty is not None:
            template_args["difficulty"] = opts.round_difficulty
        else:
            template_args["difficulty"] = self.settings.pow_difficulty
        template_args["hyperparams"] = {"preset": opts.round_preset or self.settings.model_preset}
        self.devnet = await Devnet.open(
            self.data_dir,
            caller=chain_caller,
            bus=self.bus,
            template=RoundTemplate(**template_args),
            max_gradient_size_mb=self.settings.max_gradient_size_mb,
            operator_interval_s=opts.operator_interval_s,
            evm=evm,
        )
        self.chain = self.devnet.chain
        self.store = self.devnet.store
        self._transport = self.devnet.evm

    async def _open_endpoints(self, chain_caller: Any) -> None:
        """Real network: chain RPC URL(s) with fallback, the IPFS API, the miner's keystore."""
        from r3mes_desktop.adapters.chain.client import ChainClient
        from r3mes_desktop.adapters.chain.keystore import Keystore, PasswordVault
        from r3mes_desktop.adapters.chain.nonces import NonceStore
        from r3mes_desktop.adapters.chain.transport import FallbackTransport, RpcTransport
        from r3mes_desktop.adapters.ipfs.client import IpfsClient
        from r3mes_desktop.core.errors import AuthenticationError, ValidationError

        settings = self.settings
        for name in ("contract_address", "ipfs_api_address"):
            if not getattr(settings, name):
                raise ValidationError(
                    f"{name}: required when chain_rpc_urls is set (Settings → Network), "
                    "or clear chain_rpc_urls to use the embedded devnet"
                )
        keystore = Keystore(self.data_dir / "keys")
        address = await asyncio.to_thread(keystore.address)  # "create or import one" if none
        password = PasswordVault(opted_in=True, address=address).get()  # only if stored
        if password is None and self.options.password_prompt is not None:
            password = await self.options.password_prompt(address)
        if not password:
            raise AuthenticationError(
                f"keystore password needed to unlock {address} (none given)", service="keys"
            )
        account = await asyncio.to_thread(keystore.unlock, password)
        urls = list(settings.chain_rpc_urls)
        transports = [RpcTransport(url, timeout_s=settings.call_timeout) for url in urls]
        transport: Any = (
            transports[0] if len(transports) == 1 else FallbackTransport(transports, bus=self.bus)
        )
        self._transport = transport  # closed by the chain client
        nonces = await asyncio.to_thread(NonceStore, self.data_dir / "nonces.sqlite")
        self._closers.append(lambda: asyncio.to_thread(nonces.close))
        try:
            self.chain = await chain_caller.call(
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
        self._closers.append(self.chain.close)
        self.store = IpfsClient(
            settings.ipfs_api_address,
            max_gradient_size_mb=settings.max_gradient_size_mb,
        )
        self._closers.append(self.store.close)

    def _make_trainer(self) -> Any:
        from r3mes_desktop.adapters.mining.settings import MiningConfig
        from r3mes_desktop.adapters.mining.worker import ProcessTrainer

        settings = self.settings
        config = MiningConfig(
            device=settings.training_device if settings.training_device != "mps" else "auto",
            max_gradient_size_mb=float(settings.max_gradient_size_mb),
            checkpoint_interval=settings.checkpoint_interval,
            preset=settings.model_preset,
        )
        return ProcessTrainer(config, checkpoint_root=self.data_dir / "checkpoints", bus=self.bus)

    async def _warmed(self) -> None:
        """Wait for the warm-up (a worker being spawned is then reaped by the trainer's
        shutdown, never left behind); its failure was logged by `_log_warm_up_failure`."""
        warming, self._warming = self._warming, None
        if warming is not None:
            with contextlib.suppress(Exception):
                await warming

    async def _open_mining(self) -> None:
        from r3mes_desktop.adapters.mining.pow import ProcessPow
        from r3mes_desktop.core.coordinator import Coordinator
        from r3mes_desktop.core.journal import Journal
        from r3mes_desktop.core.miner import Miner

        settings = self.settings
        if self.trainer is None:
            self.trainer = self._make_trainer()
        if self._warming is not None:
            # Recovery and mining start now; a round waits for the same worker (the trainer
            # spawns one, never two); close() still awaits the warm-up.
            self._warming.add_done_callback(_log_warm_up_failure)
        self.pow = ProcessPow(processes=self.trainer.config.pow_processes)
        trainer, pow_ = self.trainer, self.pow
        if self.options.wrap_trainer is not None:
            trainer = self.options.wrap_trainer(trainer)
        if self.options.wrap_pow is not None:
            pow_ = self.options.wrap_pow(pow_)
        inline = self.options.inline_gradient_max
        journal = (
            Journal(self.data_dir / JOURNAL_FILE)
            if inline is None
            else Journal(self.data_dir / JOURNAL_FILE, inline_gradient_max=inline)
        )
        if self.faults is not None:
            trainer = self.faults.wrap_trainer(trainer)
            journal = self.faults.wrap_journal(journal)
        self.coordinator = Coordinator(
            journal=journal,
            trainer=trainer,
            pow=pow_,
            store=self.store,
            chain=self.chain,
            task_api=self.devnet.task_api
            if self.devnet is not None and self.faults is None
            else self.chain,
            settings=settings,
            breakers=self.breakers,
            bus=self.bus,
            artifacts_dir=self.data_dir / "artifacts",
            maintenance_interval_s=self.options.maintenance_interval_s,
            **({"clock": self.options.clock} if self.options.clock is not None else {}),
        )
        report = await self.coordinator.start()
        if self.faults is not None:
            self.faults.announce()  # a Notice: the GUI and the logs say failures are on purpose
        if report.count:
            log.info("recovery reconciled %d unfinished transactions", report.count)
        self.miner = Miner(
            self.coordinator,
            self.chain,
            self.bus,
            poll_interval_s=self.options.miner_poll_s,
            **({"clock": self.options.clock} if self.options.clock is not None else {}),
        )
        if self.devnet is not None:
            miner = self.miner
            self.devnet.operator.on_opened = lambda _ids: miner.wake()

    def _open_notifier(self) -> None:
        from r3mes_desktop.support.notify import ErrorNotifier, NotifierConfig
        from r3mes_desktop.support.secrets import SecretsStore

        self.notifier = ErrorNotifier(NotifierConfig.from_settings(self.settings, SecretsStore()))
        self.notifier.attach(self.bus)
        self._spawn(self._flush_notifications())

    async def _flush_notifications(self) -> None:
        while True:
            await asyncio.sleep(5.0)
            self.notifier.flush()

    async def _renice_workers(self, nice: int) -> None:
        """Run our worker processes (training, PoW) at a lower CPU priority.

        With every core busy proving and training, the desktop process otherwise waits for
        the scheduler: measured p99 loop stalls fell from 65 ms to 32 ms on 2 cores. The
        workers still get all idle CPU, so mining throughput is unchanged. New PoW
        processes start per search, hence the short poll (one /proc read per child).
        """
        seen: set[int] = set()

        def renice_new_children() -> None:  # imports psutil and reads /proc: off the loop
            import psutil

            for child in psutil.Process().children(recursive=True):
                if child.pid in seen:
                    continue
                with contextlib.suppress(psutil.Error):
                    if child.nice() < nice:
                        child.nice(nice)
                    seen.add(child.pid)

        while True:
            await asyncio.to_thread(renice_new_children)
            await asyncio.sleep(0.25)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- live settings ----------------------------------------------------------------------
    def apply_settings(self, settings: Any) -> list[str]:
        """Take a validated new Settings; apply what can change live, return the rest."""
        old, self.settings = self.settings, settings
        if self.notifier is not None:
            from r3mes_desktop.support.notify import NotifierConfig
            from r3mes_desktop.support.secrets import SecretsStore

            self.notifier.reconfigure(NotifierConfig.from_settings(settings, SecretsStore()))
        if self.coordinator is not None:
            self.coordinator.settings = settings
            bulkhead = getattr(self.coordinator, "bulkhead", None)
            if bulkhead is not None:
                bulkhead.set_limit(settings.max_active_transactions)
        restart = ("chain_rpc_urls", "chain_id", "ipfs_api_address", "contract_address")
        return [
            name for name in restart if old is None or getattr(old, name) != getattr(settings, name)
        ]

    # -- facts for the status bar -------------------------------------------------------------
    def endpoints(self) -> dict[str, str | None]:
        if self.settings is None or self.settings.uses_devnet:
            return {"chain": "embedded devnet", "ipfs": "embedded devnet store"}
        urls = self.settings.chain_rpc_urls
        return {"chain": urls[0] if urls else None, "ipfs": self.settings.ipfs_api_address}

    def device_name(self) -> str:
        wanted = self.settings.training_device if self.settings is not None else "auto"
        return {"auto": "auto (CPU unless a GPU is found)", "cpu": "CPU"}.get(wanted, wanted)

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
        """Stop mining, close the coordinator and the devnet, reap workers off the loop."""
        self.ready = False
        await self._warmed()  # a worker being spawned is reaped by the trainer's shutdown
        for task in list(self._background):
            task.cancel()
        for task in list(self._background):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        steps = [
            ("miner", self.miner, "stop"),
            ("coordinator", self.coordinator, "close"),
            ("trainer", self.trainer, "shutdown"),
            ("notifier", self.notifier, "close"),
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
        self.miner = self.coordinator = self.trainer = self.notifier = self.devnet = None
        if self._lock is not None:
            self._lock.release()
            self._lock = None
