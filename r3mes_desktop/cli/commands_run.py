"""Commands that drive the miner: run, cleanup-stale, resume, dead-letters (retry/discard).

They open the full `Runtime` (devnet or configured endpoints, worker processes, journal,
coordinator), which takes the data directory's miner lock: a second miner gets exit 7.
SIGINT/SIGTERM stop cleanly: running transactions are cancelled where they stand (their
intent is journaled before every effect, the trainer checkpoints), the workers are reaped,
and the next start resumes them. A second signal while stopping is ignored with a note;
the shutdown is already bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from r3mes_desktop.cli import arg_types, commands_read, secrets_input
from r3mes_desktop.cli.context import CliContext
from r3mes_desktop.cli.exit_codes import CliError, ExitCode
from r3mes_desktop.cli.output import Progress, format_table
from r3mes_desktop.core.errors import ValidationError
from r3mes_desktop.core.events import Event, MinerStateChanged, TransactionStateChanged

log = logging.getLogger(__name__)

TERMINAL_STATES = frozenset({"committed", "failed", "rolled_back"})
_SIGNAL_EXIT = {signal.SIGINT: ExitCode.INTERRUPTED, signal.SIGTERM: ExitCode.TERMINATED}


def add_run_parser(sub: Any) -> None:
    """`run`: the mining command and its stop conditions."""
    p = sub.add_parser("run", help="mine: devnet by default, or the configured endpoints")
    p.add_argument(
        "--rounds",
        type=int,
        default=0,
        metavar="N",
        help="stop after N committed transactions (failed and rolled-back ones do not count); "
        "no more rounds run at once than can still be needed, and running ones finish",
    )
    p.add_argument(
        "--graceful",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="on SIGINT/SIGTERM, let running rounds finish for up to SECONDS before stopping",
    )
    p.add_argument("--api", action="store_true", help="serve the local monitoring API")
    p.add_argument("--api-port", type=int, help="port for the API (default: settings api_port)")
    p.add_argument("--fast", action="store_true", help="devnet demo: tiny model, short rounds")
    p.add_argument(
        "--round-steps",
        type=arg_types.count,
        metavar="N",
        help="devnet rounds: training steps per round (1..100000; default 20, 8 with --fast)",
    )
    _add_governor_options(p)
    _add_caps_options(p)
    _add_password_options(p)
    p.set_defaults(func=cmd_run)


# flag → settings field; a flag given replaces the setting for this run
_GOVERNOR_FLAGS = {
    "only_when_idle": "governor_idle_minutes",
    "not_on_battery": "governor_not_on_battery",
    "battery_floor": "governor_battery_floor",
    "max_other_cpu": "governor_max_other_cpu",
    "pause_while": "governor_pause_while",
    "window": "governor_windows",
    "gpu_temp_limit": "governor_gpu_temp_limit",
}


# flag → settings field: how much of the machine mining may use
_CAPS_FLAGS = {
    "device": "mining_devices",
    "training_threads": "training_threads",
    "pow_threads": "pow_threads",
    "priority": "process_priority",
    "memory_budget": "memory_budget_mb",
    "vram_cap": "gpu_vram_cap_mb",
    "power_target": "gpu_power_target_w",
}
_RUN_FLAGS = {**_GOVERNOR_FLAGS, **_CAPS_FLAGS}


def _add_caps_options(p: argparse.ArgumentParser) -> None:
    """How much of the machine mining may use; each flag overrides its setting."""
    g = p.add_argument_group("how much of the machine to use (settings: Resources)")
    g.add_argument(
        "--device",
        action="append",
        metavar="ID",
        help="mine on this device: cpu, cuda:N or mps (repeatable; default: every GPU found, "
        "else the CPU)",
    )
    g.add_argument(
        "--training-threads",
        type=int,
        metavar="N",
        help="CPU threads for training (0 = all cores but one)",
    )
    g.add_argument(
        "--pow-threads",
        type=int,
        metavar="N",
        help="proof-of-work processes (0 = the cores training leaves)",
    )
    g.add_argument(
        "--priority",
        choices=("normal", "low", "idle"),
        help="CPU priority of the training and proof-of-work processes (default low; idle "
        "runs only on cores nothing else wants)",
    )
    g.add_argument(
        "--memory-budget",
        type=int,
        metavar="MB",
        help="memory for training activations; larger micro-batches are split (0 = none)",
    )
    g.add_argument(
        "--vram-cap",
        type=int,
        metavar="MB",
        help="GPU memory each training process may allocate (0 = no cap)",
    )
    g.add_argument(
        "--power-target",
        type=float,
        metavar="W",
        help="hold each GPU's power draw near W by pausing between steps (NVML; 0 = off)",
    )


def _add_governor_options(p: argparse.ArgumentParser) -> None:
    """When mining may run (the resource governor); each flag overrides its setting."""
    g = p.add_argument_group("when to mine (default: always; settings governor_*)")
    g.add_argument(
        "--only-when-idle",
        type=float,
        metavar="MIN",
        help="mine only after MIN minutes without keyboard/mouse input (X11); pause within "
        "1 s of input",
    )
    g.add_argument(
        "--not-on-battery", action="store_const", const=True, help="pause while on battery"
    )
    g.add_argument("--battery-floor", type=float, metavar="PCT", help="pause on battery below PCT")
    g.add_argument(
        "--max-other-cpu",
        type=float,
        metavar="PCT",
        help="pause while other programs use more than PCT %% of the CPU",
    )
    g.add_argument(
        "--pause-while",
        action="append",
        metavar="NAME",
        help="pause while a program of this name runs (repeatable)",
    )
    g.add_argument(
        "--window",
        action="append",
        metavar="DAY:HH:MM-HH:MM",
        help="mine only inside this weekday window, e.g. sat:09:00-17:30 (repeatable)",
    )
    g.add_argument(
        "--gpu-temp-limit",
        type=float,
        metavar="C",
        help="pause when a GPU reaches C °C, resume at C minus governor_gpu_temp_delta (NVML)",
    )


def add_maintenance_parsers(sub: Any) -> None:
    """`cleanup-stale`, `resume`, `dead-letters`: repairs that open the full runtime."""
    p = sub.add_parser("cleanup-stale", help="close transactions stuck longer than a threshold")
    p.add_argument("--older-than", type=float, help="seconds (default: settings stale_threshold)")
    p.add_argument("--transaction", help="force-close this one transaction, whatever its age")
    _add_password_options(p)
    p.set_defaults(func=cmd_cleanup_stale)

    p = sub.add_parser("resume", help="continue interrupted or training-failed transactions")
    p.add_argument("transaction_id", nargs="?", help="resume this one (default: list them)")
    p.add_argument("--all", action="store_true", help="resume every resumable transaction")
    _add_password_options(p)
    p.set_defaults(func=cmd_resume)

    p = sub.add_parser("dead-letters", help="transactions that will never succeed on their own")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--retry", metavar="ID", help="put this dead letter's transaction back")
    group.add_argument("--discard", metavar="ID", help="give up on it and drop its files")
    p.add_argument("--all", action="store_true", help="list retried and discarded ones too")
    _add_password_options(p)
    p.set_defaults(func=cmd_dead_letters)


def _password_prompt(args: argparse.Namespace) -> Any:
    """The keystore password for real endpoints, asked only if the runtime needs it (not in
    the keyring): from --password-file / --password-stdin, else the terminal."""
    file: Path | None = getattr(args, "password_file", None)
    from_stdin: bool = getattr(args, "password_stdin", False)

    async def prompt(address: str) -> str:
        return await asyncio.to_thread(
            secrets_input.password,
            file=file,
            from_stdin=from_stdin,
            confirm=False,
            prompt=f"Keystore password for {address}: ",
        )

    return prompt


def _add_password_options(p: argparse.ArgumentParser) -> None:
    group = p.add_mutually_exclusive_group()
    group.add_argument(
        "--password-file", type=Path, help="keystore password file (real endpoints only)"
    )
    group.add_argument(
        "--password-stdin", action="store_true", help="read the keystore password from stdin"
    )


@contextlib.asynccontextmanager
async def open_runtime(
    ctx: CliContext,
    *,
    fast: bool = False,
    args: argparse.Namespace | None = None,
    settings: Any = None,
) -> AsyncIterator[Any]:
    """The full runtime over `settings` (default: the context's)."""
    from r3mes_desktop.app.runtime import Runtime, RuntimeOptions

    prompt = _password_prompt(args) if args is not None else None
    changes: dict[str, Any] = {"password_prompt": prompt}
    round_steps = getattr(args, "round_steps", None)
    if round_steps is not None:
        changes["round_steps"] = round_steps
    options = RuntimeOptions.fast(**changes) if fast else RuntimeOptions(**changes)
    chosen = settings if settings is not None else ctx.settings
    async with _opened(Runtime(chosen, options=options)) as runtime:
        yield runtime


@contextlib.asynccontextmanager
async def _opened(runtime: Any) -> AsyncIterator[Any]:
    """Open `runtime` for the block and always close it; a setting the node or contract
    proves wrong is a configuration error (exit 3)."""
    try:
        try:
            await runtime.open()
        except ValidationError as exc:
            raise config_error(exc) from None
        yield runtime
    finally:
        await runtime.close()


def config_error(exc: ValidationError) -> Exception:
    """A ValidationError naming a setting ("chain_id: ...", "contract_address: ...") while
    connecting means settings.toml / R3MES_* point at the wrong network or contract: exit 3
    (config invalid), not 2 (usage), since no command-line argument can fix it."""
    from r3mes_desktop.support.config import Settings

    field, sep, _ = exc.message.partition(":")
    if sep and field.strip() in Settings.model_fields:
        return CliError(f"settings invalid: {exc.message}", ExitCode.CONFIG)
    return exc


class _Signals:
    """Turns SIGINT/SIGTERM into an asyncio event (and remembers which one came)."""

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.received: signal.Signals | None = None
        self._loop = asyncio.get_running_loop()
        self._installed: list[signal.Signals] = []

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._loop.add_signal_handler(sig, self._on_signal, sig)
                self._installed.append(sig)
            except (NotImplementedError, RuntimeError):  # Windows: plain handlers
                signal.signal(
                    sig, lambda s, _f: self._loop.call_soon_threadsafe(self._on_signal, s)
                )

    def _on_signal(self, sig: signal.Signals | int) -> None:
        sig = signal.Signals(sig)
        if self.received is None:
            self.received = sig
            sys.stderr.write(f"\nr3mes-miner: {sig.name}: stopping cleanly…\n")
        else:
            sys.stderr.write(f"r3mes-miner: {sig.name} again: already stopping\n")
        self.event.set()

    def remove(self) -> None:
        for sig in self._installed:
            self._loop.remove_signal_handler(sig)


async def cmd_run(ctx: CliContext, args: argparse.Namespace) -> int:
    if args.rounds < 0:
        raise CliError(f"--rounds must be >= 0, got {args.rounds}", ExitCode.USAGE)
    if args.graceful < 0:
        raise CliError(f"--graceful must be >= 0 seconds, got {args.graceful}", ExitCode.USAGE)
    governed = governor_settings(ctx, args)  # bad governor flags: exit 2 before any start
    signals = _Signals()
    signals.install()
    budget = RoundBudget(args.rounds)
    try:
        async with open_runtime(ctx, fast=args.fast, args=args, settings=governed) as runtime:
            progress = None if args.quiet else Progress()
            budget.miner = runtime.miner
            unsubscribe = [runtime.bus.subscribe(budget.on_event)]
            if progress is not None:
                unsubscribe.append(runtime.bus.subscribe(progress.on_event))
            extras = await _start_extras(ctx, args, runtime)
            extras.append(_show_governor(args, runtime))
            try:
                await runtime.miner.start()
                log.info("mining started (data dir %s)", runtime.data_dir)
                waiters = [
                    asyncio.ensure_future(signals.event.wait()),
                    asyncio.ensure_future(budget.reached.wait()),
                ]
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
                for w in waiters:
                    w.cancel()
                await _stop_miner(
                    runtime, signals, graceful_s=args.graceful if signals.received else None
                )
            finally:
                for close in reversed(extras):
                    await close()
                for unsub in unsubscribe:
                    unsub()
                if progress is not None:
                    progress.finish()
            stats = await runtime.coordinator.statistics()
    finally:
        signals.remove()
    summary = {
        "committed": budget.committed,
        "finished": [
            {"transaction_id": e.transaction_id, "round_id": e.round_id, "state": e.new_state}
            for e in budget.finished
        ],
        "stopped_by": signals.received.name if signals.received else "rounds",
        "statistics": stats,
    }
    ctx.out.emit(summary, _human_run_summary)
    return _SIGNAL_EXIT.get(signals.received, ExitCode.OK) if signals.received else ExitCode.OK


class RoundBudget:
    """`run --rounds N`: counts committed transactions, and keeps no more rounds running
    than can still be needed.

    The miner pipelines (the next round trains while the last one uploads), so counting
    finished transactions overshot: rolled-back ones counted, and rounds already running
    when the count was reached committed too. Here only commits count; once the committed
    plus the running ones could reach N the miner is paused (no new round), and if a running
    one fails instead it is started again.
    """

    def __init__(self, target: int, miner: Any = None) -> None:
        self.target = target  # 0: no limit
        self.miner = miner
        self.finished: list[TransactionStateChanged] = []
        self.active: set[str] = set()
        self.reached = asyncio.Event()
        self._commands: set[asyncio.Task[Any]] = set()

    @property
    def committed(self) -> int:
        return sum(e.new_state == "committed" for e in self.finished)

    def on_event(self, event: Event) -> None:
        if not isinstance(event, TransactionStateChanged):
            return
        if event.new_state in TERMINAL_STATES:
            self.active.discard(event.transaction_id)
            if event.old_state not in TERMINAL_STATES:
                self.finished.append(event)
        else:
            self.active.add(event.transaction_id)
        if not self.target:
            return
        if self.committed >= self.target:
            self.reached.set()
            return
        if self.miner is None:
            return
        state = str(self.miner.state)
        could_reach = self.committed + len(self.active) >= self.target
        if could_reach and state == "mining":
            self._command(self.miner.pause())
        elif not could_reach and state in ("pausing", "paused"):
            self._command(self.miner.start())

    def _command(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._commands.add(task)
        task.add_done_callback(self._commands.discard)


async def _stop_miner(runtime: Any, signals: _Signals, *, graceful_s: float | None) -> None:
    """Finish running rounds (rounds reached, or --graceful), else stop where they stand."""
    miner = runtime.miner
    if graceful_s is None or graceful_s > 0:
        idle = asyncio.ensure_future(_until_idle(runtime))
        await asyncio.sleep(0)  # subscribed before the state can change
        await miner.finish_then_stop()
        interrupt = asyncio.ensure_future(_next_signal(signals))
        await asyncio.wait(
            {idle, interrupt}, timeout=graceful_s, return_when=asyncio.FIRST_COMPLETED
        )
        idle.cancel()
        interrupt.cancel()
    await miner.stop()


async def _until_idle(runtime: Any) -> None:
    """Wait for the miner to reach idle (MinerStateChanged), i.e. its rounds finished."""
    idle = asyncio.Event()

    def watch(event: Event) -> None:
        if isinstance(event, MinerStateChanged) and event.new_state == "idle":
            idle.set()

    unsubscribe = runtime.bus.subscribe(watch)
    try:
        if str(runtime.miner.state) == "idle":
            return
        await idle.wait()
    finally:
        unsubscribe()


async def _next_signal(signals: _Signals) -> None:
    """Wait for a signal arriving after now (a first one while finishing rounds)."""
    signals.event.clear()
    await signals.event.wait()


async def _start_extras(ctx: CliContext, args: argparse.Namespace, runtime: Any) -> list[Any]:
    """Error detail files always; the monitoring API when enabled. Returns closers."""
    from r3mes_desktop.api.monitoring import Monitoring

    monitoring = await Monitoring.attach(
        runtime, api=True if args.api else None, port=args.api_port
    )
    if monitoring.api_url:
        sys.stderr.write(f"r3mes-miner: monitoring API on {monitoring.api_url}\n")
    return [monitoring.close]


def governor_settings(ctx: CliContext, args: argparse.Namespace) -> Any:
    """The settings with the governor and caps flags given applied, validated (exit 2
    naming the flag's setting, its value and the accepted range)."""
    from r3mes_desktop.support.config import SettingsError, updated

    changes = {
        field: getattr(args, flag)
        for flag, field in _RUN_FLAGS.items()
        if getattr(args, flag, None) is not None
    }
    if not changes:
        return ctx.settings
    try:
        return updated(ctx.settings, **changes)
    except SettingsError as exc:
        flags = {field: "--" + flag.replace("_", "-") for flag, field in _RUN_FLAGS.items()}
        lines = [f"{flags.get(field, field)}: {text}" for field, text in exc.errors.items()]
        raise CliError("; ".join(lines), ExitCode.USAGE) from None


def _show_governor(args: argparse.Namespace, runtime: Any) -> Any:
    """Print the governor's reason lines (the runtime runs the governor the settings and
    flags ask for); returns a closer."""
    from r3mes_desktop.core.events import GovernorStateChanged

    def say(summary: str, notes: tuple[str, ...]) -> None:
        if not args.quiet:
            for line in [summary, *(f"note: {note}" for note in notes)]:
                sys.stderr.write(f"r3mes-miner: governor: {line}\n")

    def show(event: Event) -> None:
        if isinstance(event, GovernorStateChanged):
            say(event.summary, event.notes)

    unsubscribe = runtime.bus.subscribe(show)
    governor = getattr(runtime, "governor", None)
    decision = governor.decision if governor is not None else None
    if decision is not None:  # published while the runtime opened, before this listened
        say(decision.summary, decision.notes)

    async def close() -> None:
        unsubscribe()

    return close


def _human_run_summary(summary: dict[str, Any]) -> str:
    stats = summary["statistics"]
    lines = [
        f"stopped by: {summary['stopped_by']}",
        f"this run:   {summary['committed']} committed "
        f"({len(summary['finished'])} transactions finished)",
        f"journal:    {stats['total_transactions']} total, "
        f"{stats['committed_transactions']} committed, {stats['failed_transactions']} failed",
    ]
    if summary["finished"]:
        lines.append(format_table(summary["finished"], ["transaction_id", "round_id", "state"]))
    return "\n".join(lines)


async def cmd_cleanup_stale(ctx: CliContext, args: argparse.Namespace) -> int:
    if args.older_than is not None and args.older_than < 0:
        raise CliError(f"--older-than must be >= 0 seconds, got {args.older_than}", ExitCode.USAGE)
    async with open_runtime(ctx, args=args) as runtime:
        coordinator = runtime.coordinator
        if args.transaction:
            if await coordinator.journal.get(args.transaction) is None:
                raise CliError(f"no transaction {args.transaction!r}", ExitCode.NOT_FOUND)
            report = await coordinator.force_cleanup(args.transaction)
        else:
            report = await coordinator.cleanup_stale(older_than_s=args.older_than)
    ctx.out.emit(report.to_dict(), _human_cleanup)
    return ExitCode.OK


def _human_cleanup(report: dict[str, Any]) -> str:
    head = f"closed {report['count']} transaction(s) older than {report['older_than_s']:g}s"
    if not report["cleaned"]:
        return head
    return head + "\n" + format_table(report["cleaned"], list(report["cleaned"][0])[:5])


async def cmd_resume(ctx: CliContext, args: argparse.Namespace) -> int:
    progress = None if args.quiet else Progress()
    async with open_runtime(ctx, args=args) as runtime:
        coordinator = runtime.coordinator
        unsubscribe = runtime.bus.subscribe(progress.on_event) if progress else None
        try:
            resumable = await coordinator.resumable()
            if not args.transaction_id and not args.all:
                columns = ["transaction_id", "round_id", "state", "step", "age_seconds"]
                ctx.out.emit(resumable, lambda rows: format_table(rows, columns))
                return ExitCode.OK
            ids = (
                [args.transaction_id]
                if args.transaction_id
                else [r["transaction_id"] for r in resumable]
            )
            if args.transaction_id and await coordinator.journal.get(args.transaction_id) is None:
                raise CliError(f"no transaction {args.transaction_id!r}", ExitCode.NOT_FOUND)
            results = [await coordinator.resume(tx_id) for tx_id in ids]
            await coordinator.wait_idle()
        finally:
            if unsubscribe is not None:
                unsubscribe()
            if progress is not None:
                progress.finish()
    rows = [r.to_dict() for r in results]
    ctx.out.emit(rows, lambda rs: format_table(rs, commands_read.TX_COLUMNS))
    return ExitCode.OK if all(r["state"] == "committed" for r in rows) else ExitCode.ERROR


async def cmd_dead_letters(ctx: CliContext, args: argparse.Namespace) -> int:
    if not args.retry and not args.discard:
        return await commands_read.cmd_dead_letters_list(ctx, args)
    async with open_runtime(ctx, args=args) as runtime:
        coordinator = runtime.coordinator
        letter_id = args.retry or args.discard
        open_ids = {str(d.id) for d in await coordinator.journal.dead_letters(status="open")}
        if str(letter_id) not in open_ids:
            raise CliError(f"no open dead letter {letter_id!r}", ExitCode.NOT_FOUND)
        if args.retry:
            status = await coordinator.retry_dead_letter(letter_id)
            ctx.out.emit(status)
            return ExitCode.OK if status.state == "committed" else ExitCode.ERROR
        await coordinator.discard_dead_letter(letter_id)
    ctx.out.emit({"discarded": letter_id}, lambda r: f"discarded dead letter {r['discarded']}")
    return ExitCode.OK
