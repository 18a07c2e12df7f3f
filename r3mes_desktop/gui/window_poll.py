"""The window's poll of the coordinator: the authoritative snapshot between events.

Events move the table as the saga moves; the poll (every `poll_ms`, and after commands and
terminal states) brings in what events cannot: the journal's records and history, the
statistics, the credits series and the network model's versions (when verdicts or versions
came that no event brought: at start, or before the window listened), breaker snapshots,
dead letters, checkpoints to resume, and the services' facts for the status bar. One poll
at a time: a tick that finds one running is skipped.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from r3mes_desktop.gui.main_window import MainWindow

log = logging.getLogger("r3mes_desktop.gui.main_window")


class Poller:
    def __init__(self, window: MainWindow) -> None:
        self._window = window
        self.running = False

    def request(self) -> None:
        """Poll once, as a task (skipped while a poll runs or the runtime is not open)."""
        if self.running or not self._window.is_ready:
            return
        self.running = True
        self._window.tasks.spawn(self._poll(), name="refresh")

    async def now(self) -> None:
        """Poll within the caller's task (commands: their report follows the new state)."""
        if not self.running:
            self.running = True
            await self._poll()

    async def _poll(self) -> None:
        w = self._window
        rt = w.runtime
        try:
            w.tx_model.replace_from_snapshot(await rt.coordinator.list_transactions())
            stats = await rt.coordinator.statistics(window_s=600)
            w.chart_data.add_stats(stats)
            w.earnings.set_earnings(stats)
            if w.chart_data.needs_credits(stats):  # verdicts the live events did not bring
                series = await rt.coordinator.credits_series()
                w.chart_data.set_credits(series, verdicts=w.chart_data.verdicts_in(stats))
            if w.chart_data.needs_network(stats):  # versions the live events did not bring
                versions = await rt.coordinator.model_versions()
                w.chart_data.set_network(versions, seen=w.chart_data.network_in(stats))
            w.breakers_model.apply_snapshots(rt.breakers.snapshot().values())
            w.dead_model.set_letters(await rt.coordinator.dead_letters())
            running = set(rt.miner.in_flight)
            w.ops.set_resumable(
                [i for i in await rt.coordinator.resumable() if i["round_id"] not in running]
            )
            w.set_miner_state(str(rt.miner.state))
            await self._details()
            await self._services()
        finally:
            self.running = False
        w.refreshed.emit()

    async def _details(self) -> None:
        """Keep the details panel of the selected transaction current (journal history)."""
        w = self._window
        tx_id = w.details.current_id
        row = w.tx_model.row(tx_id) if tx_id else None
        if row is not None:
            status = await w.runtime.coordinator.status(row.transaction_id)
            if w.details.current_id == row.transaction_id:
                w.details.show_status(row, status)

    async def _services(self) -> None:
        w = self._window
        try:
            w.status.set_chain_info(await w.runtime.chain_info())
        except Exception as exc:  # shown as "down", the poll goes on
            log.debug("chain info unavailable: %s", exc)
        try:
            w.status.set_ipfs_info(await w.runtime.ipfs_info())
        except Exception as exc:
            log.debug("ipfs info unavailable: %s", exc)
