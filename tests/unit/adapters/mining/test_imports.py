"""The GUI process imports the mining API without loading torch."""

from __future__ import annotations

import subprocess
import sys


def test_parent_side_modules_do_not_import_torch() -> None:
    code = (
        "import sys\n"
        "import r3mes_desktop.adapters.mining.worker, r3mes_desktop.adapters.mining.pow\n"
        "import r3mes_desktop.adapters.mining.checkpoint, r3mes_desktop.adapters.mining.verify\n"
        "import r3mes_desktop.adapters.mining.settings, r3mes_desktop.adapters.mining.presets\n"
        "assert 'torch' not in sys.modules, 'torch imported by a parent-side module'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
