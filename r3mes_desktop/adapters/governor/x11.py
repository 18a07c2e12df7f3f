"""Idle time from X11's XScreenSaver extension, through ctypes (libX11 + libXss).

No python-xlib dependency: two C calls a second. Without the libraries, without a display
(DISPLAY unset, or a Wayland session without XWayland) or without the extension the source
reads Unknown with a Notice; logind's IdleHint over D-Bus for Wayland is not done yet."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from typing import Any

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


_ExitHandler = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p)
_IoHandler = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p)


def _io_error(_display: int | None) -> int:
    """Xlib's default I/O error handler prints and calls exit(1); this one returns, so
    Xlib goes on to the display's exit handler (`X11Idle._lost`). Process-wide: Xlib has
    one I/O error handler (Qt talks to X through xcb, which handles its own errors)."""
    return 0


_IO_ERROR_HANDLER = _IoHandler(_io_error)  # kept alive for as long as Xlib may call it


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
        self._gone = False  # the X server went away; Xlib must not be called again
        self._on_lost: Any = None  # the handler, kept alive while Xlib may call it

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
        if not hasattr(xlib, "XSetIOErrorExitHandler"):  # libX11 < 1.7
            xlib.XCloseDisplay(display)
            return "libX11 is older than 1.7: a lost X server would end the miner"
        # Xlib's default on a lost connection (the X server quit, the session ended) is
        # exit(1), which would take the miner down with it; this handler only marks the
        # display lost, and the source reads Unknown from then on.
        xlib.XSetIOErrorExitHandler.argtypes = [ctypes.c_void_p, _ExitHandler, ctypes.c_void_p]
        self._on_lost = _ExitHandler(self._lost)
        xlib.XSetIOErrorExitHandler(display, self._on_lost, None)
        xlib.XSetIOErrorHandler.argtypes = [_IoHandler]
        xlib.XSetIOErrorHandler.restype = ctypes.c_void_p
        xlib.XSetIOErrorHandler(_IO_ERROR_HANDLER)
        event_base, error_base = ctypes.c_int(), ctypes.c_int()
        if not xss.XScreenSaverQueryExtension(
            display, ctypes.byref(event_base), ctypes.byref(error_base)
        ):
            xlib.XCloseDisplay(display)
            return f"X display {name} has no XScreenSaver extension"
        self._xlib, self._xss, self._display = xlib, xss, display
        self._info = xss.XScreenSaverAllocInfo()
        return None

    def _lost(self, _display: int | None, _data: int | None) -> None:
        self._gone = True

    def idle_seconds(self) -> float | Unknown:
        if self._gone:
            return self._degraded.unknown("the X server connection was lost")
        if self._display is None:
            why = self._open()
            if why is not None:
                return self._degraded.unknown(why)
        assert self._xlib is not None and self._xss is not None
        root = self._xlib.XDefaultRootWindow(self._display)
        if not self._xss.XScreenSaverQueryInfo(self._display, root, self._info) or self._gone:
            return self._degraded.unknown(
                "the X server connection was lost" if self._gone else "XScreenSaverQueryInfo failed"
            )
        self._degraded.ok()
        info = _XScreenSaverInfo.from_address(self._info)  # type: ignore[arg-type]
        return float(info.idle) / 1000.0

    def close(self) -> None:
        """Release the display (a lost one is left alone: Xlib cannot close it cleanly)."""
        if self._xlib is not None and self._display is not None and not self._gone:
            if self._info:
                self._xlib.XFree(self._info)
            self._xlib.XCloseDisplay(self._display)
        self._display = self._info = None
