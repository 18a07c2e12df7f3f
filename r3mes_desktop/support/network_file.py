"""The *network file*: what a miner or validator needs to join a network, in one JSON file.

An operator writes it after deploying (`r3mes-operator deploy --out network.json`); a miner
imports it (`r3mes-miner join network.json`, Settings → Network → "Join a network…") and a
validator runs from it. Every field is checked on load with an error that names it.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

FORMAT = "r3mes-network/1"
_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
_URL = re.compile(r"^(https?|wss?)://\S+$")


class NetworkFileError(ValueError):
    """A network file that cannot be used; the message names the field."""


@dataclass(frozen=True)
class NetworkFile:
    name: str
    chain_id: int
    rpc_urls: tuple[str, ...]
    contract_address: str
    contract_version: str
    ipfs_api: str = ""
    operator: str = ""
    deployed_block: int = 0
    format: str = field(default=FORMAT)

    def __post_init__(self) -> None:
        if not self.name.strip():
            raise NetworkFileError("name: expected a non-empty network name")
        if (
            isinstance(self.chain_id, bool)
            or not isinstance(self.chain_id, int)
            or self.chain_id < 1
        ):
            raise NetworkFileError(f"chain_id: expected a positive integer, got {self.chain_id!r}")
        if not self.rpc_urls or not all(_URL.match(u) for u in self.rpc_urls):
            raise NetworkFileError(
                "rpc_urls: expected one or more http(s):// or ws(s):// URLs, got "
                f"{list(self.rpc_urls)!r}"
            )
        if not _ADDRESS.match(self.contract_address):
            raise NetworkFileError(
                f"contract_address: expected 0x and 40 hex digits, got {self.contract_address!r}"
            )
        if self.operator and not _ADDRESS.match(self.operator):
            raise NetworkFileError(
                f"operator: expected 0x and 40 hex digits, got {self.operator!r}"
            )
        if self.format != FORMAT:
            raise NetworkFileError(f"format: expected {FORMAT!r}, got {self.format!r}")

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["rpc_urls"] = list(self.rpc_urls)
        return data

    def settings(self) -> dict[str, Any]:
        """The miner's settings this file fills (Settings field names)."""
        values: dict[str, Any] = {
            "chain_rpc_urls": list(self.rpc_urls),
            "chain_id": self.chain_id,
            "contract_address": self.contract_address,
        }
        if self.ipfs_api:
            values["ipfs_api_address"] = self.ipfs_api
        return values

    def save(self, path: Path) -> None:
        """Atomically (a reader never sees half a file)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, path)

    @classmethod
    def from_json(cls, data: Any) -> NetworkFile:
        if not isinstance(data, dict):
            raise NetworkFileError("expected a JSON object")
        missing = [k for k in ("name", "chain_id", "rpc_urls", "contract_address") if k not in data]
        if missing:
            raise NetworkFileError(f"{missing[0]}: required")
        urls = data["rpc_urls"]
        if isinstance(urls, str):
            urls = [urls]
        if not isinstance(urls, list):
            raise NetworkFileError("rpc_urls: expected a list of URLs")
        return cls(
            name=str(data["name"]),
            chain_id=data["chain_id"],
            rpc_urls=tuple(str(u) for u in urls),
            contract_address=str(data["contract_address"]),
            contract_version=str(data.get("contract_version", "")),
            ipfs_api=str(data.get("ipfs_api", "")),
            operator=str(data.get("operator", "")),
            deployed_block=int(data.get("deployed_block", 0)),
            format=str(data.get("format", FORMAT)),
        )

    @classmethod
    def load(cls, path: Path) -> NetworkFile:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise NetworkFileError(f"{path}: cannot read ({exc.strerror})") from None
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise NetworkFileError(f"{path}: not JSON ({exc})") from None
        return cls.from_json(data)
