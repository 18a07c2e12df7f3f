"""Start at login: the XDG entry for real on this machine, Windows and macOS with stand-ins."""

from __future__ import annotations

import os
import plistlib
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from r3mes_desktop.support.autostart import (
    APP_NAME,
    RUN_KEY,
    AutostartError,
    LaunchAgent,
    WindowsRunKey,
    XdgAutostart,
    autostart,
    desktop_entry,
    launch_command,
)

CMD = ["/opt/r3mes/bin/r3mes-desktop", "--minimised"]


def _xdg(tmp_path: Path, command: list[str] = CMD) -> XdgAutostart:
    entry = autostart(platform="linux", env={"XDG_CONFIG_HOME": str(tmp_path)}, command=command)
    assert isinstance(entry, XdgAutostart)
    return entry


def test_xdg_entry_written_where_the_spec_says_and_removed(tmp_path: Path) -> None:
    entry = _xdg(tmp_path)
    assert entry.where == str(tmp_path / "autostart" / "r3mes-desktop.desktop")
    assert not entry.is_enabled()
    entry.set_enabled(True)
    assert entry.is_enabled()
    text = Path(entry.where).read_text(encoding="utf-8")
    assert "Exec=/opt/r3mes/bin/r3mes-desktop --minimised\n" in text
    assert "TryExec=/opt/r3mes/bin/r3mes-desktop\n" in text
    assert [p.name for p in (tmp_path / "autostart").iterdir()] == ["r3mes-desktop.desktop"]
    entry.set_enabled(False)
    assert not entry.is_enabled()
    entry.set_enabled(False)  # already off: nothing to do, no error


def test_xdg_disabling_leaves_other_entries_alone(tmp_path: Path) -> None:
    other = tmp_path / "autostart" / "someone-else.desktop"
    other.parent.mkdir()
    other.write_text("[Desktop Entry]\nType=Application\nName=x\nExec=x\n", encoding="utf-8")
    entry = _xdg(tmp_path)
    entry.set_enabled(True)
    entry.set_enabled(False)
    assert other.exists()
    assert sorted(p.name for p in other.parent.iterdir()) == ["someone-else.desktop"]


def test_xdg_default_dir_and_relative_config_home_ignored(tmp_path: Path) -> None:
    for env in ({}, {"XDG_CONFIG_HOME": "relative/dir"}):
        entry = autostart(platform="linux", env=env, home=tmp_path, command=CMD)
        assert entry.where == str(tmp_path / ".config" / "autostart" / "r3mes-desktop.desktop")


@pytest.mark.parametrize("off", ["Hidden=true", "X-GNOME-Autostart-enabled=false"])
def test_xdg_entry_switched_off_by_the_desktop_reads_as_off(tmp_path: Path, off: str) -> None:
    entry = _xdg(tmp_path)
    entry.set_enabled(True)
    path = Path(entry.where)
    path.write_text(path.read_text(encoding="utf-8") + off + "\n", encoding="utf-8")
    assert not entry.is_enabled()
    entry.set_enabled(True)  # switching it on again rewrites our entry
    assert entry.is_enabled()


def _exec_args(value: str) -> list[str]:
    """Read an Exec value as the Desktop Entry spec says a launcher does."""
    text = value.replace("\\\\", "\\")  # the `string` level: \\ is one backslash
    args: list[str] = []
    current: list[str] | None = None
    quoted = False
    i = 0
    while i < len(text):
        c = text[i]
        if c == "%":
            assert text[i + 1] == "%", "a field code in our Exec line"
            i += 1
        elif quoted and c == "\\":
            assert text[i + 1] in '"`$\\', "an escape the spec does not allow"
            i += 1
            c = text[i]
        elif c == '"':
            quoted = not quoted
            current = current or []
            i += 1
            continue
        elif c == " " and not quoted:
            if current is not None:
                args.append("".join(current))
            current = None
            i += 1
            continue
        current = (current or []) + [text[i]]
        i += 1
    assert not quoted
    if current is not None:
        args.append("".join(current))
    return args


def test_xdg_exec_quoting_round_trips_through_the_spec(tmp_path: Path) -> None:
    """Spaces, quotes, $ and % in the path survive the two escaping levels of the spec."""
    odd = ["/home/a b/it's $HOME/100%/py\\thon", "-m", "r3mes_desktop", "--minimised"]
    text = desktop_entry(odd)
    line = next(v for v in text.splitlines() if v.startswith("Exec="))[len("Exec=") :]
    assert _exec_args(line) == odd
    assert _exec_args(desktop_entry(CMD).split("Exec=")[1].split("\n")[0]) == CMD


def test_xdg_entry_passes_desktop_file_validate(tmp_path: Path) -> None:
    validator = shutil.which("desktop-file-validate")
    if validator is None:
        pytest.skip("desktop-file-validate is not installed (package desktop-file-utils)")
    odd = ["/home/a b/it's $HOME/100%/python", "-m", "r3mes_desktop", "--minimised"]
    for command in (CMD, [sys.executable, "-m", "r3mes_desktop", "--minimised"], odd):
        entry = _xdg(tmp_path, command)
        entry.set_enabled(True)
        result = subprocess.run(
            [validator, entry.where], capture_output=True, text=True, check=False
        )
        assert result.returncode == 0 and not result.stdout.strip(), result.stdout


def test_xdg_write_error_names_the_path_and_cause(tmp_path: Path) -> None:
    (tmp_path / "autostart").write_text("a file where the directory should be")
    entry = _xdg(tmp_path)
    with pytest.raises(AutostartError) as err:
        entry.set_enabled(True)
    assert str(tmp_path / "autostart" / "r3mes-desktop.desktop") in str(err.value)
    assert "Not a directory" in str(err.value) or "exists" in str(err.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads and writes any file")
def test_xdg_unreadable_entry_error_names_the_path(tmp_path: Path) -> None:
    entry = _xdg(tmp_path)
    entry.set_enabled(True)
    os.chmod(entry.where, 0)
    try:
        with pytest.raises(AutostartError, match=r"could not read .*Permission denied"):
            entry.is_enabled()
    finally:
        os.chmod(entry.where, 0o644)


def test_launch_command_prefers_the_bundle_then_the_installed_script(tmp_path: Path) -> None:
    python = tmp_path / "bin" / "python3"
    python.parent.mkdir()
    python.touch()
    assert launch_command(executable=str(python), frozen=True) == [str(python), "--minimised"]
    assert launch_command(executable=str(python), frozen=False, platform="linux") == [
        str(python),
        "-m",
        "r3mes_desktop",
        "--minimised",
    ]
    script = tmp_path / "bin" / "r3mes-desktop"
    script.touch()
    assert launch_command(executable=str(python), frozen=False, platform="linux") == [
        str(script),
        "--minimised",
    ]


def test_launch_command_on_windows_avoids_a_console(tmp_path: Path) -> None:
    python = tmp_path / "python.exe"
    python.touch()
    (tmp_path / "pythonw.exe").touch()
    command = launch_command(executable=str(python), frozen=False, platform="win32")
    assert command == [str(tmp_path / "pythonw.exe"), "-m", "r3mes_desktop", "--minimised"]


class _Key:
    def __init__(self, values: dict[str, tuple[Any, int]]) -> None:
        self.values = values

    def __enter__(self) -> _Key:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


class FakeWinreg:
    """The part of `winreg` the Run key uses, over a dict of keys → values."""

    HKEY_CURRENT_USER = "HKCU"
    KEY_QUERY_VALUE = 1
    KEY_SET_VALUE = 2
    REG_SZ = 1

    def __init__(self) -> None:
        self.keys: dict[tuple[str, str], dict[str, tuple[Any, int]]] = {}
        self.denied = False

    def _check(self) -> None:
        if self.denied:
            raise PermissionError(13, "Access is denied")

    def OpenKey(self, root: str, sub: str, reserved: int, access: int) -> _Key:
        self._check()
        if (root, sub) not in self.keys:
            raise FileNotFoundError(2, "The system cannot find the file specified")
        return _Key(self.keys[(root, sub)])

    def CreateKeyEx(self, root: str, sub: str, reserved: int, access: int) -> _Key:
        self._check()
        return _Key(self.keys.setdefault((root, sub), {}))

    def QueryValueEx(self, key: _Key, name: str) -> tuple[Any, int]:
        if name not in key.values:
            raise FileNotFoundError(2, "The system cannot find the file specified")
        return key.values[name]

    def SetValueEx(self, key: _Key, name: str, reserved: int, kind: int, value: Any) -> None:
        key.values[name] = (value, kind)

    def DeleteValue(self, key: _Key, name: str) -> None:
        if name not in key.values:
            raise FileNotFoundError(2, "The system cannot find the file specified")
        del key.values[name]


def test_windows_run_value_written_quoted_and_removed_alone() -> None:
    reg = FakeWinreg()
    reg.keys[("HKCU", RUN_KEY)] = {"OneDrive": ("C:\\OneDrive.exe /background", 1)}
    command = ["C:\\Program Files\\R3MES\\r3mes-desktop.exe", "--minimised"]
    entry = autostart(platform="win32", command=command, winreg=reg)
    assert isinstance(entry, WindowsRunKey)
    assert entry.where.endswith("\\CurrentVersion\\Run\\R3MES Desktop")
    assert not entry.is_enabled()
    entry.set_enabled(True)
    assert entry.is_enabled()
    value = reg.keys[("HKCU", RUN_KEY)][APP_NAME]
    assert value == ('"C:\\Program Files\\R3MES\\r3mes-desktop.exe" --minimised', reg.REG_SZ)
    entry.set_enabled(False)
    assert not entry.is_enabled()
    assert reg.keys[("HKCU", RUN_KEY)] == {"OneDrive": ("C:\\OneDrive.exe /background", 1)}
    entry.set_enabled(False)


def test_windows_missing_run_key_is_off_and_is_created_on_enable() -> None:
    reg = FakeWinreg()
    entry = WindowsRunKey(["r3mes-desktop.exe", "--minimised"], winreg=reg)
    assert not entry.is_enabled()
    entry.set_enabled(False)
    entry.set_enabled(True)
    assert entry.is_enabled()


def test_windows_access_denied_names_the_key() -> None:
    reg = FakeWinreg()
    reg.denied = True
    entry = WindowsRunKey(["r3mes-desktop.exe"], winreg=reg)
    with pytest.raises(AutostartError, match=r"could not write HKEY_CURRENT_USER\\.*Access is"):
        entry.set_enabled(True)
    with pytest.raises(AutostartError, match=r"could not read .*Access is denied"):
        entry.is_enabled()


def test_macos_launch_agent_plist(tmp_path: Path) -> None:
    command = ["/Applications/R3MES Desktop.app/Contents/MacOS/r3mes-desktop", "--minimised"]
    entry = autostart(platform="darwin", home=tmp_path, command=command)
    assert isinstance(entry, LaunchAgent)
    path = tmp_path / "Library" / "LaunchAgents" / "org.r3mes.desktop.plist"
    assert entry.where == str(path)
    assert not entry.is_enabled()
    entry.set_enabled(True)
    assert entry.is_enabled()
    content = plistlib.loads(path.read_bytes())
    assert content["Label"] == "org.r3mes.desktop"
    assert content["ProgramArguments"] == command
    assert content["RunAtLoad"] is True
    neighbour = path.with_name("com.example.other.plist")
    neighbour.write_bytes(plistlib.dumps({"Label": "com.example.other"}))
    entry.set_enabled(False)
    assert not path.exists() and neighbour.exists()


def test_macos_damaged_plist_error_names_the_path(tmp_path: Path) -> None:
    entry = LaunchAgent(tmp_path, ["x"])
    Path(entry.where).parent.mkdir(parents=True)
    Path(entry.where).write_bytes(b"not a plist")
    with pytest.raises(AutostartError, match=r"could not read .*org.r3mes.desktop.plist"):
        entry.is_enabled()


def test_a_failed_write_leaves_no_temporary_file(tmp_path: Path, monkeypatch: Any) -> None:
    entry = _xdg(tmp_path)

    def refuse(src: Any, dst: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(AutostartError, match="No space left on device"):
        entry.set_enabled(True)
    assert list((tmp_path / "autostart").iterdir()) == []


def test_this_platform_gets_an_entry() -> None:
    entry = autostart(command=["x"], winreg=SimpleNamespace() if sys.platform == "win32" else None)
    assert entry.where


def test_the_entry_for_this_installation_starts_it_with_a_known_flag(tmp_path: Path) -> None:
    """The default command (this venv's launcher) run as the session manager would, plus
    --help: it exists, and the app accepts --minimised (argparse exits before any Qt)."""
    entry = autostart(platform="linux", env={"XDG_CONFIG_HOME": str(tmp_path)})
    entry.set_enabled(True)
    text = Path(entry.where).read_text(encoding="utf-8")
    line = next(v for v in text.splitlines() if v.startswith("Exec="))[len("Exec=") :]
    command = _exec_args(line)
    assert command[-1] == "--minimised"
    result = subprocess.run(
        [*command, "--help"], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "--minimised" in result.stdout
