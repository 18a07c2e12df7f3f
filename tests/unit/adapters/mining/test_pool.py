"""The trainer pool: a round per device, per-device control that takes effect at once."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from r3mes_desktop.adapters.mining.pool import TrainerPool
from r3mes_desktop.core.errors import ValidationError
from tests.helpers.clocks import settle
from tests.helpers.fakes import make_spec


@dataclass
class Member:
    """A stand-in ProcessTrainer: records controls; a round trains until released."""

    device: str
    calls: list[str] = field(default_factory=list)
    paused: bool = False
    miner: str | None = None
    trace_root: Path = Path("traces")
    config: Any = None
    training: list[str] = field(default_factory=list)
    gate: asyncio.Event = field(default_factory=asyncio.Event)

    def pause(self) -> None:
        self.paused = True
        self.calls.append("pause")

    def resume(self) -> None:
        self.paused = False
        self.calls.append("resume")

    async def train(self, *, transaction_id: str, **_: Any) -> str:
        self.training.append(transaction_id)
        try:
            await self.gate.wait()
        finally:
            self.training.remove(transaction_id)
        return f"{transaction_id}@{self.device}"

    async def start(self) -> None:
        self.calls.append("start")


def _pool(*devices: str, enabled: list[str] | None = None) -> tuple[TrainerPool, dict[str, Member]]:
    members = {d: Member(d) for d in devices}
    return TrainerPool(members, enabled=enabled), members  # type: ignore[arg-type]


def _train(pool: TrainerPool, tx: str) -> asyncio.Task[Any]:
    return asyncio.create_task(
        pool.train(transaction_id=tx, spec=make_spec(1), progress=lambda *_: None)
    )


async def test_each_device_trains_its_own_round_and_a_third_waits() -> None:
    pool, members = _pool("cuda:0", "cuda:1")
    assert pool.capacity == 2
    a, b, c = _train(pool, "a"), _train(pool, "b"), _train(pool, "c")
    await settle()
    assert members["cuda:0"].training == ["a"] and members["cuda:1"].training == ["b"]
    assert not c.done() and dict(pool.busy()) == {"cuda:0": "a", "cuda:1": "b"}
    members["cuda:1"].gate.set()
    assert await b == "b@cuda:1"
    assert await c == "c@cuda:1"  # the freed device takes the waiting round
    assert not a.done()
    members["cuda:0"].gate.set()
    assert await a == "a@cuda:0"


async def test_switching_a_device_off_pauses_its_round_at_once_and_on_resumes_it() -> None:
    pool, members = _pool("cuda:0", "cuda:1")
    a = _train(pool, "a")
    await settle()
    assert members["cuda:0"].training == ["a"]
    pool.set_enabled(["cuda:1"])
    assert members["cuda:0"].paused and not members["cuda:1"].paused
    assert pool.capacity == 1
    b = _train(pool, "b")
    await settle()
    assert members["cuda:1"].training == ["b"]  # new rounds go to the devices switched on
    pool.set_enabled(["cuda:0", "cuda:1"])
    assert members["cuda:0"].calls == ["pause", "resume"] and not members["cuda:0"].paused
    for m in members.values():
        m.gate.set()
    assert (await a, await b) == ("a@cuda:0", "b@cuda:1")


async def test_a_held_device_pauses_alone_and_a_pool_pause_pauses_all() -> None:
    pool, members = _pool("cuda:0", "cuda:1")
    pool.hold("cuda:0", "GPU 0 at 84 °C, resumes at 78 °C")
    assert members["cuda:0"].paused and not members["cuda:1"].paused
    assert pool.capacity == 1 and dict(pool.held) == {"cuda:0": "GPU 0 at 84 °C, resumes at 78 °C"}
    pool.pause()
    assert all(m.paused for m in members.values())
    pool.resume()  # the governor's pause ends; the hot GPU stays held
    assert members["cuda:0"].paused and not members["cuda:1"].paused
    pool.release("cuda:0")
    assert not members["cuda:0"].paused and pool.capacity == 2


async def test_a_resumed_round_goes_back_to_the_device_it_started_on() -> None:
    pool, members = _pool("cuda:0", "cuda:1")
    x = _train(pool, "x")
    a = _train(pool, "a")
    await settle()
    assert members["cuda:1"].training == ["a"]
    a.cancel()  # the round is interrupted (a stop); its checkpoint is from cuda:1
    with pytest.raises(asyncio.CancelledError):
        await a
    members["cuda:0"].gate.set()
    assert await x == "x@cuda:0"
    again = _train(pool, "a")  # both free now: cuda:0 is first by name, cuda:1 is its own
    await settle()
    assert members["cuda:1"].training == ["a"] and members["cuda:0"].training == []
    members["cuda:1"].gate.set()
    assert await again == "a@cuda:1"


async def test_unknown_devices_are_refused_with_the_workers_named() -> None:
    pool, _ = _pool("cpu")
    with pytest.raises(ValidationError, match=r"cuda:3.*workers: cpu"):
        pool.set_enabled(["cuda:3"])
    with pytest.raises(ValidationError, match="needs at least one device"):
        TrainerPool({})
