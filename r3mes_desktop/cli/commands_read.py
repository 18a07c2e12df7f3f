"""Commands that only read the journal: status, stats, transactions, dead-letters (list),
diagnostics. None of them needs the miner lock or a network (`verify` does: commands_verify)."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from r3mes_desktop.cli.context import CliContext
from r3mes_desktop.cli.exit_codes import CliError, ExitCode
from r3mes_desktop.cli.output import format_mapping, format_table

TX_COLUMNS = [
    "transaction_id",
    "round_id",
    "model_version",
    "state",
    "age_seconds",
    "attempts",
    "verdict",
    "credits",
    "aggregated_into",
    "error_category",
]
"""`model_version`: the network model version the round trained on; `aggregated_into`: the
version its accepted update went into (see `aggregation_text` in --json and `status ID`)."""


async def cmd_status(ctx: CliContext, args: argparse.Namespace) -> int:
    async with ctx.journal_view() as view:
        if args.transaction_id:
            status = await view.status(args.transaction_id)
            if status is None:
                raise CliError(f"no transaction {args.transaction_id!r}", ExitCode.NOT_FOUND)
            ctx.out.emit(status, _human_status)
            return ExitCode.OK
        stats = await view.statistics()
        active = await view.list_transactions(
            states=[
                "pending",
                "fetch",
                "training",
                "ipfs_upload",
                "blockchain_submit",
                "task_complete",
                "compensating",
            ],
            limit=100,
        )
    summary: dict[str, Any] = {
        "miner_running": ctx.lock().holder() if ctx.miner_running() else None,
        "data_dir": str(ctx.paths.data_dir),
        "keystore": ctx.keystore_address(),
        "transactions": stats["total_transactions"],
        "committed": stats["committed_transactions"],
        "active": [a.to_dict() for a in active],
        "open_dead_letters": stats["open_dead_letters"],
        "credits": stats["credits_total"],
        "verdicts": {
            "accepted": stats["verdicts_accepted"],
            "rejected": stats["verdicts_rejected"],
            "pending": stats["verdicts_pending"],
            "overdue": stats["verdicts_overdue"],
        },
        "model": {
            "version": stats["model_version"],
            "eval_loss": stats["model_eval_loss"],
            "updates_aggregated": stats["updates_aggregated"],
        },
    }
    ctx.out.emit(summary, _human_summary)
    return ExitCode.OK


def _human_status(status: dict[str, Any]) -> str:
    history = status.pop("history", [])
    lines = [format_mapping(status)]
    if history:
        lines.append("history:")
        for h in history:
            what = h.get("new_state") or h.get("kind")
            err = f" {h['category']}: {h.get('message', '')}" if h.get("category") else ""
            lines.append(f"  {h['ts']:.3f} {h['kind']:<12} {what}{err}")
    return "\n".join(lines)


def _human_summary(summary: dict[str, Any]) -> str:
    running = summary["miner_running"]
    lines = [
        f"miner:        {'running (pid ' + running + ')' if running else 'not running'}",
        f"data dir:     {summary['data_dir']}",
        f"keystore:     {summary['keystore'] or 'none (devnet key used)'}",
        f"transactions: {summary['transactions']} ({summary['committed']} committed)",
        f"dead letters: {summary['open_dead_letters']} open",
        f"credits:      {summary['credits']} ({_verdict_counts(summary['verdicts'])})",
        f"model:        {_model_line(summary['model'])}",
        "active:",
        format_table(summary["active"], TX_COLUMNS),
    ]
    return "\n".join(lines)


def _verdict_counts(verdicts: dict[str, int]) -> str:
    text = (
        f"{verdicts['accepted']} accepted, {verdicts['rejected']} rejected, "
        f"{verdicts['pending']} awaiting a verdict"
    )
    return text + (f", {verdicts['overdue']} overdue" if verdicts["overdue"] else "")


def _model_line(model: dict[str, Any]) -> str:
    """The network model as the journal last read it from the chain."""
    if not model["version"]:
        return "genesis (no version published yet)"
    return (
        f"version {model['version']}, held-out loss {model['eval_loss']:.4f} nats/token "
        f"({model['updates_aggregated']} of this miner's updates aggregated)"
    )


async def cmd_stats(ctx: CliContext, args: argparse.Namespace) -> int:
    async with ctx.journal_view() as view:
        stats = await view.statistics(window_s=args.window)
        if args.errors:
            stats = {"statistics": stats, "error_analysis": await view.error_analysis()}
    ctx.out.emit(stats)
    return ExitCode.OK


async def cmd_transactions(ctx: CliContext, args: argparse.Namespace) -> int:
    async with ctx.journal_view() as view:
        items = await view.list_transactions(states=args.state or None, limit=args.limit)
    ctx.out.emit([i.to_dict() for i in items], lambda rows: format_table(rows, TX_COLUMNS))
    return ExitCode.OK


async def cmd_dead_letters_list(ctx: CliContext, args: argparse.Namespace) -> int:
    status = None if args.all else "open"
    async with ctx.journal_view() as view:
        letters = await view.dead_letters(status=status)
    columns = ["id", "transaction_id", "round_id", "category", "status", "reason"]
    ctx.out.emit([d.to_dict() for d in letters], lambda rows: format_table(rows, columns))
    return ExitCode.OK


async def cmd_diagnostics(ctx: CliContext, args: argparse.Namespace) -> int:
    from r3mes_desktop.support import diagnostics

    extra: dict[str, Any] = {}
    stats: dict[str, Any] = {}
    try:
        async with ctx.journal_view() as view:
            stats = await view.statistics()
            extra["error_analysis"] = await view.error_analysis()
            extra["journal_integrity"] = await view.integrity_problems()
            extra["recent_transactions"] = [
                t.to_dict() for t in await view.list_transactions(limit=50)
            ]
    except Exception as exc:  # a broken journal is exactly what a bug report needs to say
        extra["journal_error"] = f"{type(exc).__name__}: {exc}"
    settings = ctx.settings_dump()
    dest = args.output or Path.cwd()
    path = await asyncio.to_thread(
        diagnostics.export_diagnostics, dest, settings=settings, stats=stats, extra=extra
    )
    ctx.out.emit({"path": str(path), "bytes": path.stat().st_size}, lambda r: f"wrote {r['path']}")
    return ExitCode.OK
