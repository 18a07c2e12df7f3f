"""Exit codes: the documented table, and the mapping from our error classes."""

from __future__ import annotations

from pathlib import Path

import pytest

from r3mes_desktop.app.instance_lock import MinerBusyError
from r3mes_desktop.cli.exit_codes import CliError, ExitCode, exit_code_for
from r3mes_desktop.core.errors import (
    AuthenticationError,
    CircuitOpenError,
    NetworkError,
    PermanentError,
    ValidationError,
)
from r3mes_desktop.support.config import SettingsError
from tests.unit.cli.conftest import RunCli


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (NetworkError("rpc down"), ExitCode.UNAVAILABLE),
        (CircuitOpenError("open"), ExitCode.UNAVAILABLE),
        (ConnectionRefusedError(111, "refused"), ExitCode.UNAVAILABLE),
        (AuthenticationError("wrong password"), ExitCode.AUTH),
        (ValidationError("bad field"), ExitCode.USAGE),
        (PermanentError("gone"), ExitCode.ERROR),
        (SettingsError({"pow_difficulty": "out of range"}), ExitCode.CONFIG),
        (MinerBusyError("busy", "123"), ExitCode.BUSY),
        (CliError("x", ExitCode.NOT_FOUND), ExitCode.NOT_FOUND),
        (RuntimeError("bug"), ExitCode.ERROR),
    ],
)
def test_mapping(exc: BaseException, code: ExitCode) -> None:
    assert exit_code_for(exc) is code


def test_invalid_settings_exit_3_naming_the_field(
    cli: RunCli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("R3MES_POW_DIFFICULTY", "40")
    code, out, err = cli("run", "--json")
    assert code == ExitCode.CONFIG
    assert out["error"]["kind"] == "config"
    assert "pow_difficulty (R3MES_POW_DIFFICULTY) = 40" in err and "accepted 16–32" in err


def test_run_argument_ranges(cli: RunCli) -> None:
    code, _, err = cli("run", "--rounds", "-1")
    assert code == ExitCode.USAGE and "--rounds must be >= 0" in err
    code, _, err = cli("run", "--graceful", "-5")
    assert code == ExitCode.USAGE and "--graceful must be >= 0" in err


async def test_runtime_password_prompt_reads_the_file(tmp_path: Path) -> None:
    import argparse

    from r3mes_desktop.cli.commands_run import _password_prompt
    from r3mes_desktop.support.redact import SECRETS, redact

    path = tmp_path / "pw"
    path.write_text("rig-password-123\n")
    prompt = _password_prompt(argparse.Namespace(password_file=path, password_stdin=False))
    try:
        assert await prompt("0xabc") == "rig-password-123"
        assert "rig-password-123" not in redact("unlocking with rig-password-123")
    finally:
        SECRETS.forget_all()
    missing = _password_prompt(argparse.Namespace(password_file=None, password_stdin=False))
    with pytest.raises(CliError) as info:  # no terminal under pytest
        await missing("0xabc")
    assert info.value.code is ExitCode.USAGE and "--password-file" in info.value.message
