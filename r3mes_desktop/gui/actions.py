"""The window's actions, created once and shared by toolbar, menus, shortcuts and tray.

Which actions are enabled follows the miner's state in one table (`ENABLED_IN`), so the
toolbar, the menu and the tray menu can never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass

from r3mes_desktop.gui.qt import QtGui, QtWidgets
from r3mes_desktop.gui.widgets.icons import status_icon

# Keys: core.miner.MinerState values (a StrEnum, so `str(miner.state)` is one of them), plus
# "starting" (runtime opening) and "error" (it failed), in which nothing is enabled.
ENABLED_IN: dict[str, frozenset[str]] = {
    "start": frozenset({"idle", "paused"}),
    "pause": frozenset({"mining"}),
    "finish": frozenset({"mining", "pausing", "paused"}),
    "stop": frozenset({"mining", "pausing", "paused", "stopping"}),
}


@dataclass
class WindowActions:
    start: QtGui.QAction
    pause: QtGui.QAction
    start_pause: QtGui.QAction  # tray: one entry that says what it will do
    finish: QtGui.QAction
    stop: QtGui.QAction
    resume: QtGui.QAction
    cleanup: QtGui.QAction
    settings: QtGui.QAction
    open_data: QtGui.QAction
    export_diagnostics: QtGui.QAction
    quit: QtGui.QAction

    def set_miner_state(self, state: str) -> None:
        for name, states in ENABLED_IN.items():
            getattr(self, name).setEnabled(state in states)
        can_start = state in ENABLED_IN["start"]
        self.start_pause.setText("Start mining" if can_start else "Pause mining")
        self.start_pause.setEnabled(can_start or state in ENABLED_IN["pause"])

    def toolbar_order(self) -> list[QtGui.QAction | None]:
        return [
            self.start,
            self.pause,
            self.finish,
            self.stop,
            None,
            self.resume,
            self.cleanup,
            None,
            self.settings,
            self.open_data,
        ]


def _action(
    parent: QtWidgets.QWidget, text: str, shortcut: str | QtGui.QKeySequence.StandardKey, tip: str
) -> QtGui.QAction:
    action = QtGui.QAction(text, parent)
    action.setShortcut(QtGui.QKeySequence(shortcut))
    action.setToolTip(f"{tip} ({action.shortcut().toString()})" if shortcut else tip)
    action.setStatusTip(tip)
    action.setObjectName("action-" + text.lower().split("…")[0].replace(" ", "-"))
    return action


def create_actions(parent: QtWidgets.QWidget) -> WindowActions:
    style = parent.style()
    sp = QtWidgets.QStyle.StandardPixmap
    start = _action(parent, "Start", "Ctrl+R", "Start mining: train, prove, upload, submit")
    start.setIcon(status_icon("mining"))
    pause = _action(parent, "Pause", "Ctrl+P", "Pause after the current step; resume with Start")
    pause.setIcon(style.standardIcon(sp.SP_MediaPause))
    finish = _action(
        parent,
        "Finish then stop",
        "Ctrl+Shift+F",
        "Let the current round commit, then stop mining",
    )
    finish.setIcon(style.standardIcon(sp.SP_MediaSkipForward))
    stop = _action(parent, "Stop", "Ctrl+.", "Stop now; unfinished work is kept as a checkpoint")
    stop.setIcon(style.standardIcon(sp.SP_MediaStop))
    resume = _action(
        parent, "Resume from checkpoint", "Ctrl+Shift+R", "No checkpoint to resume from"
    )
    resume.setIcon(style.standardIcon(sp.SP_BrowserReload))
    resume.setEnabled(False)
    cleanup = _action(
        parent,
        "Clean up stale",
        "Ctrl+Shift+C",
        "Roll back transactions stuck past the timeout and undo their uploads",
    )
    cleanup.setIcon(style.standardIcon(sp.SP_TrashIcon))
    settings = _action(parent, "Settings…", QtGui.QKeySequence.StandardKey.Preferences, "Settings")
    if settings.shortcut().isEmpty():
        settings.setShortcut(QtGui.QKeySequence("Ctrl+,"))
    settings.setIcon(style.standardIcon(sp.SP_FileDialogDetailedView))
    open_data = _action(
        parent, "Open data folder", "Ctrl+Shift+O", "Open the folder with the journal and logs"
    )
    open_data.setIcon(style.standardIcon(sp.SP_DirOpenIcon))
    export_diagnostics = _action(
        parent,
        "Export diagnostics…",
        "",
        "Write one zip for a bug report: logs, error files, settings, statistics "
        "(no keys, passwords, tokens or webhook URLs)",
    )
    quit_action = _action(parent, "Quit", QtGui.QKeySequence.StandardKey.Quit, "Quit R3MES")
    start_pause = QtGui.QAction("Start mining", parent)
    start_pause.setObjectName("action-start-pause")
    return WindowActions(
        start=start,
        pause=pause,
        start_pause=start_pause,
        finish=finish,
        stop=stop,
        resume=resume,
        cleanup=cleanup,
        settings=settings,
        open_data=open_data,
        export_diagnostics=export_diagnostics,
        quit=quit_action,
    )
