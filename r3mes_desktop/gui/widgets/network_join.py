"""Settings → Network: "Join a network…" and "Check connection", one line per check.

Joining reads a network file (a path, or its URL) and fills the Network fields from it, then
checks them; nothing is saved until OK or Apply, like every other field of the dialog.
"Check connection" runs the same pre-flight (`app.preflight`) on what the fields say now.
Both run as tasks on the app's loop (`TaskRunner`): reading the file, downloading it and
every network call are awaited there or in a worker thread, so the window keeps painting
while a slow node times out.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from r3mes_desktop.gui.bridge import TaskRunner
from r3mes_desktop.gui.qt import QtWidgets, Signal

if TYPE_CHECKING:
    from r3mes_desktop.adapters.chain.keystore import Keystore
    from r3mes_desktop.app.preflight import Check, Target
    from r3mes_desktop.support.network_file import NetworkFile

_STYLE = {
    "passed": ("✔", "#2e7d32"),
    "warning": ("!", "#b26a00"),
    "failed": ("✘", "#c62828"),
    "skipped": ("–", "#757575"),
}
_GREEN, _RED, _GREY = "#2e7d32", "#c62828", "#555"


@dataclass(frozen=True)
class Outcome:
    """What a join or a check came to: a headline, its colour, and the checks' lines."""

    headline: str
    colour: str
    checks: tuple[Check, ...] = ()


def checks_html(checks: Sequence[Check]) -> str:
    """One line per check: a coloured mark, then the plain-language line."""
    rows = []
    for check in checks:
        mark, colour = _STYLE.get(check.status, ("?", _GREY))
        rows.append(
            f'<span style="color:{colour}; font-weight:bold;">{mark}</span>&nbsp;'
            f"{html.escape(check.line)}"
        )
    return "<br>".join(rows)


class NetworkJoinPanel(QtWidgets.QGroupBox):
    """The join row, the check button and the result lines.

    `fill(values)` is the dialog's: it puts a network file's settings into the fields.
    `target()` is the dialog's too: the pre-flight target its fields describe now, or a
    message saying which field to fix first, or None when the devnet is chosen. A join
    checks the network file itself (what OK will save); a check, the fields.
    """

    finished = Signal(str)  # the headline, once a join or a check is done

    def __init__(
        self,
        *,
        keystore: Keystore,
        fill: Callable[[Mapping[str, Any]], None],
        target: Callable[[], Target | str | None],
        timeout_s: float = 5.0,
        parent: QtWidgets.QWidget | None = None,
    ) -> None:
        super().__init__("Join a network", parent)
        self.setObjectName("network-join")
        self.keystore = keystore
        self._fill = fill
        self._target = target
        self.timeout_s = timeout_s
        self.tasks = TaskRunner(self)
        self.tasks.failed.connect(lambda _name, message: self._show(Outcome(message, _RED)))

        self.source = QtWidgets.QLineEdit()
        self.source.setObjectName("join-source")
        self.source.setPlaceholderText("the operator's network file, or its https:// URL")
        self.browse_button = QtWidgets.QPushButton("Browse…")
        self.browse_button.setObjectName("join-browse")
        self.join_button = QtWidgets.QPushButton("Join a network…")
        self.join_button.setObjectName("join-button")
        self.join_button.setToolTip(
            "Read the network file, fill the fields below from it and check them; "
            "OK or Apply saves them"
        )
        self.check_button = QtWidgets.QPushButton("Check connection")
        self.check_button.setObjectName("check-button")
        self.check_button.setToolTip(
            "RPC reachable, chain id, contract code and version, IPFS reachable, gas balance "
            "and clock, for what the fields say now"
        )
        self.headline = QtWidgets.QLabel()
        self.headline.setObjectName("join-headline")
        self.headline.setWordWrap(True)
        self.results = QtWidgets.QLabel()
        self.results.setObjectName("join-results")
        self.results.setWordWrap(True)
        self.results.setTextFormat(self.results.textFormat().RichText)
        self.checks: tuple[Check, ...] = ()

        row = QtWidgets.QHBoxLayout()
        row.addWidget(self.source, 1)
        row.addWidget(self.browse_button)
        row.addWidget(self.join_button)
        buttons = QtWidgets.QHBoxLayout()
        buttons.addWidget(self.check_button)
        buttons.addStretch(1)
        column = QtWidgets.QVBoxLayout(self)
        column.addLayout(row)
        column.addLayout(buttons)
        column.addWidget(self.headline)
        column.addWidget(self.results)
        self.headline.hide()
        self.results.hide()

        self.browse_button.clicked.connect(self.browse)
        self.join_button.clicked.connect(self.join)
        self.source.returnPressed.connect(self.join)
        self.check_button.clicked.connect(self.check)

    # -- actions ---------------------------------------------------------------------------
    def browse(self) -> None:
        """Pick a file (non-blocking: the dialog reports through a signal)."""
        picker = QtWidgets.QFileDialog(self, "Network file", "", "Network files (*.json)")
        picker.setObjectName("join-picker")
        picker.setFileMode(QtWidgets.QFileDialog.FileMode.ExistingFile)
        picker.fileSelected.connect(self.source.setText)
        picker.open()

    def join(self) -> None:
        source = self.source.text().strip()
        if not source:
            self._show(Outcome("Choose a network file (Browse…) or paste its URL first.", _RED))
            return
        self._start("Joining…", self._join(source), name="Join a network")

    def check(self) -> None:
        found = self._target()
        if isinstance(found, str):
            self._show(Outcome(found, _RED))
            return
        self._start("Checking the connection…", self._check(found), name="Check connection")

    @property
    def busy(self) -> bool:
        return self.tasks.running > 0

    # -- the work, on the loop ---------------------------------------------------------------
    async def _account(self) -> str | None:
        import asyncio

        def read() -> str | None:
            return self.keystore.address() if self.keystore.exists() else None

        return await asyncio.to_thread(read)

    async def _join(self, source: str) -> Outcome:
        from r3mes_desktop.app.joining import load_network, network_settings
        from r3mes_desktop.app.preflight import Target, preflight, required_passed
        from r3mes_desktop.support.network_file import NetworkFileError

        try:
            network: NetworkFile = await load_network(source)
        except NetworkFileError as exc:
            return Outcome(f"Not joined: network file: {exc}", _RED)
        self._fill(network_settings(network))
        target = Target.from_network(network, account=await self._account())
        checks = await preflight(target, timeout_s=self.timeout_s)
        name = f"{network.name} (chain {network.chain_id})"
        if required_passed(checks):
            return Outcome(
                f"Network {name} filled in and checked: press OK or Apply to save it. "
                "The miner uses it from the next start.",
                _GREEN,
                tuple(checks),
            )
        return Outcome(
            f"Network {name} filled in, but a required check failed: fix it, or save anyway "
            "and check again later.",
            _RED,
            tuple(checks),
        )

    async def _check(self, target: Target | None) -> Outcome:
        from r3mes_desktop.app.preflight import devnet_checks, preflight, required_passed

        if target is None:
            return Outcome(
                "The embedded devnet needs no connection.", _GREY, tuple(devnet_checks())
            )
        checks = await preflight(
            _with_account(target, await self._account()), timeout_s=self.timeout_s
        )
        if required_passed(checks):
            return Outcome("Ready to mine on this network.", _GREEN, tuple(checks))
        return Outcome("Not ready: a required check failed.", _RED, tuple(checks))

    # -- showing ----------------------------------------------------------------------------
    def _start(self, what: str, work: Any, *, name: str) -> None:
        """Run `work` on the loop; its buttons wait (one join or check at a time)."""
        self._paint(Outcome(what, _GREY))
        for button in (self.join_button, self.check_button, self.browse_button):
            button.setEnabled(False)
        self.tasks.spawn(work, name=name, on_done=self._show)

    def _show(self, outcome: Outcome) -> None:
        """A join or check is done (or could not start): say how it went."""
        for button in (self.join_button, self.check_button, self.browse_button):
            button.setEnabled(True)
        self._paint(outcome)
        self.finished.emit(outcome.headline)

    def _paint(self, outcome: Outcome) -> None:
        self.headline.setText(outcome.headline)
        self.headline.setStyleSheet(f"color: {outcome.colour};")
        self.headline.show()
        self.checks = outcome.checks
        self.results.setText(checks_html(outcome.checks))
        self.results.setVisible(bool(outcome.checks))


def _with_account(target: Target, account: str | None) -> Target:
    from dataclasses import replace

    return replace(target, account=account)
