"""The mining loop the GUI and the CLI drive: pick open rounds, run them, pipelined.

Training + PoW use a device, so each device is one serial lane (inside the saga); as soon
as a transaction leaves its lane the loop starts the next round, so its training overlaps
the upload and submission of the previous one. A rig with several devices has as many
lanes (`lanes`, read live: a device switched off or held back by the governor is one lane
fewer), each training its own round. The coordinator's bulkhead bounds how many are in
flight. States: idle → mining → (pausing → paused | stopping → idle).

The miner says where it is: "connected to <network>, K open rounds for you" on its first
listing after a start, then a line only when the listing goes empty ("waiting for rounds")
or fills again, never on every poll (a `Notice` from source "network", which the status bar
and `r3mes-miner run` show). It skips, with a warning once per round, a round whose deadline
it cannot meet at the training speed it measured (`core.deadlines`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
from collections.abc import Callable
from enum import StrEnum
from typing import Any

from r3mes_desktop.core.clock import SYSTEM_CLOCK, Clock
from r3mes_desktop.core.coordinator import Coordinator
from r3mes_desktop.core.deadlines import StepRate, hold_warning, skip_reason
from r3mes_desktop.core.events import (
    Event,
    EventBus,
    MinerStateChanged,
    Notice,
    StepProgress,
    TransactionStateChanged,
)
from r3mes_desktop.core.steps import Chain, RoundSpec

log = logging.getLogger(__name__)


class MinerState(StrEnum):
    IDLE = "idle"
    MINING = "mining"
    PAUSING = "pausing"  # no new rounds; waiting for the running ones
    PAUSED = "paused"
    STOPPING = "stopping"  # finishing (or cancelling) the running ones, then idle


class Miner:
    def __init__(
        self,
        coordinator: Coordinator,
        chain: Chain,
        bus: EventBus,
        *,
        clock: Clock = SYSTEM_CLOCK,
        poll_interval_s: float = 10.0,
        network: str = "",
        step_rate: StepRate | None = None,
        lanes: Callable[[], int] | None = None,
    ) -> None:
        """`network`: how the connected line names the network ("it (chain 1337), contract
        0x12ab…"); `step_rate`: the training speed measured so far (a new one by default);
        `lanes`: how many rounds may train at once now (one per usable device; 1 when not
        given)."""
        self.coordinator = coordinator
        self.chain = chain
        self.bus = bus
        self.clock = clock
        self.poll_interval_s = poll_interval_s
        self._state = MinerState.IDLE
        self._loop_task: asyncio.Task[None] | None = None
        self._inflight: dict[int, asyncio.Task[Any]] = {}
        self._in_lane: set[int] = set()  # rounds training (or proving) on a device now
        self._specs: dict[int, RoundSpec] = {}  # the rounds in flight
        self._round_of: dict[str, int] = {}  # transaction -> round, for its progress
        self._steps_done: dict[int, int] = {}  # round -> last training step reported
        self._lane_freed = asyncio.Event()
        self.lanes = lanes or (lambda: 1)
        self._wake = asyncio.Event()
        self._last_listing = -math.inf  # clock.monotonic() of the last successful listing
        self._closed_check: asyncio.Task[None] | None = None
        self.network = network or "the chain"
        self.step_rate = step_rate if step_rate is not None else StepRate()
        self._listed: int | None = None  # rounds in the last listing; None: none since start
        self._skipped: set[int] = set()  # rounds whose skip was already reported
        bus.subscribe(self._on_event)

    @property
    def state(self) -> MinerState:
        return self._state

    @property
    def in_flight(self) -> list[int]:
        """Round ids of the transactions running now."""
        return sorted(self._inflight)

    def _set(self, new: MinerState, reason: str | None = None) -> None:
        if new is self._state:
            return
        old, self._state = self._state, new
        self._lane_freed.set()  # a loop waiting for a lane looks at the new state
        log.info("miner %s -> %s%s", old.value, new.value, f" ({reason})" if reason else "")
        self.bus.publish(
            MinerStateChanged(
                old_state=old.value, new_state=new.value, reason=reason, ts=self.clock.time()
            )
        )

    # -- commands -------------------------------------------------------------------------
    async def start(self) -> None:
        """Start (or resume) mining."""
        if self._state is MinerState.IDLE:
            self._listed = None  # a fresh start says where it is connected again
        self._set(MinerState.MINING)
        if self._loop_task is None or self._loop_task.done():
            self._loop_task = asyncio.create_task(self._loop(), name="miner-loop")

    async def pause(self) -> None:
        """Start no new round; the running ones finish; then paused."""
        if self._state is MinerState.MINING:
            self._set(MinerState.PAUSING)
            self._wake.set()
            self._settle()

    def wake(self) -> None:
        """New rounds may be open (the devnet operator just opened some), or a lane became
        usable (a device switched on, a hold released): look now, not at the next poll."""
        self._wake.set()
        self._lane_freed.set()

    async def finish_then_stop(self) -> None:
        """Start no new round; let the running ones finish; then idle."""
        if self._state in (MinerState.MINING, MinerState.PAUSING, MinerState.PAUSED):
            self._set(MinerState.STOPPING, "finishing running rounds")
            self._wake.set()
            self._settle()

    async def stop(self) -> None:
        """Stop now: running transactions are cancelled where they stand; they stay in
        the journal and are recovered (resumed) on the next start of the coordinator."""
        if self._state is MinerState.IDLE:
            return
        self._set(MinerState.STOPPING, "stopping now")
        tasks = [*self._inflight.values()]
        if self._loop_task is not None:
            tasks.append(self._loop_task)
        if self._closed_check is not None:
            tasks.append(self._closed_check)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._inflight.clear()
        self._set(MinerState.IDLE)

    # -- the loop -------------------------------------------------------------------------
    def _settle(self) -> None:
        """Move PAUSING/STOPPING on once nothing is running any more."""
        if self._inflight:
            return
        if self._state is MinerState.PAUSING:
            self._set(MinerState.PAUSED)
        elif self._state is MinerState.STOPPING:
            self._set(MinerState.IDLE)

    async def _list_rounds(self) -> list[RoundSpec] | None:
        """The open rounds (through the chain's caller: retry, breaker); None if that failed.

        Every successful listing also stops the training of in-flight rounds it no longer
        shows (`Coordinator.stop_closed_round`)."""
        chain = self.coordinator.callers["chain"]
        try:
            rounds: list[RoundSpec] = await chain.call("open_rounds", self.chain.open_rounds)
        except Exception as exc:
            log.warning("could not list open rounds: %s", exc)
            return None
        self._last_listing = self.clock.monotonic()
        self._announce(len(rounds))
        listed = {spec.round_id for spec in rounds}
        for round_id in [r for r in self._inflight if r not in listed]:
            try:
                await self.coordinator.stop_closed_round(round_id)
            except Exception:
                log.exception("could not stop the training of closed round %s", round_id)
        return rounds

    def _announce(self, count: int) -> None:
        """Say where the miner is: once after a start, then when the listing empties or
        fills again (a poll that changes nothing says nothing)."""
        previous, self._listed = self._listed, count
        rounds = f"{count} open round{'s' if count != 1 else ''} for you"
        if previous is None:
            text = f"connected to {self.network}, " + (
                rounds if count else "no open rounds for you: waiting for rounds"
            )
        elif (previous == 0) == (count == 0):
            return
        elif count:
            text = f"{rounds} on {self.network}"
        else:
            text = f"waiting for rounds: none open for you on {self.network}"
        log.info("%s", text)
        self.bus.publish(Notice(level="info", message=text, source="network", ts=self.clock.time()))

    def deadline_warnings(self) -> list[tuple[int, str, str]]:
        """(round, kind, sentence) for each round in flight whose deadline a hold of
        mining puts at risk (`core.deadlines.hold_warning`)."""
        warnings = []
        for round_id in sorted(self._inflight):
            spec = self._specs.get(round_id)
            if spec is None:
                continue
            found = hold_warning(
                spec,
                steps_done=self._steps_done.get(round_id, 0),
                now=self.clock.time(),
                steps_per_s=self.step_rate.per_second,
            )
            if found is not None:
                warnings.append((round_id, *found))
        return warnings

    def _on_event(self, event: Event) -> None:
        """Training progress measures the rig's speed (for deadlines); and while a round
        trains, look at the chain at most every poll interval (counted in training steps'
        progress, so a long round is checked as it goes): a round the operator closed stops
        at the next step instead of training to the end and learning it at submit time."""
        if isinstance(event, TransactionStateChanged) and event.round_id in self._inflight:
            self._round_of[event.transaction_id] = event.round_id
            return
        if not isinstance(event, StepProgress) or event.step != "training":
            return
        step = event.detail.get("step")
        if isinstance(step, int) and not isinstance(step, bool):
            self.step_rate.observe(event.transaction_id, step, self.clock.monotonic())
            round_id = self._round_of.get(event.transaction_id)
            if round_id is not None:
                self._steps_done[round_id] = step
        if self._closed_check is not None and not self._closed_check.done():
            return
        if self.clock.monotonic() - self._last_listing < self.poll_interval_s:
            return
        if self._state is MinerState.IDLE or not self._inflight:
            return
        self._closed_check = asyncio.get_running_loop().create_task(
            self._check_closed(), name="miner-closed-rounds"
        )

    async def _check_closed(self) -> None:
        await self._list_rounds()

    async def _pick(self, rounds: list[RoundSpec] | None) -> RoundSpec | None:
        """The lowest listed round not submitted to, not running now, and whose deadline
        this rig can meet."""
        if not rounds:
            return None
        done = await self.coordinator.journal.submitted_rounds(self.chain.miner_address)
        for spec in sorted(rounds, key=lambda r: r.round_id):
            if spec.round_id in done or spec.round_id in self._inflight:
                continue
            if self._cannot_finish(spec):
                continue
            return spec
        return None

    def _cannot_finish(self, spec: RoundSpec) -> bool:
        """True if the round would end after its deadline; said once per round."""
        reason = skip_reason(spec, now=self.clock.time(), steps_per_s=self.step_rate.per_second)
        if reason is None:
            return False
        if spec.round_id not in self._skipped:
            self._skipped.add(spec.round_id)
            text = f"{reason}: skipped"
            log.warning("%s", text)
            self.bus.publish(
                Notice(level="warning", message=text, source="miner", ts=self.clock.time())
            )
        return True

    async def _next_round(
        self, prefetched: asyncio.Task[list[RoundSpec] | None] | None = None
    ) -> RoundSpec | None:
        """From the listing made while the last round trained, else from a fresh one."""
        if prefetched is not None:
            spec = await self._pick(await prefetched)
            if spec is not None or self._state is not MinerState.MINING:
                return spec
        return await self._pick(await self._list_rounds())

    def _left_lane(self, round_id: int) -> None:
        self._in_lane.discard(round_id)
        self._lane_freed.set()

    def _lane_free(self) -> bool:
        return len(self._in_lane) < max(1, self.lanes())

    def _finished(self, round_id: int, task: asyncio.Task[Any]) -> None:
        self._inflight.pop(round_id, None)
        self._specs.pop(round_id, None)
        self._steps_done.pop(round_id, None)
        for tx in [t for t, r in self._round_of.items() if r == round_id]:
            del self._round_of[tx]
        self._left_lane(round_id)
        if not task.cancelled() and task.exception() is not None:
            log.error("round %s ended with an error: %s", round_id, task.exception())
        self._wake.set()
        self._settle()

    async def _loop(self) -> None:
        # The next round's listing runs while the current one trains: listing is a chain
        # call, and under failures its retries and an open breaker took as long as the
        # training itself, every round, with the device lanes idle meanwhile.
        listing: asyncio.Task[list[RoundSpec] | None] | None = None
        try:
            while self._state is MinerState.MINING:
                if not self._lane_free():
                    await self._lane_freed.wait()
                    self._lane_freed.clear()
                    continue
                spec = await self._next_round(listing)
                listing = None
                if self._state is not MinerState.MINING:
                    break
                if spec is None:
                    await self._idle_wait()
                    continue
                round_id = spec.round_id
                task = asyncio.create_task(
                    self.coordinator.run_transaction(
                        spec, on_lane_released=functools.partial(self._left_lane, round_id)
                    ),
                    name=f"round-{round_id}",
                )
                self._inflight[round_id] = task
                self._specs[round_id] = spec
                self._in_lane.add(round_id)
                self._lane_freed.clear()
                task.add_done_callback(functools.partial(self._finished, round_id))
                listing = asyncio.create_task(self._list_rounds(), name="miner-list-rounds")
        finally:
            if listing is not None:
                listing.cancel()
        self._settle()

    async def _idle_wait(self) -> None:
        """Wait for the next poll, or less if a command, a finished round or `wake()` wakes
        us (a wake that came while the last listing ran counts: it may have missed it)."""
        sleeper = asyncio.create_task(self.clock.sleep(self.poll_interval_s))
        waker = asyncio.create_task(self._wake.wait())
        try:
            await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sleeper, waker):
                task.cancel()
            self._wake.clear()
