"""Exit codes scripts can branch on, and the mapping from our error classes to them.

0   ok
1   error: the operation failed (see the message; details in the log)
2   usage: bad command line or argument value
3   config: settings.toml / R3MES_* environment invalid, or the configured chain RPC is on
    another chain id or has no contract code at contract_address
4   auth: keystore missing, wrong password, key rejected by the chain
5   unavailable: a service (chain RPC, IPFS, task API) unreachable or its breaker open
6   not found: no such transaction or dead letter
7   busy: another r3mes miner (CLI or GUI) is using this data directory
8   check failed: `verify` found a mismatch, or the journal failed its integrity check;
    `check`/`join`: a required pre-flight check failed (join wrote nothing)
130 interrupted (SIGINT), after a clean shutdown
143 terminated (SIGTERM), after a clean shutdown
"""

from __future__ import annotations

from enum import IntEnum

from r3mes_desktop.core.errors import ErrorCategory, R3mesError, classify


class ExitCode(IntEnum):
    OK = 0
    ERROR = 1
    USAGE = 2
    CONFIG = 3
    AUTH = 4
    UNAVAILABLE = 5
    NOT_FOUND = 6
    BUSY = 7
    CHECK_FAILED = 8
    INTERRUPTED = 130
    TERMINATED = 143


class CliError(Exception):
    """An error with the exit code it should end the process with."""

    def __init__(self, message: str, code: ExitCode = ExitCode.ERROR) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


_BY_CATEGORY: dict[ErrorCategory, ExitCode] = {
    ErrorCategory.NETWORK: ExitCode.UNAVAILABLE,
    ErrorCategory.AUTHENTICATION: ExitCode.AUTH,
    ErrorCategory.VALIDATION: ExitCode.USAGE,
    ErrorCategory.RESOURCE: ExitCode.ERROR,
    ErrorCategory.PERMANENT: ExitCode.ERROR,
    ErrorCategory.UNKNOWN: ExitCode.ERROR,
}


def exit_code_for(exc: BaseException) -> ExitCode:
    if isinstance(exc, CliError):
        return exc.code
    if type(exc).__name__ == "SettingsError":
        return ExitCode.CONFIG
    if type(exc).__name__ == "MinerBusyError":
        return ExitCode.BUSY
    if isinstance(exc, R3mesError) or classify(exc) is not ErrorCategory.UNKNOWN:
        return _BY_CATEGORY[classify(exc)]
    return ExitCode.ERROR
