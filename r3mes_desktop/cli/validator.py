"""`r3mes-validator`: check submissions by sampling and post one verdict each.

    r3mes-validator run --network network.json --key-file KEY [--data-dir DIR] [--passes N]
    r3mes-validator status [--data-dir DIR]

The validator keeps its own journal (`<data-dir>/validator.sqlite`): each verdict is
recorded before it is signed and its signature before it is sent, so a validator killed
at any point (kill -9 included) resumes without posting twice; the contract refuses a second
verdict for a submission anyway. Verification runs in a worker process on `--device`.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from r3mes_desktop.adapters.ipfs.client import IpfsClient
from r3mes_desktop.adapters.mining.verifier import ProcessVerifier
from r3mes_desktop.app.validator import PassReport, Validator
from r3mes_desktop.cli import roles
from r3mes_desktop.cli.exit_codes import CliError, ExitCode
from r3mes_desktop.cli.output import Output, format_table
from r3mes_desktop.core import workproof
from r3mes_desktop.core.verdicts import VerdictJournal

JOURNAL = "validator.sqlite"


def _data_dir(args: argparse.Namespace) -> Path:
    return roles.role_dir(args.data_dir, "validator")


async def cmd_run(out: Output, args: argparse.Namespace) -> int:
    network = roles.load_network(args.network)
    if not network.ipfs_api and not args.ipfs_api:
        raise CliError("ipfs_api: the network file names none; pass --ipfs-api", ExitCode.CONFIG)
    account = roles.load_key(args.key_file)
    data_dir = _data_dir(args)
    journal = await asyncio.to_thread(VerdictJournal, data_dir / JOURNAL)
    store = IpfsClient(args.ipfs_api or network.ipfs_api)
    verifier = ProcessVerifier()
    totals = PassReport()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    validator: Validator | None = None

    def on_signal() -> None:
        stop.set()
        if validator is not None:
            validator.stopping = True  # finish the submission in hand, then stop

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    try:
        async with roles.connected(network, account, data_dir) as chain:
            if not await chain.is_validator(chain.miner_address):
                raise CliError(
                    f"key-file: {chain.miner_address} is not a validator of "
                    f"{network.contract_address}; ask the operator to add it",
                    ExitCode.AUTH,
                )
            validator = Validator(
                chain=chain,
                store=store,
                journal=journal,
                verifier=verifier,
                chain_calls=roles.caller("chain"),
                store_calls=roles.caller("ipfs"),
                window_s=args.window_s,
                device=args.device,
            )
            done = 0
            while args.passes is None or done < args.passes:
                report = await validator.pass_once()
                done += 1
                _add(totals, report)
                if not out.as_json and (report.decided or report.posted or report.errors):
                    print(f"pass {done}: {report.to_json()}", flush=True)
                if args.passes is not None and done >= args.passes:
                    break
                try:
                    async with asyncio.timeout(args.poll_s):
                        await stop.wait()
                    break
                except TimeoutError:
                    pass
    finally:
        await verifier.close()
        await store.close()
        await asyncio.to_thread(journal.close)
    out.emit({"passes": done, **totals.to_json()}, lambda r: f"{done} passes: {totals.to_json()}")
    return ExitCode.OK if not totals.errors else ExitCode.UNAVAILABLE


def _add(totals: PassReport, report: PassReport) -> None:
    totals.decided += report.decided
    totals.posted += report.posted
    totals.settled += report.settled
    totals.skipped += report.skipped
    totals.waiting = report.waiting
    totals.errors = list(report.errors)  # the last pass's: earlier ones were retried


async def cmd_status(out: Output, args: argparse.Namespace) -> int:
    path = _data_dir(args) / JOURNAL
    if not path.exists():
        raise CliError(f"data-dir: no validator journal at {path}", ExitCode.NOT_FOUND)
    journal = await asyncio.to_thread(VerdictJournal, path)
    try:
        rows = journal.rows()
    finally:
        journal.close()
    data: list[dict[str, Any]] = [
        {
            "round_id": r.round_id,
            "miner": r.miner,
            "state": r.state,
            "accepted": r.accepted,
            "reason": r.reason,
            "reason_text": workproof.reason_text(r.reason),
            "steps_recomputed": r.steps_recomputed,
            "verify_s": round(r.verify_s, 3),
            "tx_hash": r.tx_hash,
        }
        for r in rows
    ]
    columns = ["round_id", "miner", "state", "accepted", "reason_text", "verify_s"]
    out.emit({"verdicts": data}, lambda d: format_table(data, columns))  # type: ignore[arg-type]
    return ExitCode.OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="r3mes-validator",
        description="Check R3MES submissions by sampled recomputation and post verdicts.",
        epilog=roles.EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    roles.common_options(parser, sub=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    p = sub.add_parser("run", help="validate until stopped (or --passes)", allow_abbrev=False)
    roles.common_options(p)
    p.set_defaults(func=cmd_run)
    p.add_argument("--network", type=Path, required=True, help="the network file")
    p.add_argument("--key-file", type=Path, required=True, help="the validator's hex key file")
    p.add_argument("--data-dir", type=Path, default=None, help="journal and nonce store")
    p.add_argument("--ipfs-api", default="", help="override the network file's IPFS API")
    p.add_argument("--window-s", type=float, default=600.0,
                   help="chain seconds a miner has to answer its challenge")  # fmt: skip
    p.add_argument("--poll-s", type=float, default=5.0, help="seconds between passes")
    p.add_argument("--passes", type=int, default=None, help="stop after N passes")
    p.add_argument("--device", default="cpu", help="'cpu' or 'cuda[:N]' (runs on that type)")
    p = sub.add_parser("status", help="the verdicts this validator journaled", allow_abbrev=False)
    roles.common_options(p)
    p.set_defaults(func=cmd_status)
    p.add_argument("--data-dir", type=Path, default=None)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return roles.run_main("r3mes-validator", build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
