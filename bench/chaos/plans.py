"""The default fault plans of the chaos harness (written to the run dir as TOML files).

Per call to the chain node and the content store: about 30% transient faults (connection
refused, HTTP 5xx, malformed answers), 5% authentication faults (HTTP 401, and on
transactions insufficient funds / invalid sender), 5% timeouts and latency spikes; plus
nonce errors, wrong CIDs, out-of-memory and full disks at lower rates.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

CHAOS_PLAN: dict[str, Any] = {
    "seed": 0,
    "slow_s": 0.15,
    "chain": {  # per Chain/TaskApi call the coordinator and the miner make
        "connection_refused": 0.12,
        "http_5xx": 0.12,
        "malformed": 0.06,
        "http_401": 0.05,
        "timeout": 0.03,  # half of them after the effect (sent, signed) happened
        "slow": 0.02,
    },
    "chain_rpc": {  # under the chain client, per JSON-RPC request to the node
        "connection_refused": 0.02,
        "http_5xx": 0.02,
        "timeout": 0.01,
        "http_401": 0.01,
        "insufficient_funds": 0.01,  # only on eth_sendRawTransaction
        "invalid_signature": 0.01,  # only on eth_sendRawTransaction
        "nonce_too_low": 0.02,  # only on eth_sendRawTransaction
    },
    "ipfs": {
        "connection_refused": 0.12,
        "http_5xx": 0.12,
        "malformed": 0.06,
        "http_401": 0.05,
        "wrong_cid": 0.02,  # only on add+pin
        "timeout": 0.03,  # half of them after the content was pinned
        "slow": 0.02,
    },
    "trainer": {"cuda_oom": 0.05, "memory_error": 0.02, "disk_full": 0.03},
    "journal": {"disk_full": 0.005},
}

TRANSIENT = ("connection_refused", "http_5xx", "malformed")
AUTH = ("http_401", "insufficient_funds", "invalid_signature")
TIMEOUTS = ("timeout", "slow")


def _toml_value(value: Any) -> str:
    return repr(value) if isinstance(value, float) else str(value)


def write_plan(path: Path, plan: dict[str, Any], *, seed: int) -> Path:
    """Write `plan` as TOML (the format users write) with `seed`."""
    lines = [f"seed = {seed}", f"slow_s = {_toml_value(plan['slow_s'])}"]
    for service, kinds in plan.items():
        if isinstance(kinds, dict):
            lines.append(f"\n[{service}]")
            lines += [f"{kind} = {_toml_value(rate)}" for kind, rate in kinds.items()]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
