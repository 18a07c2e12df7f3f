"""The deadline rule: measured steps per second, predicted finish, and when to skip."""

from __future__ import annotations

from r3mes_desktop.core.deadlines import StepRate, clock_time, skip_reason
from r3mes_desktop.core.steps import RoundSpec

NOW = 1_700_000_000.0


def spec(*, steps: int, deadline: float) -> RoundSpec:
    return RoundSpec(
        round_id=7, seed=1, difficulty=16, base_model_id="tiny", steps=steps, deadline=int(deadline)
    )


def test_rate_is_steps_gained_over_the_time_they_took() -> None:
    rate = StepRate()
    assert rate.per_second is None
    rate.observe("a", 10, 100.0)
    assert rate.per_second is None  # one report says nothing about speed
    rate.observe("a", 20, 105.0)
    rate.observe("a", 30, 115.0)
    assert rate.per_second == 20 / 15


def test_pauses_and_steps_going_back_are_not_training_time() -> None:
    rate = StepRate(window_s=5000, max_gap_s=60)
    rate.observe("a", 0, 0.0)
    rate.observe("a", 10, 10.0)  # 1 step/s
    rate.observe("a", 20, 1000.0)  # paused for 990 s: left out
    rate.observe("b", 50, 1001.0)
    rate.observe("b", 5, 1002.0)  # resumed from an older checkpoint: left out
    rate.observe("b", 15, 1007.0)  # 2 steps/s
    assert rate.per_second == (10 + 10) / (10 + 5)


def test_old_progress_leaves_the_window_but_the_last_rate_is_kept() -> None:
    rate = StepRate(window_s=100)
    rate.observe("a", 0, 0.0)
    rate.observe("a", 10, 10.0)
    rate.observe("b", 0, 500.0)  # idle long since; one report of a new run
    assert rate.per_second == 1.0  # the idle rig's last speed is still the best guess
    rate.observe("b", 40, 510.0)
    assert rate.per_second == 4.0  # only recent progress counts once there is some


def test_no_deadline_and_unknown_rate_are_attempted() -> None:
    assert skip_reason(spec(steps=10**6, deadline=0), now=NOW, steps_per_s=0.001) is None
    assert skip_reason(spec(steps=10**6, deadline=NOW + 60), now=NOW, steps_per_s=None) is None


def test_a_finish_after_the_deadline_is_skipped_with_both_times() -> None:
    late = spec(steps=600, deadline=NOW + 300)  # 600 s of training at 1 step/s
    reason = skip_reason(late, now=NOW, steps_per_s=1.0)
    assert reason is not None
    assert reason.startswith(
        f"round 7: predicted finish {clock_time(NOW + 600)} after its deadline "
        f"{clock_time(NOW + 300)}"
    )
    assert skip_reason(late, now=NOW, steps_per_s=2.0) is None  # 300 s: just in time


def test_a_passed_deadline_is_skipped_even_before_any_rate() -> None:
    reason = skip_reason(spec(steps=1, deadline=NOW - 1), now=NOW, steps_per_s=None)
    assert reason == f"round 7: its deadline {clock_time(NOW - 1)} has passed"


def test_a_hold_says_by_when_mining_must_resume_and_then_that_the_round_is_late() -> None:
    from r3mes_desktop.core.deadlines import hold_warning

    due = spec(steps=1000, deadline=10_000.0)
    # 400 steps left at 10 steps/s: 40 s of training, so resume by 9960 at the latest
    kind, text = hold_warning(due, steps_done=600, now=9_000.0, steps_per_s=10.0) or ("", "")
    assert kind == "resume-by"
    assert text == (
        f"round 7 meets its deadline {clock_time(10_000.0)} only if mining resumes by "
        f"{clock_time(9_960.0)}"
    )
    kind, text = hold_warning(due, steps_done=600, now=9_961.0, steps_per_s=10.0) or ("", "")
    assert kind == "late" and "400 steps left at 10 steps/s" in text
    assert hold_warning(due, steps_done=600, now=9_000.0, steps_per_s=None) is None
    no_deadline = spec(steps=1000, deadline=0)
    assert hold_warning(no_deadline, steps_done=0, now=0.0, steps_per_s=10.0) is None
