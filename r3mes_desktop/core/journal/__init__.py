"""The durable journal: SQLite, the single source of truth for every mining transaction.

- `facade`: `Journal`, the async face (one write path, one read path);
- `change`: the `Change` a step returns and how it is applied in one transaction;
- `lifecycle`: rules applied inside the commit that makes them true (gradient release,
  superseded dead letters);
- `queries`: the reads; `rows`: columns and record decoding shared by both;
- `earnings` (verdicts and credits) and `model_versions` (the network model's versions):
  what the miner reads from the chain, kept beside its transactions;
- `schema`: migrations, `connect`, `migrate`; `batch`: the group commit; `integrity`: the
  invariants checked at start and by `verify`.
"""

from r3mes_desktop.core.journal.change import (
    INLINE_GRADIENT_MAX,
    Change,
    DuplicateRoundError,
    StaleStateError,
)
from r3mes_desktop.core.journal.facade import Journal
from r3mes_desktop.core.journal.schema import SCHEMA_VERSION, connect, migrate

__all__ = [
    "INLINE_GRADIENT_MAX",
    "SCHEMA_VERSION",
    "Change",
    "DuplicateRoundError",
    "Journal",
    "StaleStateError",
    "connect",
    "migrate",
]
