"""Fault plans: parsing with field-named errors, seeded draws, and the wrappers raising what
the real adapters raise (so the coordinator above them cannot tell the difference)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from r3mes_desktop.adapters.faults import FaultInjector, FaultPlan
from r3mes_desktop.adapters.ipfs.local_store import LocalContentStore
from r3mes_desktop.core.errors import (
    AuthenticationError,
    ErrorCategory,
    IntegrityError,
    NetworkError,
    TimeoutNetworkError,
    ValidationError,
    classify,
)
from r3mes_desktop.core.events import EventBus, Notice


def injector(rates: dict[str, Any], seed: int = 1) -> FaultInjector:
    return FaultInjector(FaultPlan.from_mapping({"seed": seed, "slow_s": 0, **rates}))


def test_plan_from_toml_and_json(tmp_path: Path) -> None:
    toml = tmp_path / "plan.toml"
    toml.write_text("seed = 3\n[chain]\ntimeout = 0.25\n[ipfs]\nwrong_cid = 0.5\n")
    plan = FaultPlan.load(toml)
    assert plan.seed == 3 and plan.rates["chain"] == {"timeout": 0.25}
    assert plan.describe() == "chain 25%, ipfs 50%"
    js = tmp_path / "plan.json"
    js.write_text(json.dumps({"trainer": {"cuda_oom": 1}}))
    assert FaultPlan.load(js).rates == {"trainer": {"cuda_oom": 1.0}}


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"chain": {"timeout": 2}}, "chain.timeout: expected a probability in 0..1"),
        ({"chain": {"meteor": 0.1}}, "chain.meteor: unknown fault"),
        ({"disk": {}}, "unknown key 'disk'"),
        ({"seed": "x"}, "seed: expected an integer"),
        ({"slow_s": 99}, "slow_s: expected 0–60 seconds"),
        ({"ipfs": {"timeout": 0.7, "slow": 0.7}}, "[ipfs]: the rates add up to more than 1"),
        ({"ipfs": 0.3}, "[ipfs]: expected a table"),
    ],
)
def test_bad_plans_name_the_field(data: dict[str, Any], needle: str) -> None:
    with pytest.raises(ValidationError) as info:
        FaultPlan.from_mapping(data, source="plan.toml")
    assert needle in info.value.message and "plan.toml" in info.value.message


def test_unreadable_plan_file_is_a_validation_error(tmp_path: Path) -> None:
    bad = tmp_path / "plan.toml"
    bad.write_text("[chain\n")
    with pytest.raises(ValidationError, match="not valid TOML"):
        FaultPlan.load(bad)


def test_draws_are_seeded_and_counted() -> None:
    rates = {"chain": {"timeout": 0.3, "http_5xx": 0.3}}
    first, second = injector(rates), injector(rates)
    a = [first.draw("chain", "receipt") for _ in range(200)]
    assert a == [second.draw("chain", "receipt") for _ in range(200)]
    assert first.by_kind() == {
        "chain.http_5xx": a.count("http_5xx"),
        "chain.timeout": a.count("timeout"),
    }
    assert 30 < a.count("timeout") < 90  # about 30%
    assert injector({"chain": {"timeout": 1}}, seed=2).draw("ipfs") is None  # not in plan


def test_send_only_faults_never_hit_reads() -> None:
    faults = injector({"chain_rpc": {"insufficient_funds": 1.0}})
    assert faults.draw("chain_rpc", "receipt") is None
    assert faults.draw("chain_rpc", "send_raw") == "insufficient_funds"


async def test_wrong_cid_unpins_and_raises_an_integrity_error(tmp_path: Path) -> None:
    store = LocalContentStore(tmp_path / "store")
    faulty = injector({"ipfs": {"wrong_cid": 1.0}}).wrap_store(store)
    with pytest.raises(IntegrityError, match="the upload was unpinned"):
        await faulty.add_and_pin(b"gradient")
    assert await store.pins() == []


@pytest.mark.parametrize(
    ("kind", "cls"),
    [
        ("connection_refused", NetworkError),
        ("http_5xx", NetworkError),
        ("malformed", NetworkError),
        ("http_401", AuthenticationError),
        ("timeout", TimeoutNetworkError),
    ],
)
async def test_store_network_faults_are_classified(tmp_path: Path, kind: str, cls: type) -> None:
    faulty = injector({"ipfs": {kind: 1.0}}).wrap_store(LocalContentStore(tmp_path / "s"))
    with pytest.raises(cls) as info:
        await faulty.is_pinned("bafkreiabc")
    assert info.value.service == "ipfs"


async def test_timeouts_sometimes_come_after_the_effect(tmp_path: Path) -> None:
    store = LocalContentStore(tmp_path / "store")
    faulty = injector({"ipfs": {"timeout": 1.0}}).wrap_store(store)
    for i in range(12):
        with pytest.raises(TimeoutNetworkError):
            await faulty.add_and_pin(b"blob %d" % i)
    assert 0 < len(await store.pins()) < 12  # the answer was lost, the pin happened


class _Trainer:
    calls = 0

    async def train(self, **kwargs: Any) -> str:
        self.calls += 1
        return "result"


@pytest.mark.parametrize("kind", ["cuda_oom", "memory_error", "disk_full"])
async def test_trainer_faults_are_resource_errors(kind: str) -> None:
    inner = _Trainer()
    faulty = injector({"trainer": {kind: 1.0}}).wrap_trainer(inner)
    with pytest.raises(Exception) as info:
        await faulty.train(transaction_id="tx1")
    assert classify(info.value) is ErrorCategory.RESOURCE
    assert inner.calls == (1 if kind == "disk_full" else 0)  # disk fills after the work


async def test_journal_disk_full_and_the_notice() -> None:
    class _Journal:
        async def apply(self, change: Any) -> str:
            return "applied"

        async def create(self, **kwargs: Any) -> str:
            return "created"

    bus = EventBus()
    seen: list[Any] = []
    bus.subscribe(seen.append)
    faults = injector({"journal": {"disk_full": 1.0}})
    faults.bus = bus
    journal = faults.wrap_journal(_Journal())
    with pytest.raises(sqlite3.OperationalError, match="disk is full"):
        await journal.apply(object())
    faults.enabled = False
    assert await journal.create() == "created"
    faults.announce()
    assert [type(e) for e in seen] == [Notice]
    assert "Fault plan active (journal 100%)" in seen[0].message


def test_no_plan_no_injector() -> None:
    class _Settings:
        fault_plan = None

    assert FaultInjector.from_settings(_Settings()) is None
