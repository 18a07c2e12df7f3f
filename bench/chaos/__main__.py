"""`python -m bench.chaos`: chaos run, crash run, multi-miner run and bad-input run,
invariants checked against the chain and the store after each, a markdown + JSON report.
Exit status 1 on any invariant violation or bad input handled badly.

    .venv/bin/python -m bench.chaos --transactions 2000 --crashes 100 --sigterms 10

The multi-miner part needs anvil and js-ipfs from tests/peers (`scripts/bootstrap.sh
--peers`); `--multi-miners 0` skips it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any

DIRS = ("R3MES_DATA_DIR", "R3MES_CONFIG_DIR", "R3MES_LOG_DIR", "R3MES_CACHE_DIR")


@contextlib.contextmanager
def app_dirs(root: Path) -> Iterator[None]:
    """Point the app's directories (settings, secrets, logs) at `root` for a run."""
    saved = {k: os.environ.get(k) for k in DIRS}
    for key, sub in zip(DIRS, ("data", "config", "logs", "cache"), strict=True):
        os.environ[key] = str(root / sub)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__)
    p.add_argument("--transactions", type=int, default=2000, help="chaos run size (0 = skip)")
    p.add_argument("--crashes", type=int, default=100, help="SIGKILLs of the miner (0 = skip)")
    p.add_argument("--sigterms", type=int, default=10, help="clean SIGTERM stops")
    p.add_argument(
        "--multi-miners",
        type=int,
        default=4,
        help="miners sharing one anvil chain node and one js-ipfs daemon, one of them with a key "
        "funded only mid-run (0 = skip; else 2-8)",
    )
    p.add_argument(
        "--multi-seconds",
        type=float,
        default=240.0,
        help="how long the multi-miner part opens rounds (10-3600 s); outages and hand-sent "
        "transactions scale with it",
    )
    p.add_argument("--no-bad-inputs", action="store_true", help="skip the bad-input table")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-uptime", type=float, default=12.0, help="longest run before a kill")
    p.add_argument("--out", type=Path, default=Path("build/chaos"), help="work dir (wiped)")
    p.add_argument("--report", type=Path, help="also write the markdown report here")
    p.add_argument("--quiet", action="store_true", help="print the one-line summary only")
    p.add_argument(
        "--parallel",
        action="store_true",
        help="run the crash part in its own process while the chaos part runs (both checked "
        "as always; on 2 cores they slow each other down, so the timings are not comparable)",
    )
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # the command, also under pytest
    for name in ("transactions", "crashes", "sigterms"):
        if getattr(args, name) < 0:
            p.error(f"--{name} must be >= 0, got {getattr(args, name)}")
    if args.multi_miners != 0 and not 2 <= args.multi_miners <= 8:
        p.error(f"--multi-miners must be 0 (skip) or 2-8, got {args.multi_miners}")
    if not 10 <= args.multi_seconds <= 3600:
        p.error(f"--multi-seconds must be 10-3600, got {args.multi_seconds}")
    return args


async def _chaos(root: Path, args: argparse.Namespace) -> dict[str, Any]:
    from bench.chaos.chaos_run import run_chaos, run_settings
    from bench.chaos.invariants import check

    with app_dirs(root):
        result = await run_chaos(root, transactions=args.transactions, seed=args.seed)
        findings = await check(root / "data", extra_dirs=(root / "logs",))
    return {
        "result": result.to_dict(),
        "invariants": findings.to_dict(),
        "settings": run_settings(),
    }


async def _crash(root: Path, args: argparse.Namespace) -> dict[str, Any]:
    from bench.chaos.chaos_run import reconcile
    from bench.chaos.crash_run import run_crashes
    from bench.chaos.invariants import check, journal_rows

    result = await asyncio.to_thread(
        run_crashes,
        root,
        crashes=args.crashes,
        sigterms=args.sigterms,
        seed=args.seed,
        max_uptime_s=args.max_uptime,
    )
    with app_dirs(root):
        left = await reconcile(root / "data")  # the next start, with nothing killing it
        findings = await check(root / "data", extra_dirs=(root / "logs",))
    states: dict[str, int] = {}
    for row in journal_rows(root / "data"):
        states[row["state"]] = states.get(row["state"], 0) + 1
    return {
        "result": result.to_dict(),
        "reconciled_on_last_start": left,
        "states": states,
        "invariants": findings.to_dict(),
    }


async def _multi(root: Path, args: argparse.Namespace) -> dict[str, Any]:
    from bench.chaos.multi_run import run_multi, sized_plan

    with app_dirs(root / "harness"):
        return await run_multi(
            root, sized_plan(args.multi_miners, args.multi_seconds), seed=args.seed
        )


async def _bad(root: Path) -> dict[str, Any]:
    from bench.chaos.bad_inputs import run_bad_inputs

    with app_dirs(root):
        return await run_bad_inputs(root)


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    out = args.out
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    from r3mes_desktop.support.logs import setup_logging, teardown_logging

    report: dict[str, Any] = {
        "command": "python -m bench.chaos " + " ".join(args.argv),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}",
        "seed": args.seed,
    }
    t0 = time.perf_counter()
    crashing = args.crashes or args.sigterms
    beside = _start_crash_part(out / "crash-part", args) if crashing and args.parallel else None
    try:
        if beside is not None:
            report["parallel"] = True
        if args.transactions:
            setup_logging(directory=out / "chaos" / "logs", console=False)
            try:
                report["chaos"] = await _part("chaos", _chaos(out / "chaos", args))
            finally:
                teardown_logging()
        if beside is not None:
            crash_part = _crash_part_result(beside, out / "crash-part")
            report["crash"] = await _part("crash", crash_part)
    finally:
        if beside is not None and beside.poll() is None:  # interrupted: leave nothing behind
            stop_tree(beside)
    if crashing and beside is None:
        setup_logging(directory=out / "crash" / "harness-logs", console=False)
        try:
            report["crash"] = await _part("crash", _crash(out / "crash", args))
        finally:
            teardown_logging()
    if args.multi_miners:
        setup_logging(directory=out / "multi" / "harness-logs", console=False)
        try:
            report["multi"] = await _part("multi", _multi(out / "multi", args))
        finally:
            teardown_logging()
    if not args.no_bad_inputs:
        report["bad_inputs"] = await _part("bad_inputs", _bad(out / "bad"))
    report["seconds"] = round(time.perf_counter() - t0, 1)
    return report


def _start_crash_part(out: Path, args: argparse.Namespace) -> subprocess.Popen[bytes]:
    """`--parallel`: the crash part as its own `python -m bench.chaos` process (its own work
    dir, environment and log files), started now."""
    command = [
        sys.executable, "-m", "bench.chaos",
        "--transactions", "0",
        "--crashes", str(args.crashes),
        "--sigterms", str(args.sigterms),
        "--no-bad-inputs",
        "--multi-miners", "0",
        "--max-uptime", str(args.max_uptime),
        "--seed", str(args.seed),
        "--out", str(out),
        "--quiet",
    ]  # fmt: skip
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


async def _crash_part_result(proc: subprocess.Popen[bytes], out: Path) -> dict[str, Any]:
    """The crash section of the parallel crash part's report, once it exits."""
    try:
        output, _ = await asyncio.to_thread(proc.communicate)
    finally:
        if proc.poll() is None:  # cancelled or interrupted: stop it and what it started
            stop_tree(proc)
    report_file = out / "report.json"
    if not report_file.exists():
        tail = " | ".join(output.decode(errors="replace").strip().splitlines()[-3:])
        raise RuntimeError(f"the crash part exited with {proc.returncode}, no report: {tail}")
    section: dict[str, Any] = json.loads(report_file.read_text())["crash"]
    return section


def stop_tree(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL a harness process and what it started (its miner runs in a session of its
    own, which a signal to the harness alone would leave running)."""
    import psutil

    try:
        tree = [psutil.Process(proc.pid)]
        tree += tree[0].children(recursive=True)
    except psutil.NoSuchProcess:
        tree = []
    for p in tree:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    psutil.wait_procs(tree, timeout=30)
    proc.wait(timeout=30)


async def _part(name: str, run: Coroutine[Any, Any, dict[str, Any]]) -> dict[str, Any]:
    """A sub-run that raises becomes one line in the report (and a failure), not a lost
    report: the traceback goes to the run's log file, the line to the summary."""
    started = time.perf_counter()
    log = logging.getLogger("bench.chaos")  # not __name__: that is "__main__" under -m
    try:
        section = await run
        log.info("%s part done in %.0f s", name, time.perf_counter() - started)
        return section
    except Exception as exc:
        log.exception("the %s run raised", name)
        took = time.perf_counter() - started
        return {"error": f"{type(exc).__name__}: {str(exc)[:300]} (after {took:.0f} s)"}


def main(argv: list[str] | None = None) -> int:
    from bench.chaos.report import failures, summary, to_markdown

    args = parse_args(argv)
    report = asyncio.run(main_async(args))
    text = to_markdown(report)
    (args.out / "report.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    (args.out / "report.md").write_text(text)
    if args.report is not None:
        args.report.write_text(text)
        args.report.with_suffix(".json").write_text(json.dumps(report, indent=1, default=str))
    if not args.quiet:
        print(text)
    problems = failures(report)
    for problem in problems:
        print(f"FAIL: {problem}", file=sys.stderr)
    print(summary(report, problems), file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
