"""Idle time from X11's XScreenSaver extension, through ctypes (libX11 + libXss).

No python-xlib dependency: two C calls a second. Without the libraries, without a display
(DISPLAY unset, or a Wayland session without XWayland) or without the extension the source
reads Unknown with a Notice; logind's IdleHint over D-Bus for Wayland is not done yet."""

from __future__ import annotations

import ctypes
import ctypes.util
import os

from r3mes_desktop.adapters.governor.degraded import Degraded
from r3mes_desktop.core.events import EventBus
from r3mes_desktop.core.governor import Unknown


class _XScreenSaverInfo(ctypes.Structure):
    _fields_ = [
        ("window", ctypes.c_ulong),
        ("state", ctypes.c_int),
        ("kind", ctypes.c_int),
        ("til_or_since", ctypes.c_ulong),
        ("idle", ctypes.c_ulong),  # milliseconds since the last input
        ("event_mask", ctypes.c_ulong),
    ]


def _load(name: str) -> ctypes.CDLL | None:
    path = ctypes.util.find_library(name)
    if path is None:
        return None
    try:
        return ctypes.CDLL(path)
    except OSError:
        return None


class X11Idle:
    """Opens the display on first use and keeps it; `close()` releases it."""

    def __init__(self, bus: EventBus | None = None, *, display: str | None = None) -> None:
        self._degraded = Degraded("idle time", bus)
        self._display_name = display
        self._xlib: ctypes.CDLL | None = None
        self._xss: ctypes.CDLL | None = None
        self._display: int | None = None
        self._info: int | None = None

    def _open(self) -> str | None:
        """Open the display; the reason it cannot be opened, or None."""
        name = self._display_name or os.environ.get("DISPLAY")
        if not name:
            return "no X display (DISPLAY is not set)"
        xlib, xss = _load("X11"), _load("Xss")
        if xlib is None or xss is None:
            return "libX11 or libXss is not installed"
        xlib.XOpenDisplay.restype = ctypes.c_void_p
        xlib.XOpenDisplay.argtypes = [ctypes.c_char_p]
        xlib.XDefaultRootWindow.restype = ctypes.c_ulong
        xlib.XDefaultRootWindow.argtypes = [ctypes.c_void_p]
        xlib.XCloseDisplay.argtypes = [ctypes.c_void_p]
        xlib.XFree.argtypes = [ctypes.c_void_p]
        xss.XScreenSaverQueryExtension.argtypes = [
            ctypes.c_void_p,
            ctypes.POINTER(ctypes.c_int),
            ctypes.POINTER(ctypes.c_int),
        ]
        xss.XScreenSaverAllocInfo.restype = ctypes.c_void_p
        xss.XScreenSaverQueryInfo.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.c_void_p]
        display = xlib.XOpenDisplay(name.encode())
        if not display:
            return f"cannot open X display {name}"
        event_base, error_base = ctypes.c_int(), ctypes.c_int()
        if not xss.XScreenSaverQueryExtension(
            display, ctypes.byref(event_base), ctypes.byref(error_base)
        ):
            xlib.XCloseDisplay(display)
            return f"X display {name} has no XScreenSaver extension"
        self._xlib, self._xss, self._display = xlib, xss, display
        self._info = xss.XScreenSaverAllocInfo()
        return None

    def idle_seconds(self) -> float | Unknown:
        if self._display is None:
            why = self._open()
            if why is not None:
                return self._degraded.unknown(why)
        assert self._xlib is not None and self._xss is not None
        root = self._xlib.XDefaultRootWindow(self._display)
        if not self._xss.XScreenSaverQueryInfo(self._display, root, self._info):
            return self._degraded.unknown("XScreenSaverQueryInfo failed")
        self._degraded.ok()
        info = _XScreenSaverInfo.from_address(self._info)  # type: ignore[arg-type]
        return float(info.idle) / 1000.0

    def close(self) -> None:
        if self._xlib is not None and self._display is not None:
            if self._info:
                self._xlib.XFree(self._info)
            self._xlib.XCloseDisplay(self._display)
        self._display = self._info = None
