"""The compiled R3mesRounds contract, committed next to its source.

The app loads the committed JSON (no compiler needed at run time); a test recompiles the
source with the pinned vyper and compares, so the artifact cannot silently drift from the
source. Regenerate with `.venv/bin/python -m r3mes_desktop.adapters.chain.artifact --write`.
"""

from __future__ import annotations

import functools
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CONTRACT_DIR = Path(__file__).parent / "contract"
SOURCE_PATH = CONTRACT_DIR / "R3mesRounds.vy"
ARTIFACT_PATH = CONTRACT_DIR / "R3mesRounds.json"
EVM_VERSION = "shanghai"  # ganache 7.9 knows rules up to shanghai; py-evm runs it too


@dataclass(frozen=True)
class Artifact:
    abi: list[dict[str, Any]]
    bytecode: bytes
    compiler_version: str
    evm_version: str


def compile_source() -> dict[str, Any]:
    """Compile the Vyper source with the installed compiler (a dev dependency)."""
    import vyper
    from vyper.compiler.settings import Settings

    out = vyper.compile_code(
        SOURCE_PATH.read_text(encoding="utf-8"),
        contract_path=SOURCE_PATH.name,
        output_formats=["abi", "bytecode"],
        settings=Settings(evm_version=EVM_VERSION),
    )
    return {
        "contractName": "R3mesRounds",
        "compiler": f"vyper {vyper.__version__}",
        "compilerVersion": vyper.__version__,
        "evmVersion": EVM_VERSION,
        "abi": out["abi"],
        "bytecode": out["bytecode"],
    }


@functools.cache
def load() -> Artifact:
    data = json.loads(ARTIFACT_PATH.read_text(encoding="utf-8"))
    return Artifact(
        abi=data["abi"],
        bytecode=bytes.fromhex(data["bytecode"].removeprefix("0x")),
        compiler_version=data["compilerVersion"],
        evm_version=data["evmVersion"],
    )


def main(argv: list[str]) -> int:
    compiled = compile_source()
    text = json.dumps(compiled, indent=1, sort_keys=True) + "\n"
    if "--write" in argv:
        ARTIFACT_PATH.write_text(text, encoding="utf-8")
        print(f"wrote {ARTIFACT_PATH}")
        return 0
    same = ARTIFACT_PATH.exists() and json.loads(ARTIFACT_PATH.read_text()) == compiled
    print("artifact up to date" if same else "artifact differs from source (use --write)")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
