"""Idle time beyond X11: logind, GNOME (Wayland), Windows and macOS, and the pick.

Every source here follows `core.governor.IdleSource` and the adapters' rule: a reading that
cannot be taken is `Unknown(why)` with one Notice (`Degraded`), never an exception, so the
governor treats the computer as in use and says why.

- `MutterIdle`: GNOME's `org.gnome.Mutter.IdleMonitor.GetIdletime` on the session D-Bus,
  milliseconds since the last input: exact, in GNOME sessions (Wayland and X11).
- `LogindIdle`: systemd-logind's IdleHint / IdleSinceHintMonotonic of the caller's session
  over the system D-Bus. The desktop environment sets the hint when it considers the
  session idle (GNOME after its "blank screen" delay), so the reading is 0 s until then and
  the time since the hint was set afterwards: the governor's idle minutes count from the
  desktop's own idle point, not from the last key press. A desktop that never sets the
  hint reads as always in use (see docs/governor.md, "Idle time beyond X11").
- `WindowsIdle`: GetLastInputInfo against GetTickCount (user32/kernel32 through ctypes).
- `MacIdle`: IOKit's IOHIDSystem `HIDIdleTime` property (nanoseconds since the last input).

Both D-Bus sources use jeepney (pure Python, blocking I/O on a local socket; the governor
reads its sources in a worker thread).

`idle_source_for_platform` picks one: Windows and macOS their own; in an X11 session the
XScreenSaver idle counter when the display answers, else logind; in a Wayland session
GNOME's counter, else logind, and never X11: XWayland sees only the input that goes to X11
windows, so its counter would say "idle" while the user types in a Wayland window. When
nothing answers, a source that reads Unknown with every reason.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

from r3mes_desktop.adapters.governor.degraded import Degraded, quiet_degraded
from r3mes_desktop.adapters.governor.x11 import X11Idle
from r3mes_desktop.core.events import EventBus
from r3mes_desktop.core.governor import IdleSource, Unknown

LOGIND = "org.freedesktop.login1"
LOGIND_PATH = "/org/freedesktop/login1"
MANAGER_IFACE = "org.freedesktop.login1.Manager"
SESSION_IFACE = "org.freedesktop.login1.Session"
MUTTER = "org.gnome.Mutter.IdleMonitor"
MUTTER_PATH = "/org/gnome/Mutter/IdleMonitor/Core"
DBUS_TIMEOUT_S = 1.0

log = logging.getLogger(__name__)


def _open_system_bus() -> Any:
    from jeepney.io.blocking import open_dbus_connection

    return open_dbus_connection(bus="SYSTEM", auth_timeout=DBUS_TIMEOUT_S)


def _open_session_bus() -> Any:
    from jeepney.io.blocking import open_dbus_connection

    return open_dbus_connection(bus="SESSION", auth_timeout=DBUS_TIMEOUT_S)


class _NoBus(Exception):
    """The bus could not be reached (no socket, refused, no answer, no address)."""


class _DBusIdle:
    """What the D-Bus sources share: a blocking jeepney connection opened on first use and
    reopened after any failure (the service or the bus restarted); every failure is one
    `Unknown` that says what failed."""

    service = ""  # the bus name, for messages
    bus_kind = ""  # "system" or "session"

    def __init__(self, bus: EventBus | None, label: str, connect: Callable[[], Any]) -> None:
        self._degraded = Degraded(f"idle time ({label})", bus)
        self._connect = connect
        self._conn: Any = None

    def _call(self, path: str, iface: str, method: str, sig: str, body: tuple[Any, ...]) -> Any:
        from jeepney import DBusAddress, new_method_call
        from jeepney.wrappers import unwrap_msg

        address = DBusAddress(path, bus_name=self.service, interface=iface)
        reply = self._conn.send_and_get_reply(
            new_method_call(address, method, sig, body), timeout=DBUS_TIMEOUT_S
        )
        return unwrap_msg(reply)

    def _connected(self) -> bool:
        """Connect if needed; True when this call opened the connection."""
        if self._conn is not None:
            return False
        try:
            self._conn = self._connect()
        except (OSError, TimeoutError, KeyError, StopIteration) as exc:
            # KeyError: no DBUS_SESSION_BUS_ADDRESS; StopIteration: no usable address in it
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise _NoBus(why or type(exc).__name__) from exc
        return True

    def _read(self) -> float:
        raise NotImplementedError

    def idle_seconds(self) -> float | Unknown:
        try:
            seconds = self._read()
        except ImportError:
            return self._degraded.unknown("jeepney (the D-Bus client) is not installed")
        except Exception as exc:  # a bus error of any kind: the reading is unknown
            self.close()
            return self._degraded.unknown(self._describe(exc))
        self._degraded.ok()
        return seconds

    def _describe(self, exc: BaseException) -> str:
        from jeepney.wrappers import DBusErrorResponse

        if isinstance(exc, _NoBus):
            return f"no {self.bus_kind} D-Bus ({exc})"
        if isinstance(exc, DBusErrorResponse):
            return f"{self.service} answered {exc.name}"  # ...DBus.Error.ServiceUnknown, ...
        if isinstance(exc, KeyError):
            return f"{self.service} has no {exc.args[0]} property"
        return f"{self.service}: {exc or type(exc).__name__}"

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(OSError):
                conn.close()


class LogindIdle(_DBusIdle):
    """The caller's logind session's idle hint, over the system bus."""

    service = LOGIND
    bus_kind = "system"

    def __init__(
        self,
        bus: EventBus | None = None,
        *,
        connect: Callable[[], Any] = _open_system_bus,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(bus, "logind", connect)
        self._monotonic = monotonic
        self._wall = wall
        self._path: str | None = None  # the session object, or the Manager as a fallback
        self._iface = SESSION_IFACE

    def _session(self) -> None:
        """The caller's session ("auto": this process's session, else the user's graphical
        one); without one (a miner started outside any login session), the Manager's idle
        hint, which is idle only when every session is."""
        from jeepney.wrappers import DBusErrorResponse

        try:
            (path,) = self._call(LOGIND_PATH, MANAGER_IFACE, "GetSession", "s", ("auto",))
            self._path, self._iface = str(path), SESSION_IFACE
        except DBusErrorResponse:
            self._path, self._iface = LOGIND_PATH, MANAGER_IFACE

    def _read(self) -> float:
        if self._connected():
            self._path = None
        if self._path is None:
            self._session()
        assert self._path is not None
        (props,) = self._call(
            self._path, "org.freedesktop.DBus.Properties", "GetAll", "s", (self._iface,)
        )
        idle = props["IdleHint"][1]
        if not idle:
            return 0.0
        since_mono_us = int(props.get("IdleSinceHintMonotonic", ("t", 0))[1])
        if since_mono_us > 0:
            return max(0.0, self._monotonic() - since_mono_us / 1e6)
        since_us = int(props.get("IdleSinceHint", ("t", 0))[1])
        if since_us > 0:
            return max(0.0, self._wall() - since_us / 1e6)
        raise ValueError("idle, but not since when")


class MutterIdle(_DBusIdle):
    """GNOME's own idle counter (`org.gnome.Mutter.IdleMonitor.GetIdletime`, milliseconds
    since the last input), over the session bus: exact, where logind's hint only turns on
    after GNOME's blank-screen delay. Present in GNOME sessions, Wayland and X11 alike."""

    service = MUTTER
    bus_kind = "session"

    def __init__(
        self, bus: EventBus | None = None, *, connect: Callable[[], Any] = _open_session_bus
    ) -> None:
        super().__init__(bus, "GNOME", connect)

    def _read(self) -> float:
        self._connected()
        (milliseconds,) = self._call(MUTTER_PATH, MUTTER, "GetIdletime", "", ())
        return int(milliseconds) / 1000.0


# -- Windows -------------------------------------------------------------------------------


class LASTINPUTINFO(ctypes.Structure):
    _fields_ = [("cbSize", ctypes.c_uint), ("dwTime", ctypes.c_uint)]


def _windows_dlls() -> tuple[Any, Any] | None:
    if sys.platform != "win32":
        return None
    user32 = ctypes.WinDLL("user32")  # type: ignore[attr-defined,unused-ignore]
    kernel32 = ctypes.WinDLL("kernel32")  # type: ignore[attr-defined,unused-ignore]
    user32.GetLastInputInfo.argtypes = [ctypes.POINTER(LASTINPUTINFO)]
    user32.GetLastInputInfo.restype = ctypes.c_int
    kernel32.GetTickCount.argtypes = []
    kernel32.GetTickCount.restype = ctypes.c_uint32
    return user32, kernel32


class WindowsIdle:
    """Milliseconds since the session's last input; both counters wrap at 2**32 ms
    (49.7 days), so the difference is taken modulo 2**32."""

    def __init__(
        self,
        bus: EventBus | None = None,
        *,
        dlls: Callable[[], tuple[Any, Any] | None] = _windows_dlls,
    ) -> None:
        self._degraded = Degraded("idle time (Windows)", bus)
        self._load = dlls
        self._dlls: tuple[Any, Any] | None = None

    def idle_seconds(self) -> float | Unknown:
        try:
            if self._dlls is None:
                self._dlls = self._load()
                if self._dlls is None:
                    return self._degraded.unknown("not Windows")
            user32, kernel32 = self._dlls
            info = LASTINPUTINFO(cbSize=ctypes.sizeof(LASTINPUTINFO))
            if not user32.GetLastInputInfo(ctypes.pointer(info)):
                return self._degraded.unknown("GetLastInputInfo failed")
            now = int(kernel32.GetTickCount())
        except (OSError, AttributeError) as exc:
            return self._degraded.unknown(f"user32/kernel32: {exc}")
        self._degraded.ok()
        return ((now - int(info.dwTime)) % 2**32) / 1000.0


# -- macOS ---------------------------------------------------------------------------------

K_CF_STRING_ENCODING_UTF8 = 0x08000100
K_CF_NUMBER_SINT64 = 4


def _mac_frameworks() -> tuple[Any, Any] | None:
    if sys.platform != "darwin":
        return None
    iokit_path = ctypes.util.find_library("IOKit")
    cf_path = ctypes.util.find_library("CoreFoundation")
    if iokit_path is None or cf_path is None:
        raise OSError("IOKit or CoreFoundation not found")
    iokit, cf = ctypes.CDLL(iokit_path), ctypes.CDLL(cf_path)
    vp, u32 = ctypes.c_void_p, ctypes.c_uint32
    iokit.IOServiceMatching.argtypes = [ctypes.c_char_p]
    iokit.IOServiceMatching.restype = vp
    iokit.IOServiceGetMatchingService.argtypes = [u32, vp]
    iokit.IOServiceGetMatchingService.restype = u32
    iokit.IORegistryEntryCreateCFProperty.argtypes = [u32, vp, vp, u32]
    iokit.IORegistryEntryCreateCFProperty.restype = vp
    iokit.IOObjectRelease.argtypes = [u32]
    cf.CFStringCreateWithCString.argtypes = [vp, ctypes.c_char_p, u32]
    cf.CFStringCreateWithCString.restype = vp
    cf.CFGetTypeID.argtypes = [vp]
    cf.CFGetTypeID.restype = ctypes.c_ulong
    cf.CFNumberGetTypeID.restype = ctypes.c_ulong
    cf.CFNumberGetValue.argtypes = [vp, ctypes.c_int, ctypes.POINTER(ctypes.c_int64)]
    cf.CFNumberGetValue.restype = ctypes.c_bool
    cf.CFRelease.argtypes = [vp]
    return iokit, cf


class MacIdle:
    """IOHIDSystem's HIDIdleTime: one registry lookup per reading (a few microseconds)."""

    def __init__(
        self,
        bus: EventBus | None = None,
        *,
        frameworks: Callable[[], tuple[Any, Any] | None] = _mac_frameworks,
    ) -> None:
        self._degraded = Degraded("idle time (macOS)", bus)
        self._load = frameworks
        self._libs: tuple[Any, Any] | None = None

    def _read(self) -> float | str:
        """Seconds idle, or why not."""
        assert self._libs is not None
        iokit, cf = self._libs
        service = iokit.IOServiceGetMatchingService(0, iokit.IOServiceMatching(b"IOHIDSystem"))
        if not service:
            return "no IOHIDSystem service"
        try:
            key = cf.CFStringCreateWithCString(None, b"HIDIdleTime", K_CF_STRING_ENCODING_UTF8)
            try:
                prop = iokit.IORegistryEntryCreateCFProperty(service, key, None, 0)
            finally:
                cf.CFRelease(key)
            if not prop:
                return "IOHIDSystem has no HIDIdleTime"
            try:
                if cf.CFGetTypeID(prop) != cf.CFNumberGetTypeID():
                    return "HIDIdleTime is not a number"
                nanoseconds = ctypes.c_int64()
                if not cf.CFNumberGetValue(prop, K_CF_NUMBER_SINT64, ctypes.pointer(nanoseconds)):
                    return "HIDIdleTime does not fit 64 bits"
            finally:
                cf.CFRelease(prop)
        finally:
            iokit.IOObjectRelease(service)
        return nanoseconds.value / 1e9

    def idle_seconds(self) -> float | Unknown:
        try:
            if self._libs is None:
                self._libs = self._load()
                if self._libs is None:
                    return self._degraded.unknown("not macOS")
            seconds = self._read()
        except (OSError, AttributeError) as exc:
            return self._degraded.unknown(f"IOKit: {exc}")
        if isinstance(seconds, str):
            return self._degraded.unknown(seconds)
        self._degraded.ok()
        return seconds


# -- the pick ------------------------------------------------------------------------------


class NoIdleSource:
    """No way to read idle time on this system: Unknown, with the reasons of each try."""

    def __init__(self, why: str, bus: EventBus | None = None) -> None:
        self.why = why
        self._degraded = Degraded("idle time", bus)

    def idle_seconds(self) -> float | Unknown:
        return self._degraded.unknown(self.why)


def _works(source: Any) -> str | None:
    """Why a probe of `source` failed, or None when it read a figure. A failed probe is no
    warning (another source may work); its reason goes to the debug log."""
    with quiet_degraded():
        reading = source.idle_seconds()
    if isinstance(reading, Unknown):
        log.debug("idle source %s cannot read: %s", type(source).__name__, reading.why)
        return reading.why
    return None


def idle_source_for_platform(
    bus: EventBus | None = None,
    *,
    platform: str | None = None,
    env: Mapping[str, str] | None = None,
    x11: Callable[[EventBus | None], Any] = X11Idle,
    mutter: Callable[[EventBus | None], Any] = MutterIdle,
    logind: Callable[[EventBus | None], Any] = LogindIdle,
) -> IdleSource:
    """The idle source for this system (module docstring: which, and why that order).

    Each candidate is probed once without the bus (a failed probe is no Notice: another
    source may work); the one kept is built again with the bus, so its own later failures
    reach the user."""
    plat = platform or sys.platform
    if plat == "win32":
        return WindowsIdle(bus)
    if plat == "darwin":
        return MacIdle(bus)
    environ = os.environ if env is None else env
    wayland = bool(environ.get("WAYLAND_DISPLAY")) or environ.get("XDG_SESSION_TYPE") == "wayland"
    order: list[tuple[str, Callable[[EventBus | None], Any]]] = (
        [("GNOME", mutter), ("logind", logind)] if wayland else [("X11", x11), ("logind", logind)]
    )
    reasons = []
    for name, make in order:
        probe = make(None)
        try:
            why = _works(probe)
        finally:
            close = getattr(probe, "close", None)
            if close is not None:
                close()
        if why is None:
            chosen: IdleSource = make(bus)
            return chosen
        reasons.append(f"{name}: {why}")
    if wayland:
        reasons.append(
            "X11: not used in a Wayland session (XWayland sees only input to X11 windows)"
        )
    return NoIdleSource("; ".join(reasons), bus)
