"""r3mes_desktop/core stays Qt-free and torch-free, statically and at runtime.

Why: the coordinator and its tests must run headless and fast (no QApplication, no 1 GB
torch import); the GUI and the mining worker are built on the core, never the reverse.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CORE = ROOT / "r3mes_desktop" / "core"
BANNED = ("PySide6", "qasync", "pyqtgraph", "torch", "shiboken6")
DYNAMIC_IMPORTERS = {"import_module", "__import__", "find_spec"}


def core_files() -> list[Path]:
    return sorted(CORE.rglob("*.py"))


def banned(name: str) -> bool:
    top = name.split(".")[0]
    return top in BANNED


def violations(source: str) -> list[str]:
    """Imports of banned packages in `source`: statements and importlib/__import__ strings."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names if banned(alias.name)]
        elif isinstance(node, ast.ImportFrom):
            if node.module and node.level == 0 and banned(node.module):
                found.append(node.module)
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in DYNAMIC_IMPORTERS:
                found += [
                    arg.value
                    for arg in node.args[:1]
                    if isinstance(arg, ast.Constant)
                    and isinstance(arg.value, str)
                    and banned(arg.value)
                ]
    return found


def test_core_has_modules_to_check() -> None:
    names = {p.name for p in core_files()}
    assert {"errors.py", "retry.py", "breaker.py", "resilience.py"} <= names


@pytest.mark.parametrize("path", core_files(), ids=lambda p: str(p.relative_to(CORE)))
def test_core_module_imports_no_gui_or_torch(path: Path) -> None:
    assert violations(path.read_text("utf-8")) == []


@pytest.mark.parametrize(
    "source",
    [
        "import torch",
        "import torch.nn as nn",
        "from PySide6.QtCore import QObject",
        "import qasync",
        "from pyqtgraph import PlotWidget",
        "def f():\n    import torch\n",
        "import importlib\nimportlib.import_module('PySide6.QtWidgets')",
        "from importlib import import_module\nimport_module('torch')",
        "__import__('pyqtgraph')",
    ],
)
def test_checker_catches_every_form(source: str) -> None:
    assert violations(source) != []


@pytest.mark.parametrize(
    "source",
    ["import torchvision_like_name_but_not", "from . import torch", "x = 'torch'", "import json"],
)
def test_checker_leaves_innocent_code_alone(source: str) -> None:
    # `from . import torch` is a relative sibling module, not the torch package
    assert violations(source) == []


def test_importing_all_of_core_loads_no_banned_package() -> None:
    modules = [
        "r3mes_desktop.core." + ".".join(p.relative_to(CORE).with_suffix("").parts)
        for p in core_files()
        if p.name != "__init__.py"
    ]
    script = (
        "import importlib, json, sys\n"
        f"for m in {modules!r}:\n"
        "    importlib.import_module(m)\n"
        f"print(json.dumps(sorted(n for n in sys.modules if n.split('.')[0] in {BANNED!r})))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
