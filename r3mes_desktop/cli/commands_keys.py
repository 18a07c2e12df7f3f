"""`keys create | import | address`: the miner's encrypted keystore in the data dir."""

from __future__ import annotations

import argparse
import asyncio

from r3mes_desktop.cli import secrets_input
from r3mes_desktop.cli.context import CliContext
from r3mes_desktop.cli.exit_codes import CliError, ExitCode


def _keystore(ctx: CliContext, args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from r3mes_desktop.adapters.chain.keystore import DEFAULT_SCRYPT_N, Keystore

    return Keystore(ctx.keys_dir, scrypt_n=args.scrypt_n or DEFAULT_SCRYPT_N)


def _refuse_overwrite(keystore) -> None:  # type: ignore[no-untyped-def]
    if keystore.exists():
        raise CliError(
            f"a keystore already exists at {keystore.path} (address {keystore.address()}); "
            "move it away first to replace it",
            ExitCode.USAGE,
        )


async def cmd_keys_create(ctx: CliContext, args: argparse.Namespace) -> int:
    keystore = _keystore(ctx, args)
    _refuse_overwrite(keystore)
    password = secrets_input.password(
        file=args.password_file, from_stdin=args.password_stdin, confirm=True
    )
    address = await asyncio.to_thread(keystore.create, password)
    ctx.out.emit(
        {"address": address, "keystore": str(keystore.path)},
        lambda r: f"created keystore {r['keystore']}\naddress {r['address']}",
    )
    return ExitCode.OK


async def cmd_keys_import(ctx: CliContext, args: argparse.Namespace) -> int:
    keystore = _keystore(ctx, args)
    _refuse_overwrite(keystore)
    key = secrets_input.private_key(file=args.key_file)
    password = secrets_input.password(
        file=args.password_file, from_stdin=args.password_stdin, confirm=True
    )
    address = await asyncio.to_thread(keystore.import_hex, key, password)
    ctx.out.emit(
        {"address": address, "keystore": str(keystore.path)},
        lambda r: f"imported into {r['keystore']}\naddress {r['address']}",
    )
    return ExitCode.OK


async def cmd_keys_address(ctx: CliContext, args: argparse.Namespace) -> int:
    keystore = _keystore(ctx, args)
    if not keystore.exists():
        raise CliError(
            f"no keystore at {keystore.path}: run `r3mes-miner keys create` or `keys import`",
            ExitCode.AUTH,
        )
    if args.check:
        password = secrets_input.password(
            file=args.password_file, from_stdin=args.password_stdin, confirm=False
        )
        await asyncio.to_thread(keystore.unlock, password)  # AuthenticationError -> exit 4
    ctx.out.emit(
        {"address": keystore.address(), "keystore": str(keystore.path), "unlocked": args.check},
        lambda r: r["address"],
    )
    return ExitCode.OK
