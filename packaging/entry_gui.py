"""Frozen entry of `r3mes-desktop`.

`freeze_support()` must run first: the training and PoW workers are started with the
"spawn" method, which in a frozen app re-executes this very binary with multiprocessing's
arguments; freeze_support turns that launch into the worker instead of a second window.
"""

import multiprocessing
import sys

if __name__ == "__main__":
    multiprocessing.freeze_support()
    from r3mes_desktop.gui.app import main

    sys.exit(main())
