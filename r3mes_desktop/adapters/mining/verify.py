"""Check a submission the way a validator would, and say exactly what was and was not checked.

A validator sees the chain and the content network, not the miner's journal, so the checks
start from what the contract stores for (round, miner):

  chain_record    the contract stores a submission for (round, miner), and it is the one the
                  journal says was sent (CID, gradient hash, nonce)
  content_fetch   the bytes behind the on-chain CID come back from the content store (IPFS or
                  the devnet's store) within the timeout: content nobody can fetch cannot be
                  scored, so missing or unreachable content is a failure
  content_cid     the fetched bytes hash to that CID (computed here, not taken from the store)
  content_sha256  sha256 of the fetched bytes equals the on-chain gradient hash
  content_pinned  the miner's store still pins the CID (unpinned content disappears at the
                  next garbage collection)
  proof_of_work   the on-chain nonce is valid for (gradient hash, miner, round, difficulty)
  recompute       retraining the round reproduces the gradient hash (torch, in this process)

Every check ends passed, failed or skipped with the reason; a skipped check is never shown
or counted as a pass. The verdict is "failed" if any check failed, "passed" if the others
all passed or were skipped on request (`--no-recompute`), and "inconclusive" when a check
could not run for lack of input. Bit-identical recomputation assumes the same plan, device
type and thread count as the miner's run.
"""

from __future__ import annotations

import asyncio
import hashlib
import tempfile
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol, TypeVar

from r3mes_desktop.adapters.mining.settings import MiningConfig
from r3mes_desktop.adapters.mining.worker import plan_for
from r3mes_desktop.core import workproof
from r3mes_desktop.core.pow import is_valid_pow, validate_difficulty
from r3mes_desktop.core.resilience import ServiceCaller
from r3mes_desktop.core.steps import OnChainSubmission, RoundSpec
from r3mes_desktop.core.workproof import Manifest

T = TypeVar("T")
PASSED = "passed"
FAILED = "failed"
SKIPPED = "skipped"

CHECK_ORDER = (
    "chain_record",
    "content_fetch",
    "content_cid",
    "content_sha256",
    "content_pinned",
    "proof_of_work",
    "recompute",
)
_GRADIENT_CHECKS = ("content_sha256", "recompute")


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # PASSED, FAILED or SKIPPED
    detail: str
    on_request: bool = (
        False  # skipped because the user asked (--no-recompute), not for lack of input
    )

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "detail": self.detail}


def passed(name: str, detail: str) -> Check:
    return Check(name, PASSED, detail)


def failed(name: str, detail: str) -> Check:
    return Check(name, FAILED, detail)


def skipped(name: str, reason: str, *, on_request: bool = False) -> Check:
    return Check(name, SKIPPED, reason, on_request=on_request)


@dataclass(frozen=True)
class VerificationReport:
    checks: tuple[Check, ...]
    recomputed_hash: bytes | None = field(default=None, compare=False)

    def check(self, name: str) -> Check:
        for item in self.checks:
            if item.name == name:
                return item
        raise KeyError(name)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.status == FAILED]

    @property
    def verdict(self) -> str:
        if self.failed:
            return FAILED
        if any(c.status == SKIPPED and not c.on_request for c in self.checks):
            return "inconclusive"
        return PASSED

    @property
    def ok(self) -> bool:
        return self.verdict == PASSED

    @property
    def pow_valid(self) -> bool:
        return self._status("proof_of_work") == PASSED

    @property
    def gradient_matches(self) -> bool:
        """True only when the gradient was actually compared (bytes or retraining) and
        nothing that compared it disagreed; nothing checked is not a match."""
        statuses = [self._status(name) for name in _GRADIENT_CHECKS]
        return PASSED in statuses and FAILED not in statuses

    def _status(self, name: str) -> str | None:
        try:
            return self.check(name).status
        except KeyError:
            return None

    def counts(self) -> dict[str, int]:
        return {s: sum(c.status == s for c in self.checks) for s in (PASSED, FAILED, SKIPPED)}

    def describe(self) -> str:
        """One line per check, then the verdict: "proof_of_work   passed   nonce 81 ..."."""
        width = max(len(c.name) for c in self.checks)
        lines = [
            f"{c.name.ljust(width)}  {c.status.upper() if c.status == FAILED else c.status:<7}  "
            f"{c.detail}"
            for c in self.checks
        ]
        n = self.counts()
        lines.append(
            f"verdict: {self.verdict.upper() if self.verdict != PASSED else PASSED} "
            f"({n[PASSED]} passed, {n[FAILED]} failed, {n[SKIPPED]} skipped)"
        )
        return "\n".join(lines)


# -- single checks (no network) -------------------------------------------------------------


def check_pow(*, spec: RoundSpec, miner: str | bytes, nonce: int, gradient_hash: bytes) -> Check:
    validate_difficulty(spec.difficulty)
    where = f"nonce {nonce}, difficulty {spec.difficulty} bits"
    if is_valid_pow(gradient_hash, miner, spec.round_id, nonce, spec.difficulty):
        return passed("proof_of_work", where)
    return failed("proof_of_work", f"{where}: the hash does not meet the difficulty")


def check_content(*, cid: str, data: bytes, gradient_hash: bytes) -> list[Check]:
    """content_cid and content_sha256 for bytes fetched by `cid`."""
    from r3mes_desktop.core.cid import compute_cid, same_cid

    computed = compute_cid(data)
    if same_cid(computed, cid):
        cid_check = passed("content_cid", f"{len(data)} bytes hash to {cid}")
    else:
        cid_check = failed("content_cid", f"the bytes hash to {computed}, not to {cid}")
    digest = hashlib.sha256(data).digest()
    if digest == gradient_hash:
        sha_check = passed("content_sha256", f"sha256 = 0x{digest.hex()}")
    else:
        sha_check = failed(
            "content_sha256",
            f"sha256 of the bytes is 0x{digest.hex()}, "
            f"the gradient hash is 0x{gradient_hash.hex()}",
        )
    return [cid_check, sha_check]


def check_recompute(
    *,
    spec: RoundSpec,
    gradient_hash: bytes,
    config: MiningConfig | None = None,
    miner: str | None = None,
    adapter: bytes | None = None,
    dataset: bytes | None = None,
    manifest: Manifest | None = None,
) -> tuple[Check, bytes]:
    """Retrain the whole round here (torch imported only now) and compare the hash.

    With `miner`, the run is that miner's bound run (its assignment, its committed states:
    `trace.train_bound`), whose package is what bound miners submit; without, the plain
    update of the round's seed. `manifest`: the submitted package's, whose thread count and
    out-of-memory retries the retraining follows (both change the bytes of some models)."""
    from r3mes_desktop.adapters.mining.training import train_round

    config = config or MiningConfig(device="cpu")
    if miner is None:
        out = train_round(
            plan_for(spec, config), device=config.device, num_threads=config.num_threads
        )
        digest = out.gradient_hash
    else:
        from r3mes_desktop.adapters.mining import trace
        from r3mes_desktop.adapters.mining.commitments import TraceDir

        assignment = workproof.assignment(spec.seed, miner, spec.round_id)
        with tempfile.TemporaryDirectory(prefix="r3mes-verify-") as tmp:
            package = trace.train_bound(
                plan_for(spec, config, miner),
                miner=miner,
                assignment=assignment,
                trace=TraceDir(Path(tmp)),
                device=config.device,
                num_threads=manifest.threads if manifest is not None else config.num_threads,
                adapter=adapter,
                dataset=dataset,
                shrinks=manifest.shrinks if manifest is not None else (),
            )
        digest = hashlib.sha256(package).digest()
    if digest == gradient_hash:
        return passed("recompute", "retraining reproduced the gradient hash"), digest
    return failed("recompute", f"retraining gave 0x{digest.hex()}"), digest


async def _round_inputs(
    store: ContentReader,
    spec: RoundSpec,
    store_calls: ServiceCaller | None,
    timeout_s: float,
) -> tuple[bytes | None, bytes | None] | Check:
    """The model version and the text dataset the round names, fetched and checked against
    their hashes; a skipped check (saying why) when one cannot be had."""
    fetched: list[bytes | None] = []
    wants = [(spec.model_cid, spec.model_sha256, "model version")] if spec.model_version else []
    wants.append(
        (
            str(spec.hyperparams.get("dataset_cid", "")),
            str(spec.hyperparams.get("dataset_sha256", "")),
            "dataset",
        )
    )
    for cid, sha, what in wants:
        if not cid:
            if what == "model version":
                return skipped("recompute", f"the round's {what} names no CID")
            fetched.append(None)
            continue
        _, data = await _fetch(store, cid, timeout_s, store_calls)
        if data is None or hashlib.sha256(data).hexdigest() != sha:
            return skipped("recompute", f"the round's {what} {cid} could not be fetched intact")
        fetched.append(data)
    adapter = fetched[0] if spec.model_version else None
    return adapter, fetched[-1]


def _versioned(spec: RoundSpec) -> Check:
    return skipped(
        "recompute",
        f"the round trains on model version {spec.model_version}, which verify does not fetch "
        "(the validators' sampled check covers it)",
    )


def _manifest(data: bytes | None) -> Manifest | None:
    """The package's manifest, if `data` is a readable bound package."""
    if data is None:
        return None
    try:
        from r3mes_desktop.adapters.mining.commitments import read_package

        return read_package(data)[1]
    except Exception:
        return None


def _bound_miner(miner: str | bytes, data: bytes | None) -> str | None:
    """The miner whose bound run to recompute: a package without a manifest is unbound."""
    address = miner if isinstance(miner, str) else "0x" + bytes(miner).hex()
    if data is None:
        return address
    try:
        from r3mes_desktop.adapters.mining.commitments import read_package

        return address if read_package(data)[1] is not None else None
    except Exception:
        return address


def verify_submission(
    *,
    spec: RoundSpec,
    miner: str | bytes,
    nonce: int,
    gradient_hash: bytes,
    data: bytes | None = None,
    recompute: bool = True,
    config: MiningConfig | None = None,
) -> VerificationReport:
    """Verify (round, miner, nonce, gradient hash[, the gradient's bytes]) offline: the
    proof of work, sha256 of `data` if given, and the recomputation if asked."""
    validate_difficulty(spec.difficulty)
    checks: list[Check] = []
    if data is None:
        checks.append(skipped("content_sha256", "no gradient bytes given"))
    else:
        digest = hashlib.sha256(data).digest()
        checks.append(
            passed("content_sha256", f"sha256 = 0x{digest.hex()}")
            if digest == gradient_hash
            else failed("content_sha256", f"sha256 of the bytes is 0x{digest.hex()}")
        )
    checks.append(check_pow(spec=spec, miner=miner, nonce=nonce, gradient_hash=gradient_hash))
    recomputed = None
    if recompute and spec.model_version:
        checks.append(_versioned(spec))
    elif recompute:
        check, recomputed = check_recompute(
            spec=spec,
            gradient_hash=gradient_hash,
            config=config,
            miner=_bound_miner(miner, data),
            manifest=_manifest(data),
        )
        checks.append(check)
    else:
        checks.append(skipped("recompute", "not asked (--no-recompute)", on_request=True))
    return VerificationReport(tuple(checks), recomputed)


# -- against the chain and the content store -------------------------------------------------


class SubmissionReader(Protocol):
    @property
    def miner_address(self) -> str: ...

    async def submission_of(self, round_id: int) -> OnChainSubmission | None: ...


class ContentReader(Protocol):
    async def cat(self, cid: str) -> bytes: ...

    async def is_pinned(self, cid: str) -> bool: ...


@dataclass(frozen=True)
class Claim:
    """What the journal says was submitted (None where it does not know yet)."""

    round_id: int
    miner: str
    cid: str | None
    gradient_hash: bytes | None
    pow_nonce: int | None


def _same_cid(a: str, b: str) -> bool:
    from r3mes_desktop.core.cid import same_cid
    from r3mes_desktop.core.errors import ValidationError

    try:
        return same_cid(a, b)
    except ValidationError:
        return a == b


def _check_record(claim: Claim, stored: OnChainSubmission | None, reader: str) -> Check:
    if stored is None:
        return failed(
            "chain_record",
            f"the contract stores no submission for round {claim.round_id} by {reader}",
        )
    differences = []
    if claim.cid is not None and not _same_cid(claim.cid, stored.cid):
        differences.append(f"CID {stored.cid} (journal: {claim.cid})")
    if claim.gradient_hash is not None and claim.gradient_hash != stored.gradient_hash:
        differences.append(
            f"gradient hash 0x{stored.gradient_hash.hex()} (journal: 0x{claim.gradient_hash.hex()})"
        )
    if claim.pow_nonce is not None and claim.pow_nonce != stored.pow_nonce:
        differences.append(f"nonce {stored.pow_nonce} (journal: {claim.pow_nonce})")
    if differences:
        return failed("chain_record", "the contract stores " + "; ".join(differences))
    return passed(
        "chain_record",
        f"round {stored.round_id} by {stored.miner}: CID {stored.cid}, "
        f"gradient hash 0x{stored.gradient_hash.hex()}, nonce {stored.pow_nonce}",
    )


async def _through(
    caller: ServiceCaller | None, operation: str, fn: Callable[..., Awaitable[T]], *args: Any
) -> T:
    """One read through the service's caller (retry, breaker, timeout): the chain client
    and the content store make plain calls."""
    if caller is None:
        return await fn(*args)
    return await caller.call(operation, fn, *args)


async def _fetch(
    store: ContentReader, cid: str, timeout_s: float, caller: ServiceCaller | None = None
) -> tuple[Check, bytes | None]:
    try:
        async with asyncio.timeout(timeout_s):
            data = await _through(caller, "cat", store.cat, cid)
    except TimeoutError:
        return failed("content_fetch", f"{cid} not fetched within {timeout_s:g} s"), None
    except Exception as exc:  # not found, unreachable, corrupt: all mean "cannot be scored"
        return failed("content_fetch", f"{cid}: {exc}"), None
    return passed("content_fetch", f"{cid}: {len(data)} bytes"), data


async def _pinned(
    store: ContentReader, cid: str, timeout_s: float, caller: ServiceCaller | None = None
) -> Check:
    try:
        async with asyncio.timeout(timeout_s):
            pinned = await _through(caller, "is_pinned", store.is_pinned, cid)
    except TimeoutError:
        return failed("content_pinned", f"pin status of {cid} not known within {timeout_s:g} s")
    except Exception as exc:
        return failed("content_pinned", f"pin status of {cid}: {exc}")
    if pinned:
        return passed("content_pinned", f"{cid} is pinned")
    return failed(
        "content_pinned", f"{cid} is not pinned: the next garbage collection may remove it"
    )


async def _stored_submission(
    chain: SubmissionReader,
    claim: Claim,
    chain_calls: ServiceCaller | None,
    checks: list[Check],
) -> OnChainSubmission | None:
    """The chain's record of the claimed submission, its `chain_record` check appended to
    `checks`; None (check skipped) when the chain account is not the claim's miner, since
    a reader can only read its own submissions."""
    reader = chain.miner_address
    if reader.lower() != claim.miner.lower():
        checks.append(
            skipped(
                "chain_record",
                f"the chain account is {reader}, the transaction's miner is {claim.miner}",
            )
        )
        return None
    stored = await _through(chain_calls, "submission_of", chain.submission_of, claim.round_id)
    checks.append(_check_record(claim, stored, reader))
    return stored


async def _content_checks(
    store: ContentReader,
    cid: str | None,
    gradient_hash: bytes | None,
    fetch_timeout_s: float,
    store_calls: ServiceCaller | None,
) -> tuple[list[Check], bytes | None]:
    """The four content checks (fetch, CID, sha256, pinned), and the bytes fetched; each
    check that cannot run for lack of a CID, content or hash is skipped with the reason,
    never passed."""
    if cid is None:
        return [
            skipped(name, "no CID: the gradient was not uploaded")
            for name in ("content_fetch", "content_cid", "content_sha256", "content_pinned")
        ], None
    checks: list[Check] = []
    fetch, data = await _fetch(store, cid, fetch_timeout_s, store_calls)
    checks.append(fetch)
    if data is None:
        checks.append(skipped("content_cid", "no content fetched"))
        checks.append(skipped("content_sha256", "no content fetched"))
    elif gradient_hash is None:
        checks.append(check_content(cid=cid, data=data, gradient_hash=b"")[0])
        checks.append(skipped("content_sha256", "no gradient hash known"))
    else:
        checks.extend(check_content(cid=cid, data=data, gradient_hash=gradient_hash))
    checks.append(await _pinned(store, cid, fetch_timeout_s, store_calls))
    return checks, data


async def verify_on_chain(
    *,
    chain: SubmissionReader,
    store: ContentReader,
    spec: RoundSpec,
    claim: Claim,
    recompute: bool,
    fetch_timeout_s: float,
    config: MiningConfig | None = None,
    to_thread: Callable[..., Awaitable[Any]] = asyncio.to_thread,
    callers: Mapping[str, ServiceCaller] | None = None,
) -> VerificationReport:
    """Every check of the module docstring, for the submission the journal describes.

    Chain errors (unreachable RPC) propagate: without the on-chain record nothing can be
    said. Content errors become failed checks. `callers` ("chain", "ipfs"): the one layer
    that retries these reads (the runtime's); the fetch timeout bounds the whole fetch."""
    chain_calls = (callers or {}).get("chain")
    store_calls = (callers or {}).get("ipfs")
    checks: list[Check] = []
    stored = await _stored_submission(chain, claim, chain_calls, checks)
    # A validator uses what the chain stores; without it, the journal's claim is checked.
    cid = stored.cid if stored is not None else claim.cid
    gradient_hash = stored.gradient_hash if stored is not None else claim.gradient_hash
    nonce = stored.pow_nonce if stored is not None else claim.pow_nonce
    content, data = await _content_checks(store, cid, gradient_hash, fetch_timeout_s, store_calls)
    checks.extend(content)
    if gradient_hash is None or nonce is None:
        checks.append(skipped("proof_of_work", "no proof of work known yet"))
    else:
        checks.append(
            check_pow(spec=spec, miner=claim.miner, nonce=nonce, gradient_hash=gradient_hash)
        )

    recomputed = None
    if not recompute:
        checks.append(skipped("recompute", "not asked (--no-recompute)", on_request=True))
    elif gradient_hash is None:
        checks.append(skipped("recompute", "no gradient hash to compare with"))
    else:
        inputs = await _round_inputs(store, spec, store_calls, fetch_timeout_s)
        if isinstance(inputs, Check):
            checks.append(inputs)
        else:
            check, recomputed = await to_thread(
                check_recompute,
                spec=spec,
                gradient_hash=gradient_hash,
                config=config,
                miner=_bound_miner(claim.miner, data),
                manifest=_manifest(data),
                adapter=inputs[0],
                dataset=inputs[1],
            )
            checks.append(check)
    return VerificationReport(tuple(_ordered(checks)), recomputed)


def _ordered(checks: Sequence[Check]) -> list[Check]:
    rank = {name: i for i, name in enumerate(CHECK_ORDER)}
    return sorted(checks, key=lambda c: rank.get(c.name, len(rank)))


def with_check(report: VerificationReport, check: Check) -> VerificationReport:
    """The report with one more check (the CLI's journal integrity check)."""
    return replace(report, checks=(*report.checks, check))
