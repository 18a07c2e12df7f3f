"""The layer order, statically (AST) and at runtime (what importing a layer loads).

    core → support → adapters → app → gui / cli / api

A module imports only from its own layer or the layers before it; nothing imports upward.
`core/` is also Qt-, torch- and network-free: the coordinator and its tests run headless
and fast (no QApplication, no 1 GB torch import, no sockets). gui and cli may use api (they
host the local monitoring API); gui, cli and api never import each other otherwise.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PKG = ROOT / "r3mes_desktop"
LAYERS = {"core": 0, "support": 1, "adapters": 2, "app": 3, "gui": 4, "cli": 4, "api": 4}
TOP_SIBLINGS = {"gui": {"api"}, "cli": {"api"}, "api": set()}
COMPOSITE_ADAPTERS = {"devnet": {"chain", "ipfs"}, "faults": {"chain", "ipfs"}}
"""Adapters do not import each other, but for these two: the embedded devnet is a chain
node and a content store in one process, and `faults` wraps every adapter to inject the
failures each one can have."""
CORE_BANNED = (
    "PySide6",
    "shiboken6",
    "qasync",
    "pyqtgraph",
    "torch",
    "aiohttp",
    "aioipfs",
    "web3",
    "eth_account",
    "eth_tester",
    "eth_utils",
    "requests",
    "socket",
    "urllib3",
)
RUNTIME_BANNED = tuple(n for n in CORE_BANNED if n != "socket")  # asyncio loads socket
DYNAMIC_IMPORTERS = {"import_module", "__import__", "find_spec"}


def layer_of(module: str) -> str | None:
    """The layer a dotted module name of ours belongs to (None: not ours, or the root)."""
    parts = module.split(".")
    if parts[0] != "r3mes_desktop" or len(parts) < 2:
        return None
    if parts[1] == "__main__":
        return "gui"
    return parts[1] if parts[1] in LAYERS else None


def files_of(layer: str) -> list[Path]:
    return sorted((PKG / layer).rglob("*.py"))


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_names(source: str, module: str) -> list[str]:
    """Every module `source` imports: statements (relative ones resolved against `module`)
    and constant strings given to importlib/__import__."""
    found = []
    package = module.split(".") if module.endswith("__init__") else module.split(".")[:-1]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                found.append(".".join(base + ([node.module] if node.module else [])))
            elif node.module:
                found.append(node.module)
                found += [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in DYNAMIC_IMPORTERS:
                found += [
                    arg.value
                    for arg in node.args[:1]
                    if isinstance(arg, ast.Constant) and isinstance(arg.value, str)
                ]
    return found


def adapter_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[2] if len(parts) > 2 and parts[1] == "adapters" else None


def upward(importer: str, imported: str) -> bool:
    """Does `importer` break the order (or the adapters' independence) by importing
    `imported`?"""
    mine, theirs = layer_of(importer), layer_of(imported)
    if mine == theirs == "adapters":
        a, b = adapter_of(importer), adapter_of(imported)
        return a != b and b is not None and b not in COMPOSITE_ADAPTERS.get(a or "", set())
    if mine is None or theirs is None or mine == theirs:
        return False
    if LAYERS[theirs] < LAYERS[mine]:
        return False
    return not (LAYERS[theirs] == LAYERS[mine] and theirs in TOP_SIBLINGS.get(mine, set()))


def violations(path: Path) -> list[str]:
    module = module_name(path)
    names = imported_names(path.read_text("utf-8"), module)
    problems = [n for n in names if upward(module, n)]
    if layer_of(module) == "core":
        problems += [n for n in names if n.split(".")[0] in CORE_BANNED]
    return problems


ALL_FILES = sorted(p for layer in LAYERS for p in files_of(layer))


def test_every_layer_has_modules_to_check() -> None:
    for layer in LAYERS:
        assert files_of(layer), f"r3mes_desktop/{layer}/ is empty or missing"
    loose = sorted(p.name for p in PKG.glob("*.py") if p.name not in ("__init__.py", "__main__.py"))
    assert loose == [], "modules outside the layers"


@pytest.mark.parametrize("path", ALL_FILES, ids=lambda p: str(p.relative_to(PKG)))
def test_module_imports_only_its_layer_and_below(path: Path) -> None:
    assert violations(path) == []


@pytest.mark.parametrize(
    ("importer", "source"),
    [
        ("r3mes_desktop.core.x", "import torch"),
        ("r3mes_desktop.core.x", "from PySide6.QtCore import QObject"),
        ("r3mes_desktop.core.x", "import aiohttp"),
        ("r3mes_desktop.core.x", "def f():\n    import web3\n"),
        ("r3mes_desktop.core.x", "import importlib\nimportlib.import_module('PySide6.QtWidgets')"),
        ("r3mes_desktop.core.x", "__import__('pyqtgraph')"),
        ("r3mes_desktop.core.x", "from r3mes_desktop.support import logs"),
        ("r3mes_desktop.core.x", "from r3mes_desktop import support"),
        ("r3mes_desktop.support.x", "from r3mes_desktop.adapters.chain import client"),
        ("r3mes_desktop.adapters.x", "import r3mes_desktop.app.runtime"),
        ("r3mes_desktop.app.x", "from r3mes_desktop.gui.app import main"),
        ("r3mes_desktop.api.x", "from r3mes_desktop.cli import main"),
        ("r3mes_desktop.gui.x", "from r3mes_desktop.cli.output import Progress"),
        ("r3mes_desktop.core.saga.x", "from ...support import logs"),
        ("r3mes_desktop.adapters.ipfs.x", "from r3mes_desktop.adapters.chain import transport"),
        ("r3mes_desktop.adapters.mining.x", "from r3mes_desktop.adapters.ipfs.client import c"),
    ],
)
def test_the_checker_catches_every_form(importer: str, source: str) -> None:
    names = imported_names(source, importer)
    bad = [n for n in names if upward(importer, n)]
    if layer_of(importer) == "core":
        bad += [n for n in names if n.split(".")[0] in CORE_BANNED]
    assert bad != []


@pytest.mark.parametrize(
    ("importer", "source"),
    [
        ("r3mes_desktop.core.x", "import torchvision_like_name_but_not"),
        ("r3mes_desktop.core.x", "x = 'torch'"),
        ("r3mes_desktop.support.x", "from r3mes_desktop.core.errors import R3mesError"),
        ("r3mes_desktop.app.x", "from r3mes_desktop.adapters.chain import client"),
        ("r3mes_desktop.gui.x", "from r3mes_desktop.api.monitoring import Monitoring"),
        ("r3mes_desktop.adapters.devnet.x", "from r3mes_desktop.adapters.chain import client"),
        ("r3mes_desktop.adapters.faults", "from r3mes_desktop.adapters.chain.transport import T"),
        ("r3mes_desktop.adapters.mining.verify", "from r3mes_desktop.adapters.mining import pow"),
    ],
)
def test_the_checker_leaves_allowed_imports_alone(importer: str, source: str) -> None:
    names = imported_names(source, importer)
    assert [n for n in names if upward(importer, n)] == []


LOWER = {
    "core": [],
    "support": ["core"],
    "adapters": ["core", "support"],
    "app": ["core", "support", "adapters"],
}


@pytest.mark.parametrize("layer", ["core", "support", "adapters", "app"])
def test_importing_a_layer_loads_nothing_above_it(layer: str) -> None:
    """The runtime check: importing every module of `layer` (in a fresh interpreter) loads
    no module of a later layer, and for core none of the banned packages."""
    modules = [module_name(p) for p in files_of(layer)]
    allowed = {layer, *LOWER[layer]}
    script = (
        "import importlib, json, sys\n"
        f"for m in {modules!r}:\n"
        "    importlib.import_module(m)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    above = [n for n in loaded if (layer_of(n) or layer) not in allowed]
    assert above == []
    if layer == "core":
        assert [n for n in loaded if n.split(".")[0] in RUNTIME_BANNED] == []
