"""Frozen entry of `r3mes-miner` (the headless miner); see entry_gui.py for freeze_support."""

import multiprocessing
import sys

if __name__ == "__main__":
    multiprocessing.freeze_support()
    from r3mes_desktop.cli import main

    sys.exit(main())
