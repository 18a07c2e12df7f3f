"""The status bar in plain language: open rounds, chain, IPFS, device; what is down,
where, next try; and why the resource governor holds mining back, and until when.

"Down" comes from the bridge's retry and breaker events: a network retry for a service
marks it down until a breaker closes or a health poll succeeds. The countdown is recomputed
from the due time every second, so the text never goes stale.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from r3mes_desktop.core.events import BreakerStateChanged, Notice, RetryScheduled
from r3mes_desktop.gui.models.records import down_message
from r3mes_desktop.gui.qt import QtWidgets


@dataclass
class _Down:
    reason: str
    retry_at: float | None
    breaker: bool = False  # an open breaker: only its closing clears it, not a health poll


_OPEN_ROUNDS = re.compile(r"\b(\d+) open rounds? for you\b")


def _short_address(address: str) -> str:
    return f"{address[:6]}…{address[-4:]}" if len(address) > 12 else address


@dataclass(frozen=True)
class Governed:
    """What the governor said last (`GovernorStateChanged`, or the runtime's last
    `Decision` at start): whether mining may run, the summary ("paused: <reasons>"), and
    the devices held back alone while the rest mine ("GPU 0 at 84 °C, resumes at 78 °C")."""

    may_run: bool = True
    summary: str = ""
    notes: tuple[str, ...] = ()
    devices_held: tuple[str, ...] = ()

    @classmethod
    def of(cls, said: Any) -> Governed:
        """From the event or a Decision (which has no devices_held)."""
        return cls(
            may_run=bool(said.may_run),
            summary=str(said.summary),
            notes=tuple(getattr(said, "notes", ())),
            devices_held=tuple(getattr(said, "devices_held", ())),
        )

    @property
    def text(self) -> str:
        """The bar's line; empty while every device may mine (the bar's normal text)."""
        parts: Sequence[str] = (
            self.devices_held if self.may_run else (self.summary, *self.devices_held)
        )
        return "; ".join(parts)

    @property
    def details(self) -> str:
        """The tooltip: the line, then what the governor could not read."""
        lines = [self.text] if self.text else ["mining allowed"]
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)


class StatusBarController:
    """Owns the labels placed on a QStatusBar and the "what is down" state."""

    def __init__(
        self,
        bar: QtWidgets.QStatusBar,
        endpoints: Mapping[str, str | None],
        *,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        """`on_change`: what a retry, breaker or recovery event calls to get the problem
        text redrawn (the window batches it); by default it is redrawn at once."""
        self._endpoints = dict(endpoints)
        self._changed = on_change if on_change is not None else self.refresh
        self._now = clock
        self._down: dict[str, _Down] = {}
        self._last_reason: dict[str, str] = {}  # the latest failure per service
        self.governed = Governed()
        self.held = QtWidgets.QLabel("")
        self.held.setObjectName("status-governor")
        self.held.setStyleSheet("color: #b26a00; font-weight: bold;")
        self.held.hide()
        self.problem = QtWidgets.QLabel("")
        self.problem.setObjectName("status-problem")
        self.problem.setStyleSheet("color: #c62828; font-weight: bold;")
        self.chain = QtWidgets.QLabel("Chain: connecting…")
        self.chain.setObjectName("status-chain")
        self.ipfs = QtWidgets.QLabel("IPFS: connecting…")
        self.ipfs.setObjectName("status-ipfs")
        self.device = QtWidgets.QLabel("Device: …")
        self.device.setObjectName("status-device")
        self.loop = QtWidgets.QLabel("")
        self.loop.setObjectName("status-loop")
        # A banner can be dismissed; while failures are injected on purpose the window must
        # say so for as long as it runs, or a test run looks like a broken network.
        self.fault_plan = QtWidgets.QLabel("Fault plan active")
        self.fault_plan.setObjectName("status-fault-plan")
        self.fault_plan.setStyleSheet(
            "color: white; background: #e65100; font-weight: bold; padding: 0 6px;"
        )
        self.fault_plan.hide()
        # The miner's "connected to …" line names network, chain and contract: too long for
        # the bar, so the label keeps the rounds part and the tooltip the whole line.
        self.rounds = QtWidgets.QLabel("")
        self.rounds.setObjectName("status-rounds")
        self.rounds.hide()  # until the miner's first listing
        bar.addWidget(self.held)
        bar.addWidget(self.problem, 1)
        for label in (self.fault_plan, self.rounds, self.chain, self.ipfs, self.device, self.loop):
            bar.addPermanentWidget(label)

    def set_endpoints(self, endpoints: Mapping[str, str | None]) -> None:
        self._endpoints = dict(endpoints)

    # -- facts ----------------------------------------------------------------------------
    def set_chain_info(self, info: Mapping[str, Any]) -> None:
        """Show `Runtime.chain_info()`: network and account always, block and balance when
        the transport can tell."""
        account = str(info["account"])
        parts = [f"Chain: {info['network']}"]
        if info.get("block") is not None:
            parts.append(f"block {info['block']}")
        parts.append(_short_address(account))
        if info.get("balance") is not None:
            parts.append(f"{float(info['balance']):.4g} ETH")
        self.chain.setText(" · ".join(parts))
        self.chain.setToolTip(f"{self._endpoints.get('chain') or 'embedded devnet'}\n{account}")
        self.mark_up("chain")

    def set_ipfs_info(self, text: str) -> None:
        self.ipfs.setText(f"IPFS: {text}")
        self.ipfs.setToolTip(self._endpoints.get("ipfs") or "embedded devnet store")
        self.mark_up("ipfs")

    def set_device(self, name: str) -> None:
        self.device.setText(f"Device: {name}")

    def set_loop_figures(self, text: str) -> None:
        self.loop.setText(text)

    def show_fault_plan(self, description: str) -> None:
        """Failures are injected on purpose (a fault plan is set): say so until the end."""
        self.fault_plan.setToolTip(description)
        self.fault_plan.show()

    def on_notice(self, event: Notice) -> None:
        if event.source == "faults":
            self.show_fault_plan(event.message)
        elif event.source == "network":
            self.show_rounds(event.message)

    def show_rounds(self, message: str) -> None:
        """The miner's latest "connected to …" or "waiting for rounds" line (it says one
        only when that changes): "Rounds: 2 open" or "Rounds: waiting" on the bar."""
        found = _OPEN_ROUNDS.search(message)
        count = int(found.group(1)) if found is not None else 0
        self.rounds.setText(f"Rounds: {count} open" if count else "Rounds: waiting")
        self.rounds.setToolTip(message[:1].upper() + message[1:])
        self.rounds.show()

    # -- the governor ----------------------------------------------------------------------
    def on_governor(self, said: Any) -> None:
        """A `GovernorStateChanged` (or the runtime's last Decision): redrawn with the next
        batch, like an outage."""
        self.governed = Governed.of(said)
        self._changed()

    def governor_text(self) -> str:
        """Why mining is held back now, as the label says it once repainted (the tray
        repeats it); empty while every device may mine."""
        return self.governed.text

    # -- outages -----------------------------------------------------------------------------
    def on_retry(self, event: RetryScheduled) -> None:
        if event.category != "network" or not event.service:
            return
        previous = self._down.get(event.service)
        breaker = previous is not None and previous.breaker
        if "circuit open" in event.message:  # a rejection: keep saying what the real fault is
            reason = self._last_reason.get(event.service, "too many failures")
        else:
            reason = self._last_reason[event.service] = event.message
        self._down[event.service] = _Down(reason, self._now() + event.delay, breaker=breaker)
        self._changed()

    def on_breaker(self, event: BreakerStateChanged) -> None:
        state = event.new_state  # a core.breaker.BreakerState value
        if state == "closed":
            self.mark_up(event.service, breaker_closed=True)
        elif state in ("open", "forced_open"):
            reason = self._last_reason.get(event.service, "too many failures")
            if state == "forced_open":
                reason = "paused by you (breaker forced open)"
            wait = event.seconds_until_half_open
            retry_at = None if wait is None else self._now() + wait
            self._down[event.service] = _Down(reason, retry_at, breaker=True)
            self._changed()

    def mark_up(self, service: str, *, breaker_closed: bool = False) -> None:
        """A call or health poll succeeded (or the breaker closed): not down any more."""
        down = self._down.get(service)
        if down is None or (down.breaker and not breaker_closed):
            return
        del self._down[service]
        self._changed()

    def _lines(self) -> list[str]:
        now = self._now()
        lines = []
        for service, down in self._down.items():
            retry_in = None if down.retry_at is None else down.retry_at - now
            lines.append(down_message(service, self._endpoints.get(service), down.reason, retry_in))
        return lines

    def refresh(self) -> None:
        """Redraw the problem text (countdowns included) from what is down now."""
        lines = self._lines()
        self.problem.setText(" | ".join(lines))
        self.problem.setToolTip("\n".join(lines))
        held = self.governed.text
        self.held.setText(held)
        self.held.setToolTip(self.governed.details)
        self.held.setVisible(bool(held))

    def problem_text(self) -> str:
        """What is down now, as the label says it once repainted (the tray repeats it)."""
        return " | ".join(self._lines())
