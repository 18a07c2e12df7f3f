"""What the window asks of the core: the poll and the one-click commands, as tasks.

A mixin of `MainWindow` (it uses the window's models, runtime and task runner): every call
runs as an asyncio task through `TaskRunner`, so no click blocks painting, and every
command says what it did (`report`: status bar, notice, log).
"""

from __future__ import annotations

import inspect
import logging
from collections import Counter
from collections.abc import Mapping
from typing import Any

from r3mes_desktop.gui.qt import QtCore, QtGui
from r3mes_desktop.gui.records import describe_cleanup, describe_resumable, field_of
from r3mes_desktop.notices import Alert

log = logging.getLogger("r3mes_desktop.gui.main_window")


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


class CoreCalls:
    """Polling and commands; mixed into `MainWindow` (see there for the attributes)."""

    runtime: Any
    tasks: Any
    _ready: bool
    _refreshing: bool

    # -- polling -------------------------------------------------------------------------
    def refresh(self) -> None:
        """Poll the coordinator once (skipped if a poll is still running)."""
        if self._refreshing or not self._ready:
            return
        self._refreshing = True
        self.tasks.spawn(self._refresh(), name="refresh")

    async def _refresh(self) -> None:
        rt = self.runtime
        try:
            self.tx_model.replace_from_snapshot(await rt.coordinator.list_transactions())
            stats = await rt.coordinator.statistics(window_s=600)
            self.chart_data.add_stats(stats if isinstance(stats, Mapping) else vars(stats))
            snapshots = rt.breakers.snapshot()
            self.breakers_model.apply_snapshots(
                snapshots.values() if isinstance(snapshots, Mapping) else snapshots
            )
            self.dead_model.set_letters(await rt.coordinator.dead_letters())
            running = set(getattr(rt.miner, "in_flight", ()) or ())
            self._set_resumable(
                [
                    i
                    for i in await rt.coordinator.resumable()
                    if field_of(i, "round_id") not in running
                ]
            )
            self._set_miner_state(rt.miner.state)
            await self._refresh_details()
            await self._refresh_services()
        finally:
            self._refreshing = False
        self.refreshed.emit()

    async def _refresh_details(self) -> None:
        """Keep the details panel of the selected transaction current (journal history)."""
        tx_id = self.details.current_id
        row = self.tx_model.row(tx_id) if tx_id else None
        if row is not None:
            status = await self.runtime.coordinator.status(row.transaction_id)
            if self.details.current_id == row.transaction_id:
                self.details.show_status(row, status)

    async def _refresh_services(self) -> None:
        try:
            self.status.set_chain_info(await self.runtime.chain_info())
        except Exception as exc:  # shown as "down", the poll goes on
            log.debug("chain info unavailable: %s", exc)
        try:
            self.status.set_ipfs_info(await self.runtime.ipfs_info())
        except Exception as exc:
            log.debug("ipfs info unavailable: %s", exc)

    def _set_resumable(self, items: list[Any]) -> None:
        self._resumable = items
        action = self.window_actions.resume
        if items:
            text = describe_resumable(items[0])
            action.setText(text)
            action.setToolTip(f"{text} — one click continues where training stopped")
            action.setEnabled(True)
        else:
            action.setText("Resume from checkpoint")
            action.setToolTip("No checkpoint to resume from")
            action.setEnabled(False)

    # -- one-click actions -----------------------------------------------------------------
    def _miner_call(self, name: str) -> None:
        if not self._ready:
            return

        async def call() -> None:
            await _maybe_await(getattr(self.runtime.miner, name)())
            self._set_miner_state(self.runtime.miner.state)

        self.tasks.spawn(call(), name=f"miner.{name}")

    def _start_or_pause(self) -> None:
        self._miner_call("start" if self.window_actions.start.isEnabled() else "pause")

    def report(self, text: str, *, level: str = "info") -> None:
        """Say what a one-click action did: status bar, notice, log."""
        log.log(logging.WARNING if level == "warning" else logging.INFO, "%s", text)
        self.statusBar().showMessage(text, 20000)
        self.alerts.show(Alert(level=level, title="Done", message=text))
        self.action_reported.emit(text)

    def cleanup_stale(self) -> None:
        async def run() -> None:
            report = await self.runtime.coordinator.cleanup_stale()
            self.report(describe_cleanup(report))
            await self._refresh_now()

        self.tasks.spawn(run(), name="Clean up stale transactions")

    def resume_from_checkpoint(self) -> None:
        if not self._resumable:
            self.report("No checkpoint to resume from.", level="warning")
            return
        item = self._resumable[0]

        text = describe_resumable(item)
        self.report(f"{text}: resuming.")

        async def run() -> None:
            status = await self.runtime.coordinator.resume(item)
            state = str(field_of(status, "state", default="done")).upper()
            self.report(f"Resumed transaction of round {field_of(item, 'round_id')}: {state}.")
            await self._refresh_now()

        self.tasks.spawn(run(), name="Resume from checkpoint")

    async def _refresh_now(self) -> None:
        if not self._refreshing:
            self._refreshing = True
            await self._refresh()

    def reset_breaker(self, service: str) -> None:
        self.runtime.breakers.get(service).reset()
        self.report(f"Circuit breaker for {service} reset: calls flow again.")

    def force_open_breaker(self, service: str) -> None:
        self.runtime.breakers.get(service).force_open()
        self.report(
            f"Circuit breaker for {service} forced open: calls paused until you reset it.",
            level="warning",
        )

    def retry_dead_letters(self, letter_ids: list[str]) -> None:
        """Retry every selected letter; their rounds run side by side within the bulkhead."""
        if len(letter_ids) == 1:
            self.report(f"Dead letter {letter_ids[0][:8]}: trying again.")
        else:
            self.report(f"Retrying {len(letter_ids)} dead letters.")
        self._on_letters("retried", self.runtime.coordinator.retry_dead_letter, letter_ids)

    def discard_dead_letters(self, letter_ids: list[str]) -> None:
        self._on_letters("discarded", self.runtime.coordinator.discard_dead_letter, letter_ids)

    def _on_letters(self, verb: str, call: Any, letter_ids: list[str]) -> None:
        """Run `call` on each letter, then say in one line what came of them: the state a
        retried round reached, and what could not be done (one letter: its error as is)."""

        async def run() -> None:
            import asyncio  # here, not at import: asyncio is not needed to paint the window

            outcomes = await asyncio.gather(*map(call, letter_ids), return_exceptions=True)
            await self._refresh_now()
            errors = [o for o in outcomes if isinstance(o, BaseException)]
            if len(letter_ids) == 1 and errors:
                raise errors[0]  # the task runner shows it
            states = Counter(
                str(field_of(o, "state", default="")).upper()
                for o in outcomes
                if o is not None and not isinstance(o, BaseException)
            )
            states.pop("", None)
            said = ", ".join(f"{n} {s}" for s, n in sorted(states.items()))
            if len(letter_ids) == 1:
                text = f"Dead letter {letter_ids[0][:8]} {verb}"
                said = said.removeprefix("1 ")
            else:
                text = f"{verb.capitalize()} {len(outcomes) - len(errors)} of {len(letter_ids)} "
                text += "dead letters"
            text += f": {said}" if said else ""
            text += f"; {len(errors)} could not be: {errors[0]}" if errors else ""
            self.report(text + ".", level="warning" if errors else "info")

        self.tasks.spawn(run(), name=f"Dead letters {verb}")

    def open_settings(self) -> None:
        from r3mes_desktop.gui.settings_dialog import SettingsDialog  # first use only

        dialog = SettingsDialog(self.runtime, parent=self)
        dialog.applied.connect(lambda changed: self.report(f"Settings saved: {changed}."))
        dialog.open()
        self.settings_dialog = dialog

    def export_diagnostics(self) -> None:
        """Write the bug-report zip into the data folder's diagnostics/ and say where."""

        async def run() -> None:
            from r3mes_desktop.monitoring import export_runtime_diagnostics

            path = await export_runtime_diagnostics(
                self.runtime, self.runtime.data_dir / "diagnostics"
            )
            self.report(f"Diagnostics written to {path} (no keys, passwords or tokens inside).")

        self.tasks.spawn(run(), name="Export diagnostics")

    def open_data_folder(self) -> None:
        url = QtCore.QUrl.fromLocalFile(str(self.runtime.data_dir))
        if not QtGui.QDesktopServices.openUrl(url):
            self.report(f"Data folder: {self.runtime.data_dir}")
