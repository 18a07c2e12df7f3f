"""`python -m r3mes_desktop` opens the desktop app (the headless miner is `r3mes-miner`).

The guard matters: worker processes are spawned, and spawn re-imports the main module.
"""

import sys

from r3mes_desktop.gui.app import main

if __name__ == "__main__":
    sys.exit(main())
