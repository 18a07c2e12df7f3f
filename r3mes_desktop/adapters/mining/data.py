"""The round's training data: a synthetic language with learnable structure (numpy only).

Each round seed defines a sparse Markov language: every token has a few likely successors
with skewed probabilities, so a model can get from ln(vocab) down towards the language's
entropy (about 1 nat) — the loss really goes down. Batch `s` is drawn from its own seeded
generator, so the data cursor is just the step number: resuming needs no stream state and
any miner (or verifier) regenerates exactly the same tokens.
"""

from __future__ import annotations

import numpy as np

SUCCESSORS = 4
_LANGUAGE_STREAM = 0
_BATCH_STREAM = 1


class SyntheticLanguage:
    def __init__(self, seed: int, vocab_size: int) -> None:
        self.seed = seed
        self.vocab_size = vocab_size
        rng = np.random.default_rng([seed, _LANGUAGE_STREAM, vocab_size])
        self.successors = np.stack(
            [rng.choice(vocab_size, size=SUCCESSORS, replace=False) for _ in range(vocab_size)]
        )
        weights = np.sort(rng.dirichlet(np.ones(SUCCESSORS), size=vocab_size), axis=1)[:, ::-1]
        self.cumulative = np.cumsum(weights, axis=1)
        self.cumulative[:, -1] = 1.0
        probs = np.diff(np.concatenate([np.zeros((vocab_size, 1)), self.cumulative], 1), axis=1)
        self.entropy_nats = float(-(probs * np.log(np.clip(probs, 1e-12, 1))).sum(1).mean())

    def batch(
        self, step: int, batch_size: int, seq_len: int, stream: int | None = None
    ) -> np.ndarray:
        """Token ids of shape (batch_size, seq_len + 1), int64; inputs are [:, :-1].

        `stream` picks whose batches these are (a miner's assignment, the held-out
        evaluation): one language, many disjoint-looking streams of text from it."""
        key = (
            [self.seed, _BATCH_STREAM, step]
            if stream is None
            else [self.seed, _BATCH_STREAM, stream, step]
        )
        rng = np.random.default_rng(key)
        out = np.empty((batch_size, seq_len + 1), dtype=np.int64)
        out[:, 0] = rng.integers(0, self.vocab_size, size=batch_size)
        uniforms = rng.random((batch_size, seq_len))
        for pos in range(seq_len):
            prev = out[:, pos]
            choice = (uniforms[:, pos, None] > self.cumulative[prev]).sum(axis=1)
            out[:, pos + 1] = self.successors[prev, np.minimum(choice, SUCCESSORS - 1)]
        return out
