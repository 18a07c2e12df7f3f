"""What the GUI thread was doing while its loop stalled (`bench.gui --trace-stalls FILE`).

The latency probe says how late its timer fired, not why. A sampling profiler of the whole
run drowns the few long stalls in thousands of short ones; this watchdog thread looks only
at them: while the probe's next tick is overdue by more than `sample_from_ms` it samples
the watched thread's Python stack every `period_s`, and when the tick finally comes it keeps
the stall (how late, the watched thread's own CPU time within it, the stacks seen) if it
was later than `threshold_ms`.

The sampler needs the GIL, so while the watched thread runs Python it reads that thread's
stack at the interpreter's switch interval (5 ms); a stall spent in C++ with the GIL
released (a Qt paint) shows the Python frame that called into it. A garbage collection
never lets go of the GIL, so the sampler cannot see one, and one that another thread
started holds up the watched thread as surely: the tracer times every collection on every
thread (`gc.callbacks`), gives each stall the collection time within it, and the report
ends with the collections of the whole run by generation.
"""

from __future__ import annotations

import gc
import sys
import threading
import time
import traceback
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO

Stack = tuple[str, ...]


@dataclass
class Stall:
    at_s: float  # when it began, seconds since the tracer started
    lateness_ms: float
    cpu_ms: float  # the watched thread's CPU time within it
    gc_ms: float = 0.0  # garbage collection (by any thread) within it
    stacks: Counter[Stack] = field(default_factory=Counter)


@dataclass(frozen=True)
class Collection:
    generation: int
    start: float  # time.perf_counter()
    end: float
    watched: bool  # run by the watched thread (else by another, holding the GIL)


def thread_cpu_clock(thread_id: int) -> Callable[[], float]:
    """CPU seconds used so far by the thread `thread_id` (`threading.get_ident()`), read
    from another thread; a clock that stays at 0.0 where the platform has none."""
    try:
        clock_id = time.pthread_getcpuclockid(thread_id)
    except (AttributeError, OSError):
        return lambda: 0.0
    return lambda: time.clock_gettime(clock_id)


def stack_of(thread_id: int, *, depth: int = 30) -> Stack:
    """The innermost `depth` frames of a thread's Python stack, outermost first."""
    frame = sys._current_frames().get(thread_id)
    if frame is None:
        return ()
    frames = traceback.extract_stack(frame)[-depth:]
    return tuple(f"{f.filename}:{f.lineno} {f.name}" for f in frames)


class StallTracer:
    """Watches `due()` (when the probe's next tick is due, `time.perf_counter` seconds, or
    None while stopped) from a daemon thread and samples `thread_id`'s stack while it is
    overdue."""

    def __init__(
        self,
        due: Callable[[], float | None],
        *,
        thread_id: int,
        threshold_ms: float = 40.0,
        sample_from_ms: float | None = None,
        period_s: float = 0.002,
    ) -> None:
        """`sample_from_ms`: how late the tick must be before stacks are sampled (half the
        threshold by default, so a stall's beginning is in its samples)."""
        self._due = due
        self._thread_id = thread_id
        self.threshold_ms = threshold_ms
        self._sample_from_s = (
            threshold_ms / 2 if sample_from_ms is None else sample_from_ms
        ) / 1000.0
        self._period_s = period_s
        self._cpu = thread_cpu_clock(thread_id)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = time.perf_counter()
        self._gc_start = 0.0
        self.collections: deque[Collection] = deque(maxlen=100_000)
        self.stalls: list[Stall] = []

    def start(self) -> None:
        self._t0 = time.perf_counter()
        self._stop.clear()
        gc.callbacks.append(self._on_gc)
        self._thread = threading.Thread(target=self._watch, name="stall-tracer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def reset(self) -> None:
        """Forget the stalls and collections so far (the warm-up's)."""
        self.stalls = []
        self.collections.clear()

    def __enter__(self) -> StallTracer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        # Only one thread collects at a time (it holds the GIL throughout), so one start
        # time serves every thread.
        now = time.perf_counter()
        if phase == "start":
            self._gc_start = now
        else:
            watched = threading.get_ident() == self._thread_id
            self.collections.append(
                Collection(info["generation"], self._gc_start, now, watched=watched)
            )

    def _gc_within(self, start: float, end: float) -> float:
        return sum(
            max(0.0, min(end, c.end) - max(start, c.start))
            for c in list(self.collections)
            if c.end > start
        )

    def _watch(self) -> None:
        current: Stall | None = None
        current_due = 0.0
        cpu_before = cpu0 = self._cpu()
        while not self._stop.wait(self._period_s):
            due, now, cpu = self._due(), time.perf_counter(), self._cpu()
            if current is not None and due != current_due:
                # The tick came: it was at most one period before `now`.
                current.lateness_ms = (now - current_due) * 1000.0
                current.cpu_ms = (cpu - cpu0) * 1000.0
                current.gc_ms = self._gc_within(current_due, now) * 1000.0
                if current.lateness_ms > self.threshold_ms:
                    self.stalls.append(current)
                current = None
            if due is None or now - due < self._sample_from_s:
                cpu_before = cpu
                continue
            if current is None:
                current, current_due = Stall(at_s=due - self._t0, lateness_ms=0.0, cpu_ms=0.0), due
                cpu0 = cpu_before  # read before the stall began (or as it began)
            current.stacks[stack_of(self._thread_id)] += 1

    def report(self, out: TextIO, *, top: int = 20, stacks_per_stall: int = 3) -> None:
        """The `top` latest stalls, then the `top` in which the watched thread used the most
        CPU (on a loaded machine the latest are mostly waits for a core; the busiest are
        the code to fix), each with its most frequent stacks; then the garbage collections
        by generation and thread."""
        latest = sorted(self.stalls, key=lambda s: s.lateness_ms, reverse=True)[:top]
        busiest = sorted(self.stalls, key=lambda s: s.cpu_ms, reverse=True)[:top]
        out.write(f"{len(self.stalls)} stalls over {self.threshold_ms:.0f} ms\n")
        for title, stalls in (("latest", latest), ("most thread CPU", busiest)):
            out.write(
                f"\n# the {len(stalls)} {title}, with the watched thread's stacks "
                "while they lasted\n"
            )
            for stall in stalls:
                self._write_stall(out, stall, stacks_per_stall)
        out.write("\ngarbage collections:\n")
        for generation in (0, 1, 2):
            for watched, where in ((True, "the watched thread"), (False, "other threads")):
                times = [
                    (c.end - c.start) * 1000.0
                    for c in self.collections
                    if c.generation == generation and c.watched == watched
                ]
                if times:
                    out.write(
                        f"generation {generation} on {where}: {len(times)}, "
                        f"{sum(times):.1f} ms in all, longest {max(times):.1f} ms\n"
                    )

    @staticmethod
    def _write_stall(out: TextIO, stall: Stall, stacks_per_stall: int) -> None:
        samples = sum(stall.stacks.values())
        out.write(
            f"\n== {stall.lateness_ms:.1f} ms late at {stall.at_s:.1f} s, thread CPU "
            f"{stall.cpu_ms:.1f} ms, garbage collection {stall.gc_ms:.1f} ms, "
            f"{samples} samples\n"
        )
        for stack, count in stall.stacks.most_common(stacks_per_stall):
            out.write(f"-- {count} of {samples} samples:\n")
            out.writelines(f"   {line}\n" for line in stack)
