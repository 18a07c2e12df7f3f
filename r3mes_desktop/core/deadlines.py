"""Can this rig finish a round before its deadline? A prediction from measured throughput.

A round may carry a deadline (`RoundSpec.deadline`, unix seconds, 0 = none) after which the
contract refuses its submissions ("round past deadline", a permanent error). Training a
round that cannot be submitted in time burns the device for nothing, so the miner measures
how many training steps per second this rig does (`StepRate`, from the progress its own
training reports) and skips a round whose predicted finish, now + steps / rate, is after
the deadline (`skip_reason`). Until a rate has been measured every round whose deadline has
not passed is attempted: a guess would skip rounds a fast rig could finish.
"""

from __future__ import annotations

import time
from collections import deque

from r3mes_desktop.core.steps import RoundSpec


class StepRate:
    """Training steps per second over the last `window_s` seconds of progress.

    Each run (transaction) reports its step as it trains; the rate is the steps gained
    divided by the time they took, summed over consecutive reports of the same run. A gap
    longer than `max_gap_s` between two reports (a pause, a worker restart, the rig asleep)
    is not training time and is left out, as is a step that went back (a resume from an
    older checkpoint). Once measured, the rate is kept while nothing trains: an idle rig's
    last known speed is still the best guess for the next round.
    """

    def __init__(self, *, window_s: float = 300.0, max_gap_s: float = 600.0) -> None:
        self.window_s = window_s
        self.max_gap_s = max_gap_s
        self._last: dict[str, tuple[float, int]] = {}  # run -> (at, step) of its last report
        self._gains: deque[tuple[float, float, int]] = deque()  # (at, seconds, steps)
        self._rate: float | None = None

    def observe(self, run: str, step: int, at: float) -> None:
        """`run` reached `step` at monotonic time `at`."""
        previous = self._last.get(run)
        self._last[run] = (at, step)
        if previous is not None:
            seconds, steps = at - previous[0], step - previous[1]
            if 0 < seconds <= self.max_gap_s and steps > 0:
                self._gains.append((at, seconds, steps))
        while self._gains and self._gains[0][0] < at - self.window_s:
            self._gains.popleft()
        for other in [r for r, (seen, _) in self._last.items() if seen < at - self.max_gap_s]:
            del self._last[other]
        if self._gains:
            self._rate = sum(g[2] for g in self._gains) / sum(g[1] for g in self._gains)

    @property
    def per_second(self) -> float | None:
        """Steps per second, or None before any has been measured."""
        return self._rate


def clock_time(ts: float) -> str:
    """HH:MM in local time, as a person compares it with the clock on the wall."""
    return time.strftime("%H:%M", time.localtime(ts))


def predicted_finish(spec: RoundSpec, *, now: float, steps_per_s: float) -> float:
    """Unix time the round's training would end at this rate, starting now."""
    return now + spec.steps / steps_per_s


def skip_reason(spec: RoundSpec, *, now: float, steps_per_s: float | None) -> str | None:
    """Why the miner should not start `spec` now (a sentence for the user), or None.

    A deadline already passed is always a reason; a predicted finish after the deadline is
    one once a rate is known."""
    if spec.deadline <= 0:
        return None
    if now >= spec.deadline:
        return f"round {spec.round_id}: its deadline {clock_time(spec.deadline)} has passed"
    if steps_per_s is None or steps_per_s <= 0:
        return None
    finish = predicted_finish(spec, now=now, steps_per_s=steps_per_s)
    if finish <= spec.deadline:
        return None
    return (
        f"round {spec.round_id}: predicted finish {clock_time(finish)} after its deadline "
        f"{clock_time(spec.deadline)} ({spec.steps} steps at {steps_per_s:.3g} steps/s)"
    )


def hold_warning(
    spec: RoundSpec, *, steps_done: int, now: float, steps_per_s: float | None
) -> tuple[str, str] | None:
    """What a hold of mining means for a round in flight: (kind, sentence), kind "late"
    when it can no longer meet its deadline at this rig's speed, "resume-by" while it
    can if mining resumes by a time; None without a deadline or a measured speed."""
    if spec.deadline <= 0 or steps_per_s is None or steps_per_s <= 0:
        return None
    remaining = max(0, spec.steps - steps_done)
    latest = spec.deadline - remaining / steps_per_s
    if now > latest:
        return (
            "late",
            f"round {spec.round_id} will miss its deadline {clock_time(spec.deadline)} "
            f"while mining is held back ({remaining} steps left at {steps_per_s:.3g} steps/s)",
        )
    return (
        "resume-by",
        f"round {spec.round_id} meets its deadline {clock_time(spec.deadline)} only if "
        f"mining resumes by {clock_time(latest)}",
    )
