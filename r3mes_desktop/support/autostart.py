"""Start at login: the platform's own per-user autostart entry, written and removed by us.

One small object per platform, behind one protocol (`Autostart`): set_enabled(bool),
is_enabled(), and `where` (the entry's path or registry key, for messages).

- Linux and other XDG desktops: `$XDG_CONFIG_HOME/autostart/r3mes-desktop.desktop`
  (default ~/.config), a Desktop Entry whose Exec starts the app minimised to the tray.
  A desktop environment's "startup applications" panel may switch our entry off by adding
  `Hidden=true` or `X-GNOME-Autostart-enabled=false` instead of deleting it; we read those
  as off.
- Windows: a value named `R3MES Desktop` under HKCU\\Software\\Microsoft\\Windows\\
  CurrentVersion\\Run (winreg; the module is injected, so the code is tested on Linux).
- macOS: ~/Library/LaunchAgents/org.r3mes.desktop.plist with RunAtLoad (plistlib).

Files are written atomically (a temporary file beside them, then os.replace), so a crash
never leaves half an entry for the session manager to choke on; disabling removes only our
own entry. Every failure is an `AutostartError` whose message names the path and the cause.
"""

from __future__ import annotations

import contextlib
import os
import plistlib
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

APP_ID = "r3mes-desktop"
APP_NAME = "R3MES Desktop"
LAUNCH_AGENT_LABEL = "org.r3mes.desktop"
MINIMISED_FLAG = "--minimised"
RUN_KEY = r"Software\Microsoft\Windows\CurrentVersion\Run"


class AutostartError(OSError):
    """The autostart entry could not be read, written or removed; says where and why."""


class Autostart(Protocol):
    @property
    def where(self) -> str: ...

    def is_enabled(self) -> bool: ...

    def set_enabled(self, enabled: bool) -> None: ...


def launch_command(
    *,
    executable: str | None = None,
    frozen: bool | None = None,
    platform: str | None = None,
) -> list[str]:
    """The command that starts this installation of the app minimised to the tray.

    A frozen bundle is its own launcher; an installed package has the `r3mes-desktop`
    script beside the interpreter (a venv's bin/ or Scripts/), which is what the session
    manager should run; failing both, `<python> -m r3mes_desktop`. On Windows pythonw.exe
    is preferred to python.exe: a login item must not open a console window.
    """
    exe = Path(executable or sys.executable)
    is_frozen = bool(getattr(sys, "frozen", False)) if frozen is None else frozen
    plat = platform or sys.platform
    if is_frozen:
        return [str(exe), MINIMISED_FLAG]
    script = exe.with_name(APP_ID + (".exe" if plat == "win32" else ""))
    if script.is_file():
        return [str(script), MINIMISED_FLAG]
    if plat == "win32":
        windowless = exe.with_name("pythonw.exe")
        if windowless.is_file():
            exe = windowless
    return [str(exe), "-m", "r3mes_desktop", MINIMISED_FLAG]


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise AutostartError(f"could not write {path}: {exc.strerror or exc}") from exc


def _remove(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        raise AutostartError(f"could not remove {path}: {exc.strerror or exc}") from exc


# -- XDG (Linux, BSD) ----------------------------------------------------------------------

_EXEC_RESERVED = set(" \t\n\"'\\><~|&;$*?#()`")


def _exec_quote(arg: str) -> str:
    """One Exec argument per the Desktop Entry spec ("The Exec key").

    Arguments holding reserved characters go in double quotes, inside which `"`, `` ` ``,
    `$` and `\\` take a backslash; `%` is doubled (field codes). The key's value is then a
    `string`, whose own escape rule doubles every backslash once more.
    """
    if not arg:
        quoted = '""'
    elif any(c in _EXEC_RESERVED for c in arg):
        inner = "".join("\\" + c if c in '"`$\\' else c for c in arg)
        quoted = f'"{inner}"'
    else:
        quoted = arg
    return quoted.replace("%", "%%").replace("\\", "\\\\")


def desktop_entry(command: Sequence[str]) -> str:
    """The autostart Desktop Entry for `command` (a list of arguments, unquoted)."""
    exec_line = " ".join(_exec_quote(a) for a in command)
    lines = [
        "[Desktop Entry]",
        "Type=Application",
        "Version=1.0",
        f"Name={APP_NAME}",
        "Comment=Start the R3MES miner at login, minimised to the tray",
        f"Exec={exec_line}",
        f"Icon={APP_ID}",
        "Terminal=false",
        "X-GNOME-Autostart-enabled=true",
        f"StartupWMClass={APP_ID}",
    ]
    if os.path.isabs(command[0]):
        # The session manager skips the entry if the launcher was uninstalled.
        lines.insert(6, "TryExec=" + command[0].replace("\\", "\\\\"))
    return "\n".join(lines) + "\n"


def xdg_autostart_dir(env: Mapping[str, str] | None = None, home: Path | None = None) -> Path:
    """$XDG_CONFIG_HOME/autostart; the spec says a relative XDG_CONFIG_HOME is ignored."""
    environ = os.environ if env is None else env
    config = environ.get("XDG_CONFIG_HOME", "")
    base = Path(config) if config and os.path.isabs(config) else (home or Path.home()) / ".config"
    return base / "autostart"


class XdgAutostart:
    def __init__(self, directory: Path, command: Sequence[str]) -> None:
        self.path = directory / f"{APP_ID}.desktop"
        self.command = list(command)

    @property
    def where(self) -> str:
        return str(self.path)

    def is_enabled(self) -> bool:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return False
        except (OSError, UnicodeDecodeError) as exc:
            cause = exc.strerror if isinstance(exc, OSError) else exc
            raise AutostartError(f"could not read {self.path}: {cause}") from exc
        keys = _desktop_keys(text)
        return (
            keys.get("Hidden", "false").lower() != "true"
            and keys.get("X-GNOME-Autostart-enabled", "true").lower() != "false"
        )

    def set_enabled(self, enabled: bool) -> None:
        if enabled:
            _atomic_write(self.path, desktop_entry(self.command).encode("utf-8"))
        else:
            _remove(self.path)


def _desktop_keys(text: str) -> dict[str, str]:
    """Keys of the [Desktop Entry] group (other groups, comments and blanks skipped)."""
    keys: dict[str, str] = {}
    group = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            group = line[1:-1]
        elif group == "Desktop Entry" and "=" in line:
            key, _, value = line.partition("=")
            keys[key.strip()] = value.strip()
    return keys


# -- Windows -------------------------------------------------------------------------------


class WindowsRunKey:
    """Our value under HKCU\\...\\Run; `winreg` is the module (or a stand-in in tests)."""

    def __init__(self, command: Sequence[str], *, winreg: Any = None) -> None:
        if winreg is None:  # pragma: no cover - only importable on Windows
            import winreg as real_winreg

            winreg = real_winreg
        self._reg = winreg
        self.value = subprocess.list2cmdline(list(command))
        self.name = APP_NAME

    @property
    def where(self) -> str:
        return f"HKEY_CURRENT_USER\\{RUN_KEY}\\{self.name}"

    def is_enabled(self) -> bool:
        reg = self._reg
        try:
            with reg.OpenKey(reg.HKEY_CURRENT_USER, RUN_KEY, 0, reg.KEY_QUERY_VALUE) as key:
                value, _kind = reg.QueryValueEx(key, self.name)
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise AutostartError(f"could not read {self.where}: {exc.strerror or exc}") from exc
        return bool(value)

    def set_enabled(self, enabled: bool) -> None:
        reg = self._reg
        try:
            if enabled:
                with reg.CreateKeyEx(reg.HKEY_CURRENT_USER, RUN_KEY, 0, reg.KEY_SET_VALUE) as key:
                    reg.SetValueEx(key, self.name, 0, reg.REG_SZ, self.value)
                return
            with reg.OpenKey(reg.HKEY_CURRENT_USER, RUN_KEY, 0, reg.KEY_SET_VALUE) as key:
                reg.DeleteValue(key, self.name)
        except FileNotFoundError:
            if enabled:
                raise AutostartError(f"could not write {self.where}: key not found") from None
        except OSError as exc:
            action = "write" if enabled else "remove"
            raise AutostartError(f"could not {action} {self.where}: {exc.strerror or exc}") from exc


# -- macOS ---------------------------------------------------------------------------------


class LaunchAgent:
    """~/Library/LaunchAgents/<label>.plist: launchd starts it in the user's GUI session."""

    def __init__(self, home: Path, command: Sequence[str]) -> None:
        self.path = home / "Library" / "LaunchAgents" / f"{LAUNCH_AGENT_LABEL}.plist"
        self.command = list(command)

    @property
    def where(self) -> str:
        return str(self.path)

    def plist(self) -> dict[str, Any]:
        return {
            "Label": LAUNCH_AGENT_LABEL,
            "ProgramArguments": self.command,
            "RunAtLoad": True,
            "LimitLoadToSessionType": "Aqua",  # the GUI login, not ssh sessions
            "ProcessType": "Interactive",
        }

    def is_enabled(self) -> bool:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise AutostartError(f"could not read {self.path}: {exc.strerror or exc}") from exc
        try:
            content = plistlib.loads(data)
        except Exception as exc:  # plistlib raises several types on a damaged file
            raise AutostartError(f"could not read {self.path}: {exc}") from exc
        return isinstance(content, dict) and content.get("RunAtLoad") is True

    def set_enabled(self, enabled: bool) -> None:
        if enabled:
            _atomic_write(self.path, plistlib.dumps(self.plist()))
        else:
            _remove(self.path)


def autostart(
    *,
    platform: str | None = None,
    env: Mapping[str, str] | None = None,
    home: Path | None = None,
    command: Sequence[str] | None = None,
    winreg: Any = None,
) -> Autostart:
    """The autostart entry for this platform (arguments are for tests)."""
    plat = platform or sys.platform
    cmd = list(command) if command is not None else launch_command(platform=plat)
    if plat == "win32":
        return WindowsRunKey(cmd, winreg=winreg)
    if plat == "darwin":
        return LaunchAgent(home or Path.home(), cmd)
    return XdgAutostart(xdg_autostart_dir(env, home), cmd)
