"""`r3mes-desktop`: QApplication + qasync loop, single instance, window first, core second.

Order matters for the cold start: the window is built and painted before anything heavy
is imported (pydantic settings, web3, the devnet); the runtime opens afterwards on the
same loop, and torch is only ever imported inside the worker processes.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from r3mes_desktop.gui.qt import QtCore, QtWidgets

if TYPE_CHECKING:
    from r3mes_desktop.adapters.chain.keystore import Keystore
    from r3mes_desktop.adapters.faults import FaultInjector
    from r3mes_desktop.adapters.governor.devices import Detected
    from r3mes_desktop.core.events import EventBus
    from r3mes_desktop.core.governor import Decision
    from r3mes_desktop.core.resilience.breaker import BreakerRegistry
    from r3mes_desktop.gui.ports import CoordinatorPort, MinerPort
    from r3mes_desktop.support.config.settings import Settings

log = logging.getLogger(__name__)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="r3mes-desktop", description="R3MES desktop miner")
    parser.add_argument(
        "--fast",
        action="store_true",
        help="devnet with tiny rounds (small model, difficulty 16): demos and tests",
    )
    parser.add_argument("--start", action="store_true", help="start mining once ready")
    parser.add_argument(
        "--minimised",
        "--minimized",
        dest="minimised",
        action="store_true",
        help="start hidden in the system tray (minimised if there is no tray): start at login",
    )
    parser.add_argument(
        "--startup-probe",
        action="store_true",
        help="print seconds to the first painted window, then quit (bench.gui uses it)",
    )
    return parser.parse_args(argv)


class FirstPaint(QtCore.QObject):
    """Reports the first Paint event a widget receives (cold-start measurement)."""

    painted = QtCore.Signal()

    def __init__(self, widget: QtWidgets.QWidget) -> None:
        super().__init__(widget)
        self.seen = False
        widget.installEventFilter(self)

    def eventFilter(self, obj: QtCore.QObject, event: QtCore.QEvent) -> bool:
        if not self.seen and event.type() == QtCore.QEvent.Type.Paint:
            self.seen = True
            self.painted.emit()
        return False


def _data_dir() -> str:
    """Cheap version of config.paths().data_dir for the single-instance key (no pydantic)."""
    override = os.environ.get("R3MES_DATA_DIR")
    if override:
        return os.path.abspath(os.path.expanduser(override))
    import platformdirs

    return platformdirs.user_data_dir("r3mes-desktop", appauthor=False)


def main(argv: list[str] | None = None) -> int:
    started = time.perf_counter()
    args = _parse(argv)
    from r3mes_desktop.support.logs import setup_logging, teardown_logging

    # Every record goes through the one redacting log queue from the first line on: the
    # console now, the JSON file once the runtime opens, the log pane once it exists.
    setup_logging(level=logging.INFO, console=True, file=False)
    try:
        return _main(args, started)
    finally:
        teardown_logging()


def _application() -> QtWidgets.QApplication:
    existing = QtWidgets.QApplication.instance()
    app = (
        existing
        if isinstance(existing, QtWidgets.QApplication)
        else QtWidgets.QApplication(sys.argv[:1])
    )
    app.setApplicationName("R3MES Desktop")
    app.setDesktopFileName("r3mes-desktop")
    app.setQuitOnLastWindowClosed(False)  # closing the window may leave it in the tray
    return app


def _main(args: argparse.Namespace, started: float) -> int:
    app = _application()

    from r3mes_desktop.gui.single_instance import LOCK_FILE, SingleInstance, server_name

    data_dir = _data_dir()
    instance = SingleInstance(server_name(data_dir), lock_path=os.path.join(data_dir, LOCK_FILE))
    if not args.startup_probe and not instance.claim():
        print("R3MES Desktop is already running; raised its window.", file=sys.stderr)
        return 0

    from r3mes_desktop.core.events import EventBus
    from r3mes_desktop.gui.main_window import MainWindow
    from r3mes_desktop.gui.widgets.log_view import QtLogHandler
    from r3mes_desktop.support.logs import attach_handler

    bus = EventBus()
    log_pane = QtLogHandler()  # fed by the log queue's thread; Qt queues it to the GUI
    attach_handler(log_pane)  # teardown_logging detaches it
    window = MainWindow(_Starting(bus), log_handler=log_pane)
    instance.activated.connect(window.bring_to_front)
    first_paint = FirstPaint(window)
    if show_window(window, minimised=args.minimised and not args.startup_probe):
        _paint_now(app, first_paint, patience_s=10.0 if args.startup_probe else 0.3)
    if args.startup_probe:
        torch = "torch" in sys.modules  # the GUI process must not have imported it
        print(f"first-paint-s {time.perf_counter() - started:.4f} torch-imported {torch}")
        sys.stdout.flush()
        window.shutdown_widgets()
        return 0

    # Only now the rest: asyncio + qasync, the runtime, the loop-lateness probe.
    import asyncio

    import qasync

    from r3mes_desktop.app.runtime import Runtime, RuntimeOptions
    from r3mes_desktop.gui.latency import LatencyProbe
    from r3mes_desktop.gui.widgets.password_prompt import ask_password

    async def password_prompt(address: str) -> str | None:
        return await ask_password(window, address)

    options = RuntimeOptions.fast() if args.fast else RuntimeOptions()
    runtime = Runtime(
        options=dataclasses.replace(options, password_prompt=password_prompt), bus=bus
    )
    window.attach_runtime(runtime)
    probe = LatencyProbe(parent=window)
    window.set_latency_probe(probe)
    probe.start()
    _quit_on_signals(window)
    loop = qasync.QEventLoop(app)
    asyncio.set_event_loop(loop)
    with loop:
        code: int = loop.run_until_complete(_run(window, runtime, start=args.start))
    instance.release()
    return code


class _Starting:
    """What the window holds until the runtime exists: the shared bus, not ready.

    The window makes no core call before `runtime_ready()`, by which time the real runtime
    is attached; anything asked of the stand-in before then is a bug, and says so.
    """

    def __init__(self, bus: EventBus) -> None:
        self.bus = bus
        self.ready = False
        self.settings: Settings | None = None
        self.faults: FaultInjector | None = None
        self.keystore: Keystore | None = None

    def _not_open(self) -> NoReturn:
        raise RuntimeError("the miner runtime is still starting: no core call yet")

    @property
    def coordinator(self) -> CoordinatorPort:
        self._not_open()

    @property
    def miner(self) -> MinerPort:
        self._not_open()

    @property
    def breakers(self) -> BreakerRegistry:
        self._not_open()

    @property
    def data_dir(self) -> Path:
        self._not_open()

    def endpoints(self) -> dict[str, str | None]:
        self._not_open()

    async def chain_info(self) -> dict[str, Any]:
        self._not_open()

    async def ipfs_info(self) -> str:
        self._not_open()

    def device_name(self) -> str:
        self._not_open()

    async def detect_devices(self) -> Detected:
        self._not_open()

    @property
    def governor_decision(self) -> Decision | None:
        self._not_open()

    def apply_settings(self, settings: Settings) -> list[str]:
        self._not_open()


def show_window(window: Any, *, minimised: bool) -> bool:
    """Show the window, or (`--minimised`, the start-at-login entry) leave it in the tray.

    Returns whether the window was shown normally (the caller then waits for its first
    paint). Without a tray there is nothing to click to bring a hidden window back, so it
    is shown minimised instead, and the log says why.
    """
    if not minimised:
        window.show()
        return True
    if window.tray is not None:
        log.info("started minimised: the window is in the system tray")
        return False
    log.info("started minimised to the taskbar: no system tray is available to hide it in")
    window.showMinimized()
    return False


def _paint_now(app: Any, first_paint: FirstPaint, *, patience_s: float) -> None:
    """Process events until the window has painted once (or patience runs out)."""
    deadline = time.perf_counter() + patience_s
    flags = QtCore.QEventLoop.ProcessEventsFlag.AllEvents
    while not first_paint.seen and time.perf_counter() < deadline:
        app.processEvents(flags, 20)


def _quit_on_signals(window: Any) -> None:
    """SIGINT/SIGTERM close the app the orderly way (stop mining, journal, reap workers).

    Python runs signal handlers only between bytecodes; while Qt sits in C++ waiting for
    events nothing would run them, so a named no-op timer wakes the interpreter 4× a second.
    """
    import signal

    def request_quit(_signum: int, _frame: Any) -> None:
        QtCore.QTimer.singleShot(0, window.quit)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, request_quit)
    wake = QtCore.QTimer(window)
    wake.setObjectName("signal-wake")
    wake.timeout.connect(lambda: None)
    wake.start(250)


async def runtime_opened(window: Any, *, start: bool = False) -> None:
    """The runtime is open: freeze the start-up heap (see `gui.heap`: a full garbage
    collection would otherwise stall the loop for 100 ms while mining; its one collection
    comes before Start can be clicked), make the window ready, start mining if asked.
    `bench.gui` calls it too, so it measures this."""
    from r3mes_desktop.gui.heap import freeze_startup_heap

    frozen = await freeze_startup_heap()
    log.debug("start-up heap frozen: %d objects", frozen)
    window.runtime_ready()
    if start:
        window.window_actions.start.trigger()


async def _run(window: Any, runtime: Any, *, start: bool) -> int:
    """Open the core, wait for the window to be closed for good, close the core."""
    import asyncio

    closed = asyncio.Event()
    window.closed.connect(closed.set)
    from r3mes_desktop.api.monitoring import Monitoring
    from r3mes_desktop.support.logs import setup_logging

    # Adds the JSON-lines file in the log dir to the queue (pydantic is loaded by now).
    setup_logging(console=True)
    monitoring = None
    try:
        await runtime.open()
        # error detail files always; the local API (and /metrics) when settings enable it
        monitoring = await Monitoring.attach(runtime)
    except Exception as exc:
        log.exception("could not start the miner runtime")
        window.runtime_failed(str(exc))
    else:
        if monitoring.api_url:
            log.info("monitoring API on %s", monitoring.api_url)
        await runtime_opened(window, start=start)
    await closed.wait()
    await window.tasks.cancel_all()
    if monitoring is not None:
        await monitoring.close()
    await runtime.close()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
