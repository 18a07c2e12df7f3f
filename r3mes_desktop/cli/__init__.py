"""`r3mes-miner`: the headless miner for rigs (same core as the GUI, no Qt).

Exit codes are documented in `r3mes_desktop.cli.exit_codes` and `r3mes-miner --help`.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

from r3mes_desktop.cli import arg_types, commands_keys, commands_read
from r3mes_desktop.cli.context import CliContext
from r3mes_desktop.cli.exit_codes import CliError, ExitCode, exit_code_for
from r3mes_desktop.cli.output import Output
from r3mes_desktop.support.redact import redact

log = logging.getLogger("r3mes_desktop.cli")

Command = Callable[[CliContext, argparse.Namespace], Coroutine[Any, Any, int]]

EPILOG = """exit codes:
  0 ok, 1 error, 2 usage, 3 config invalid, 4 auth/keystore, 5 service unreachable,
  6 not found, 7 busy (another miner uses this data dir), 8 check failed (verify, check, join),
  130 interrupted (SIGINT), 143 terminated (SIGTERM) - both after a clean shutdown"""


def _password_options(p: argparse.ArgumentParser) -> None:
    group = p.add_mutually_exclusive_group()
    group.add_argument("--password-file", type=Path, help="read the keystore password from a file")
    group.add_argument(
        "--password-stdin", action="store_true", help="read the password from the first stdin line"
    )


def _common_options(p: argparse.ArgumentParser, *, defaults: bool) -> None:
    """--json/-v/-q accepted before or after the command (`r3mes-miner stats --json`)."""
    keep = {} if defaults else {"default": argparse.SUPPRESS}
    p.add_argument(
        "--json",
        action="store_true",
        help="machine-readable output on stdout",
        **({"default": False} if defaults else keep),
    )
    p.add_argument(
        "-v",
        "--verbose",
        action="count",
        help="more log output (-vv: debug)",
        **({"default": 0} if defaults else keep),
    )
    p.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="no progress display",
        **({"default": False} if defaults else keep),
    )


class _Subparsers:
    """add_parser() that gives every command the common options."""

    def __init__(self, action: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
        self.action = action

    def add_parser(self, name: str, **kwargs: object) -> argparse.ArgumentParser:
        # No abbreviations: `--password` must not silently mean `--password-file`.
        p = self.action.add_parser(name, allow_abbrev=False, **kwargs)  # type: ignore[arg-type]
        _common_options(p, defaults=False)
        return p


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="r3mes-miner",
        allow_abbrev=False,
        description="Headless R3MES miner: mine, inspect and maintain the local journal.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common_options(parser, defaults=True)
    sub = _Subparsers(parser.add_subparsers(dest="command", metavar="COMMAND", required=True))

    _add_run_commands(sub)

    p = sub.add_parser("status", help="miner and active transactions, or one transaction")
    p.add_argument("transaction_id", nargs="?")
    p.set_defaults(func=commands_read.cmd_status)

    p = sub.add_parser("stats", help="statistics from the journal (the same keys as /stats)")
    p.add_argument("--window", type=arg_types.positive_float, default=3600.0, help="seconds (3600)")
    p.add_argument("--errors", action="store_true", help="include the error analysis")
    p.set_defaults(func=commands_read.cmd_stats)

    p = sub.add_parser("transactions", help="list transactions, newest first")
    p.add_argument("--state", action="append", help="only this state (repeatable)")
    p.add_argument("--limit", type=arg_types.count, default=50)
    p.set_defaults(func=commands_read.cmd_transactions)

    p = sub.add_parser("diagnostics", help="write a redacted diagnostics zip for a bug report")
    p.add_argument("-o", "--output", type=Path, help="a .zip path or a directory (default: .)")
    p.set_defaults(func=commands_read.cmd_diagnostics)

    keys = _Subparsers(
        sub.add_parser("keys", help="the miner's encrypted keystore").add_subparsers(
            dest="keys_command", metavar="ACTION", required=True
        )
    )
    for name, func, helptext in (
        ("create", commands_keys.cmd_keys_create, "generate a new key"),
        ("import", commands_keys.cmd_keys_import, "import a hex private key"),
        ("address", commands_keys.cmd_keys_address, "print the address"),
    ):
        p = keys.add_parser(name, help=helptext)
        _password_options(p)
        p.add_argument("--scrypt-n", type=int, default=0, help=argparse.SUPPRESS)
        if name == "import":
            p.add_argument("--key-file", type=Path, help="file holding the 64-hex private key")
        if name == "address":
            p.add_argument("--check", action="store_true", help="also check the password")
        p.set_defaults(func=func)
    return parser


def _add_run_commands(sub: _Subparsers) -> None:
    """The commands that open the runtime, in the order `--help` lists them."""
    from r3mes_desktop.cli import commands_join, commands_run, commands_verify

    commands_join.add_parsers(sub)
    commands_run.add_run_parser(sub)
    commands_verify.add_parsers(sub)
    commands_run.add_maintenance_parsers(sub)


def _configure_logging(args: argparse.Namespace) -> None:
    from r3mes_desktop.support.logs import setup_logging

    console_level = logging.WARNING - 10 * min(args.verbose, 2)
    try:
        setup_logging(
            level=logging.INFO if args.verbose < 2 else logging.DEBUG, console_level=console_level
        )
    except OSError as exc:  # an unwritable log dir must not stop `status`
        setup_logging(level=console_level, console_level=console_level, file=False)
        log.warning("file logging disabled: %s", exc)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: 0 for --help, 2 for usage errors
        return int(exc.code or 0)
    _configure_logging(args)
    ctx = CliContext(out=Output(as_json=args.json))
    func: Command = args.func
    try:
        return int(asyncio.run(func(ctx, args)))
    except KeyboardInterrupt:
        return ExitCode.INTERRUPTED
    except Exception as exc:
        code = exit_code_for(exc)
        message = exc.message if isinstance(exc, CliError) else f"{exc}"
        if code is ExitCode.ERROR and not isinstance(exc, CliError):
            log.error("%s failed", args.command, exc_info=exc)
        _report_error(ctx, code, redact(message))
        return code
    finally:
        from r3mes_desktop.support.logs import teardown_logging

        teardown_logging()


def _report_error(ctx: CliContext, code: ExitCode, message: str) -> None:
    if ctx.out.as_json:
        import json

        sys.stdout.write(
            json.dumps(
                {"error": {"code": int(code), "kind": code.name.lower(), "message": message}}
            )
            + "\n"
        )
    sys.stderr.write(f"r3mes-miner: error: {message}\n")
