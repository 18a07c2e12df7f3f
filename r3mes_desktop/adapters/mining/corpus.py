"""Real text as a dataset: a corpus file of byte-level tokens that rounds name by CID.

`build_dataset` turns any UTF-8 (or binary) text into the dataset file an operator
publishes (`r3mes-operator publish-dataset`): one uint8 `tokens` tensor (vocabulary 256:
bytes, no tokenizer to ship) and the dataset's name. Its sha256 is what a round names; a
miner trains on windows its assignment picks from the first 90% of the corpus, and the last
10% is held out for the network's evaluation, so no miner ever trains on the text the
model versions are scored on.
"""

from __future__ import annotations

import json

import numpy as np
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

VOCAB = 256
HELD_OUT = 0.10
MIN_TOKENS = 1024
MAX_BYTES = 256 * 2**20


def build_dataset(text: bytes, *, name: str) -> bytes:
    if len(text) < MIN_TOKENS:
        raise ValueError(f"corpus: {len(text)} bytes, accepted at least {MIN_TOKENS}")
    if len(text) > MAX_BYTES:
        raise ValueError(f"corpus: {len(text)} bytes, accepted at most {MAX_BYTES}")
    meta = json.dumps({"name": name, "tokenizer": "bytes", "vocab_size": VOCAB}).encode()
    return bytes(
        st_save(
            {
                "meta/dataset": np.frombuffer(meta, dtype=np.uint8).copy(),
                "tokens": np.frombuffer(text, dtype=np.uint8).copy(),
            }
        )
    )


class TextCorpus:
    """Windows of a byte corpus; `batch` mirrors `SyntheticLanguage.batch`."""

    def __init__(self, data: bytes) -> None:
        arrays = st_load(data)
        if "tokens" not in arrays or arrays["tokens"].dtype != np.uint8:
            raise ValueError("dataset: expected a uint8 'tokens' tensor")
        self.tokens = arrays["tokens"].astype(np.int64)
        self.split = int(len(self.tokens) * (1 - HELD_OUT))
        self.vocab_size = VOCAB

    def batch(
        self, step: int, batch_size: int, seq_len: int, stream: int | None = None
    ) -> np.ndarray:
        """(batch_size, seq_len + 1) windows: training text for a miner's stream, the held-out
        tail for the evaluation stream (`stream` at or above 2**63)."""
        held_out = stream is not None and stream >= 2**63
        lo, hi = (self.split, len(self.tokens)) if held_out else (0, self.split)
        span = hi - lo - (seq_len + 1)
        if span <= 0:
            raise ValueError(f"dataset: too short for windows of {seq_len + 1} tokens")
        rng = np.random.default_rng([0 if stream is None else stream, step])
        starts = lo + rng.integers(0, span, size=batch_size)
        return np.stack([self.tokens[s : s + seq_len + 1] for s in starts])
