# pragma version 0.4.3
# pragma evm-version shanghai
"""
@title R3MES training rounds
@notice An operator opens training rounds; miners submit one gradient per round, each
        carrying an IPFS CID and a proof of work that this contract checks with the sha256
        precompile. Revert reasons are short fixed strings: the desktop client classifies
        them (duplicate -> already submitted, bad proof -> validation, closed -> permanent).
"""

MAX_OPEN: constant(uint256) = 64

struct Round:
    seed: uint256
    difficulty: uint8
    steps: uint32
    hyperparams: String[512]
    baseModelId: String[128]
    isOpen: bool
    exists: bool

struct Submission:
    cid: String[128]
    gradientHash: bytes32
    powNonce: uint64
    blockNumber: uint256
    completed: bool

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

operator: public(address)
rounds: HashMap[uint64, Round]
submissions: HashMap[uint64, HashMap[address, Submission]]
openIds: DynArray[uint64, MAX_OPEN]
submissionCount: public(HashMap[uint64, uint256])
lastRoundId: public(uint64)  # highest id ever opened: operators pick the next one from it


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
):
    assert msg.sender == self.operator, "not operator"
    assert not self.rounds[roundId].exists, "round exists"
    assert difficulty >= 16 and difficulty <= 32, "difficulty out of range"
    assert steps > 0, "steps must be positive"
    assert len(self.openIds) < MAX_OPEN, "too many open rounds"
    self.rounds[roundId] = Round(
        seed=seed,
        difficulty=difficulty,
        steps=steps,
        hyperparams=hyperparams,
        baseModelId=baseModelId,
        isOpen=True,
        exists=True,
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
    )
    self.submissionCount[roundId] += 1
    log GradientSubmitted(
        roundId=roundId, miner=msg.sender, cid=cid, gradientHash=gradientHash, powNonce=powNonce
    )


@external
def completeTask(roundId: uint64):
    """@notice Idempotent: completing an already completed task changes nothing."""
    assert self.submissions[roundId][msg.sender].blockNumber != 0, "no submission"
    if self.submissions[roundId][msg.sender].completed:
        return
    self.submissions[roundId][msg.sender].completed = True
    log TaskCompleted(roundId=roundId, miner=msg.sender)


@view
@external
def submissionOf(roundId: uint64, miner: address) -> Submission:
    return self.submissions[roundId][miner]
