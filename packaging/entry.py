"""Frozen entry of both programs in the bundle: `r3mes-desktop` and `r3mes-miner`.

One script, two executables built from one analysis (half the build time): the program
name picks the app. `freeze_support()` must run first: the training and PoW workers are
started with the "spawn" method, which in a frozen app re-executes this very binary with
multiprocessing's arguments; freeze_support turns that launch into the worker instead of
a second window or a second miner.
"""

import multiprocessing
import sys
from pathlib import Path


def _program() -> str:
    return Path(sys.executable if getattr(sys, "frozen", False) else sys.argv[0]).stem


if __name__ == "__main__":
    multiprocessing.freeze_support()
    if _program().startswith("r3mes-miner"):
        from r3mes_desktop.cli import main
    else:
        from r3mes_desktop.gui.app import main
    sys.exit(main())
