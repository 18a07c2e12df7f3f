"""The window's one-click commands, as keyword-only coroutines run by one `CommandRunner`.

A command takes what it needs by keyword (the runtime, the letters, the checkpoint) and
returns an `Outcome`: the sentence the user reads and its level. It knows nothing about
widgets. The runner is the one place that starts a command: it disables the action that
started it, runs the coroutine as a task (so no click blocks painting), says what came of
it (status bar, notice, log) or shows the error, then enables the action again and lets the
window re-apply its state tables (which actions a miner state allows).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from r3mes_desktop.gui.bridge import TaskRunner
from r3mes_desktop.gui.models.records import describe_cleanup
from r3mes_desktop.gui.models.tx_rows import state_label
from r3mes_desktop.gui.ports import RuntimePort
from r3mes_desktop.gui.qt import QtCore, QtGui

if TYPE_CHECKING:
    import asyncio  # at run time only where a command gathers: the first paint needs none

Level = Literal["info", "warning"]


@dataclass(frozen=True)
class Outcome:
    """What a command did, in one sentence for the user."""

    text: str
    level: Level = "info"


Command = Callable[..., Awaitable[Outcome | None]]


class CommandRunner(QtCore.QObject):
    """Runs commands as tasks; reports each outcome once, through `report`.

    `settle` runs after every command, success or not, so the window can re-apply what
    enables its actions (the miner's state, whether a checkpoint exists).
    """

    def __init__(
        self,
        tasks: TaskRunner,
        *,
        report: Callable[[Outcome], None],
        settle: Callable[[], None],
        parent: QtCore.QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self._tasks = tasks
        self._report = report
        self._settle = settle

    def run(
        self,
        command: Command,
        *,
        title: str,
        action: QtGui.QAction | None = None,
        **kwargs: Any,
    ) -> asyncio.Task[Any]:
        """Start `command(**kwargs)`; `title` names it in errors ("<title> failed")."""
        if action is not None:
            action.setEnabled(False)

        async def body() -> None:
            try:
                outcome = await command(**kwargs)
            finally:
                if action is not None:
                    action.setEnabled(True)
                self._settle()
            if outcome is not None:
                self._report(outcome)

        return self._tasks.spawn(body(), name=title)


# -- the commands ------------------------------------------------------------------------------
async def start_mining(*, runtime: RuntimePort) -> None:
    await runtime.miner.start()


async def pause_mining(*, runtime: RuntimePort) -> None:
    await runtime.miner.pause()


async def finish_then_stop(*, runtime: RuntimePort) -> None:
    await runtime.miner.finish_then_stop()


async def stop_mining(*, runtime: RuntimePort) -> None:
    await runtime.miner.stop()


async def cleanup_stale(*, runtime: RuntimePort, refresh: Callable[[], Awaitable[None]]) -> Outcome:
    report = await runtime.coordinator.cleanup_stale()
    await refresh()
    return Outcome(describe_cleanup(report))


async def resume_from_checkpoint(
    *,
    runtime: RuntimePort,
    item: Mapping[str, Any],
    refresh: Callable[[], Awaitable[None]],
) -> Outcome:
    status = await runtime.coordinator.resume(item)
    await refresh()
    return Outcome(f"Resumed transaction of round {item['round_id']}: {state_label(status.state)}.")


async def retry_dead_letters(
    *, runtime: RuntimePort, letter_ids: list[str], refresh: Callable[[], Awaitable[None]]
) -> Outcome:
    """Retry every letter; their rounds run side by side within the bulkhead."""
    import asyncio

    outcomes = await asyncio.gather(
        *map(runtime.coordinator.retry_dead_letter, letter_ids), return_exceptions=True
    )
    await refresh()
    states = [state_label(o.state) for o in outcomes if not isinstance(o, BaseException)]
    errors = [o for o in outcomes if isinstance(o, BaseException)]
    return _letters_outcome("retried", letter_ids, states, errors)


async def discard_dead_letters(
    *, runtime: RuntimePort, letter_ids: list[str], refresh: Callable[[], Awaitable[None]]
) -> Outcome:
    import asyncio

    outcomes = await asyncio.gather(
        *map(runtime.coordinator.discard_dead_letter, letter_ids), return_exceptions=True
    )
    await refresh()
    errors = [o for o in outcomes if isinstance(o, BaseException)]
    return _letters_outcome("discarded", letter_ids, [], errors)


def _letters_outcome(
    verb: str, letter_ids: list[str], states: list[str], errors: list[BaseException]
) -> Outcome:
    """One line for what came of the letters: the state each retried round reached, and
    what could not be done (one letter: its error as is, raised for the runner to show)."""
    if len(letter_ids) == 1 and errors:
        raise errors[0]
    said = ", ".join(f"{n} {s}" for s, n in sorted(Counter(states).items()))
    if len(letter_ids) == 1:
        text = f"Dead letter {letter_ids[0][:8]} {verb}"
        said = said.removeprefix("1 ")
    else:
        done = len(letter_ids) - len(errors)
        text = f"{verb.capitalize()} {done} of {len(letter_ids)} dead letters"
    text += f": {said}" if said else ""
    text += f"; {len(errors)} could not be: {errors[0]}" if errors else ""
    return Outcome(text + ".", "warning" if errors else "info")


async def export_diagnostics(*, runtime: RuntimePort) -> Outcome:
    """Write the bug-report zip into the data folder's diagnostics/ and say where."""
    from r3mes_desktop.api.monitoring import export_runtime_diagnostics

    path = await export_runtime_diagnostics(runtime, runtime.data_dir / "diagnostics")
    return Outcome(f"Diagnostics written to {path} (no keys, passwords or tokens inside).")
