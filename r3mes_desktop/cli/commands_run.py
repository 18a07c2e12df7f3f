"""Commands that drive the miner: run, cleanup-stale, resume, dead-letters."""

from __future__ import annotations

from typing import Any

from r3mes_desktop.cli import commands_read


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("dead-letters", help="transactions that will never succeed on their own")
    p.add_argument("--all", action="store_true", help="include retried and discarded ones")
    p.set_defaults(func=commands_read.cmd_dead_letters_list)
