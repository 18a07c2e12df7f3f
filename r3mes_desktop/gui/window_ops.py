"""The window's one-click actions: what each click hands to the `CommandRunner`.

Composed into `MainWindow` as `window.ops` (the widgets' signals connect here); the
commands themselves live in `commands`, free of widgets. This object also keeps the
checkpoints a resume can continue, which decide the Resume action's text and state.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from r3mes_desktop.gui import commands
from r3mes_desktop.gui.commands import CommandRunner, Outcome
from r3mes_desktop.gui.models.records import describe_resumable
from r3mes_desktop.gui.qt import QtCore, QtGui

if TYPE_CHECKING:
    from r3mes_desktop.gui.main_window import MainWindow


class WindowOps:
    def __init__(self, window: MainWindow) -> None:
        self._w = window
        self.runner = CommandRunner(
            window.tasks, report=window.report, settle=self.sync_actions, parent=window
        )
        self.resumable: list[dict[str, Any]] = []

    def connect(self) -> None:
        """Wire every action to its command (once, from the window's constructor)."""
        a = self._w.window_actions
        a.start.triggered.connect(lambda: self.miner_command(commands.start_mining, a.start))
        a.pause.triggered.connect(lambda: self.miner_command(commands.pause_mining, a.pause))
        a.start_pause.triggered.connect(self.start_or_pause)
        a.finish.triggered.connect(lambda: self.miner_command(commands.finish_then_stop, a.finish))
        a.stop.triggered.connect(lambda: self.miner_command(commands.stop_mining, a.stop))
        a.resume.triggered.connect(self.resume_from_checkpoint)
        a.cleanup.triggered.connect(self.cleanup_stale)
        a.settings.triggered.connect(self.open_settings)
        a.open_data.triggered.connect(self.open_data_folder)
        a.export_diagnostics.triggered.connect(self.export_diagnostics)

    def miner_command(self, command: commands.Command, action: QtGui.QAction) -> None:
        if self._w.is_ready:
            self.runner.run(command, title=action.text(), action=action, runtime=self._w.runtime)

    def start_or_pause(self) -> None:
        a = self._w.window_actions
        if a.start.isEnabled():
            self.miner_command(commands.start_mining, a.start)
        else:
            self.miner_command(commands.pause_mining, a.pause)

    def cleanup_stale(self) -> None:
        self.runner.run(
            commands.cleanup_stale,
            title="Clean up stale transactions",
            action=self._w.window_actions.cleanup,
            runtime=self._w.runtime,
            refresh=self._w.poller.now,
        )

    def resume_from_checkpoint(self) -> None:
        if not self.resumable:
            self._w.report(Outcome("No checkpoint to resume from.", "warning"))
            return
        item = self.resumable[0]
        self._w.report(Outcome(f"{describe_resumable(item)}: resuming."))
        self.runner.run(
            commands.resume_from_checkpoint,
            title="Resume from checkpoint",
            action=self._w.window_actions.resume,
            runtime=self._w.runtime,
            item=item,
            refresh=self._w.poller.now,
        )

    def retry_dead_letters(self, letter_ids: list[str]) -> None:
        if len(letter_ids) == 1:
            self._w.report(Outcome(f"Dead letter {letter_ids[0][:8]}: trying again."))
        else:
            self._w.report(Outcome(f"Retrying {len(letter_ids)} dead letters."))
        self.runner.run(
            commands.retry_dead_letters,
            title="Dead letters retried",
            runtime=self._w.runtime,
            letter_ids=letter_ids,
            refresh=self._w.poller.now,
        )

    def discard_dead_letters(self, letter_ids: list[str]) -> None:
        self.runner.run(
            commands.discard_dead_letters,
            title="Dead letters discarded",
            runtime=self._w.runtime,
            letter_ids=letter_ids,
            refresh=self._w.poller.now,
        )

    def export_diagnostics(self) -> None:
        self.runner.run(
            commands.export_diagnostics,
            title="Export diagnostics",
            action=self._w.window_actions.export_diagnostics,
            runtime=self._w.runtime,
        )

    def reset_breaker(self, service: str) -> None:
        self._w.runtime.breakers.get(service).reset()
        self._w.report(Outcome(f"Circuit breaker for {service} reset: calls flow again."))

    def force_open_breaker(self, service: str) -> None:
        self._w.runtime.breakers.get(service).force_open()
        self._w.report(
            Outcome(
                f"Circuit breaker for {service} forced open: calls paused until you reset it.",
                "warning",
            )
        )

    def open_settings(self) -> None:
        from r3mes_desktop.gui.widgets.settings_dialog import SettingsDialog  # first use only

        dialog = SettingsDialog(self._w.runtime, parent=self._w)
        dialog.applied.connect(
            lambda changed: self._w.report(Outcome(f"Settings saved: {changed}."))
        )
        dialog.open()
        self._w.settings_dialog = dialog

    def open_data_folder(self) -> None:
        url = QtCore.QUrl.fromLocalFile(str(self._w.runtime.data_dir))
        if not QtGui.QDesktopServices.openUrl(url):
            self._w.report(Outcome(f"Data folder: {self._w.runtime.data_dir}"))

    def set_resumable(self, items: list[dict[str, Any]]) -> None:
        """The checkpoints a resume can continue (from the poll); the first is offered."""
        self.resumable = items
        self._sync_resume()

    def _sync_resume(self) -> None:
        action = self._w.window_actions.resume
        if self.resumable:
            text = describe_resumable(self.resumable[0])
            action.setText(text)
            action.setToolTip(f"{text} — one click continues where training stopped")
            action.setEnabled(True)
        else:
            action.setText("Resume from checkpoint")
            action.setToolTip("No checkpoint to resume from")
            action.setEnabled(False)

    def sync_actions(self) -> None:
        """After a command: enabled actions follow the miner state and the checkpoints again."""
        self._w.window_actions.set_miner_state(self._w.miner_state)
        self._sync_resume()
