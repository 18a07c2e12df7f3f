"""What `r3mes-operator` and `r3mes-validator` share: keys, connections, the exit path.

The network roles are headless tools like `r3mes-miner`: `--json` output, the same exit
codes (`cli.exit_codes`), and errors that name the bad field. Keys come from a file holding
one hex private key (mode 0600 expected; its content never reaches a log or a message).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import stat
import sys
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount

from r3mes_desktop.adapters.chain.client import ChainClient
from r3mes_desktop.adapters.chain.nonces import NonceStore
from r3mes_desktop.adapters.chain.transport import ChainTransport, FallbackTransport, RpcTransport
from r3mes_desktop.cli.exit_codes import CliError, ExitCode, exit_code_for
from r3mes_desktop.cli.output import Output
from r3mes_desktop.core.errors import ValidationError
from r3mes_desktop.core.resilience import ServiceCaller
from r3mes_desktop.core.resilience.retry import RetryPolicy
from r3mes_desktop.support.network_file import NetworkFile, NetworkFileError
from r3mes_desktop.support.redact import redact

log = logging.getLogger("r3mes_desktop.cli")
Command = Callable[[Output, argparse.Namespace], Coroutine[Any, Any, int]]
EPILOG = """exit codes:
  0 ok, 1 error, 2 usage, 3 config invalid (network file, chain id, no contract),
  4 auth (key file), 5 service unreachable, 8 check failed, 130 interrupted"""


def common_options(p: argparse.ArgumentParser, *, sub: bool = True) -> None:
    """--json/-v before or after the command: a subcommand's copy must not reset the
    top-level value (argparse applies sub-parser defaults last)."""
    json_default: Any = argparse.SUPPRESS if sub else False
    verbose_default: Any = argparse.SUPPRESS if sub else 0
    p.add_argument(
        "--json", action="store_true", default=json_default, help="machine-readable output"
    )
    p.add_argument(
        "-v", "--verbose", action="count", default=verbose_default, help="more log output"
    )


def role_dir(given: Path | None, role: str) -> Path:
    """Where a role keeps its journal and nonce store: the given folder, or the app data
    dir's `<role>/` (one machine may run several roles side by side)."""
    if given is not None:
        return Path(given)
    from r3mes_desktop.support.config import paths

    return paths().data_dir / role


def load_key(path: Path) -> LocalAccount:
    try:
        text = path.read_text(encoding="utf-8").strip()
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError as exc:
        raise CliError(f"key-file: cannot read {path} ({exc.strerror})", ExitCode.AUTH) from None
    if mode & 0o077:
        log.warning("key-file %s is readable by others (mode %o); chmod 600 it", path, mode)
    try:
        account: LocalAccount = Account.from_key(text)
    except Exception:
        raise CliError(
            f"key-file: {path} does not hold a 0x-prefixed 64-hex-digit private key",
            ExitCode.AUTH,
        ) from None
    return account


def load_network(path: Path) -> NetworkFile:
    try:
        return NetworkFile.load(path)
    except NetworkFileError as exc:
        raise CliError(f"network file {path}: {exc}", ExitCode.CONFIG) from None


def transport_for(urls: Sequence[str], *, timeout_s: float = 15.0) -> ChainTransport:
    transports = [RpcTransport(url, timeout_s=timeout_s) for url in urls]
    return transports[0] if len(transports) == 1 else FallbackTransport(transports)


def caller(service: str, *, retries: int = 3) -> ServiceCaller:
    return ServiceCaller(service=service, policy=RetryPolicy(max_retries=retries), timeout_s=60.0)


@contextlib.asynccontextmanager
async def connected(
    network: NetworkFile, account: LocalAccount, state_dir: Path
) -> AsyncIterator[ChainClient]:
    """A chain client for `account` on the network, its nonce store under `state_dir`."""
    transport = transport_for(network.rpc_urls)
    nonces = await asyncio.to_thread(NonceStore, state_dir / "nonces.sqlite")
    try:
        chain: ChainClient = await caller("chain").call(
            "chain.connect",
            ChainClient.connect,
            transport=transport,
            account=account,
            contract_address=network.contract_address,
            nonces=nonces,
            expected_chain_id=network.chain_id,
            poll_s=0.25,  # a role waits for each receipt: a 1 s first look cost a second each
        )
    except BaseException as exc:
        await transport.close()
        await asyncio.to_thread(nonces.close)
        text = getattr(exc, "message", "")
        if isinstance(exc, ValidationError) and text.startswith(("chain_id:", "contract_address:")):
            raise CliError(text, ExitCode.CONFIG) from None
        raise
    try:
        yield chain
    finally:
        await chain.close()
        await asyncio.to_thread(nonces.close)


def run_main(prog: str, parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> int:
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    from r3mes_desktop.support.logs import setup_logging, teardown_logging

    level = logging.DEBUG if args.verbose > 1 else logging.INFO if args.verbose else logging.WARNING
    setup_logging(level=logging.INFO, file=False, console_level=level)
    out = Output(as_json=args.json)
    func: Command = args.func
    try:
        return int(asyncio.run(func(out, args)))
    except KeyboardInterrupt:
        return ExitCode.INTERRUPTED
    except Exception as exc:
        code = exit_code_for(exc)
        message = redact(exc.message if isinstance(exc, CliError) else f"{exc}")
        if code is ExitCode.ERROR and not isinstance(exc, CliError):
            log.error("%s failed", args.command, exc_info=exc)
        if out.as_json:
            import json

            sys.stdout.write(
                json.dumps(
                    {"error": {"code": int(code), "kind": code.name.lower(), "message": message}}
                )
                + "\n"
            )
        sys.stderr.write(f"{prog}: error: {message}\n")
        return code
    finally:
        teardown_logging()
