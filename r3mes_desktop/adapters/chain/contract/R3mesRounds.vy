# pragma version 0.4.3
# pragma evm-version shanghai
"""
@title R3MES training rounds
@notice An operator opens training rounds; miners submit one gradient per round, each
        carrying an IPFS CID and a proof of work that this contract checks with the sha256
        precompile. Revert reasons are short fixed strings: the desktop client classifies
        them (duplicate -> already submitted, bad proof -> validation, closed -> permanent).

        Work is bound to its miner: `assignmentOf(round, miner)` seeds that miner's data and
        adapter initialisation, so two miners of a round train different things and a copied
        update does not match the copier's assignment. `completeTask` publishes the openings
        (the committed training states the submission block's hash sampled). Validators the
        operator appoints post one verdict per submission; an accepted one earns the round's
        reward in `credits`, exactly once. Aggregators the operator appoints publish model
        versions (the network adapter by CID and sha256, with its held-out loss), each the
        aggregate of one closed round's accepted updates; rounds name the version they
        train on.
"""

VERSION: public(constant(String[16])) = "r3mes-rounds/2"
MAX_OPEN: constant(uint256) = 64
VERDICT_NONE: constant(uint8) = 0
VERDICT_ACCEPTED: constant(uint8) = 1
VERDICT_REJECTED: constant(uint8) = 2

struct Round:
    seed: uint256
    difficulty: uint8
    steps: uint32
    hyperparams: String[512]
    baseModelId: String[128]
    isOpen: bool
    exists: bool
    deadline: uint256  # unix seconds; 0: none. Submissions after it revert.
    reward: uint256  # credits an accepted submission earns
    modelVersion: uint64  # the network adapter this round trains on (0: the genesis one)

struct ModelVersion:
    cid: String[128]
    contentHash: bytes32  # sha256 of the adapter's bytes
    evalLossMicro: uint256  # held-out loss in millionths of a nat per token
    parentId: uint64
    roundId: uint64  # the closed round whose accepted updates it aggregates
    updates: uint32
    blockNumber: uint256
    aggregator: address

struct Submission:
    cid: String[128]
    gradientHash: bytes32
    powNonce: uint64
    blockNumber: uint256
    completed: bool
    openingsCid: String[128]
    verdict: uint8  # VERDICT_NONE / ACCEPTED / REJECTED
    reason: uint8  # the validator's reason code (0 for accepted)
    validator: address

event RoundOpened:
    roundId: indexed(uint64)
    seed: uint256
    difficulty: uint8
    steps: uint32
    baseModelId: String[128]

event RoundClosed:
    roundId: indexed(uint64)

event GradientSubmitted:
    roundId: indexed(uint64)
    miner: indexed(address)
    cid: String[128]
    gradientHash: bytes32
    powNonce: uint64

event TaskCompleted:
    roundId: indexed(uint64)
    miner: indexed(address)

event VerdictPosted:
    roundId: indexed(uint64)
    miner: indexed(address)
    validator: indexed(address)
    accepted: bool
    reason: uint8
    credited: uint256

event ValidatorChanged:
    validator: indexed(address)
    active: bool

event VersionPublished:
    versionId: indexed(uint64)
    roundId: indexed(uint64)
    cid: String[128]
    contentHash: bytes32
    evalLossMicro: uint256
    updates: uint32

operator: public(address)
rounds: HashMap[uint64, Round]
submissions: HashMap[uint64, HashMap[address, Submission]]
openIds: DynArray[uint64, MAX_OPEN]
submissionCount: public(HashMap[uint64, uint256])
submitterAt: public(HashMap[uint64, HashMap[uint256, address]])  # validators walk it by index
lastRoundId: public(uint64)  # highest id ever opened: operators pick the next one from it
validators: public(HashMap[address, bool])
credits: public(HashMap[address, uint256])
verdictCount: public(HashMap[uint64, uint256])
aggregators: public(HashMap[address, bool])
versions: public(HashMap[uint64, ModelVersion])
currentVersion: public(uint64)


@deploy
def __init__():
    self.operator = msg.sender


@external
def openRound(
    roundId: uint64,
    seed: uint256,
    difficulty: uint8,
    steps: uint32,
    hyperparams: String[512],
    baseModelId: String[128],
    deadline: uint256 = 0,
    reward: uint256 = 100,
    modelVersion: uint64 = 0,
):
    assert msg.sender == self.operator, "not operator"
    assert not self.rounds[roundId].exists, "round exists"
    assert difficulty >= 16 and difficulty <= 32, "difficulty out of range"
    assert steps > 0, "steps must be positive"
    assert len(self.openIds) < MAX_OPEN, "too many open rounds"
    assert deadline == 0 or deadline > block.timestamp, "deadline in the past"
    assert modelVersion <= self.currentVersion, "unknown model version"
    self.rounds[roundId] = Round(
        seed=seed,
        difficulty=difficulty,
        steps=steps,
        hyperparams=hyperparams,
        baseModelId=baseModelId,
        isOpen=True,
        exists=True,
        deadline=deadline,
        reward=reward,
        modelVersion=modelVersion,
    )
    self.openIds.append(roundId)
    if roundId > self.lastRoundId:
        self.lastRoundId = roundId
    log RoundOpened(roundId=roundId, seed=seed, difficulty=difficulty, steps=steps, baseModelId=baseModelId)


@external
def closeRound(roundId: uint64):
    assert msg.sender == self.operator, "not operator"
    assert self.rounds[roundId].isOpen, "round not open"
    self.rounds[roundId].isOpen = False
    n: uint256 = len(self.openIds)
    for i: uint256 in range(MAX_OPEN):
        if i >= n:
            break
        if self.openIds[i] == roundId:
            self.openIds[i] = self.openIds[n - 1]
            self.openIds.pop()
            break
    log RoundClosed(roundId=roundId)


@view
@external
def openRounds() -> DynArray[uint64, MAX_OPEN]:
    return self.openIds


@view
@external
def openRoundsFor(miner: address) -> DynArray[uint64, MAX_OPEN]:
    """@notice Open rounds `miner` has not submitted to yet."""
    result: DynArray[uint64, MAX_OPEN] = []
    for rid: uint64 in self.openIds:
        if self.submissions[rid][miner].blockNumber == 0:
            result.append(rid)
    return result


@view
@external
def getRound(roundId: uint64) -> Round:
    return self.rounds[roundId]


@external
def addValidator(validator: address):
    assert msg.sender == self.operator, "not operator"
    assert validator != empty(address), "zero address"
    self.validators[validator] = True
    log ValidatorChanged(validator=validator, active=True)


@external
def removeValidator(validator: address):
    assert msg.sender == self.operator, "not operator"
    self.validators[validator] = False
    log ValidatorChanged(validator=validator, active=False)


@external
def addAggregator(aggregator: address):
    assert msg.sender == self.operator, "not operator"
    assert aggregator != empty(address), "zero address"
    self.aggregators[aggregator] = True


@external
def removeAggregator(aggregator: address):
    assert msg.sender == self.operator, "not operator"
    self.aggregators[aggregator] = False


@external
def publishVersion(
    versionId: uint64,
    cid: String[128],
    contentHash: bytes32,
    evalLossMicro: uint256,
    roundId: uint64,
    updates: uint32,
):
    """@notice The next model version, aggregated from closed round `roundId`'s accepted
            updates (which trained on the current version). One version per id, in order."""
    assert self.aggregators[msg.sender], "not aggregator"
    assert versionId == self.currentVersion + 1, "not the next version"
    assert len(cid) > 0, "empty cid"
    assert updates > 0, "no updates"
    r: Round = self.rounds[roundId]
    assert r.exists and not r.isOpen, "round still open"
    assert r.modelVersion == self.currentVersion, "round trained on another version"
    self.versions[versionId] = ModelVersion(
        cid=cid,
        contentHash=contentHash,
        evalLossMicro=evalLossMicro,
        parentId=self.currentVersion,
        roundId=roundId,
        updates=updates,
        blockNumber=block.number,
        aggregator=msg.sender,
    )
    self.currentVersion = versionId
    log VersionPublished(
        versionId=versionId,
        roundId=roundId,
        cid=cid,
        contentHash=contentHash,
        evalLossMicro=evalLossMicro,
        updates=updates,
    )


@view
@external
def assignmentOf(roundId: uint64, miner: address) -> bytes32:
    """@notice The seed of `miner`'s data and adapter initialisation in `roundId`."""
    r: Round = self.rounds[roundId]
    assert r.exists, "no such round"
    return sha256(concat(convert(r.seed, bytes32), convert(miner, bytes20), convert(roundId, bytes8)))


@view
@internal
def _powDigest(gradientHash: bytes32, miner: address, roundId: uint64, nonce: uint64) -> uint256:
    preimage: Bytes[68] = concat(
        gradientHash, convert(miner, bytes20), convert(roundId, bytes8), convert(nonce, bytes8)
    )
    return convert(sha256(preimage), uint256)


@view
@external
def powDigest(gradientHash: bytes32, miner: address, roundId: uint64, nonce: uint64) -> uint256:
    """@notice The PoW digest as this contract computes it (clients cross-check theirs)."""
    return self._powDigest(gradientHash, miner, roundId, nonce)


@external
def submitGradient(roundId: uint64, cid: String[128], gradientHash: bytes32, powNonce: uint64):
    r: Round = self.rounds[roundId]
    assert r.isOpen, "round not open"
    assert r.deadline == 0 or block.timestamp <= r.deadline, "round past deadline"
    assert self.submissions[roundId][msg.sender].blockNumber == 0, "already submitted"
    assert len(cid) > 0, "empty cid"
    target: uint256 = 1 << (256 - convert(r.difficulty, uint256))
    digest: uint256 = self._powDigest(gradientHash, msg.sender, roundId, powNonce)
    assert digest < target, "bad proof of work"
    self.submissions[roundId][msg.sender] = Submission(
        cid=cid,
        gradientHash=gradientHash,
        powNonce=powNonce,
        blockNumber=block.number,
        completed=False,
        openingsCid="",
        verdict=VERDICT_NONE,
        reason=0,
        validator=empty(address),
    )
    self.submitterAt[roundId][self.submissionCount[roundId]] = msg.sender
    self.submissionCount[roundId] += 1
    log GradientSubmitted(
        roundId=roundId, miner=msg.sender, cid=cid, gradientHash=gradientHash, powNonce=powNonce
    )


@external
def completeTask(roundId: uint64, openingsCid: String[128] = ""):
    """@notice Idempotent: completing an already completed task changes nothing (the first
            openings stay: they answered the challenge, a later CID cannot replace them)."""
    assert self.submissions[roundId][msg.sender].blockNumber != 0, "no submission"
    if self.submissions[roundId][msg.sender].completed:
        return
    self.submissions[roundId][msg.sender].completed = True
    self.submissions[roundId][msg.sender].openingsCid = openingsCid
    log TaskCompleted(roundId=roundId, miner=msg.sender)


@external
def postVerdict(roundId: uint64, miner: address, accepted: bool, reason: uint8):
    """@notice One verdict per submission; an accepted one credits the round's reward."""
    assert self.validators[msg.sender], "not validator"
    assert self.submissions[roundId][miner].blockNumber != 0, "no submission"
    assert self.submissions[roundId][miner].verdict == VERDICT_NONE, "verdict exists"
    assert accepted == (reason == 0), "reason must be 0 exactly when accepted"
    credited: uint256 = 0
    if accepted:
        credited = self.rounds[roundId].reward
        self.credits[miner] += credited
        self.submissions[roundId][miner].verdict = VERDICT_ACCEPTED
    else:
        self.submissions[roundId][miner].verdict = VERDICT_REJECTED
    self.submissions[roundId][miner].reason = reason
    self.submissions[roundId][miner].validator = msg.sender
    self.verdictCount[roundId] += 1
    log VerdictPosted(
        roundId=roundId,
        miner=miner,
        validator=msg.sender,
        accepted=accepted,
        reason=reason,
        credited=credited,
    )


@view
@external
def submissionOf(roundId: uint64, miner: address) -> Submission:
    return self.submissions[roundId][miner]
