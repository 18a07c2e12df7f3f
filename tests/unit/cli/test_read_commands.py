"""status, stats, transactions, dead-letters, verify: human and --json output, exit codes."""

from __future__ import annotations

from r3mes_desktop.app.instance_lock import InstanceLock
from r3mes_desktop.cli import build_parser
from r3mes_desktop.cli.exit_codes import ExitCode
from r3mes_desktop.support.config import paths
from tests.unit.cli.conftest import Filled, RunCli


def test_stats_json_matches_the_journal(journal: Filled, cli: RunCli) -> None:
    code, out, _ = cli("stats", "--json")
    assert code == ExitCode.OK
    assert out["total_transactions"] == 2
    assert out["committed_transactions"] == 1
    assert out["open_dead_letters"] == 1
    assert (out["verdicts_accepted"], out["verdicts_rejected"], out["verdicts_pending"]) == (
        1,
        0,
        0,
    )
    assert (out["credits_total"], out["verdicts_overdue"]) == (100, 0)
    assert (out["model_version"], out["model_eval_loss"], out["updates_aggregated"]) == (1, 1.25, 1)
    code, out, _ = cli("--json", "stats", "--errors")
    assert code == 0 and set(out) == {"statistics", "error_analysis"}


def test_stats_human(journal: Filled, cli: RunCli) -> None:
    code, out, _ = cli("stats")
    assert code == 0
    assert "committed_transactions" in out and "error_breakdown:" in out


def test_status_summary_and_one_transaction(journal: Filled, cli: RunCli) -> None:
    code, out, _ = cli("status", "--json")
    assert code == 0
    assert out["transactions"] == 2 and out["miner_running"] is None and out["active"] == []
    assert out["credits"] == 100 and out["verdicts"]["accepted"] == 1
    code, text, _ = cli("status")
    assert "credits:      100 (1 accepted, 0 rejected, 0 awaiting a verdict)" in text
    assert out["model"] == {"version": 1, "eval_loss": 1.25, "updates_aggregated": 1}
    assert (
        "model:        version 1, held-out loss 1.2500 nats/token "
        "(1 of this miner's updates aggregated)"
    ) in text
    code, out, _ = cli("status", journal.committed, "--json")
    assert code == 0
    assert out["state"] == "committed" and all(out["progress"].values())
    assert (out["model_version"], out["aggregation"], out["aggregated_into"]) == (
        0,
        "aggregated",
        1,
    )
    assert out["aggregation_text"] == "went into version 1"
    assert [h["new_state"] for h in out["history"] if h["kind"] == "transition"][-1] == "committed"
    code, text, _ = cli("status", journal.committed)
    assert "state" in text and "history:" in text
    code, out, err = cli("status", "nope", "--json")
    assert code == ExitCode.NOT_FOUND
    assert out["error"] == {"code": 6, "kind": "not_found", "message": "no transaction 'nope'"}
    assert "no transaction 'nope'" in err


def test_status_shows_a_running_miner(journal: Filled, cli: RunCli) -> None:
    with InstanceLock(paths().data_dir):
        code, out, _ = cli("status", "--json")
    assert code == 0 and out["miner_running"].isdigit()


def test_transactions_filters(journal: Filled, cli: RunCli) -> None:
    code, out, _ = cli("transactions", "--json")
    assert code == 0 and {t["transaction_id"] for t in out} == {journal.committed, journal.dead}
    code, out, _ = cli("transactions", "--state", "committed", "--json")
    assert [t["transaction_id"] for t in out] == [journal.committed]
    verdicts = {t["transaction_id"]: (t["verdict"], t["credits"]) for t in out}
    assert verdicts == {journal.committed: ("accepted", 100)}
    code, text, _ = cli("transactions")
    head, *rows = text.splitlines()
    assert head.split() == [
        "TRANSACTION_ID",
        "ROUND_ID",
        "MODEL_VERSION",
        "STATE",
        "AGE_SECONDS",
        "ATTEMPTS",
        "VERDICT",
        "CREDITS",
        "AGGREGATED_INTO",
        "ERROR_CATEGORY",
    ]
    (row,) = [r for r in rows if r.startswith(journal.committed)]
    assert row.split()[1:3] == ["1", "0"]  # round 1, trained on the genesis version
    assert row.split()[6:9] == ["accepted", "100", "1"]  # went into version 1
    code, _, err = cli("transactions", "--state", "bogus")
    assert code == ExitCode.USAGE and "state: accepted pending" in err
    code, _, err = cli("transactions", "--limit", "0")
    assert code == ExitCode.USAGE and "accepted 1..100000" in err


def test_dead_letters_list(journal: Filled, cli: RunCli) -> None:
    code, out, _ = cli("dead-letters", "--json")
    assert code == 0
    (letter,) = out
    assert letter["transaction_id"] == journal.dead and letter["category"] == "permanent"


def test_usage_errors_exit_2(cli: RunCli) -> None:
    assert cli()[0] == ExitCode.USAGE
    assert cli("bogus")[0] == ExitCode.USAGE
    assert cli("stats", "--window", "-5")[0] == ExitCode.USAGE
    assert cli("--help")[0] == ExitCode.OK


def test_help_documents_exit_codes() -> None:
    text = build_parser().format_help()
    for fragment in ("3 config invalid", "4 auth/keystore", "5 service unreachable", "130"):
        assert fragment in text
