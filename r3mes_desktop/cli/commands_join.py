"""`join` and `check`: joining a network is one step, and a rig can ask whether it is ready.

Neither opens the runtime (no journal, no miner lock): `check` only reads the chain and
IPFS, `join` writes settings.toml, so both work beside a running miner; a running miner
takes the new endpoints on its next start.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from r3mes_desktop.cli import arg_types
from r3mes_desktop.cli.context import CliContext
from r3mes_desktop.cli.exit_codes import CliError, ExitCode

JOIN_HELP = """\
Join a network in one step: read its network file (a path, or an https:// URL; http:// only
from 127.0.0.1), check every field, run the pre-flight (RPC reachable, chain id, contract
code and version, IPFS reachable, gas balance, clock), and write chain_rpc_urls, chain_id,
contract_address, ipfs_api_address and network_name to settings.toml only if the required
checks (RPC, chain id, contract, IPFS) passed, or with --force. Balance and clock only warn.

exit codes: 0 joined; 8 a required check failed (nothing written); 2 the network file is
unusable (the message names the field); 3 the values make invalid settings."""

CHECK_HELP = """\
The pre-flight on the configured network (or on --network FILE|URL): RPC reachable, chain
id, contract code and version, IPFS reachable, gas balance of the miner's key, clock skew
against the latest block. One plain-language line per check; nothing is written.

exit codes: 0 every required check passed (warnings allowed); 8 one failed; 2 the network
file is unusable."""


def add_parsers(sub: Any) -> None:
    p = sub.add_parser(
        "join",
        help="join a network from its network file or URL: check it, then write the settings",
        description=JOIN_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("source", metavar="FILE|URL", help="the operator's network file, or its URL")
    p.add_argument(
        "--force",
        action="store_true",
        help="write the settings even if a required check failed (e.g. the node is down now)",
    )
    _timeout_option(p)
    p.set_defaults(func=cmd_join)

    p = sub.add_parser(
        "check",
        help="pre-flight: can this rig mine on the configured network (or --network)?",
        description=CHECK_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--network", metavar="FILE|URL", help="check this network file instead")
    _timeout_option(p)
    p.set_defaults(func=cmd_check)


def _timeout_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--timeout",
        type=arg_types.positive_float,
        default=5.0,
        metavar="SECONDS",
        help="give each check SECONDS to answer (5)",
    )


async def _account(ctx: CliContext) -> str | None:
    return await asyncio.to_thread(ctx.keystore_address)


async def _network(source: str) -> Any:
    from r3mes_desktop.app.joining import load_network
    from r3mes_desktop.support.network_file import NetworkFileError

    try:
        return await load_network(source)
    except NetworkFileError as exc:
        raise CliError(f"network file: {exc}", ExitCode.USAGE) from None


def _checks_json(checks: list[Any]) -> list[dict[str, Any]]:
    return [c.to_json() for c in checks]


async def cmd_check(ctx: CliContext, args: argparse.Namespace) -> int:
    from r3mes_desktop.app.preflight import (
        Target,
        describe,
        devnet_checks,
        preflight,
        required_passed,
    )

    account = await _account(ctx)
    if args.network:
        network = await _network(args.network)
        target = Target.from_network(network, account=account)
        where = f"network {network.name} (chain {network.chain_id}) from {args.network}"
    else:
        settings = ctx.settings
        target = Target.from_settings(settings, account=account)
        where = (
            "the configured network"
            + (f" {settings.network_name}" if settings.network_name else "")
            + (f" (chain {settings.chain_id})" if settings.chain_id else "")
        )
    if not target.rpc_urls and not args.network:
        checks = devnet_checks()
        where = "the embedded devnet"
    else:
        checks = await preflight(target, timeout_s=args.timeout)
    ok = required_passed(checks)
    ctx.out.emit(
        {"network": where, "ok": ok, "checks": _checks_json(checks)},
        lambda r: f"pre-flight of {where}\n{describe(checks)}",
    )
    return ExitCode.OK if ok else ExitCode.CHECK_FAILED


async def cmd_join(ctx: CliContext, args: argparse.Namespace) -> int:
    from r3mes_desktop.app.joining import join
    from r3mes_desktop.app.preflight import describe
    from r3mes_desktop.support.config import SettingsError
    from r3mes_desktop.support.network_file import NetworkFileError

    try:
        result = await join(
            args.source,
            settings=ctx.settings,
            account=await _account(ctx),
            force=args.force,
            timeout_s=args.timeout,
        )
    except NetworkFileError as exc:
        raise CliError(f"network file: {exc}", ExitCode.USAGE) from None
    except SettingsError as exc:
        raise CliError(f"network file gives invalid settings: {exc}", ExitCode.CONFIG) from None
    network = result.network
    data = {
        "network": network.name,
        "chain_id": network.chain_id,
        "contract_address": network.contract_address,
        "joined": result.joined,
        "forced": bool(args.force and result.joined),
        "settings_file": str(result.path) if result.path else None,
        "written": result.written,
        "overridden_by_environment": result.overridden,
        "checks": _checks_json(result.checks),
    }

    def human(_: Any) -> str:
        lines = [f"network {network.name} (chain {network.chain_id}) from {args.source}"]
        lines.append(describe(result.checks))
        if not result.joined:
            lines.append(
                "nothing written: fix what failed and run join again, or --force to write "
                "the settings anyway"
            )
            return "\n".join(lines)
        lines.append(f"wrote to {result.path}:")
        for name, value in result.written.items():
            shown = ", ".join(value) if isinstance(value, list) else value
            lines.append(f"  {name} = {shown}")
        for name, var in result.overridden.items():
            lines.append(f"  note: {var} is set in the environment and overrides {name}")
        lines.append("the miner uses them from its next start (r3mes-miner run)")
        return "\n".join(lines)

    ctx.out.emit(data, human)
    return ExitCode.OK if result.joined else ExitCode.CHECK_FAILED
