"""The progress line: rewritten in place on a terminal, throttled lines elsewhere."""

from __future__ import annotations

import io

from r3mes_desktop.cli.output import Progress, format_table
from r3mes_desktop.core.errors import NetworkError
from r3mes_desktop.core.events import (
    EventBus,
    ModelVersionPublished,
    Notice,
    RetryScheduled,
    StepProgress,
    TransactionStateChanged,
    VerdictRecorded,
)
from r3mes_desktop.core.resilience.retry import RetryPolicy


def _step(fraction: float, **detail: float) -> StepProgress:
    return StepProgress(
        transaction_id="mining_tx_abcdef123456789",
        step="training",
        fraction=fraction,
        detail=detail,
    )


def test_terminal_progress_rewrites_one_line() -> None:
    out = io.StringIO()
    progress = Progress(stream=out, tty=True)
    progress.on_event(_step(0.25, loss=4.5, tokens_per_s=812.0))
    progress.on_event(_step(0.5, loss=4.1))
    progress.on_event(
        TransactionStateChanged(
            transaction_id="mining_tx_abcdef123456789",
            round_id=3,
            old_state="training",
            new_state="ipfs_upload",
        )
    )
    progress.finish()
    text = out.getvalue()
    assert text.startswith("\rabcdef12 training")  # the id people tell apart
    assert "25.0%" in text and "tokens 812 tok/s" in text and "50.0%" in text
    assert text.count("\n") == 1 and text.endswith("\n")
    assert text.rstrip().endswith("round 3: ipfs_upload")  # padded over the longer line


def test_plain_progress_prints_on_change_and_then_every_interval() -> None:
    now = [0.0]
    out = io.StringIO()
    progress = Progress(stream=out, tty=False, plain_interval_s=30, clock=lambda: now[0])
    progress.on_event(_step(0.1))
    progress.on_event(_step(0.2))  # same step, too soon: not printed
    now[0] = 31.0
    progress.on_event(_step(0.3))
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and "10.0%" in lines[0] and "30.0%" in lines[1]
    assert "\r" not in out.getvalue()


def test_plain_progress_shows_the_first_figures_right_after_the_state_line() -> None:
    """A step's state line ("round 3: training") and its first progress figures are two
    things to print: the figures must not wait for the interval behind the state line."""
    out = io.StringIO()
    progress = Progress(stream=out, tty=False, plain_interval_s=30, clock=lambda: 0.0)
    progress.on_event(
        TransactionStateChanged(
            transaction_id="mining_tx_abcdef123456789",
            round_id=3,
            old_state="pending",
            new_state="training",
        )
    )
    progress.on_event(_step(0.1, loss=4.5))
    lines = out.getvalue().splitlines()
    assert lines == ["abcdef12 round 3: training", "abcdef12 training           10.0%  loss 4.5"]


def test_progress_redacts_error_messages() -> None:
    out = io.StringIO()
    Progress(stream=out, tty=False).on_event(
        TransactionStateChanged(
            transaction_id="t",
            round_id=1,
            old_state="blockchain_submit",
            new_state="failed",
            error_category="authentication",
            error_message="signer password=hunter22 rejected",
        )
    )
    assert "hunter22" not in out.getvalue() and "authentication" in out.getvalue()


def test_table_alignment() -> None:
    text = format_table([{"a": "x", "b": 1.25}, {"a": "long", "b": None}], ["a", "b"])
    assert text.splitlines() == ["A     B  ", "x     1.2", "long  -  "]


def test_retries_show_as_lines_naming_service_attempt_and_delay() -> None:
    """An outage retried at INFO (below the console level) still shows on the console."""
    out = io.StringIO()
    progress = Progress(stream=out, tty=False, plain_interval_s=30, clock=lambda: 0.0)
    for attempt, delay in ((1, 2.0), (2, 4.0)):
        progress.on_event(
            RetryScheduled(
                operation="ipfs.add_and_pin",
                service="ipfs",
                attempt=attempt,
                delay=delay,
                category="network",
                message="ClientConnectorError: Connection refused (127.0.0.1:5001)",
                transaction_id="mining_tx_abcdef123456789",
                max_attempts=4,
            )
        )
    progress.on_event(
        RetryScheduled(
            operation="chain.receipt",
            service="chain",
            attempt=1,
            delay=0.4,
            category="network",
            message="timed out after 30 s",
        )
    )
    assert out.getvalue().splitlines() == [
        "abcdef12 IPFS unreachable (connection refused) — retry 1/3 in 2 s",
        "abcdef12 IPFS unreachable (connection refused) — retry 2/3 in 4 s",
        "The chain RPC unreachable (timed out) — retry 1 in 0 s",
    ]


async def test_a_real_retry_policy_reports_its_attempt_limit_to_the_display() -> None:
    out = io.StringIO()
    progress = Progress(stream=out, tty=True)
    bus = EventBus()
    bus.subscribe(progress.on_event)
    failures = [NetworkError("connection refused", service="ipfs")] * 2

    async def flaky() -> str:
        if failures:
            raise failures.pop()
        return "ok"

    policy = RetryPolicy(max_retries=3, initial_delay=0.0)
    assert await policy.call_async(flaky, operation="ipfs.cat", service="ipfs", bus=bus) == "ok"
    assert out.getvalue() == (
        "\rIPFS unreachable (connection refused) — retry 1/3 in 0 s\n"
        "\rIPFS unreachable (connection refused) — retry 2/3 in 0 s\n"
    )


def _verdict(verdict: str, credits: int, reason: int, text: str) -> VerdictRecorded:
    return VerdictRecorded(
        transaction_id="mining_tx_abcdef123456789",
        round_id=3,
        verdict=verdict,
        reason=reason,
        reason_text=text,
        credits=credits,
        block_number=120,
        validator="0x" + "cd" * 20,
    )


def test_each_verdict_is_a_line_of_its_own() -> None:
    out = io.StringIO()
    progress = Progress(stream=out, tty=False)
    progress.on_event(_verdict("accepted", 100, 0, "accepted"))
    progress.on_event(_verdict("rejected", 0, 5, "a sampled training segment did not reproduce"))
    assert out.getvalue().splitlines() == [
        "abcdef12 round 3: accepted, +100 credits",
        "abcdef12 round 3: rejected (a sampled training segment did not reproduce), no credits",
    ]


def _version(version_id: int, current: int, *, updates: int) -> ModelVersionPublished:
    return ModelVersionPublished(
        version_id=version_id,
        round_id=70 + version_id,
        parent_id=version_id - 1,
        eval_loss=2.68071,
        updates=updates,
        block_number=300,
        aggregator="0x" + "ef" * 20,
        current_version=current,
    )


def test_a_new_model_version_is_a_line_and_a_backfill_is_not() -> None:
    out = io.StringIO()
    progress = Progress(stream=out, tty=False)
    for version in range(1, 4):  # a long history read at start: its older versions
        progress.on_event(_version(version, 4, updates=2))
    progress.on_event(_version(4, 4, updates=1))
    progress.on_event(_version(5, 5, updates=3))
    assert out.getvalue().splitlines() == [
        "network model version 4: held-out loss 2.6807 (round 74, 1 update)",
        "network model version 5: held-out loss 2.6807 (round 75, 3 updates)",
    ]


def test_where_the_miner_is_is_a_line_of_its_own() -> None:
    out = io.StringIO()
    progress = Progress(stream=out, tty=True)
    progress.on_event(_step(0.5, loss=1.0))
    connected = "connected to it (chain 1337), contract 0xabab…abab, 2 open rounds for you"
    progress.on_event(Notice(level="info", message=connected, source="network"))
    waiting = "waiting for rounds: none open for you on it (chain 1337), contract 0xabab…abab"
    progress.on_event(Notice(level="info", message=waiting, source="network"))
    # a skipped round is a warning the console's log shows already; other notices too
    skipped = "round 4: predicted finish 12:40 after its deadline 12:30: skipped"
    progress.on_event(Notice(level="warning", message=skipped, source="miner"))
    progress.on_event(Notice(level="warning", message="low disk", source="disk"))
    lines = out.getvalue().split("\n")
    assert lines[0].endswith(connected)  # after the rewritten progress line
    assert lines[1:] == ["\r" + waiting, ""]
