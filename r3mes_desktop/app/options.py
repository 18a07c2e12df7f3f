"""`RuntimeOptions`: what a runtime is opened with besides the user's settings.

Demo speed, test and benchmark hooks, the data directory: choices a caller makes in code,
never saved with the settings.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from r3mes_desktop.app.builders import PasswordPrompt, PinnedStore
    from r3mes_desktop.core.clock import Clock
    from r3mes_desktop.core.steps import ProofOfWork, Trainer


@dataclass(frozen=True)
class RuntimeOptions:
    """Choices that are not user settings: demo speed, test hooks, where to live."""

    data_dir: Path | None = None
    settings_overrides: Mapping[str, Any] = field(default_factory=dict)
    round_steps: int | None = None  # devnet rounds: training steps
    round_difficulty: int | None = None  # devnet rounds: PoW bits (16..32)
    round_preset: str | None = None  # devnet rounds: model preset ("tiny", "default"...)
    operator_interval_s: float | None = 2.0
    maintenance_interval_s: float = 15.0
    miner_poll_s: float = 5.0  # how often an idle miner looks for new open rounds
    devnet_validator_s: float | None = 5.0  # the devnet's own validator pass interval; None: off
    # fault injection in tests and demos
    wrap_store: Callable[[PinnedStore], PinnedStore] | None = None
    wrap_trainer: Callable[[Trainer], Trainer] | None = None  # instrumentation (bench.gui)
    wrap_pow: Callable[[ProofOfWork], ProofOfWork] | None = None
    clock: Clock | None = None  # the coordinator's and miner's (tests shift wall time)
    password_prompt: PasswordPrompt | None = None  # when the password is not in the keyring
    warm_trainer: bool = False  # spawn the training worker (torch import) while opening
    inline_gradient_max: int | None = None  # journal rows up to this size (None: default)

    @classmethod
    def fast(cls, **changes: Any) -> RuntimeOptions:
        """Tiny model, difficulty 16, short rounds: a transaction commits in seconds."""
        values: dict[str, Any] = {
            "round_steps": 8,
            "round_difficulty": 16,
            "round_preset": "tiny",
            "operator_interval_s": 0.5,
            "miner_poll_s": 0.5,
            "devnet_validator_s": 1.0,
            "settings_overrides": {"pow_difficulty": 16},
            "warm_trainer": True,
        }
        values.update(changes)
        return cls(**values)
