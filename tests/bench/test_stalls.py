"""bench.stalls: the watchdog that says what the GUI thread ran while its loop stalled, and
bench.gui's --trace-stalls option."""

from __future__ import annotations

import gc
import io
import threading
import time
from collections.abc import Iterator

import pytest

from bench import gui
from bench.stalls import StallTracer


class Due:
    """Stands in for the latency probe: when its next tick is due."""

    def __init__(self) -> None:
        self.at: float | None = time.perf_counter() + 0.010

    def tick(self, *, next_in_s: float = 10.0) -> None:
        """The tick came; the next is due in `next_in_s` (far off: no stall while the test
        waits for the watchdog)."""
        self.at = time.perf_counter() + next_in_s


@pytest.fixture
def due() -> Due:
    return Due()


@pytest.fixture
def tracer(due: Due) -> Iterator[StallTracer]:
    tracer = StallTracer(lambda: due.at, thread_id=threading.get_ident(), threshold_ms=30.0)
    with tracer:
        yield tracer


def busy_computing_here(cpu_s: float) -> int:
    """Compute for `cpu_s` of this thread's CPU time (longer on a loaded machine)."""
    end, n = time.thread_time() + cpu_s, 0
    while time.thread_time() < end:
        n += 1
    return n


def test_a_stall_is_kept_with_the_stack_and_cpu_of_what_ran(due: Due, tracer: StallTracer) -> None:
    busy_computing_here(0.120)  # the tick, due 10 ms in, is ~110 ms late
    due.tick()
    time.sleep(0.050)  # the watchdog sees the tick
    tracer.stop()

    assert len(tracer.stalls) == 1
    stall = tracer.stalls[0]
    assert stall.lateness_ms > 80.0
    assert stall.cpu_ms > 50.0  # it computed: the thread's own CPU, not the wall clock
    frames = [line for stack in stall.stacks for line in stack]
    assert any(line.endswith(" busy_computing_here") for line in frames)
    out = io.StringIO()
    tracer.report(out)
    assert out.getvalue().startswith("1 stalls over 30 ms\n")
    assert "busy_computing_here" in out.getvalue()


def test_stalls_under_the_threshold_are_not_kept(due: Due) -> None:
    with StallTracer(lambda: due.at, thread_id=threading.get_ident(), threshold_ms=5000.0) as t:
        busy_computing_here(0.080)
        due.tick()
        time.sleep(0.050)
    assert t.stalls == []


def test_a_stall_spent_waiting_uses_no_cpu(due: Due, tracer: StallTracer) -> None:
    time.sleep(0.120)
    due.tick()
    time.sleep(0.050)
    tracer.stop()

    (stall,) = tracer.stalls
    assert stall.cpu_ms < 20.0


def waiting_here(seconds: float) -> None:
    time.sleep(seconds)


def test_the_report_lists_the_busiest_stalls_apart_from_the_latest(
    due: Due, tracer: StallTracer
) -> None:
    waiting_here(1.0)  # the latest (80 ms of CPU takes less even on a loaded machine)
    due.tick()
    time.sleep(0.050)
    due.tick(next_in_s=0.0)
    busy_computing_here(0.080)  # less late, but the thread computed
    due.tick()
    time.sleep(0.050)
    tracer.stop()

    out = io.StringIO()
    tracer.report(out, top=1, stacks_per_stall=1)
    latest, busiest = out.getvalue().split("# the 1 ")[1:]
    assert latest.startswith("latest") and "waiting_here" in latest
    assert busiest.startswith("most thread CPU") and "busy_computing_here" in busiest


def test_garbage_collections_are_timed_on_every_thread_and_counted_in_the_stall(
    due: Due, tracer: StallTracer
) -> None:
    gc.disable()  # only the two collections below
    try:
        heap = [[i] for i in range(300_000)]  # a full pass over these takes milliseconds
        gc.collect()  # on the watched thread
        collector = threading.Thread(target=gc.collect)  # on another: it holds the GIL too
        collector.start()
        collector.join()
    finally:
        gc.enable()
    busy_computing_here(0.060)
    due.tick()
    time.sleep(0.050)
    tracer.stop()
    del heap

    full = [c for c in tracer.collections if c.generation == 2]
    assert [c.watched for c in full] == [True, False]
    (stall,) = tracer.stalls
    assert stall.gc_ms == pytest.approx(sum((c.end - c.start) * 1000.0 for c in full), rel=0.01)
    out = io.StringIO()
    tracer.report(out)
    assert "generation 2 on the watched thread: 1," in out.getvalue()
    assert "generation 2 on other threads: 1," in out.getvalue()
    assert tracer._on_gc not in gc.callbacks  # stop() unhooks it


def test_reset_forgets_the_warm_up(due: Due, tracer: StallTracer) -> None:
    busy_computing_here(0.080)
    due.tick()
    time.sleep(0.050)
    tracer.reset()
    tracer.stop()
    assert tracer.stalls == []


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--skip-throughput", "--trace-stalls", "x.txt"], "--skip-throughput skips"),
        (["--trace-stalls", "x.txt", "--stall-threshold-ms", "0"], "accepted > 0"),
    ],
)
def test_bench_gui_refuses_a_trace_it_cannot_make(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        gui.main(["--skip-cold-start", *argv])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
