"""Idle sources beyond X11: logind against a fake logind on a private dbus-daemon, Windows
and macOS through ctypes stand-ins, and the pick for the platform."""

from __future__ import annotations

import ctypes
import logging
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from r3mes_desktop.adapters.governor import idle
from r3mes_desktop.adapters.governor.idle import (
    LogindIdle,
    MacIdle,
    MutterIdle,
    NoIdleSource,
    WindowsIdle,
    idle_source_for_platform,
)
from r3mes_desktop.core.events import EventBus, Notice
from r3mes_desktop.core.governor import Unknown
from tests.helpers.fakes import recorded

jeepney = pytest.importorskip("jeepney")
from jeepney import MessageType  # noqa: E402
from jeepney.bus_messages import message_bus  # noqa: E402
from jeepney.io.blocking import open_dbus_connection  # noqa: E402
from jeepney.wrappers import new_error, new_method_return  # noqa: E402

SESSION_PATH = "/org/freedesktop/login1/session/_32"


@pytest.fixture
def dbus_address(tmp_path: Any) -> Iterator[str]:
    """A private message bus (the session configuration, on a socket in tmp_path)."""
    daemon = shutil.which("dbus-daemon")
    if daemon is None:
        pytest.skip("dbus-daemon is not installed: the logind tests need a message bus")
    config = tmp_path / "bus.conf"
    config.write_text(
        "<!DOCTYPE busconfig PUBLIC '-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN'"
        " 'http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd'>"
        f"<busconfig><type>session</type><listen>unix:dir={tmp_path}</listen>"
        "<auth>EXTERNAL</auth><policy context='default'><allow send_destination='*'/>"
        "<allow own='*'/><allow eavesdrop='true'/></policy></busconfig>"
    )
    proc = subprocess.Popen(
        [daemon, f"--config-file={config}", "--nofork", "--print-address=1"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        address = proc.stdout.readline().strip()
        assert address.startswith("unix:"), address
        yield address
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        assert proc.stdout is not None
        proc.stdout.close()


class FakeService:
    """A D-Bus service on the private bus, served from a thread over jeepney; subclasses
    name the bus name and answer method calls."""

    bus_name = ""

    def __init__(self, address: str) -> None:
        self.address = address
        self.calls: list[str] = []
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self._ready.clear()
        self._thread = threading.Thread(target=self._serve, name=self.bus_name, daemon=True)
        self._thread.start()
        assert self._ready.wait(10), f"the fake {self.bus_name} did not claim its name"

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None

    def answer(self, msg: Any, member: str) -> Any:
        raise NotImplementedError

    def _serve(self) -> None:
        with open_dbus_connection(self.address) as conn:
            conn.send_and_get_reply(message_bus.RequestName(self.bus_name), timeout=5)
            self._ready.set()
            while not self._stop.is_set():
                try:
                    msg = conn.receive(timeout=0.05)
                except TimeoutError:
                    continue
                if msg.header.message_type == MessageType.method_call:
                    member = msg.header.fields[jeepney.HeaderFields.member]
                    path = msg.header.fields[jeepney.HeaderFields.path]
                    self.calls.append(f"{path} {member} {msg.body}")
                    conn.send(self.answer(msg, member))


class FakeLogind(FakeService):
    """org.freedesktop.login1 with one session."""

    bus_name = idle.LOGIND

    def __init__(
        self,
        address: str,
        *,
        idle_hint: bool = False,
        since_monotonic_us: int = 0,
        since_wall_us: int = 0,
        has_session: bool = True,
    ) -> None:
        super().__init__(address)
        self.idle_hint = idle_hint
        self.since_monotonic_us = since_monotonic_us
        self.since_wall_us = since_wall_us
        self.has_session = has_session

    def _props(self) -> dict[str, tuple[str, Any]]:
        return {
            "IdleHint": ("b", self.idle_hint),
            "IdleSinceHint": ("t", self.since_wall_us),
            "IdleSinceHintMonotonic": ("t", self.since_monotonic_us),
            "Name": ("s", "someone"),
        }

    def answer(self, msg: Any, member: str) -> Any:
        if member == "GetSession":
            if not self.has_session:
                return new_error(
                    msg, "org.freedesktop.login1.NoSessionForPID", "s", ("no session",)
                )
            return new_method_return(msg, "o", (SESSION_PATH,))
        if member == "GetAll":
            return new_method_return(msg, "a{sv}", (self._props(),))
        return new_error(msg, "org.freedesktop.DBus.Error.UnknownMethod", "s", (member,))


class FakeMutter(FakeService):
    """GNOME's org.gnome.Mutter.IdleMonitor: GetIdletime in milliseconds."""

    bus_name = idle.MUTTER

    def __init__(self, address: str, idle_ms: int = 0) -> None:
        super().__init__(address)
        self.idle_ms = idle_ms

    def answer(self, msg: Any, member: str) -> Any:
        if member == "GetIdletime":
            return new_method_return(msg, "t", (self.idle_ms,))
        return new_error(msg, "org.freedesktop.DBus.Error.UnknownMethod", "s", (member,))


@pytest.fixture
def logind(dbus_address: str) -> Iterator[FakeLogind]:
    fake = FakeLogind(dbus_address)
    fake.start()
    yield fake
    fake.stop()


def _source(address: str, bus: EventBus | None = None, *, now: float = 1000.0) -> LogindIdle:
    return LogindIdle(
        bus,
        connect=lambda: open_dbus_connection(address),
        monotonic=lambda: now,
        wall=lambda: 1_700_000_000.0,
    )


def test_logind_in_use_reads_zero(logind: FakeLogind) -> None:
    source = _source(logind.address)
    try:
        assert source.idle_seconds() == 0.0
        assert source.idle_seconds() == 0.0
    finally:
        source.close()
    assert logind.calls[0].endswith("GetSession ('auto',)")
    assert logind.calls[1] == f"{SESSION_PATH} GetAll ('org.freedesktop.login1.Session',)"
    assert len(logind.calls) == 3  # the session is looked up once


def test_logind_idle_counts_from_the_hint(logind: FakeLogind) -> None:
    logind.idle_hint = True
    logind.since_monotonic_us = 700_000_000  # idle since 700 s on the monotonic clock
    source = _source(logind.address, now=1000.0)
    try:
        assert source.idle_seconds() == pytest.approx(300.0)
        logind.since_monotonic_us = 0  # an older logind: only the wall-clock time
        logind.since_wall_us = (1_700_000_000 - 90) * 1_000_000
        assert source.idle_seconds() == pytest.approx(90.0)
    finally:
        source.close()


def test_logind_without_a_session_reads_the_managers_hint(logind: FakeLogind) -> None:
    logind.has_session = False
    source = _source(logind.address)
    try:
        assert source.idle_seconds() == 0.0
    finally:
        source.close()
    assert logind.calls[-1] == (
        "/org/freedesktop/login1 GetAll ('org.freedesktop.login1.Manager',)"
    )


def test_logind_gone_is_unknown_once_then_recovers(logind: FakeLogind) -> None:
    bus = EventBus()
    notices = recorded(bus, Notice)
    source = _source(logind.address, bus)
    try:
        assert source.idle_seconds() == 0.0
        logind.stop()
        first = source.idle_seconds()
        assert isinstance(first, Unknown)
        assert "ServiceUnknown" in first.why or "NameHasNoOwner" in first.why, first.why
        assert isinstance(source.idle_seconds(), Unknown)
        assert len(notices) == 1 and "logind" in notices[0].message
        logind.start()
        assert source.idle_seconds() == 0.0
    finally:
        source.close()


def test_logind_idle_without_a_time_is_unknown(logind: FakeLogind) -> None:
    logind.idle_hint = True
    source = _source(logind.address)
    try:
        reading = source.idle_seconds()
        assert isinstance(reading, Unknown) and "since when" in reading.why
    finally:
        source.close()


@pytest.fixture
def mutter(dbus_address: str) -> Iterator[FakeMutter]:
    fake = FakeMutter(dbus_address)
    fake.start()
    yield fake
    fake.stop()


def test_gnome_idle_time_in_milliseconds(mutter: FakeMutter) -> None:
    source = MutterIdle(connect=lambda: open_dbus_connection(mutter.address))
    try:
        mutter.idle_ms = 0
        assert source.idle_seconds() == 0.0
        mutter.idle_ms = 187_250
        assert source.idle_seconds() == pytest.approx(187.25)
    finally:
        source.close()
    assert mutter.calls[-1] == "/org/gnome/Mutter/IdleMonitor/Core GetIdletime ()"


def test_gnome_absent_is_unknown_naming_the_service(dbus_address: str) -> None:
    source = MutterIdle(connect=lambda: open_dbus_connection(dbus_address))
    try:
        reading = source.idle_seconds()
    finally:
        source.close()
    assert isinstance(reading, Unknown)
    assert reading.why.startswith("org.gnome.Mutter.IdleMonitor answered org.freedesktop.DBus")


def test_no_session_bus_address_is_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DBUS_SESSION_BUS_ADDRESS", raising=False)
    reading = MutterIdle().idle_seconds()
    assert isinstance(reading, Unknown)
    assert reading.why == "no session D-Bus ('DBUS_SESSION_BUS_ADDRESS')", reading.why


def test_no_bus_at_all_is_unknown_not_a_crash(tmp_path: Any) -> None:
    bus = EventBus()
    notices = recorded(bus, Notice)
    source = _source(f"unix:path={tmp_path / 'nothing-here'}", bus)
    reading = source.idle_seconds()
    assert isinstance(reading, Unknown)
    assert "No such file" in reading.why, reading.why
    assert len(notices) == 1


@pytest.mark.skipif(
    not os.path.exists("/run/dbus/system_bus_socket"), reason="no system D-Bus on this machine"
)
def test_real_logind_reads_a_figure_or_says_why() -> None:
    source = LogindIdle()
    try:
        reading = source.idle_seconds()
    finally:
        source.close()
    assert isinstance(reading, float | Unknown)


# -- Windows -------------------------------------------------------------------------------


class FakeUser32:
    def __init__(self, last_input_ms: int, ok: bool = True) -> None:
        self.last_input_ms = last_input_ms
        self.ok = ok

    def GetLastInputInfo(self, info: Any) -> int:
        assert info.contents.cbSize == ctypes.sizeof(idle.LASTINPUTINFO)
        info.contents.dwTime = self.last_input_ms
        return 1 if self.ok else 0


class FakeKernel32:
    def __init__(self, now_ms: int) -> None:
        self.now_ms = now_ms

    def GetTickCount(self) -> int:
        return self.now_ms


def test_windows_idle_from_last_input() -> None:
    source = WindowsIdle(dlls=lambda: (FakeUser32(10_000), FakeKernel32(75_500)))
    assert source.idle_seconds() == pytest.approx(65.5)


def test_windows_tick_count_wrapping_after_49_days() -> None:
    source = WindowsIdle(dlls=lambda: (FakeUser32(2**32 - 1_000), FakeKernel32(2_000)))
    assert source.idle_seconds() == pytest.approx(3.0)


def test_windows_call_failure_is_unknown_with_one_notice() -> None:
    bus = EventBus()
    notices = recorded(bus, Notice)
    source = WindowsIdle(bus, dlls=lambda: (FakeUser32(0, ok=False), FakeKernel32(1)))
    for _ in range(3):
        reading = source.idle_seconds()
        assert isinstance(reading, Unknown) and "GetLastInputInfo" in reading.why
    assert len(notices) == 1


def test_windows_dll_load_error_is_unknown() -> None:
    def broken() -> tuple[Any, Any]:
        raise OSError("user32.dll not found")

    reading = WindowsIdle(dlls=broken).idle_seconds()
    assert isinstance(reading, Unknown) and "user32.dll not found" in reading.why


@pytest.mark.skipif(sys.platform == "win32", reason="the off-Windows answer")
def test_windows_source_off_windows_says_so() -> None:
    reading = WindowsIdle().idle_seconds()
    assert isinstance(reading, Unknown) and reading.why == "not Windows"


@pytest.mark.skipif(sys.platform != "win32", reason="GetLastInputInfo exists only on Windows")
def test_windows_real_reading() -> None:  # pragma: no cover - Windows only
    assert isinstance(WindowsIdle().idle_seconds(), float)


# -- macOS ---------------------------------------------------------------------------------


class FakeIOKit:
    SERVICE = 77

    def __init__(self, cf: FakeCF, *, has_service: bool = True) -> None:
        self.cf = cf
        self.has_service = has_service
        self.released: list[int] = []

    def IOServiceMatching(self, name: bytes) -> int:
        assert name == b"IOHIDSystem"
        return 1

    def IOServiceGetMatchingService(self, port: int, matching: int) -> int:
        return self.SERVICE if self.has_service else 0

    def IORegistryEntryCreateCFProperty(
        self, service: int, key: int, allocator: Any, options: int
    ) -> int:
        assert service == self.SERVICE and self.cf.strings[key] == b"HIDIdleTime"
        return self.cf.new(self.cf.property_type)

    def IOObjectRelease(self, service: int) -> None:
        self.released.append(service)


class FakeCF:
    NUMBER, DATA = 22, 20

    def __init__(self, nanoseconds: int, property_type: int = NUMBER) -> None:
        self.nanoseconds = nanoseconds
        self.property_type = property_type
        self.strings: dict[int, bytes] = {}
        self.objects: dict[int, int] = {}  # live CF objects → type id

    def new(self, type_id: int) -> int:
        ref = 1000 + len(self.objects) + len(self.strings)
        self.objects[ref] = type_id
        return ref

    def CFStringCreateWithCString(self, alloc: Any, text: bytes, encoding: int) -> int:
        assert encoding == idle.K_CF_STRING_ENCODING_UTF8
        ref = self.new(7)
        self.strings[ref] = text
        return ref

    def CFGetTypeID(self, ref: int) -> int:
        return self.objects[ref]

    def CFNumberGetTypeID(self) -> int:
        return self.NUMBER

    def CFNumberGetValue(self, ref: int, kind: int, out: Any) -> bool:
        assert kind == idle.K_CF_NUMBER_SINT64
        out.contents.value = self.nanoseconds
        return True

    def CFRelease(self, ref: int) -> None:
        del self.objects[ref]


def test_macos_idle_from_hid_idle_time() -> None:
    cf = FakeCF(nanoseconds=42_500_000_000)
    iokit = FakeIOKit(cf)
    source = MacIdle(frameworks=lambda: (iokit, cf))
    assert source.idle_seconds() == pytest.approx(42.5)
    assert cf.objects == {}  # the key and the property were released
    assert iokit.released == [FakeIOKit.SERVICE]


def test_macos_without_the_hid_service_is_unknown() -> None:
    cf = FakeCF(0)
    reading = MacIdle(frameworks=lambda: (FakeIOKit(cf, has_service=False), cf)).idle_seconds()
    assert isinstance(reading, Unknown) and "IOHIDSystem" in reading.why


def test_macos_property_of_another_type_is_unknown_and_released() -> None:
    cf = FakeCF(0, property_type=FakeCF.DATA)
    reading = MacIdle(frameworks=lambda: (FakeIOKit(cf), cf)).idle_seconds()
    assert isinstance(reading, Unknown) and "not a number" in reading.why
    assert cf.objects == {}


@pytest.mark.skipif(sys.platform == "darwin", reason="the off-macOS answer")
def test_macos_source_off_macos_says_so() -> None:
    reading = MacIdle().idle_seconds()
    assert isinstance(reading, Unknown) and reading.why == "not macOS"


@pytest.mark.skipif(sys.platform != "darwin", reason="IOKit exists only on macOS")
def test_macos_real_reading() -> None:  # pragma: no cover - macOS only
    assert isinstance(MacIdle().idle_seconds(), float)


# -- the pick ------------------------------------------------------------------------------


@dataclass
class Probe:
    name: str
    reading: float | Unknown
    made: list[tuple[str, EventBus | None]]
    closed: list[str]

    def idle_seconds(self) -> float | Unknown:
        return self.reading

    def close(self) -> None:
        self.closed.append(self.name)


NO_SESSION_BUS = Unknown("no session D-Bus")


def _pick(
    x11: float | Unknown,
    logind: float | Unknown,
    env: dict[str, str],
    bus: EventBus,
    mutter: float | Unknown = NO_SESSION_BUS,
) -> tuple[Any, list[tuple[str, EventBus | None]], list[str]]:
    made: list[tuple[str, EventBus | None]] = []
    closed: list[str] = []

    def factory(name: str, reading: float | Unknown) -> Any:
        def make(b: EventBus | None) -> Probe:
            made.append((name, b))
            return Probe(name, reading, made, closed)

        return make

    chosen = idle_source_for_platform(
        bus,
        platform="linux",
        env=env,
        x11=factory("x11", x11),
        mutter=factory("mutter", mutter),
        logind=factory("logind", logind),
    )
    return chosen, made, closed


def test_pick_x11_when_the_display_answers() -> None:
    bus = EventBus()
    chosen, made, closed = _pick(3.0, 0.0, {"DISPLAY": ":0"}, bus, mutter=1.0)
    assert isinstance(chosen, Probe) and chosen.name == "x11"
    assert made == [("x11", None), ("x11", bus)]  # probed quietly, then built with the bus
    assert closed == ["x11"]


def test_pick_logind_when_x11_cannot_read() -> None:
    chosen, made, _ = _pick(Unknown("no X display"), 0.0, {}, EventBus())
    assert isinstance(chosen, Probe) and chosen.name == "logind"
    assert [m[0] for m in made] == ["x11", "logind", "logind"]


WAYLAND = {"DISPLAY": ":0", "WAYLAND_DISPLAY": "wayland-0"}


def test_pick_gnome_first_in_a_wayland_session() -> None:
    chosen, made, _ = _pick(3.0, 0.0, WAYLAND, EventBus(), mutter=1.0)
    assert isinstance(chosen, Probe) and chosen.name == "mutter"
    assert [m[0] for m in made] == ["mutter", "mutter"]


def test_pick_logind_in_a_wayland_session_without_gnome_never_x11() -> None:
    """XWayland's idle counter misses input to Wayland windows: X11 is not even asked."""
    chosen, made, _ = _pick(3.0, 0.0, WAYLAND, EventBus())
    assert isinstance(chosen, Probe) and chosen.name == "logind"
    assert [m[0] for m in made] == ["mutter", "logind", "logind"]
    _, made, _ = _pick(3.0, 0.0, {"XDG_SESSION_TYPE": "wayland", "DISPLAY": ":0"}, EventBus())
    assert "x11" not in [m[0] for m in made]


def test_pick_nothing_reads_unknown_with_every_reason() -> None:
    bus = EventBus()
    notices = recorded(bus, Notice)
    chosen, _, _ = _pick(Unknown("no X display"), Unknown("no system bus"), {}, bus)
    assert isinstance(chosen, NoIdleSource)
    reading = chosen.idle_seconds()
    assert isinstance(reading, Unknown)
    assert reading.why == "X11: no X display; logind: no system bus"
    assert len(notices) == 1  # the probes themselves published nothing
    chosen, _, _ = _pick(3.0, Unknown("no system bus"), WAYLAND, bus)
    reading = chosen.idle_seconds()
    assert isinstance(reading, Unknown)
    assert reading.why == (
        "GNOME: no session D-Bus; logind: no system bus; "
        "X11: not used in a Wayland session (XWayland sees only input to X11 windows)"
    )


def test_pick_windows_and_macos() -> None:
    assert isinstance(idle_source_for_platform(platform="win32"), WindowsIdle)
    assert isinstance(idle_source_for_platform(platform="darwin"), MacIdle)


def test_pick_on_this_machine_never_raises() -> None:
    source = idle_source_for_platform(EventBus())
    try:
        assert isinstance(source.idle_seconds(), float | Unknown)
    finally:
        close = getattr(source, "close", None)
        if close is not None:
            close()


def test_failed_probes_are_not_warnings_only_the_outcome_is(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """One warning for "no idle source", not one per source tried as well."""

    def no_bus() -> Any:
        raise FileNotFoundError(2, "No such file or directory")

    bus = EventBus()
    notices = recorded(bus, Notice)
    with caplog.at_level(logging.DEBUG):
        chosen = idle_source_for_platform(
            bus,
            platform="linux",
            env={},
            logind=lambda b: LogindIdle(b, connect=no_bus),
        )
        reading = chosen.idle_seconds()
    assert isinstance(reading, Unknown)
    assert reading.why == (
        "X11: no X display (DISPLAY is not set); "
        "logind: no system D-Bus (No such file or directory)"
    )
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.getMessage() for r in warnings] == [
        f"idle time cannot be read ({reading.why}): the governor treats it as unknown"
    ]
    assert len(notices) == 1
    assert "LogindIdle cannot read" in caplog.text  # the probe's reason, at debug level


def test_a_probe_quiets_only_its_own_thread(caplog: pytest.LogCaptureFixture) -> None:
    """Another thread's source failing during a probe still warns."""
    other_warned = threading.Event()

    def other_source() -> None:
        WindowsIdle(dlls=lambda: None).idle_seconds()  # warns "not Windows"
        other_warned.set()

    class SlowProbe:
        def idle_seconds(self) -> float | Unknown:
            worker = threading.Thread(target=other_source)
            worker.start()
            worker.join(10)
            return Unknown("probe")

    with caplog.at_level(logging.WARNING):
        idle_source_for_platform(
            platform="linux", env={}, x11=lambda b: SlowProbe(), logind=lambda b: SlowProbe()
        )
    assert other_warned.is_set()
    assert sum("not Windows" in r.getMessage() for r in caplog.records) == 2
