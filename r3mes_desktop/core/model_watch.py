"""The model-version watcher: the network model's versions as the contract publishes them.

Why it looks like this:
- Journaled, not kept in memory. The loss chart, the statistics behind /metrics and
  `r3mes-miner stats`, and each transaction's fate ("went into version M") are answered
  from the journal: the CLI reads it while the miner runs in another process and has no
  chain connection, and a restart shows the history at once instead of re-reading every
  version from the chain. The watcher writes a version once and only then tells the bus
  (`ModelVersionPublished`, one event per version, the first time this miner reads it).
- Bounded. One poll reads the current version once and at most `batch` version records,
  the newest missing ones first (the current version is what the miner trains on and
  what /metrics exports), so a miner joining a network with a long history fills it in
  over several polls `busy_poll_s` apart, each still bounded.
- Back-off. A poll that finds the chain down stops there; the next one waits twice as
  long (up to `max_delay_s`), and the outage is logged once.
- One service layer. Every read goes through the coordinator's chain `ServiceCaller`
  (retry, breaker, timeout), with no transaction id: these reads belong to no saga.
- The journal's versions must be this chain's. At the first poll, and whenever the chain's
  current version is below the newest journaled one, the newest journaled version is read
  back: if the chain holds none or another one by that number (another network, a devnet
  started afresh), every journaled version is dropped and read again from this chain.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from r3mes_desktop.core.clock import SYSTEM_CLOCK, Clock
from r3mes_desktop.core.errors import UNHEALTHY, classify
from r3mes_desktop.core.events import EventBus, ModelVersionPublished
from r3mes_desktop.core.journal import Journal
from r3mes_desktop.core.polling import BackoffPoller
from r3mes_desktop.core.records import ModelVersion
from r3mes_desktop.core.resilience import ServiceCaller
from r3mes_desktop.core.steps import ModelVersionSource, PublishedVersion

log = logging.getLogger(__name__)


@dataclass
class ModelPollReport:
    """What one poll did (tests and logs)."""

    current: int = 0  # the chain's current version
    read: int = 0  # version records read
    recorded: list[ModelVersion] = field(default_factory=list)  # new ones, in id order
    forgotten: int = 0  # journaled versions dropped: the chain holds other ones
    more_due: bool = False  # versions left for the next poll (the batch was full)


class ModelWatcher(BackoffPoller):
    """Polls the chain for new model versions (see the module doc); `poll()` once for
    tests, `run()` for ever in the coordinator's background."""

    def __init__(
        self,
        *,
        journal: Journal,
        chain: ModelVersionSource,
        calls: ServiceCaller,
        bus: EventBus,
        clock: Clock = SYSTEM_CLOCK,
        poll_s: float = 10.0,
        max_delay_s: float = 120.0,
        batch: int = 16,
    ) -> None:
        if poll_s <= 0 or max_delay_s < poll_s or batch < 1:
            raise ValueError("model watcher: poll_s > 0, max_delay_s >= poll_s, batch >= 1")
        self.journal = journal
        self.chain = chain
        self.calls = calls
        self.bus = bus
        self.clock = clock
        self.poll_s = poll_s
        self.busy_poll_s = min(1.0, poll_s)  # the next poll, while older versions are due
        self.max_delay_s = max_delay_s
        self.batch = batch
        self._known: set[int] | None = None  # journaled version ids (read at the first poll)
        self._checked = False  # the newest journaled version was found on this chain
        self._failures = 0  # polls in a row that found the chain down
        self.what = "model versions"

    async def poll(self) -> ModelPollReport:
        report = ModelPollReport()
        current = int(await self.calls.call("current_version", self.chain.current_version))
        report.current = current
        if self._known is None:
            self._known = await self.journal.model_version_ids()
            self._checked = not self._known  # what this watcher writes is this chain's
        known = self._known
        if known and (not self._checked or max(known) > current):
            report.forgotten = await self._check_same_chain(current, known)
        if len(known) >= current and (not known or max(known) == current):
            return report  # every version up to the current one is journaled
        found: list[ModelVersion] = []
        down: Exception | None = None
        version = current
        while version > 0 and report.read < self.batch:
            if version not in known:
                try:
                    info = await self._read(version)
                except Exception as exc:  # the chain is down: keep what was read, then stop
                    down = exc
                    break
                report.read += 1
                if info is not None:
                    found.append(self._record_of(info))
            version -= 1
        report.more_due = any(v not in known for v in range(version, 0, -1))
        report.recorded = await self.journal.record_model_versions(found)
        known.update(v.version_id for v in found)
        self._announce(report.recorded, current)
        if down is not None:
            raise down
        return report

    async def _read(self, version: int) -> PublishedVersion | None:
        try:
            info = await self.calls.call("version_info", self.chain.version_info, version)
        except Exception as exc:
            if classify(exc) in UNHEALTHY:
                raise  # the chain is down: the rest of this poll would fail the same way
            log.warning("model version %d unreadable: %s", version, exc)
            return None
        if info is None:  # at or below the current version, so it should be there
            log.warning("the chain holds no record of model version %d", version)
        return info

    async def _check_same_chain(self, current: int, known: set[int]) -> int:
        """Drop the journaled versions (`known`, emptied) if the chain holds other ones;
        returns how many."""
        newest = await self.journal.newest_model_version()
        if newest is None:
            self._checked = True
            return 0
        same = False
        if newest.version_id <= current:
            info = await self.calls.call("version_info", self.chain.version_info, newest.version_id)
            same = info is not None and info.content_hash.hex() == newest.content_hash
        self._checked = True
        if same:
            return 0
        forgotten = await self.journal.forget_model_versions()
        known.clear()
        log.warning(
            "the chain's model versions are not the %d journaled (current version %d: "
            "another network, or a devnet started afresh); reading them again",
            forgotten,
            current,
        )
        return forgotten

    def _record_of(self, info: PublishedVersion) -> ModelVersion:
        return ModelVersion(
            version_id=int(info.version_id),
            round_id=int(info.round_id),
            parent_id=int(info.parent_id),
            eval_loss=float(info.eval_loss),
            updates=int(info.updates),
            cid=str(info.cid),
            content_hash=bytes(info.content_hash).hex(),
            block_number=int(info.block_number),
            aggregator=str(info.aggregator),
            seen_at=self.clock.time(),
        )

    def _announce(self, recorded: list[ModelVersion], current: int) -> None:
        for v in recorded:
            log.log(
                logging.INFO if v.version_id == current else logging.DEBUG,
                "network model version %d: held-out loss %.4f (round %d, %d updates)",
                v.version_id,
                v.eval_loss,
                v.round_id,
                v.updates,
            )
            self.bus.publish(
                ModelVersionPublished(
                    version_id=v.version_id,
                    round_id=v.round_id,
                    parent_id=v.parent_id,
                    eval_loss=v.eval_loss,
                    updates=v.updates,
                    block_number=v.block_number,
                    aggregator=v.aggregator,
                    current_version=current,
                    ts=self.clock.time(),
                )
            )
