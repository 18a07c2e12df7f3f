"""keys create/import/address with secrets from files only; diagnostics zip without secrets."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from r3mes_desktop.cli.exit_codes import ExitCode
from r3mes_desktop.support.config import paths
from r3mes_desktop.support.redact import SECRETS
from tests.unit.cli.conftest import Filled, RunCli

FAST = ("--scrypt-n", "16384")
KEY = "0x4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"
KEY_ADDRESS = "0x2c7536E3605D9C16a7a3D7b1898e529396a65c23"


@pytest.fixture(autouse=True)
def _forget() -> None:
    yield
    SECRETS.forget_all()


@pytest.fixture
def pw_file(tmp_path: Path) -> Path:
    path = tmp_path / "pw"
    path.write_text("correct horse battery staple\n")
    return path


def test_create_then_address_then_check(cli: RunCli, pw_file: Path, tmp_path: Path) -> None:
    code, out, _ = cli("keys", "create", "--password-file", str(pw_file), *FAST, "--json")
    assert code == ExitCode.OK
    keystore = Path(out["keystore"])
    assert keystore.parent == paths().data_dir / "keys"
    assert (keystore.stat().st_mode & 0o777) == 0o600
    code, again, _ = cli("keys", "address", "--json")
    assert code == 0 and again["address"] == out["address"] and again["unlocked"] is False
    code, text, _ = cli("keys", "address", "--check", "--password-file", str(pw_file))
    assert code == 0 and text.strip() == out["address"]
    wrong = tmp_path / "wrong"
    wrong.write_text("nope\n")
    code, _, err = cli("keys", "address", "--check", "--password-file", str(wrong))
    assert code == ExitCode.AUTH and "wrong keystore password" in err
    code, _, err = cli("keys", "create", "--password-file", str(pw_file), *FAST)
    assert code == ExitCode.USAGE and "already exists" in err


def test_import_from_key_file_never_echoes_the_key(
    cli: RunCli, pw_file: Path, tmp_path: Path
) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(KEY + "\n")
    code, out, err = cli(
        "keys",
        "import",
        "--key-file",
        str(key_file),
        "--password-file",
        str(pw_file),
        *FAST,
        "--json",
    )
    assert code == 0 and out["address"] == KEY_ADDRESS
    assert KEY[2:] not in str(out) + err


def test_import_rejects_a_bad_key_naming_the_field(
    cli: RunCli, pw_file: Path, tmp_path: Path
) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("0x1234\n")
    code, _, err = cli(
        "keys", "import", "--key-file", str(key_file), "--password-file", str(pw_file), *FAST
    )
    assert code == ExitCode.USAGE and "private_key: expected 64 hexadecimal digits" in err
    assert "0x1234" not in err


def test_address_without_keystore_is_an_auth_error(cli: RunCli) -> None:
    code, out, _ = cli("keys", "address", "--json")
    assert code == ExitCode.AUTH and out["error"]["kind"] == "auth"


def test_secrets_are_never_taken_from_argv(cli: RunCli) -> None:
    code, _, err = cli("keys", "create", "--password", "x")
    assert code == ExitCode.USAGE and "unrecognized arguments" in err
    code, _, err = cli("keys", "create", *FAST)  # no tty under pytest: no prompt possible
    assert code == ExitCode.USAGE and "--password-file" in err


def test_diagnostics_zip(journal: Filled, cli: RunCli, tmp_path: Path, pw_file: Path) -> None:
    cli("keys", "create", "--password-file", str(pw_file), *FAST)
    out_zip = tmp_path / "diag.zip"
    code, out, _ = cli("diagnostics", "-o", str(out_zip), "--json")
    assert code == 0 and out["path"] == str(out_zip) and out["bytes"] > 0
    with zipfile.ZipFile(out_zip) as zf:
        names = set(zf.namelist())
        blob = "\n".join(zf.read(n).decode() for n in names)
    assert {
        "settings.json",
        "stats.json",
        "error_analysis.json",
        "journal_integrity.json",
        "recent_transactions.json",
        "versions.json",
        "system.json",
    } <= names
    assert any(n.startswith("logs/") for n in names)
    assert "correct horse battery staple" not in blob
    assert journal.committed in blob
