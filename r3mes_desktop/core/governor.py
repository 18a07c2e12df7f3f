"""The resource governor: whether mining may run now, and in plain words why not.

Home miners keep a client only if it never gets in their way, so the governor holds mining
back while the computer is in use, outside the hours the user chose, on battery, while
other programs need the CPU, while named programs run, or while a GPU is too hot. Each
*policy* is a small object over one snapshot of *readings*; the governor combines them:
mining runs only when no policy holds it back, and every policy that does gives a reason
("computer in use — resumes after 3 min idle").

Readings come from injected *sources* (protocols below; the real ones, psutil, X11, NVML,
live in `adapters/governor`), so the logic is tested with fakes and an injected clock. A
source that cannot read returns `Unknown(why)`; one that raises counts as `Unknown` too, so
nothing a source does reaches the governor as an exception. Each policy states what it does
with an unknown reading:

- idle time unknown → treated as *in use* (the user asked not to be disturbed);
- battery unknown → treated as *on mains power* (a desktop without a readable battery mines);
- other programs' CPU load unknown → not held back;
- running programs unknown → not held back;
- GPU temperature unknown → not held back (no NVIDIA GPU, or no NVML).

Every unknown reading shows as a note in the decision, so the user sees which policy could
not be evaluated and what was done instead.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from r3mes_desktop.core.clock import SYSTEM_CLOCK, Clock

log = logging.getLogger(__name__)

T = TypeVar("T")

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True)
class Unknown:
    """A reading that could not be taken, and why ("no X display")."""

    why: str


@dataclass(frozen=True)
class Battery:
    """`percent` is None when the battery does not report its charge."""

    on_battery: bool
    percent: float | None = None


NO_BATTERY = Battery(on_battery=False)
"""A machine without a battery: on mains power, always."""


# -- sources --------------------------------------------------------------------------------
class IdleSource(Protocol):
    def idle_seconds(self) -> float | Unknown:
        """Seconds since the last keyboard or mouse input."""
        ...


class PowerSource(Protocol):
    def battery(self) -> Battery | Unknown: ...


class CpuLoadSource(Protocol):
    def other_cpu_percent(self) -> float | Unknown:
        """CPU load of every process but the miner's own, 0–100 % of the whole machine."""
        ...


class ProcessSource(Protocol):
    def process_names(self) -> frozenset[str] | Unknown:
        """Names of the running programs (lower case)."""
        ...


class GpuTemperatureSource(Protocol):
    def temperatures_c(self) -> Mapping[int, float] | Unknown:
        """Each GPU's temperature in °C, by index."""
        ...


LocalTime = Callable[[], dt.datetime]
"""The local wall-clock time (naive or aware; only weekday and time of day are used)."""


@dataclass
class Sources:
    """The sources a governor may read; a policy whose source is missing reads Unknown."""

    idle: IdleSource | None = None
    power: PowerSource | None = None
    cpu: CpuLoadSource | None = None
    processes: ProcessSource | None = None
    gpu: GpuTemperatureSource | None = None
    local_time: LocalTime = dt.datetime.now


class Readings:
    """One evaluation's readings: each source is read at most once, and only if a policy
    asks for it; a source that raises reads as Unknown."""

    def __init__(self, sources: Sources, *, monotonic: float) -> None:
        self.sources = sources
        self.monotonic = monotonic
        self._cache: dict[str, object] = {}

    def _read(self, name: str, read: Callable[[], T | Unknown] | None) -> T | Unknown:
        if name not in self._cache:
            if read is None:
                value: object = Unknown(f"no {name} source on this system")
            else:
                try:
                    value = read()
                except Exception as exc:  # a source must never break the governor
                    log.warning("governor source %s failed: %s", name, exc)
                    value = Unknown(f"{name} source failed: {exc}")
            self._cache[name] = value
        return self._cache[name]  # type: ignore[return-value]

    def idle_seconds(self) -> float | Unknown:
        src = self.sources.idle
        return self._read("idle time", src.idle_seconds if src else None)

    def battery(self) -> Battery | Unknown:
        src = self.sources.power
        return self._read("battery", src.battery if src else None)

    def other_cpu_percent(self) -> float | Unknown:
        src = self.sources.cpu
        return self._read("CPU load", src.other_cpu_percent if src else None)

    def process_names(self) -> frozenset[str] | Unknown:
        src = self.sources.processes
        return self._read("process list", src.process_names if src else None)

    def temperatures_c(self) -> Mapping[int, float] | Unknown:
        src = self.sources.gpu
        return self._read("GPU temperature", src.temperatures_c if src else None)

    def local_time(self) -> dt.datetime:
        return self.sources.local_time()


# -- verdicts and policies ------------------------------------------------------------------
@dataclass(frozen=True)
class Verdict:
    """A policy's answer: `holds` mining back or not; `reason` says why (or, when a reading
    was unknown and the policy let mining run, what it could not evaluate)."""

    holds: bool
    reason: str
    device: str | None = None  # set: holds back only this device (`cuda:0`), not all mining


class Policy(Protocol):
    def check(self, readings: Readings) -> Verdict | None:
        """None: nothing to say (mining may run as far as this policy goes)."""
        ...


def _minutes(seconds: float) -> str:
    if seconds < 60:
        return f"{max(1, round(seconds))} s"
    minutes = seconds / 60
    return f"{minutes:g} min" if minutes == int(minutes) else f"{minutes:.1f} min"


@dataclass(frozen=True)
class OnlyWhenIdle:
    """Mine only after `minutes` without keyboard or mouse input. Any input resets the idle
    time, so the next evaluation (every second) holds mining back: paused within 1 s."""

    minutes: float

    def check(self, readings: Readings) -> Verdict | None:
        idle = readings.idle_seconds()
        need = self.minutes * 60
        if isinstance(idle, Unknown):
            return Verdict(
                True,
                f"idle time cannot be read ({idle.why}): treated as in use, not mining",
            )
        if idle >= need:
            return None
        # no countdown in the reason: it would change every second, and every change of
        # the decision is an event and a printed line
        return Verdict(True, f"computer in use — resumes after {_minutes(need)} idle")


@dataclass(frozen=True)
class Window:
    """A weekday time window: `day` 0 = Monday; `end` before `start` runs past midnight
    (fri 22:00–06:00 ends on Saturday morning); `start == end` is the whole day."""

    day: int
    start: dt.time
    end: dt.time

    @classmethod
    def parse(cls, text: str) -> Window:
        """`DAY:HH:MM-HH:MM`, DAY one of mon…sun (e.g. `sat:09:00-17:30`)."""
        try:
            day_text, span = text.strip().lower().split(":", 1)
            start_text, end_text = span.split("-")
            day = WEEKDAYS.index(day_text[:3]) if day_text[:3] in WEEKDAYS else -1
            if day < 0 or len(day_text) < 3:
                raise ValueError
            start = dt.time.fromisoformat(start_text.strip())
            end = dt.time.fromisoformat(end_text.strip())
        except ValueError:
            raise ValueError(
                f"time window {text!r}: expected DAY:HH:MM-HH:MM with DAY one of "
                f"{', '.join(WEEKDAYS)} (e.g. sat:09:00-17:30)"
            ) from None
        return cls(day, start, end)

    def __str__(self) -> str:
        return f"{WEEKDAYS[self.day]} {self.start:%H:%M}–{self.end:%H:%M}"

    def _span(self, week_start: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
        begin = week_start + dt.timedelta(days=self.day)
        start = dt.datetime.combine(begin.date(), self.start, begin.tzinfo)
        end = dt.datetime.combine(begin.date(), self.end, begin.tzinfo)
        if end <= start:
            end += dt.timedelta(days=1)
        return start, end

    def spans(self, around: dt.datetime) -> list[tuple[dt.datetime, dt.datetime]]:
        """This window's spans in the week of `around` and the weeks either side."""
        monday = dt.datetime.combine(
            (around - dt.timedelta(days=around.weekday())).date(), dt.time(), around.tzinfo
        )
        return [self._span(monday + dt.timedelta(weeks=w)) for w in (-1, 0, 1)]


@dataclass(frozen=True)
class TimeWindows:
    """Mine only inside one of the weekday windows."""

    windows: tuple[Window, ...]

    def check(self, readings: Readings) -> Verdict | None:
        now = readings.local_time()
        spans = [span for w in self.windows for span in w.spans(now)]
        if any(start <= now < end for start, end in spans):
            return None
        upcoming = [start for start, _ in spans if start > now]
        if not upcoming:
            return Verdict(True, "outside the mining hours")
        nxt = min(upcoming)
        return Verdict(
            True, f"outside the mining hours — resumes {WEEKDAYS[nxt.weekday()]} {nxt:%H:%M}"
        )


@dataclass(frozen=True)
class BatteryRule:
    """Not on battery at all (`floor` None), or on battery only above `floor` percent."""

    floor: float | None = None

    def check(self, readings: Readings) -> Verdict | None:
        state = readings.battery()
        if isinstance(state, Unknown):
            return Verdict(
                False, f"battery cannot be read ({state.why}): treated as on mains power"
            )
        if not state.on_battery:
            return None
        if self.floor is None:
            return Verdict(True, "on battery — resumes when plugged in")
        if state.percent is None:
            return Verdict(True, "on battery, charge unknown — resumes when plugged in")
        if state.percent < self.floor:
            return Verdict(
                True,
                f"battery at {state.percent:.0f}% (floor {self.floor:g}%) — resumes when "
                "plugged in",
            )
        return None


@dataclass(frozen=True)
class MaxOtherCpu:
    """Pause while the other programs together use more than `percent` of the CPU."""

    percent: float

    def check(self, readings: Readings) -> Verdict | None:
        load = readings.other_cpu_percent()
        if isinstance(load, Unknown):
            return Verdict(False, f"CPU load of other programs cannot be read ({load.why})")
        if load <= self.percent:
            return None
        return Verdict(
            True,
            f"other programs use {load:.0f}% CPU (limit {self.percent:g}%) — resumes when "
            "they use less",
        )


@dataclass(frozen=True)
class PauseWhile:
    """Pause while one of the named programs runs (games, video calls); names match the
    process name without case and without a trailing `.exe`."""

    names: tuple[str, ...]

    def check(self, readings: Readings) -> Verdict | None:
        running = readings.process_names()
        if isinstance(running, Unknown):
            return Verdict(False, f"running programs cannot be listed ({running.why})")
        plain = {_program(name) for name in running}
        found = sorted({name for name in self.names if _program(name) in plain})
        if not found:
            return None
        verb = "is" if len(found) == 1 else "are"
        return Verdict(
            True,
            f"{', '.join(found)} {verb} running — resumes when "
            + ("it exits" if len(found) == 1 else "they exit"),
        )


def _program(name: str) -> str:
    name = name.strip().lower()
    return name.removesuffix(".exe")


@dataclass
class GpuTemperature:
    """Hold a GPU back when it reaches `limit_c`; let it run again at `limit_c - delta_c`
    or below (hysteresis, so it does not flap around the limit). Per GPU: on a rig, one
    hot card pauses and the others mine on (`check_devices`; GPU i is device `cuda:i`)."""

    limit_c: float
    delta_c: float = 6.0
    _hot: set[int] = field(default_factory=set, init=False)

    def check(self, readings: Readings) -> Verdict | None:
        temps = readings.temperatures_c()
        if isinstance(temps, Unknown):
            self._hot.clear()
            return Verdict(False, f"GPU temperature cannot be read ({temps.why})")
        return None

    def check_devices(self, readings: Readings) -> list[Verdict]:
        temps = readings.temperatures_c()
        if isinstance(temps, Unknown):
            return []
        resume_at = self.limit_c - self.delta_c
        held = []
        for index, temp in sorted(temps.items()):
            hot = temp > resume_at if index in self._hot else temp >= self.limit_c
            if not hot:
                self._hot.discard(index)
                continue
            self._hot.add(index)
            held.append(
                Verdict(
                    True,
                    f"GPU {index} at {temp:.0f} °C, resumes at {resume_at:g} °C",
                    device=f"cuda:{index}",
                )
            )
        return held


# -- the governor ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Decision:
    """`may_run`; `reasons`: why mining is held back; `notes`: policies that could not be
    evaluated and let mining run anyway."""

    may_run: bool
    reasons: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    held_by: tuple[str, ...] = ()  # the policies holding mining back, by class name
    devices_held: tuple[tuple[str, str], ...] = ()  # (device, reason): held back alone

    @property
    def state(self) -> tuple[bool, tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
        """What changes the governor's state: whether mining may run, which policies hold
        it back, which devices are held, what could not be evaluated; not the figures
        inside a reason ("other programs use 73% CPU" moves every second while the hold
        stays the same)."""
        held = tuple(device for device, _ in self.devices_held)
        return (self.may_run, self.held_by, held, self.notes)

    @property
    def summary(self) -> str:
        """One line for a status bar: "mining allowed", "paused: <reasons>", or which
        devices are held back while the rest mine."""
        if not self.may_run:
            return "paused: " + "; ".join(self.reasons)
        if self.devices_held:
            return "held back: " + "; ".join(reason for _, reason in self.devices_held)
        return "mining allowed"


class Governor:
    """Combines policies over the sources: mining may run when no policy holds it back.
    No policy at all is the `always` policy."""

    def __init__(
        self,
        policies: Iterable[Policy],
        sources: Sources | None = None,
        *,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.policies: Sequence[Policy] = tuple(policies)
        self.sources = sources if sources is not None else Sources()
        self.clock = clock

    def evaluate(self) -> Decision:
        readings = Readings(self.sources, monotonic=self.clock.monotonic())
        reasons: list[str] = []
        notes: list[str] = []
        held_by: list[str] = []
        devices_held: list[tuple[str, str]] = []
        for policy in self.policies:
            try:
                verdict = policy.check(readings)
            except Exception as exc:  # a broken policy must not stop the governor
                log.exception("governor policy %r failed", policy)
                verdict = Verdict(False, f"{type(policy).__name__} failed: {exc}")
            for held in _device_verdicts(policy, readings):
                devices_held.append((held.device or "", held.reason))
            if verdict is None:
                continue
            if verdict.holds:
                reasons.append(verdict.reason)
                held_by.append(type(policy).__name__)
            else:
                notes.append(verdict.reason)
        return Decision(
            may_run=not reasons,
            reasons=tuple(reasons),
            notes=tuple(notes),
            held_by=tuple(held_by),
            devices_held=tuple(devices_held),
        )


def _device_verdicts(policy: Policy, readings: Readings) -> list[Verdict]:
    """The devices a per-device policy holds back (`check_devices`); a failure there is
    logged and holds nothing (the policy's `check` already reports unknown readings)."""
    check = getattr(policy, "check_devices", None)
    if check is None:
        return []
    try:
        return [v for v in check(readings) if v.holds and v.device]
    except Exception:
        log.exception("governor policy %r failed on its devices", policy)
        return []
