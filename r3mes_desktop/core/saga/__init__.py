"""The saga that drives each mining transaction (see `engine` for the steps).

- `engine`: `Saga`, the drive loop; `context`: what its parts share;
- `steps`: TRAINING and IPFS_UPLOAD; `settlement`: BLOCKCHAIN_SUBMIT, TASK_COMPLETE and
  the submissions in doubt; `failure`: recording a failure and registering its undo;
- `compensation`: running undo actions; `outbox`: delivering task completions;
- `cleanup`: closing stale or forced transactions; `recovery`: what start does with each
  unfinished transaction.
"""

from r3mes_desktop.core.saga.context import (
    DEAD_LETTER_CATEGORIES,
    MAX_RESIGNS,
    SagaContext,
    StepFailure,
)
from r3mes_desktop.core.saga.engine import Saga

__all__ = ["DEAD_LETTER_CATEGORIES", "MAX_RESIGNS", "Saga", "SagaContext", "StepFailure"]
