"""Reading passwords and keys without putting them on the command line.

argv is visible to every user via `ps` and lands in shell history, so secrets come from a
file, stdin or an interactive prompt only. Whatever is read is registered with the
redactor before anything else can log it.
"""

from __future__ import annotations

import getpass
import sys
from pathlib import Path

from r3mes_desktop.cli.exit_codes import CliError, ExitCode
from r3mes_desktop.support.redact import register_secret


def read_secret_file(path: Path, what: str) -> str:
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise CliError(f"{what} file {path}: {exc.strerror}", ExitCode.USAGE) from None
    if not text:
        raise CliError(f"{what} file {path} is empty", ExitCode.USAGE)
    register_secret(text)
    return text


def password(
    *, file: Path | None, from_stdin: bool, confirm: bool, prompt: str = "Keystore password: "
) -> str:
    if file is not None:
        return read_secret_file(file, "password")
    if from_stdin:
        value = sys.stdin.readline().rstrip("\r\n")
        if not value:
            raise CliError("no password on stdin", ExitCode.USAGE)
        register_secret(value)
        return value
    if not sys.stdin.isatty():
        raise CliError(
            "no terminal to ask for the password: use --password-file or --password-stdin",
            ExitCode.USAGE,
        )
    value = getpass.getpass(prompt)
    register_secret(value)
    if confirm and getpass.getpass("Repeat password: ") != value:
        raise CliError("the passwords do not match", ExitCode.USAGE)
    if not value:
        raise CliError("empty password", ExitCode.USAGE)
    return value


def private_key(*, file: Path | None) -> str:
    if file is not None:
        return read_secret_file(file, "private key")
    if not sys.stdin.isatty():
        raise CliError("no terminal to ask for the key: use --key-file", ExitCode.USAGE)
    value = getpass.getpass("Private key (64 hex digits): ").strip()
    register_secret(value)
    return value
