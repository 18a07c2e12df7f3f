"""`verify`: check a journaled submission the way a validator would.

It opens only the chain client and the content store (`open_services`), never the
coordinator or the miner, but still through the runtime, so it takes the data directory's
miner lock like the commands in `commands_run`, whose password and open/close helpers it
shares.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from r3mes_desktop.cli import arg_types
from r3mes_desktop.cli.commands_run import _add_password_options, _opened, _password_prompt
from r3mes_desktop.cli.context import CliContext
from r3mes_desktop.cli.exit_codes import CliError, ExitCode

VERIFY_HELP = """\
Check a submission the way a validator would: read what the contract stores for
(round, miner), fetch the bytes by that CID from IPFS (or the devnet's store), check that
they hash to the CID and that their sha256 is the on-chain gradient hash, that the store
still pins them, the proof of work, and (unless --no-recompute) retrain the round and
compare. Every check is reported as passed, failed or skipped with the reason (--json:
"checks": {name: {"status", "detail"}}, and "verdict").

Content that cannot be fetched (not found, or not within --fetch-timeout) is a failure.
Opens the chain and the content store (not the miner), so it takes the data directory's
lock: exit 7 while a miner runs there.

exit codes: 0 every check passed (recompute may be skipped with --no-recompute);
  8 a check failed, or a check could not run (verdict "inconclusive", e.g. the chain
  account is not the transaction's miner) - a run with nothing checked never exits 0;
  5 chain unreachable; 6 no such transaction."""


def add_parsers(sub: Any) -> None:
    """`verify` and its options."""
    p = sub.add_parser(
        "verify",
        help="verify a journaled submission like a validator (chain record, IPFS content, PoW)",
        description=VERIFY_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("transaction_id")
    p.add_argument(
        "--no-recompute",
        dest="recompute",
        action="store_false",
        help="skip retraining the round (reported as skipped, never as a pass)",
    )
    p.add_argument("--journal", action="store_true", help="also run the journal integrity check")
    p.add_argument(
        "--fetch-timeout",
        type=arg_types.positive_float,
        default=60.0,
        metavar="SECONDS",
        help="give up fetching the content from IPFS after SECONDS (60): a failure",
    )
    _add_password_options(p)
    p.set_defaults(func=cmd_verify)


@contextlib.asynccontextmanager
async def open_services(ctx: CliContext, args: argparse.Namespace) -> AsyncIterator[Any]:
    """The chain client and the content store only: no coordinator (its recovery would
    drive unfinished transactions), no miner, no devnet operator opening rounds."""
    from r3mes_desktop.app.runtime import Runtime, RuntimeOptions

    class ServicesOnly(Runtime):
        async def _open_mining(self) -> None:
            return None

        def _open_notifier(self) -> None:
            return None

    options = RuntimeOptions(password_prompt=_password_prompt(args), operator_interval_s=None)
    async with _opened(ServicesOnly(ctx.settings, options=options)) as runtime:
        yield runtime


async def cmd_verify(ctx: CliContext, args: argparse.Namespace) -> int:
    from r3mes_desktop.adapters.mining.verify import (
        Claim,
        failed,
        passed,
        skipped,
        verify_on_chain,
        with_check,
    )

    async with ctx.journal_view() as view:
        rec = await view.record(args.transaction_id)
        problems = await view.integrity_problems() if args.journal else []
    if rec is None:
        raise CliError(f"no transaction {args.transaction_id!r}", ExitCode.NOT_FOUND)
    claim = Claim(
        round_id=rec.round_id,
        miner=rec.miner,
        cid=rec.cid,
        gradient_hash=None
        if rec.gradient_hash is None
        else bytes.fromhex(rec.gradient_hash.removeprefix("0x")),
        pow_nonce=rec.pow_nonce,
    )
    async with open_services(ctx, args) as runtime:
        report = await verify_on_chain(
            chain=runtime.chain,
            store=runtime.store,
            spec=rec.spec,
            claim=claim,
            recompute=args.recompute,
            fetch_timeout_s=args.fetch_timeout,
            callers=runtime.callers,
        )
    if not args.journal:
        integrity = skipped("journal_integrity", "not asked (--journal)", on_request=True)
    elif problems:
        integrity = failed("journal_integrity", "; ".join(problems))
    else:
        integrity = passed("journal_integrity", "no problems")
    report = with_check(report, integrity)
    result = {
        "transaction_id": rec.id,
        "round_id": rec.round_id,
        "state": rec.state.value,
        "miner": rec.miner,
        "verdict": report.verdict,
        "ok": report.ok,
        "checks": {c.name: c.to_dict() for c in report.checks},
        "journal_problems": problems,
    }
    ctx.out.emit(
        result,
        lambda r: (
            f"transaction {r['transaction_id']} (round {r['round_id']}, {r['state']})\n"
            + report.describe()
        ),
    )
    return ExitCode.OK if report.ok else ExitCode.CHECK_FAILED
