"""`r3mes-operator`: deploy R3mesRounds to any EVM node, run its rounds and validators, and
write the network file miners and validators join with.

    r3mes-operator deploy --rpc-url URL --key-file KEY --out network.json [--ipfs-api ADDR]
    r3mes-operator open-round --network network.json --key-file KEY [--round-id N] ...
    r3mes-operator close-round --network network.json --key-file KEY ROUND
    r3mes-operator add-validator / remove-validator --network network.json --key-file KEY ADDR
    r3mes-operator rounds --network network.json
    r3mes-operator network-file --rpc-url URL --contract 0x... --out network.json

Every transaction is signed once per payload and journaled before it is sent (the nonce
store under --state-dir), so a re-run after a crash sends the same bytes; opening a round
whose id exists, or appointing an appointed validator, changes nothing and says so.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import secrets
import signal
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from r3mes_desktop.adapters.chain.client import ChainClient, checked_address
from r3mes_desktop.adapters.chain.deploy import deploy
from r3mes_desktop.adapters.mining.presets import PRESETS
from r3mes_desktop.cli import roles
from r3mes_desktop.cli.exit_codes import CliError, ExitCode
from r3mes_desktop.cli.output import Output, format_table
from r3mes_desktop.core.errors import ValidationError
from r3mes_desktop.support.network_file import NetworkFile


def _int_in(lo: int, hi: int) -> Any:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"accepted {lo}..{hi}, got {value}")
        return value

    return parse


def _state_dir(args: argparse.Namespace) -> Path:
    return roles.role_dir(args.state_dir, "operator")


async def cmd_deploy(out: Output, args: argparse.Namespace) -> int:
    account = roles.load_key(args.key_file)
    transport = roles.transport_for(args.rpc_url)
    try:
        chain_id = await transport.chain_id()
        if args.chain_id is not None and chain_id != args.chain_id:
            raise CliError(
                f"chain_id: {args.rpc_url[0]} is on chain {chain_id}, expected {args.chain_id}",
                ExitCode.CONFIG,
            )
        intent = _state_dir(args) / f"deploy-{chain_id}-{account.address}.json"
        done = await deploy(transport, account, intent)
    finally:
        await transport.close()
    network = NetworkFile(
        name=args.name,
        chain_id=chain_id,
        rpc_urls=tuple(args.rpc_url),
        contract_address=done.address,
        contract_version="r3mes-rounds/2",
        ipfs_api=args.ipfs_api or "",
        operator=str(account.address),
        deployed_block=done.block_number,
    )
    network.save(args.out)
    result = {**network.to_json(), "tx_hash": done.tx_hash, "already_deployed": done.already,
              "network_file": str(args.out)}  # fmt: skip
    out.emit(result, lambda r: f"{'already deployed' if r['already_deployed'] else 'deployed'} "
             f"R3mesRounds at {r['contract_address']} on chain {r['chain_id']}\n"
             f"network file: {r['network_file']}")  # fmt: skip
    return ExitCode.OK


async def cmd_network_file(out: Output, args: argparse.Namespace) -> int:
    transport = roles.transport_for(args.rpc_url)
    try:
        chain_id = await transport.chain_id()
        address = checked_address(args.contract, "contract")
        if not await transport.get_code(address):
            raise CliError(f"contract: no code at {address} on chain {chain_id}", ExitCode.CONFIG)
    finally:
        await transport.close()
    network = NetworkFile(
        name=args.name,
        chain_id=chain_id,
        rpc_urls=tuple(args.rpc_url),
        contract_address=address,
        contract_version="",
        ipfs_api=args.ipfs_api or "",
    )
    network.save(args.out)
    out.emit(network.to_json(), lambda r: f"network file written: {args.out}")
    return ExitCode.OK


async def _send(chain: ChainClient, fn: str, *call: Any, round_id: int = -1) -> str:
    signed = await chain.sign_call(fn, *call, round_id=round_id)
    await chain.broadcast(signed)
    await chain.wait_receipt(signed.tx_hash, timeout_s=120.0)
    return signed.tx_hash


def _hyperparams(args: argparse.Namespace) -> str:
    params: dict[str, Any] = {}
    if args.hyperparams:
        try:
            params = json.loads(args.hyperparams)
        except ValueError as exc:
            raise CliError(f"hyperparams: not JSON ({exc})", ExitCode.USAGE) from None
        if not isinstance(params, dict):
            raise CliError("hyperparams: expected a JSON object", ExitCode.USAGE)
    params.setdefault("preset", args.preset)
    if args.dataset_cid or args.dataset_sha256:
        if not (args.dataset_cid and args.dataset_sha256):
            raise CliError("dataset: give both --dataset-cid and --dataset-sha256", ExitCode.USAGE)
        params.update(dataset_cid=args.dataset_cid, dataset_sha256=args.dataset_sha256.lower())
        params.setdefault("vocab_size", 256)  # byte tokens
    text = json.dumps(params, sort_keys=True)
    if len(text) > 512:
        raise CliError(f"hyperparams: {len(text)} characters, accepted at most 512", ExitCode.USAGE)
    return text


async def cmd_open_round(out: Output, args: argparse.Namespace) -> int:
    network = roles.load_network(args.network)
    account = roles.load_key(args.key_file)
    hyper = _hyperparams(args)
    async with roles.connected(network, account, _state_dir(args)) as chain:
        round_id = args.round_id or await chain.last_round_id() + 1
        existing = await chain.round_info(round_id)
        if existing is not None:
            note = f"round {round_id} already exists (open: {existing.is_open})"
            out.emit({"round_id": round_id, "opened": False, "is_open": existing.is_open},
                     lambda r: note)  # fmt: skip
            return ExitCode.OK
        seed = args.seed if args.seed is not None else secrets.randbits(64)
        deadline = 0
        if args.deadline_in is not None:
            # From the later of chain time and this clock: on a quiet chain the latest block
            # is old, and the next one is stamped with the time it is mined.
            latest = await chain.latest_block()
            deadline = max(int(latest["timestamp"]), int(time.time())) + args.deadline_in
        version = args.model_version
        if version is None:
            version = await chain.current_version()  # rounds train on the newest model
        tx = await _send(
            chain, "openRound", round_id, seed, args.difficulty, args.steps, hyper,
            args.base_model, deadline, args.reward, version, round_id=round_id,
        )  # fmt: skip
    result = {"round_id": round_id, "opened": True, "seed": seed, "difficulty": args.difficulty,
              "steps": args.steps, "hyperparams": hyper, "base_model_id": args.base_model,
              "deadline": deadline, "reward": args.reward, "model_version": version,
              "tx_hash": tx}  # fmt: skip
    out.emit(result, lambda r: f"opened round {round_id} (tx {tx})")
    return ExitCode.OK


async def cmd_publish_dataset(out: Output, args: argparse.Namespace) -> int:
    """Pin a text corpus as a dataset file on the network's IPFS; rounds name it by CID and
    sha256 (`open-round --dataset-cid ... --dataset-sha256 ...`)."""
    from r3mes_desktop.adapters.ipfs.client import IpfsClient
    from r3mes_desktop.adapters.mining.corpus import build_dataset

    network = roles.load_network(args.network)
    if not network.ipfs_api:
        raise CliError("ipfs_api: the network file names none", ExitCode.CONFIG)
    try:
        text = args.corpus.read_bytes()
        data = build_dataset(text, name=args.name or args.corpus.name)
    except OSError as exc:
        raise CliError(
            f"corpus: cannot read {args.corpus} ({exc.strerror})", ExitCode.USAGE
        ) from None
    except ValueError as exc:
        raise CliError(str(exc), ExitCode.USAGE) from None
    store = IpfsClient(network.ipfs_api, max_gradient_size_mb=512)
    try:
        cid = await roles.caller("ipfs").call("add_and_pin", store.add_and_pin, data)
    finally:
        await store.close()
    result = {"dataset_cid": cid, "dataset_sha256": hashlib.sha256(data).hexdigest(),
              "tokens": len(text), "bytes": len(data)}  # fmt: skip
    out.emit(result, lambda r: f"dataset {cid} ({len(text)} byte tokens)\n"
             f"open rounds on it with --dataset-cid {cid} "
             f"--dataset-sha256 {result['dataset_sha256']}")  # fmt: skip
    return ExitCode.OK


async def cmd_close_round(out: Output, args: argparse.Namespace) -> int:
    network = roles.load_network(args.network)
    account = roles.load_key(args.key_file)
    async with roles.connected(network, account, _state_dir(args)) as chain:
        info = await chain.round_info(args.round)
        if info is None:
            raise CliError(f"round: no round {args.round}", ExitCode.NOT_FOUND)
        if not info.is_open:
            out.emit({"round_id": args.round, "closed": False}, lambda r: "already closed")
            return ExitCode.OK
        tx = await _send(chain, "closeRound", args.round, round_id=args.round)
    out.emit({"round_id": args.round, "closed": True, "tx_hash": tx},
             lambda r: f"closed round {args.round} (tx {tx})")  # fmt: skip
    return ExitCode.OK


async def cmd_validator(out: Output, args: argparse.Namespace) -> int:
    network = roles.load_network(args.network)
    account = roles.load_key(args.key_file)
    try:
        who = checked_address(args.address, "address")
    except ValidationError as exc:
        raise CliError(exc.message, ExitCode.USAGE) from None
    want = args.command.startswith("add-")
    role = args.command.split("-", 1)[1]  # "validator" or "aggregator"
    async with roles.connected(network, account, _state_dir(args)) as chain:
        holds = chain.is_validator if role == "validator" else chain.is_aggregator
        if await holds(who) == want:
            article = "an" if role == "aggregator" else "a"
            note = f"{who} is already {'' if want else 'not '}{article} {role}"
            out.emit({role: who, "active": want, "changed": False}, lambda r: note)
            return ExitCode.OK
        fn = ("add" if want else "remove") + role.capitalize()
        tx = await _send(chain, fn, who)
    note = f"{'appointed' if want else 'removed'} {role} {who} (tx {tx})"
    out.emit({role: who, "active": want, "changed": True, "tx_hash": tx}, lambda r: note)
    return ExitCode.OK


async def cmd_aggregate(out: Output, args: argparse.Namespace) -> int:
    """Publish model versions from closed rounds' accepted updates (see app.aggregator)."""
    from r3mes_desktop.adapters.ipfs.client import IpfsClient
    from r3mes_desktop.adapters.mining.verifier import ProcessVerifier
    from r3mes_desktop.app.aggregator import Aggregator
    from r3mes_desktop.core.versions import VersionJournal

    network = roles.load_network(args.network)
    if not network.ipfs_api:
        raise CliError("ipfs_api: the network file names none", ExitCode.CONFIG)
    account = roles.load_key(args.key_file)
    state = _state_dir(args) / "aggregator"
    journal = VersionJournal(state / "aggregator.sqlite")
    store = IpfsClient(network.ipfs_api)
    worker = ProcessVerifier()
    published: list[int] = []
    errors: list[str] = []
    try:
        async with roles.connected(network, account, state) as chain:
            if not await chain.is_aggregator(chain.miner_address):
                raise CliError(
                    f"key-file: {chain.miner_address} is not an aggregator; "
                    "run add-aggregator with the operator's key",
                    ExitCode.AUTH,
                )
            aggregator = Aggregator(
                chain=chain,
                store=store,
                journal=journal,
                worker=worker,
                chain_calls=roles.caller("chain"),
                store_calls=roles.caller("ipfs"),
                blobs=state / "versions",
            )
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            for _ in range(args.passes):
                report = await aggregator.pass_once()
                published += report.published
                errors = report.errors
                if stop.is_set() or (not report.published and not args.follow):
                    break
                if not report.published:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(args.poll_s):
                            await stop.wait()
            version = await chain.current_version()
    finally:
        await worker.close()
        await store.close()
        journal.close()
    result = {"published": published, "current_version": version, "errors": errors}
    out.emit(result, lambda r: f"published {published or 'nothing'}; current version {version}")
    return ExitCode.OK if not errors else ExitCode.UNAVAILABLE


async def cmd_rounds(out: Output, args: argparse.Namespace) -> int:
    network = roles.load_network(args.network)
    from eth_account import Account

    reader = Account.create()  # reads need no key: a throwaway signer, never funded
    rows: list[Mapping[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="r3mes-reader-") as state:
        version, rows = await _open_rows(network, reader, Path(state))
    columns = ["round_id", "steps", "difficulty", "reward", "submissions", "accepted", "rejected"]
    out.emit({"network": network.name, "contract_version": version, "open_rounds": rows},
             lambda r: f"{network.name} ({version}), {len(rows)} open rounds\n"
             + format_table(rows, columns))  # fmt: skip
    return ExitCode.OK


async def _open_rows(
    network: NetworkFile, reader: Any, state: Path
) -> tuple[str, list[Mapping[str, Any]]]:
    rows: list[Mapping[str, Any]] = []
    async with roles.connected(network, reader, state) as chain:
        version = await chain.contract_version()
        for round_id in await chain.open_round_ids():
            info = await chain.round_info(round_id)
            miners = await chain.submitters(round_id)
            verdicts = [await chain.submission_info(round_id, m) for m in miners]
            rows.append({
                "round_id": round_id, "steps": info.steps if info else 0,
                "difficulty": info.difficulty if info else 0, "reward": info.reward if info else 0,
                "deadline": info.deadline if info else 0, "submissions": len(miners),
                "accepted": sum(1 for v in verdicts if v and v.verdict == 1),
                "rejected": sum(1 for v in verdicts if v and v.verdict == 2),
            })  # fmt: skip
    return version, rows


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="r3mes-operator",
        description="Deploy and run an R3MES network: contract, rounds, validators.",
        epilog=roles.EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    roles.common_options(parser, sub=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, helptext: str, func: roles.Command, *, key: bool, net: bool) -> Any:
        p = sub.add_parser(name, help=helptext, description=helptext, allow_abbrev=False)
        roles.common_options(p)
        p.set_defaults(func=func)
        if net:
            p.add_argument("--network", type=Path, required=True, help="the network file")
        if key:
            p.add_argument("--key-file", type=Path, required=True,
                           help="the operator's hex private key (a mode 0600 file)")  # fmt: skip
            p.add_argument("--state-dir", type=Path, default=None,
                           help="where signed transactions are journaled (default: the app "
                           "data dir's operator/)")  # fmt: skip
        return p

    p = add("deploy", "deploy R3mesRounds and write the network file", cmd_deploy, key=True,
            net=False)  # fmt: skip
    p.add_argument("--rpc-url", action="append", required=True, help="node URL (repeatable)")
    p.add_argument("--out", type=Path, required=True, help="network file to write")
    p.add_argument("--name", default="r3mes", help="network name shown to miners")
    p.add_argument("--ipfs-api", default="", help="IPFS API multiaddr miners upload to")
    p.add_argument("--chain-id", type=_int_in(1, 2**63), default=None,
                   help="refuse a node on another chain")  # fmt: skip

    p = add("network-file", "write a network file for a deployed contract", cmd_network_file,
            key=False, net=False)  # fmt: skip
    p.add_argument("--rpc-url", action="append", required=True)
    p.add_argument("--contract", required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--name", default="r3mes")
    p.add_argument("--ipfs-api", default="")

    p = add("open-round", "open a training round", cmd_open_round, key=True, net=True)
    p.add_argument("--round-id", type=_int_in(1, 2**64 - 1), default=None,
                   help="default: highest id + 1 (give it for an exactly-once re-run)")  # fmt: skip
    p.add_argument("--seed", type=_int_in(0, 2**64 - 1), default=None, help="default: random")
    p.add_argument("--difficulty", type=_int_in(16, 32), default=16, help="PoW bits, 16..32")
    p.add_argument("--steps", type=_int_in(1, 1_000_000), default=300,
                   help="training steps (the validator's share is ~16/steps)")  # fmt: skip
    p.add_argument("--preset", choices=sorted(PRESETS), default="default")
    p.add_argument("--hyperparams", default="", help="JSON object of preset overrides")
    p.add_argument("--dataset-cid", default="", help="a text dataset (publish-dataset)")
    p.add_argument("--dataset-sha256", default="", help="its sha256, as publish-dataset printed")
    p.add_argument("--base-model", default="r3mes-lm-v1", help="base model id")
    p.add_argument("--deadline-in", type=_int_in(1, 10**8), default=None,
                   help="seconds from now after which submissions are refused")  # fmt: skip
    p.add_argument("--model-version", type=_int_in(0, 2**64 - 1), default=None,
                   help="the model version it trains on (default: the current one)")  # fmt: skip
    p.add_argument("--reward", type=_int_in(0, 10**18), default=100,
                   help="credits per accepted submission")  # fmt: skip

    p = add("publish-dataset", "pin a text corpus as a dataset rounds can name",
            cmd_publish_dataset, key=False, net=True)  # fmt: skip
    p.add_argument("corpus", type=Path, help="a text file (bytes are the tokens)")
    p.add_argument("--name", default="", help="dataset name (default: the file name)")
    p = add("close-round", "close a round", cmd_close_round, key=True, net=True)
    p.add_argument("round", type=_int_in(1, 2**64 - 1))
    for name, helptext in (("add-validator", "appoint a validator"),
                           ("remove-validator", "remove a validator"),
                           ("add-aggregator", "appoint an aggregator"),
                           ("remove-aggregator", "remove an aggregator")):  # fmt: skip
        p = add(name, helptext, cmd_validator, key=True, net=True)
        p.add_argument("address")
    p = add("aggregate", "publish model versions from closed rounds (aggregator key)",
            cmd_aggregate, key=True, net=True)  # fmt: skip
    p.add_argument("--passes", type=_int_in(1, 10_000), default=10,
                   help="at most this many passes; ends at one publishing nothing")  # fmt: skip
    p.add_argument("--follow", action="store_true",
                   help="keep going every --poll-s seconds until stopped or --passes")  # fmt: skip
    p.add_argument("--poll-s", type=float, default=5.0, help="seconds between passes")
    add("rounds", "open rounds with submissions and verdicts", cmd_rounds, key=False, net=True)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return roles.run_main("r3mes-operator", build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
